"""`samstream run` end to end on real clips, and its answers to bad input."""

import subprocess
import sys

import av
import pytest

from samstream.masks import mask_iou
from samstream.streaming.messages import FrameResult
from samstream.streaming.rle import from_frame_result
from tests.media import truncate, write_moving_squares


def samstream(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "samstream.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)


def read_results(path):
    return [FrameResult.model_validate_json(line) for line in path.read_text().splitlines()]


def count_frames(path):
    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))


def test_run_on_a_real_clip(realshort, tmp_path):
    done = samstream("run", realshort, "--instruction", "the person", "--out", tmp_path / "out", "--quiet",
                     "--model", "builtin:tiny-random")
    assert done.returncode == 0, done.stderr
    assert "36 frames" in done.stdout and "UNTRAINED" in done.stdout and "'the person'=concept" in done.stdout
    results = read_results(tmp_path / "out/results.jsonl")
    assert [r.frame for r in results] == list(range(36))
    assert all(b.pts > a.pts for a, b in zip(results, results[1:]))
    assert sum(len(r.instances) for r in results) > 0
    for result in results:
        masks, _, _ = from_frame_result(result)
        assert all(m.shape == (240, 320) for m in masks)
        assert all(inst.instruction == "the person" and inst.level == "concept" for inst in result.instances)
    # ids are stable where masks overlap from one frame to the next
    checked = 0
    for prev, cur in zip(results, results[1:]):
        (pm, pid, _), (cm, cid, _) = from_frame_result(prev), from_frame_result(cur)
        if len(pm) == 0 or len(cm) == 0:
            continue
        iou = mask_iou(cm, pm)
        for i in range(len(cm)):
            j = int(iou[i].argmax())
            if iou[i, j] > 0.7 and int(iou[:, j].argmax()) == i:
                assert cid[i] == pid[j], f"frame {cur.frame}: id {cid[i]} continues {pid[j]} (IoU {iou[i, j]:.2f})"
                checked += 1
    assert checked > 0
    assert count_frames(tmp_path / "out/annotated.mp4") == 36


def test_max_frames_and_keyframe_every(cockatoo, tmp_path):
    done = samstream("run", cockatoo, "--instruction", "bird", "--out", tmp_path, "--max-frames", 6,
                     "--keyframe-every", 3, "--quiet", "--model", "builtin:tiny-random")
    assert done.returncode == 0, done.stderr
    results = read_results(tmp_path / "results.jsonl")
    assert len(results) == 6 and results[0].instances[0].mask.size == (720, 1280)
    assert count_frames(tmp_path / "annotated.mp4") == 6


def test_missing_file(tmp_path):
    done = samstream("run", tmp_path / "missing.mp4", "--instruction", "x", "--out", tmp_path / "o")
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [f"samstream: error: {tmp_path / 'missing.mp4'}: no such file"]
    assert not (tmp_path / "o").exists()


def test_not_a_video(tmp_path):
    bad = tmp_path / "x.mp4"
    bad.write_bytes(b"\x00" * 1000)
    done = samstream("run", bad, "--instruction", "x", "--out", tmp_path / "o")
    assert done.returncode == 1 and "not a readable video" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("instruction", ["", "   "])
def test_empty_instruction(realshort, tmp_path, instruction):
    done = samstream("run", realshort, "--instruction", instruction, "--out", tmp_path / "o")
    assert done.returncode == 1 and "instruction is empty" in done.stderr
    assert not (tmp_path / "o").exists()


def test_truncated_file_keeps_what_was_produced(tmp_path):
    clip = write_moving_squares(tmp_path / "full.mp4", frames=24)
    cut = truncate(clip, tmp_path / "cut.mp4", 0.6)
    done = samstream("run", cut, "--instruction", "red square", "--out", tmp_path / "o", "--quiet")
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("samstream: error: ") and "cut.mp4: truncated: decoding stopped at frame" in last
    broke_at = int(last.split("at frame ")[1].split()[0])
    results = read_results(tmp_path / "o/results.jsonl")  # every line valid
    assert [r.frame for r in results] == list(range(broke_at))
    assert count_frames(tmp_path / "o/annotated.mp4") == broke_at
    assert not list((tmp_path / "o").glob("*.part"))


def test_results_of_unknown_stream_and_unreachable_redis(redis_url):
    done = samstream("results", "--stream", "ghost", "--redis", redis_url)
    assert done.returncode == 1 and "unknown stream 'ghost'" in done.stderr
    done = samstream("results", "--stream", "ghost", "--redis", "redis://127.0.0.1:1", timeout=60)
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert lines[-1].startswith("samstream: error: cannot reach Redis at redis://127.0.0.1:1 after 6 attempts")
    assert sum("retrying in" in line for line in lines[:-1]) == 5  # the backoff is visible while it waits


@pytest.mark.parametrize("flag, expected", [("auto", True), ("on", True), ("off", False)])
def test_spatial_rules_flag_reaches_the_model(flag, expected):
    """auto keeps the model folder's choice (the shipped model's is on); on / off override it."""
    from samstream.cli import _load, build_parser

    args = build_parser().parse_args(["run", "clip.mp4", "--instruction", "the leftmost circle", "--out", "o",
                                      "--device", "cpu", "--spatial-rules", flag])
    assert _load(args).info.spatial_rules is expected
