"""The user's path with the shipped model, as `make demo` runs it: a generated clip, an instruction in,
results out, and the right object segmented (scored against the clip's exact ground truth)."""

import json
import subprocess
import sys

CLI = [sys.executable, "-m", "samstream"]


def run(*args, timeout=600):
    done = subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_shipped_model_tracks_what_an_instruction_describes(tmp_path):
    data = tmp_path / "clip"
    run("synth", "--videos", "1", "--frames", "30", "--width", "224", "--height", "224", "--seed", "77",
        "--min-objects", "3", "--max-objects", "4", "--out", data, "--quiet")
    run("instructions", data / "videos.json", "--out", tmp_path / "i.json", "--split", "all", "--per-level", "3")
    records = json.loads((tmp_path / "i.json").read_text())["instructions"]
    scores = {}
    for level in ("concept", "simple", "complex"):
        record = next(r for r in records if r["level"] == level and r["targets"])
        out = tmp_path / level
        summary = run("run", data / "videos/scene_00001.mp4", "--instruction", record["instruction"], "--out", out,
                      "--quiet")
        assert "builtin:small" in summary and "UNTRAINED" not in summary
        objects = ",".join(str(t % 1000) for t in record["targets"])
        metrics = json.loads(run("eval-tracking", out / "results.jsonl", data / "videos.json", "--objects", objects))
        scores[record["instruction"]] = metrics["J&F"]
    # mean J&F of the shipped model here: 0.38 (session 19; 0.28 in session 18); the floor catches a regression
    assert sum(scores.values()) / len(scores) >= 0.10, scores
