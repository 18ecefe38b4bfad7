"""Tracking metrics on hand-computed cases, J cross-checked against pycocotools, and the CLI end to end."""

import json
import subprocess
import sys

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from samstream.data.formats import rle_of
from samstream.eval.tracking import (
    TrackSequence,
    boundary_f,
    load_ground_truth,
    region_similarity,
    tracking_metrics,
)

H, W = 40, 60


def _box(x: int, y: int = 10, size: int = 12) -> np.ndarray:
    m = np.zeros((H, W), bool)
    m[y: y + size, x: x + size] = True
    return m


def _seq(tracks: list[dict[int, np.ndarray]]) -> TrackSequence:
    """Per frame {track id: mask}."""
    to_rle = lambda m: {**rle_of(m), "counts": rle_of(m)["counts"].encode()}  # noqa: E731
    return TrackSequence(H, W, [list(f) for f in tracks], [[to_rle(m) for m in f.values()] for f in tracks])


GT = _seq([{1: _box(5 + 3 * t)} for t in range(4)])


def test_perfect_tracking_scores_one_everywhere():
    m = tracking_metrics(GT, GT)
    for key in ("HOTA", "DetA", "AssA", "MOTA", "IDF1", "J", "F", "J&F"):
        assert m[key] == pytest.approx(1.0), key
    assert m["IDSW"] == 0


def test_mean_share_counts_overlaps_once_and_skips_empty_frames():
    """Frame 0: two 12x12 boxes overlapping in a 6x12 strip (union 144 + 72 px); frame 1: empty; frame 2: one box."""
    seq = _seq([{1: _box(5), 2: _box(11)}, {}, {1: _box(30)}])
    assert seq.mean_share() == pytest.approx(((144 + 72) / (H * W) + 144 / (H * W)) / 2)
    assert _seq([{}, {}]).mean_share() == 0.0


def test_an_id_switch_halfway():
    """Perfect masks, ids 7,7,8,8: MOTA = 1 - 1/4; IDF1 = 2*2/(4+4); DetA 1, AssA 2/(2+2) -> HOTA sqrt(.5);
    J: the GT object pairs with one of the two tracks, present in 2 of 4 frames."""
    pred = _seq([{7 if t < 2 else 8: _box(5 + 3 * t)} for t in range(4)])
    m = tracking_metrics(GT, pred)
    assert m["IDSW"] == 1
    assert m["MOTA"] == pytest.approx(0.75)
    assert m["IDF1"] == pytest.approx(0.5)
    assert m["DetA"] == pytest.approx(1.0) and m["AssA"] == pytest.approx(0.5)
    assert m["HOTA"] == pytest.approx(np.sqrt(0.5))
    assert m["J"] == pytest.approx(0.5) and m["F"] == pytest.approx(0.5)


def test_missed_frames_and_a_false_track():
    """Frames 2,3 missed; a false track in frame 0: MOTA = 1 - (2 FN + 1 FP)/4; IDF1 = 2*2/(4+3);
    DetA = 2/(2+2+1); AssA = TPA/(TPA+FNA+FPA) = 2/(2+2+0) (the pair's misses count against it too);
    J over 4 frames: 2/4."""
    pred = _seq([{1: _box(5), 9: _box(40, 25)}, {1: _box(8)}, {}, {}])
    m = tracking_metrics(GT, pred)
    assert m["MOTA"] == pytest.approx(0.25)
    assert m["IDF1"] == pytest.approx(4 / 7)
    assert m["DetA"] == pytest.approx(0.4) and m["AssA"] == pytest.approx(0.5)
    assert m["HOTA"] == pytest.approx(np.sqrt(0.2))
    assert m["J"] == pytest.approx(0.5)


def test_region_similarity_is_pycocotools_iou_and_boundary_f_tolerates_small_shifts():
    a, b = _box(10), _box(14)
    coco = mask_utils.iou([mask_utils.encode(np.asfortranarray(a.astype(np.uint8)))],
                          [mask_utils.encode(np.asfortranarray(b.astype(np.uint8)))], [0])[0, 0]
    assert region_similarity(a, b) == pytest.approx(coco)
    assert region_similarity(np.zeros_like(a), np.zeros_like(a)) == 1.0
    assert boundary_f(a, _box(11), tolerance=1) == pytest.approx(1.0)  # within one pixel everywhere
    assert boundary_f(a, _box(30), tolerance=1) == 0.0
    assert 0.0 < boundary_f(a, _box(14), tolerance=1) < 1.0


def test_ground_truth_by_category_and_objects():
    data = {
        "videos": [{"id": 1, "name": "v", "width": W, "height": H, "length": 2}],
        "categories": [{"id": 1, "name": "circle"}, {"id": 2, "name": "square"}],
        "annotations": [
            {"id": 1001, "video_id": 1, "object_id": 1, "category_id": 1, "segmentations": [rle_of(_box(5)), None]},
            {"id": 1002, "video_id": 1, "object_id": 2, "category_id": 2, "segmentations": [rle_of(_box(30))] * 2},
        ],
    }
    assert load_ground_truth(data).ids == [[1001, 1002], [1002]]
    assert load_ground_truth(data, category="circle").ids == [[1001], []]
    assert load_ground_truth(data, object_ids={2}).ids == [[1002], [1002]]
    with pytest.raises(ValueError, match="no category 'cone'"):
        load_ground_truth(data, category="cone")


def test_run_then_eval_tracking_on_a_synthetic_video(tmp_path):
    """The whole path a user takes: synth a video, track it with the built-in model, score it."""
    cli = [sys.executable, "-m", "samstream"]
    data = tmp_path / "data"
    subprocess.run([*cli, "synth", "--videos", "1", "--frames", "10", "--out", str(data), "--width", "160",
                    "--height", "120", "--quiet"], check=True, timeout=120)
    out = tmp_path / "run"
    done = subprocess.run([*cli, "run", str(data / "videos/scene_00001.mp4"), "--instruction", "circle",
                           "--out", str(out), "--quiet"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    done = subprocess.run([*cli, "eval-tracking", str(out / "results.jsonl"), str(data / "videos.json")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    metrics = json.loads(done.stdout)
    assert metrics["frames"] == 10 and metrics["gt_tracks"] >= 2
    assert all(0.0 <= metrics[k] <= 1.0 for k in ("HOTA", "IDF1", "J&F"))
    missing = subprocess.run([*cli, "eval-tracking", str(out / "results.jsonl"), str(tmp_path / "missing.json")],
                             capture_output=True, text=True, timeout=60)
    assert missing.returncode == 1 and missing.stderr.count("\n") == 1 and "missing.json" in missing.stderr
