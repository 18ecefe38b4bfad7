"""The shipped small model: the default, small, and good enough. The quality floors sit a little under what
the model card reports on the fixed evaluation set, so a regression (in the model, the tracker, the engine or
the evaluator) fails CI."""

import json
import os
from pathlib import Path

import numpy as np
import pytest

from samstream.data.formats import decode_rle, load_dataset
from samstream.data.synth import synthesize_eval_set
from samstream.errors import ModelLoadError
from samstream.eval.evaluator import evaluate_images, evaluate_videos
from samstream.eval.grounding import word_grounding
from samstream.model.loader import BUILTIN_SMALL, SHIPPED_FOLDER, default_model, load_segmenter
from samstream.model.precision import cpu_has_native_bf16
from samstream.streaming.sources import VideoFileSource
from samstream.tracker.session import TrackerConfig, TrackingSession

# Floors (model card: docs/model-card.md); the goals are 0.80 / 0.70 / 0.60 gIoU, 0.90 no-target
# accuracy, IDF1 0.90 and HOTA 0.70.
IMAGE_FLOORS = {"concept": ("gIoU", 0.71), "simple": ("gIoU", 0.55), "complex": ("gIoU", 0.71)}
NO_TARGET_FLOOR = 0.88
VIDEO_FLOORS = {"IDF1": 0.73, "HOTA": 0.60, "J&F": 0.68}  # 30 videos
COLOUR_GROUNDING_FLOOR = 0.70  # first 50 images, whole frames (0.760 there, 0.754 on all 200; chance 0.125)
SHAPE_GROUNDING_FLOOR = 0.76  # the same objects (0.830 there, 0.814 on all 200; chance 0.167)


@pytest.fixture(scope="module")
def eval_set(tmp_path_factory) -> Path:
    cached = os.environ.get("SAMSTREAM_EVAL_SET")
    if cached and (Path(cached) / "videos.instructions.json").exists():
        return Path(cached)
    return synthesize_eval_set(tmp_path_factory.mktemp("eval") / "eval", progress=False)


@pytest.fixture(scope="module")
def shipped():
    return load_segmenter(None, device="cpu")


def test_the_shipped_model_is_the_default_and_small(shipped):
    assert default_model() == BUILTIN_SMALL and shipped.info.name == BUILTIN_SMALL and shipped.info.trained
    meta = json.loads((SHIPPED_FOLDER / "samstream.json").read_text())
    assert shipped.info.score_threshold == meta["score_threshold"]
    assert shipped.info.presence_threshold == meta.get("presence_threshold")
    assert shipped.info.birth_threshold == meta["birth_threshold"] == meta["calibration"]["birth"]["birth_threshold"]
    size = sum(f.stat().st_size for f in SHIPPED_FOLDER.iterdir())
    assert size <= 20 * 2**20 and shipped.info.parameters < 10_000_000


def test_image_quality_floors_on_the_fixed_evaluation_set(shipped, eval_set):
    images = evaluate_images(shipped, eval_set, progress=False)["levels"]
    for level, (metric, floor) in IMAGE_FLOORS.items():
        assert images[level][metric] >= floor, (level, images[level])
    assert images["all"]["no_target_accuracy"] >= NO_TARGET_FLOOR, images["all"]


def test_spatial_rules_answer_simple_instructions_better_than_the_model_alone(shipped, eval_set, tmp_path):
    """The shipped model answers "the leftmost X" by rule (its export chose so): on the fixed set's simple
    instructions that beats its own answers by a wide margin (model card: 0.340 alone)."""
    assert shipped.info.spatial_rules
    records = json.loads((eval_set / "images.instructions.json").read_text())
    records["instructions"] = [r for r in records["instructions"] if r["level"] == "simple"]
    assert len(records["instructions"]) >= 100
    (tmp_path / "images.instructions.json").write_text(json.dumps(records))
    data = json.loads((eval_set / "images.json").read_text())
    for image in data["images"]:  # the images stay where they are
        image["file_name"] = str((eval_set / image["file_name"]).resolve())
    (tmp_path / "images.json").write_text(json.dumps(data))
    alone = load_segmenter(None, device="cpu", spatial_rules=False)
    giou = {name: evaluate_images(segmenter, tmp_path, progress=False)["levels"]["simple"]["gIoU"]
            for name, segmenter in (("rules", shipped), ("alone", alone))}
    assert giou["rules"] >= giou["alone"] + 0.08, giou


@pytest.mark.timeout(1500)  # 30 tracked videos: ~7 minutes on 2 CPU cores
def test_video_quality_floors_on_the_fixed_evaluation_set(shipped, eval_set):
    videos = evaluate_videos(shipped, eval_set, keyframe_every=5, progress=False)["levels"]["all"]
    for metric, floor in VIDEO_FLOORS.items():
        assert videos[metric] >= floor, (metric, videos)


def test_a_selector_reports_one_object_while_every_candidate_is_followed(shipped, eval_set):
    """"The circle that is smallest" on a held-out video: the session follows every circle the rule chose among but
    reports one at a time, where a track per keyframe's pick used to be born and reported beside the others."""
    data = json.loads((eval_set / "videos.json").read_text())
    video = next(v for v in data["videos"] if v["id"] == 9)
    session = TrackingSession(shipped, ["the circle that is smallest"], TrackerConfig(keyframe_every=5), "simple")
    outputs = [session.update(frame.rgb) for frame in VideoFileSource(eval_set / video["file"])]
    assert len(outputs) == video["length"] and sum(len(out) for out in outputs) >= video["length"] // 2
    assert max(len(out) for out in outputs) == 1
    assert len(session.tracks) + len(session.lost) >= 2


def test_colour_and_shape_words_ground(shipped, eval_set):
    """Asked "the red star", "the blue star", ... (and "the star", "the circle", ...) of each object, the model
    covers it best when its own colour (shape) is named; a model that ignores a kind of word sits at chance,
    0.125 for colour and 0.167 for shape, whatever its gIoU."""
    grounding = word_grounding(shipped, eval_set, max_images=50, progress=False)
    assert grounding["objects"] >= 100 and grounding["colour"]["whole"] >= COLOUR_GROUNDING_FLOOR, grounding
    assert grounding["shape"]["whole"] >= SHAPE_GROUNDING_FLOOR, grounding


def test_the_tracker_propagates_alike_in_bf16_and_fp32(eval_set):
    """On CUDA samstream runs under bf16 autocast. The SAM head picks one of its mask candidates by their predicted
    IoU; models before session 36 never learned those predictions, they tied, and under bf16 the pick fell on an
    untrained candidate whose masks covered the frame. Objects of a held-out video, conditioned on their true masks
    on frame 0, are propagated over the next 4 frames in both precisions."""
    if not cpu_has_native_bf16():  # then bf16 is refused with a clear error (it runs on CUDA)
        with pytest.raises(ModelLoadError, match="bf16"):
            load_segmenter(None, device="cpu", precision="bf16")
        return
    data = load_dataset(eval_set, "videos")
    video = data["videos"][0]
    frames = [frame.rgb for _, frame in zip(range(5), VideoFileSource(eval_set / video["file"]))]
    annotations = [a for a in data["annotations"] if a["video_id"] == video["id"] and a["segmentations"][0]]
    first = {a["id"]: decode_rle(a["segmentations"][0]) for a in annotations[:4]}
    assert len(first) >= 2
    propagated = {}
    for precision in ("fp32", "bf16"):
        segmenter = load_segmenter(None, device="cpu", precision=precision)
        memory = segmenter.new_memory()
        memory.condition(segmenter.encode_frame(frames[0]), first)
        propagated[precision] = [memory.propagate(segmenter.encode_frame(rgb)) for rgb in frames[1:]]

    def iou(a: np.ndarray, b: np.ndarray) -> float:
        return float((a & b).sum() / max((a | b).sum(), 1))

    truth = {a["id"]: a["segmentations"] for a in annotations}
    for t, (full, half) in enumerate(zip(propagated["fp32"], propagated["bf16"]), start=1):
        assert set(full) == set(half) == set(first)
        for obj in first:
            target = decode_rle(truth[obj][t]) if truth[obj][t] else np.zeros_like(first[obj])
            assert iou(full[obj][0], half[obj][0]) >= 0.8, (t, obj)
            assert half[obj][0].sum() <= 3 * max(target.sum(), first[obj].sum())  # never the whole frame
            if target.sum() > 50:
                assert iou(full[obj][0], target) >= 0.4, (t, obj)
