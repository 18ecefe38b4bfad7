"""Spatial rules: which phrasings they read, how a detection's masks become instances, what each selector picks,
and that one detector call answers a batch of instructions with them."""

import numpy as np
import pytest

from samstream.model.segmenter import Detections
from samstream.model.spatial import SpatialQuery, detect_with_spatial_rules, parse_spatial, select, split_instances


@pytest.mark.parametrize("text, expected", [
    ("the leftmost circle", SpatialQuery("circle", side="left")),
    ("The red circle on the left.", SpatialQuery("red circle", side="left")),
    ("the square that is on the right", SpatialQuery("square", side="right")),
    ("the star furthest to the top", SpatialQuery("star", side="top")),
    ("the bottom hexagon", SpatialQuery("hexagon", side="bottom")),
    ("the upper box", SpatialQuery("box", side="top")),
    ("the largest circle", SpatialQuery("circle", rank="largest")),
    ("the triangle that is smallest", SpatialQuery("triangle", rank="smallest")),
    ("the tiniest striped star", SpatialQuery("striped star", rank="smallest")),
    ("the two largest circles", SpatialQuery("circles", rank="largest", count=2)),
    ("all three smallest boxes", SpatialQuery("boxes", rank="smallest", count=3)),
    ("the circle left of the square", SpatialQuery("circle", anchor="square", relation="left")),
    ("the star that is below the blue hexagon", SpatialQuery("star", anchor="blue hexagon", relation="bottom")),
    ("the cup to the right of the plate", SpatialQuery("cup", anchor="plate", relation="right")),
    ("the person in the red jacket on the left",
     SpatialQuery("person in the red jacket", noun_level="simple", side="left")),
])
def test_the_rules_read_a_noun_phrase_and_its_selector(text, expected):
    assert parse_spatial(text) == expected


@pytest.mark.parametrize("text", [
    "circle", "the red circle", "both circles", "the two circles",  # no selector: the model answers
    "the thing that is largest", "whatever is biggest", "the one on the left",  # no noun phrase to ask for
    "the circle left of the square that is red",  # the anchor is not one noun phrase
])
def test_the_rules_leave_other_instructions_to_the_model(text):
    assert parse_spatial(text) is None


def disc(cx: int, cy: int, r: int, size: int = 64) -> np.ndarray:
    y, x = np.mgrid[:size, :size]
    return (x - cx) ** 2 + (y - cy) ** 2 <= r * r


def detections(masks: list[np.ndarray], scores: list[float]) -> Detections:
    return Detections(masks=np.stack(masks), scores=np.array(scores, np.float32), presence=0.9)


def test_a_mask_over_several_objects_splits_into_one_instance_each():
    union = disc(10, 10, 5) | disc(40, 20, 8) | disc(30, 50, 3)
    speck = np.zeros((64, 64), bool)
    speck[60, 60] = True
    found = detections([union | speck, disc(40, 20, 8), disc(10, 50, 6)], [0.8, 0.7, 0.3])
    pieces = split_instances(found)
    # the speck is too small, the second detection repeats a piece, the third scores under half the best
    assert sorted(p.area for p in pieces) == sorted(int(disc(*c).sum()) for c in [(10, 10, 5), (40, 20, 8), (30, 50, 3)])
    assert all(p.score == pytest.approx(0.8) for p in pieces)
    assert split_instances(Detections(np.zeros((0, 64, 64), bool), np.zeros(0, np.float32))) == []


def test_each_selector_picks_its_instance():
    left, big, low = disc(8, 30, 4), disc(35, 20, 10), disc(50, 55, 6)
    pieces = split_instances(detections([left | big | low], [0.9]))
    picked = lambda query, anchors=None: [p.centre for p in select(query, pieces, anchors)]  # noqa: E731
    assert picked(SpatialQuery("c", side="left")) == [pytest.approx((8, 30))]
    assert picked(SpatialQuery("c", side="bottom")) == [pytest.approx((50, 55))]
    assert picked(SpatialQuery("c", rank="largest")) == [pytest.approx((35, 20))]
    assert picked(SpatialQuery("c", rank="smallest", count=2)) == [pytest.approx((8, 30)), pytest.approx((50, 55))]
    anchor = split_instances(detections([disc(30, 40, 4)], [0.9]))
    assert picked(SpatialQuery("c", anchor="a", relation="bottom"), anchor) == [pytest.approx((50, 55))]
    assert picked(SpatialQuery("c", anchor="a", relation="left"), anchor) == [pytest.approx((8, 30))]
    assert picked(SpatialQuery("c", anchor="a", relation="left"), []) == []  # no anchor found: nothing


def test_one_detector_call_answers_rules_and_the_models_instructions_together():
    calls = []
    objects = {"circle": [disc(8, 30, 4) | disc(40, 30, 6)], "square": [disc(25, 10, 5)]}

    def detect(texts, levels):
        calls.append(list(zip(texts, levels)))
        return [detections(objects.get(text, [disc(30, 30, 9)]), [0.1 if text in objects else 0.6]) for text in texts]

    texts = ["the leftmost circle", "the largest circle", "the circle right of the square", "the red circle"]
    found = detect_with_spatial_rules(detect, texts, ["simple", "simple", "simple", "concept"])
    assert calls == [[("the leftmost circle", "simple"), ("circle", "concept"), ("the largest circle", "simple"),
                      ("the circle right of the square", "simple"), ("square", "concept"),
                      ("the red circle", "concept")]]  # each phrase once
    # a rule's pick scores as sure as the model is of the whole instruction (0.6), not of the bare noun (0.1)
    assert [float(f.scores[0]) for f in found] == pytest.approx([0.6, 0.6, 0.6, 0.6])
    centres = [np.argwhere(f.masks[0]).mean(0)[::-1] for f in found[:3]]
    assert centres[0] == pytest.approx((8, 30)) and centres[1] == pytest.approx((40, 30))
    assert centres[2] == pytest.approx((40, 30))
    assert np.array_equal(found[3].masks[0], disc(30, 30, 9))  # not read by a rule: the detector's own answer
    assert all(f.presence == 0.9 for f in found)
    # a rule's answer carries every instance it chose among, for a tracker to follow them all
    largest = found[1].selection
    assert len(largest.candidates) == 2 and largest.count == 1 and len(largest.picked) == 1
    assert np.array_equal(largest.candidates.masks[largest.picked[0]], found[1].masks[0])
    assert sorted(largest.candidates.scores.tolist()) == pytest.approx([0.1, 0.6])  # only the pick is raised
    assert found[3].selection is None
