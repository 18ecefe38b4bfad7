import numpy as np
import pytest
import torch

from samstream.data.world import make_scene, render
from samstream.errors import ModelLoadError
from samstream.model.loader import (BUILTIN_TINY, load_segmenter, read_model_meta, save_segmenter_model, shipped_folder,
                                    tracker_iou_untrained)
from samstream.model.precision import cpu_has_native_bf16
from samstream.model.tiny import build_tiny_model


def test_builtin_model_is_seeded_and_reported_untrained(tiny_segmenter):
    again = load_segmenter(BUILTIN_TINY, device="cpu")
    assert not again.info.trained and again.info.name == "builtin:tiny-random"
    for a, b in zip(tiny_segmenter.model.state_dict().values(), again.model.state_dict().values()):
        assert torch.equal(a, b)


def test_local_folder_round_trip_gives_identical_outputs(tmp_path, realshort):
    model, tokenizer = build_tiny_model(seed=7)
    save_segmenter_model(model, tokenizer, tmp_path / "m")
    loaded = load_segmenter(str(tmp_path / "m"), device="cpu")
    assert loaded.info.trained and loaded.info.name == str(tmp_path / "m")
    from samstream.streaming.sources import VideoFileSource

    rgb = next(iter(VideoFileSource(realshort))).rgb
    original = load_segmenter(BUILTIN_TINY, device="cpu")
    original.model.load_state_dict(model.state_dict())
    a = original.detect(original.encode_frame(rgb), ["a person"], ["concept"])[0]
    b = loaded.detect(loaded.encode_frame(rgb), ["a person"], ["concept"])[0]
    assert np.array_equal(a.masks, b.masks) and np.allclose(a.scores, b.scores, atol=1e-6)


def test_missing_folder_and_wrong_model_type(tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_segmenter(str(tmp_path / "nope"), device="cpu")
    model, _ = build_tiny_model()
    model.detector_model.save_pretrained(tmp_path / "detector-only")
    with pytest.raises(ModelLoadError, match="needs a 'sam3_video' checkpoint"):
        load_segmenter(str(tmp_path / "detector-only"), device="cpu")


def test_unknown_device():
    with pytest.raises(ModelLoadError, match="unknown device"):
        load_segmenter(None, device="tpu9")


def test_image_size_override_keeps_weights_and_changes_input(realshort):
    from samstream.streaming.sources import VideoFileSource

    resized = load_segmenter(BUILTIN_TINY, device="cpu", image_size=168)
    base = load_segmenter(BUILTIN_TINY, device="cpu")
    assert resized.info.image_size == 168
    a, b = resized.model.state_dict(), base.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in b if a[k].shape == b[k].shape)
    rgb = next(iter(VideoFileSource(realshort))).rgb
    features = resized.encode_frame(rgb)
    assert features.data.vision.fpn_hidden_states[0].shape[-1] == 4 * 168 // 14
    out = resized.detect(features, ["person"], ["concept"])[0]
    assert out.masks.shape[1:] == (240, 320)
    with pytest.raises(ModelLoadError, match="multiple of the patch size 14"):
        load_segmenter(BUILTIN_TINY, device="cpu", image_size=100)


def test_fp16_needs_cuda_and_auto_is_fp32_on_cpu():
    with pytest.raises(ModelLoadError, match="precision fp16 needs a CUDA device"):
        load_segmenter(BUILTIN_TINY, device="cpu", precision="fp16")
    assert load_segmenter(BUILTIN_TINY, device="cpu", precision="auto").autocast_dtype is None


def test_bf16_on_a_cpu_segments_like_fp32_where_the_cpu_has_native_bf16():
    """bf16 autocast on CPU (AVX512-BF16 / AMX): the shipped model finds the same object as in fp32; a CPU without
    native bf16 refuses it (emulated bf16 is slower than fp32)."""
    if not cpu_has_native_bf16():
        with pytest.raises(ModelLoadError, match="precision bf16: this CPU has no native bf16"):
            load_segmenter(None, device="cpu", precision="bf16")
        return
    scene = make_scene(3, 1, min_objects=3, max_objects=3)
    rgb, visible = render(scene, 0, 224, 224)
    largest = max(scene.objects, key=lambda o: visible[o.id].sum())
    text = f"the {largest.colour} {largest.shape}"
    fp32, bf16 = load_segmenter(None, device="cpu"), load_segmenter(None, device="cpu", precision="bf16")
    assert bf16.autocast_dtype == torch.bfloat16 and fp32.autocast_dtype is None
    a = fp32.detect(fp32.encode_frame(rgb), [text], ["simple"])[0]
    b = bf16.detect(bf16.encode_frame(rgb), [text], ["simple"])[0]
    union_a, union_b = a.masks.any(0), b.masks.any(0)
    assert (union_a & visible[largest.id]).sum() > 0.5 * visible[largest.id].sum()  # fp32 finds the object
    assert (union_a & union_b).sum() / (union_a | union_b).sum() > 0.9
    assert abs(float(a.scores.max()) - float(b.scores.max())) < 0.05


def _with_meta(tmp_path, meta: dict):
    import json

    model, tokenizer = build_tiny_model(seed=7)
    save_segmenter_model(model, tokenizer, tmp_path / "m")
    (tmp_path / "m" / "samstream.json").write_text(json.dumps(meta))
    return str(tmp_path / "m")


@pytest.mark.parametrize("key, value, low, high, bad", [
    ("box_crop_margin", 0.04, 0, 0.5, (0.9, -0.1, "wide", True)),
    ("presence_threshold", 0.6, 0, 1, (1.5, -0.1, "high", True)),
])
def test_optional_settings_come_from_the_model_folder_and_are_checked(tmp_path, key, value, low, high, bad):
    """box_crop_margin and presence_threshold: absent means off (SAM3's behaviour); out of range is refused."""
    assert getattr(load_segmenter(BUILTIN_TINY, device="cpu").info, key) is None
    folder = _with_meta(tmp_path, {"score_threshold": 0.3, key: value})
    assert getattr(load_segmenter(folder, device="cpu").info, key) == value
    for wrong in bad:
        _with_meta(tmp_path, {key: wrong})
        with pytest.raises(ModelLoadError, match=rf"{key} must be null or a number in \[{low:g}, {high:g}\]"):
            load_segmenter(folder, device="cpu")


def test_spatial_rules_come_from_the_model_folder_unless_the_caller_says(tmp_path):
    """Absent means off (SAM3's behaviour); the caller's choice wins; anything but true / false is refused."""
    assert load_segmenter(BUILTIN_TINY, device="cpu").info.spatial_rules is False
    assert load_segmenter(BUILTIN_TINY, device="cpu", spatial_rules=True).info.spatial_rules is True
    folder = _with_meta(tmp_path, {"score_threshold": 0.3})
    assert load_segmenter(folder, device="cpu").info.spatial_rules is False
    _with_meta(tmp_path, {"spatial_rules": True})
    assert load_segmenter(folder, device="cpu").info.spatial_rules is True
    assert load_segmenter(folder, device="cpu", spatial_rules=False).info.spatial_rules is False
    _with_meta(tmp_path, {"spatial_rules": "yes"})
    with pytest.raises(ModelLoadError, match="spatial_rules must be true or false, not 'yes'"):
        load_segmenter(folder, device="cpu")


def _trained(track_iou: float | None, *stage_tracks: bool | None, data: str = "world") -> dict:
    weights = {"track_mask": 5.0} if track_iou is None else {"track_mask": 5.0, "track_iou": track_iou}
    return {"data": data, "train_tracker": True, "loss_weights": weights,
            "stages": [{"name": f"s{i}", "train_tracker": tracks} for i, tracks in enumerate(stage_tracks)]}


def test_a_tracker_trained_without_its_iou_predictions_is_recognised_from_samstream_json():
    """Before session 36 the tracker stage never trained the SAM head's IoU predictions (no `track_iou` weight):
    their ties make bf16 pick another mask candidate than fp32 (docs/finetuning.md, Notes and limits)."""
    assert tracker_iou_untrained({"training": _trained(None, False, None)})  # a stage inherits train_tracker
    assert tracker_iou_untrained({"training": _trained(0.0, False, True)})
    assert not tracker_iou_untrained({"training": _trained(1.0, False, True)})
    assert not tracker_iou_untrained({"training": _trained(None, False, False)})  # the tracker never trained
    assert not tracker_iou_untrained({"training": _trained(None, None, data="coco")})  # COCO has no videos
    assert not tracker_iou_untrained({"score_threshold": 0.3})  # not ours: SAM3 checkpoints train their IoU head
    assert not tracker_iou_untrained(read_model_meta(shipped_folder()))


def test_loading_such_a_model_under_bf16_warns_and_fp32_does_not(tmp_path, caplog):
    folder = _with_meta(tmp_path, {"score_threshold": 0.3, "training": _trained(None, True)})
    with caplog.at_level("WARNING", logger="samstream.model.loader"):
        load_segmenter(folder, device="cpu")
    assert not caplog.records
    if not cpu_has_native_bf16():
        with pytest.raises(ModelLoadError, match="precision bf16: this CPU has no native bf16"):
            load_segmenter(folder, device="cpu", precision="bf16")
        return
    with caplog.at_level("WARNING", logger="samstream.model.loader"):
        load_segmenter(folder, device="cpu", precision="bf16")
    assert len(caplog.records) == 1
    assert "trained without its IoU predictions" in caplog.text and "--precision fp32" in caplog.text
    caplog.clear()
    _with_meta(tmp_path, {"score_threshold": 0.3, "training": _trained(1.0, True)})
    with caplog.at_level("WARNING", logger="samstream.model.loader"):
        load_segmenter(folder, device="cpu", precision="bf16")
    assert not caplog.records


def test_box_crop_keeps_each_mask_inside_its_own_box():
    from samstream.model.sam3 import BACKGROUND_LOGIT, crop_to_boxes

    logits = torch.full((2, 8, 8), 3.0)  # two queries, both "everything": one shared mask
    boxes = torch.tensor([[0.0, 0.0, 0.5, 0.5], [0.5, 0.5, 1.0, 1.0]])
    cropped = crop_to_boxes(logits, boxes, margin=0.0)
    assert (cropped[0, :4, :4] == 3).all() and (cropped[0, 4:] == -BACKGROUND_LOGIT).all()
    assert (cropped[1, 4:, 4:] == 3).all() and (cropped[1, :, :4] == -BACKGROUND_LOGIT).all()
    assert not ((cropped[0] > 0) & (cropped[1] > 0)).any()  # the two queries are now two instances
    grown = crop_to_boxes(logits, boxes, margin=0.125)  # one more cell of 8 on every side
    assert (grown[0, :5, :5] == 3).all() and (grown[0, 5:] < 0).all()
