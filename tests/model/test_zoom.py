"""Zoomed views of candidates (samstream.model.zoom) and zoomed re-scoring in the SAM3 segmenter."""

import dataclasses
import json

import cv2
import numpy as np
import pytest

from samstream.errors import ModelLoadError
from samstream.masks import mask_iou
from samstream.model.loader import BUILTIN_TINY, load_segmenter, save_segmenter_model
from samstream.model.tiny import build_tiny_model
from samstream.model.zoom import (ZoomRescore, ZoomView, best_matching_query, combine, cut_views, logits_to_frame,
                                  mask_to_view, view_around)


def _disc(height: int, width: int, cx: float, cy: float, r: float) -> np.ndarray:
    mask = np.zeros((height, width), np.uint8)
    cv2.circle(mask, (round(cx * 16), round(cy * 16)), round(r * 16), 1, -1, shift=4)
    return mask.astype(bool)


def test_view_is_centred_on_the_object_and_sized_by_fill():
    mask = _disc(120, 200, cx=150.0, cy=40.0, r=10.0)
    view = view_around(mask, fill=0.25)
    assert abs(view.cx - 150.5) < 1 and abs(view.cy - 40.5) < 1  # continuous coordinates: pixel i spans [i, i+1]
    assert 38 < view.side < 46  # radius ~10.5 px / 0.25
    assert view_around(np.zeros((10, 10), bool), 0.3) is None
    assert view_around(_disc(50, 50, 25, 25, 0.4), 0.3).side == 8.0  # a speck is not magnified without bound


def test_cut_view_magnifies_the_object_to_fill_the_view():
    rgb = np.full((120, 200, 3), 30, np.uint8)
    mask = _disc(120, 200, cx=150.0, cy=40.0, r=10.0)
    rgb[mask] = (250, 10, 10)
    rgb[:, :20] = (0, 200, 0)  # something far away that must not be in the view
    view = view_around(mask, fill=0.3)
    crop = cut_views(rgb, [view], 64)[0]
    red = (crop[..., 0] > 128) & (crop[..., 1] < 128)
    assert red[32, 32] and red[28:36, 28:36].all()  # the object is at the view's centre
    radius = np.sqrt(red.sum() / np.pi) / 64
    assert 0.25 < radius < 0.33  # and fills it as asked
    assert not (crop[..., 1] > 128).any()


def test_cut_view_shrinks_a_large_region_by_area_and_repeats_edges_outside_the_frame():
    rgb = np.zeros((300, 300, 3), np.uint8)
    rgb[::2] = 255  # one-pixel stripes: area averaging gives grey, point sampling would alias
    crop = cut_views(rgb, [ZoomView(150, 150, 280)], 70)[0]
    assert 100 < crop.mean() < 155 and crop.std() < 20
    edge = cut_views(np.dstack([np.tile(np.arange(100, dtype=np.uint8), (100, 1))] * 3), [ZoomView(0, 50, 40)], 40)[0]
    assert (edge[:, :15] == 0).all()  # left of the frame: its first column repeated


def test_masks_round_trip_between_frame_and_view():
    mask = _disc(120, 200, cx=60.0, cy=70.0, r=12.0)
    view = view_around(mask, fill=0.35)
    small = mask_to_view(mask, view, 64)
    assert small.sum() > 0.5 * np.pi * (0.35 * 64) ** 2
    logits = np.where(small, 5.0, -5.0).astype(np.float32)
    back = logits_to_frame(logits, view, 120, 200)
    assert mask_iou(back[None], mask[None])[0, 0] > 0.85
    assert not back[:, 120:].any()  # outside the view: nothing


def test_zoom_settings_are_checked_and_scores_combine_geometrically():
    for bad in ({"fill": 0.9}, {"weight": 1.5}, {"max_candidates": 0}):
        with pytest.raises(ValueError):
            ZoomRescore(**bad)
    whole, zoomed = np.array([0.64, 0.5, 0.0]), np.array([0.25, 0.5, 1.0])
    assert np.allclose(combine(whole, zoomed, 0.5), [0.4, 0.5, 0.0])
    assert np.allclose(combine(whole, zoomed, 0.0), whole) and np.allclose(combine(whole, zoomed, 1.0), zoomed)


def test_best_matching_query_weighs_score_by_overlap():
    candidate = np.zeros((8, 8), bool)
    candidate[2:6, 2:6] = True
    masks = np.zeros((3, 8, 8), bool)
    masks[0] = candidate  # exact, low score
    masks[1, 2:6, 2:4] = True  # half of it, high score
    masks[2, 6:, 6:] = True  # elsewhere, highest score
    best, value, overlap = best_matching_query(np.array([0.5, 0.9, 1.0]), masks, candidate)
    assert (best, overlap) == (0, 1.0) and value == pytest.approx(0.5)
    best, value, overlap = best_matching_query(np.array([0.3, 0.9, 1.0]), masks, candidate)
    assert (best, overlap) == (1, 0.5) and value == pytest.approx(0.45)


def _frame() -> np.ndarray:
    rgb = np.full((96, 128, 3), 40, np.uint8)
    for (x, y, r), colour in zip([(30, 30, 12), (90, 60, 8), (60, 75, 15)], [(220, 30, 30), (30, 200, 40), (40, 40, 230)]):
        cv2.circle(rgb, (x, y), r, colour, -1)
    return rgb


def test_rescoring_with_weight_zero_keeps_the_whole_frame_detections(tiny_segmenter):
    """The zoomed pass runs (real detector on real views), yet with weight 0 the final scores are the whole
    frame's: the same candidates, scores and masks, cut to `max_candidates`."""
    rgb = _frame()
    plain = tiny_segmenter.detect(tiny_segmenter.encode_frame(rgb), ["a red circle", "a blue circle"], ["concept", "simple"])
    assert max(len(d) for d in plain) > 1  # the cut to one candidate is exercised
    zoomed = dataclasses.replace(tiny_segmenter.info, zoom_rescore=ZoomRescore(weight=0.0, max_candidates=1))
    segmenter = load_segmenter(BUILTIN_TINY, device="cpu")
    segmenter.info = zoomed
    features = segmenter.encode_frame(rgb)
    assert features.data.rgb is rgb  # kept only when re-scoring needs it
    rescored = segmenter.detect(features, ["a red circle", "a blue circle"], ["concept", "simple"])
    for a, b in zip(plain, rescored):
        k = min(len(a), 1)
        assert len(b) == k
        assert np.allclose(a.scores[:k], b.scores) and np.array_equal(a.masks[:k], b.masks)
    assert tiny_segmenter.encode_frame(rgb).data.rgb is None


def test_rescoring_changes_scores_by_what_the_zoomed_view_shows(tiny_segmenter):
    rgb = _frame()
    segmenter = load_segmenter(BUILTIN_TINY, device="cpu")
    segmenter.info = dataclasses.replace(segmenter.info, zoom_rescore=ZoomRescore(weight=1.0, refine=True))
    plain = tiny_segmenter.detect(tiny_segmenter.encode_frame(rgb), ["a red circle"], ["complex"])[0]
    rescored = segmenter.detect(segmenter.encode_frame(rgb), ["a red circle"], ["complex"])[0]
    assert len(rescored) == min(len(plain), 8)
    assert np.all(np.diff(rescored.scores) <= 0) and np.all((rescored.scores >= 0) & (rescored.scores <= 1))
    assert not np.allclose(np.sort(rescored.scores), np.sort(plain.scores[: len(rescored)]))
    assert rescored.masks.shape[1:] == rgb.shape[:2]


def test_zoom_rescore_comes_from_the_model_folder_and_is_checked(tmp_path):
    model, tokenizer = build_tiny_model(seed=7)
    save_segmenter_model(model, tokenizer, tmp_path / "m")
    meta = tmp_path / "m" / "samstream.json"
    meta.write_text(json.dumps({"zoom_rescore": {"fill": 0.3, "weight": 0.6}}))
    info = load_segmenter(str(tmp_path / "m"), device="cpu").info
    assert info.zoom_rescore == ZoomRescore(fill=0.3, weight=0.6)
    assert load_segmenter(BUILTIN_TINY, device="cpu").info.zoom_rescore is None
    for bad, message in (({"fill": 2}, "fill must be in"), ({"zoom": 2}, "unexpected keyword"), (0.5, "must be null or an object")):
        meta.write_text(json.dumps({"zoom_rescore": bad}))
        with pytest.raises(ModelLoadError, match=message):
            load_segmenter(str(tmp_path / "m"), device="cpu")
