"""gIoU / cIoU / P@0.5 / no-target accuracy on hand-computed cases, IoU cross-checked with pycocotools."""

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from samstream.eval.segmentation import (OUTCOMES, score_sample, summarize, summarize_kinds, summarize_outcomes,
                                         summarize_sizes, summarize_templates)


def square(size, y, x, h, w):
    m = np.zeros(size, bool)
    m[y: y + h, x: x + w] = True
    return m


def test_hand_computed_levels():
    size = (40, 40)
    truth_a = square(size, 0, 0, 10, 10)  # 100 px
    half_a = square(size, 0, 0, 10, 5)  # 50 px inside: IoU 0.5 exactly
    truth_b = square(size, 20, 20, 4, 5)  # 20 px, predicted exactly: IoU 1
    samples = [
        score_sample("simple", half_a, truth_a),
        score_sample("simple", truth_b, truth_b),
        score_sample("simple", np.zeros(size, bool), np.zeros(size, bool)),  # negative, nothing returned: right
        score_sample("simple", square(size, 5, 5, 2, 2), np.zeros(size, bool)),  # negative, something returned
        score_sample("complex", np.zeros(size, bool), truth_b),  # missed entirely: IoU 0
    ]
    report = summarize(samples)
    simple = report["simple"]
    assert simple["samples"] == 2 and simple["negatives"] == 2
    assert simple["gIoU"] == pytest.approx(0.75)
    assert simple["cIoU"] == pytest.approx((50 + 20) / (100 + 20))  # large objects weigh more
    assert simple["P@0.5"] == pytest.approx(0.5)  # IoU must exceed 0.5
    assert simple["no_target_accuracy"] == pytest.approx(0.5)
    assert report["complex"]["gIoU"] == 0.0 and report["complex"]["no_target_accuracy"] is None
    assert "concept" not in report
    assert report["all"]["samples"] == 3 and report["all"]["gIoU"] == pytest.approx(1.5 / 3)


def test_iou_matches_pycocotools():
    rng = np.random.default_rng(0)
    for _ in range(20):
        a, b = rng.random((30, 50)) > 0.6, rng.random((30, 50)) > 0.3
        ours = score_sample("concept", a, b).iou
        rles = [mask_utils.encode(np.asfortranarray(m.astype(np.uint8))) for m in (a, b)]
        assert ours == pytest.approx(float(mask_utils.iou([rles[0]], [rles[1]], [0])[0, 0]))


def test_shapes_must_agree():
    with pytest.raises(ValueError, match="prediction is"):
        score_sample("concept", np.zeros((2, 2), bool), np.zeros((3, 3), bool))


def test_sizes_bin_by_share_of_frame():
    size = (100, 100)  # 10,000 px: small < 100 px, medium 100-399 px, large >= 400 px
    tiny = square(size, 0, 0, 9, 9)  # 81 px: small
    mid = square(size, 20, 20, 10, 10)  # 100 px: medium (the lower bound is inclusive)
    big = square(size, 50, 50, 20, 20)  # 400 px: large
    samples = [
        score_sample("concept", np.zeros(size, bool), tiny),  # missed: IoU 0
        score_sample("simple", mid, mid),  # exact: IoU 1
        score_sample("complex", square(size, 50, 50, 20, 10), big),  # half: IoU 0.5
        score_sample("complex", big, np.zeros(size, bool)),  # a negative has no size
    ]
    sizes = summarize_sizes(samples)
    assert list(sizes) == ["small", "medium", "large"]
    assert sizes["small"] == {"samples": 1, "gIoU": 0.0, "cIoU": 0.0, "P@0.5": 0.0}
    assert sizes["medium"]["gIoU"] == 1.0 and sizes["large"]["gIoU"] == pytest.approx(0.5)
    assert sum(s["samples"] for s in sizes.values()) == 3
    assert "medium" not in summarize_sizes(samples[:1] + samples[2:])


def test_kinds_split_each_level_by_instruction_kind():
    size = (20, 20)
    hit = square(size, 0, 0, 5, 5)
    samples = [
        score_sample("simple", hit, hit, "position"),  # IoU 1
        score_sample("simple", np.zeros(size, bool), hit, "position"),  # IoU 0
        score_sample("simple", hit, hit, "size"),  # IoU 1
        score_sample("concept", hit, np.zeros(size, bool), "negative"),  # something returned for nothing
        score_sample("complex", hit, hit),  # kind unknown (an older instruction file): left out of the split
    ]
    kinds = summarize_kinds(samples)
    assert list(kinds) == ["concept/negative", "simple/position", "simple/size"]  # levels in LEVELS order
    assert kinds["simple/position"]["gIoU"] == pytest.approx(0.5) and kinds["simple/size"]["gIoU"] == 1.0
    assert kinds["concept/negative"]["no_target_accuracy"] == 0.0 and kinds["concept/negative"]["samples"] == 0


def test_templates_split_a_kind_by_its_phrasing():
    size = (20, 20)
    hit = square(size, 0, 0, 5, 5)
    samples = [
        score_sample("complex", hit, hit, "function", template="complex/function/4"),
        score_sample("complex", np.zeros(size, bool), hit, "function", template="complex/function/5"),
        score_sample("complex", hit, np.zeros(size, bool), "negative", template="complex/function/5"),
        score_sample("complex", hit, hit, "function"),  # template unknown: left out
    ]
    templates = summarize_templates(samples)
    assert list(templates) == ["complex/function/4", "complex/function/5"]
    assert templates["complex/function/4"]["gIoU"] == 1.0 and templates["complex/function/5"]["gIoU"] == 0.0
    assert templates["complex/function/5"]["negatives"] == 1 and templates["complex/function/5"]["no_target_accuracy"] == 0.0


def test_outcomes_tell_grounding_errors_from_mask_errors():
    size = (40, 40)
    target = square(size, 0, 0, 10, 10)  # 100 px
    other = square(size, 20, 20, 10, 10)  # another object the instruction does not name
    nothing = np.zeros(size, bool)
    samples = [
        score_sample("simple", target, target, "position", other),  # found
        score_sample("simple", nothing, target, "position", other),  # nothing returned
        score_sample("simple", other, target, "position", other),  # the other object
        score_sample("simple", target | other, target, "position", other),  # IoU 0.5: still found
        score_sample("simple", square(size, 0, 0, 10, 6) | other, target, "position", other),  # 60 on it, 100 off
        score_sample("simple", square(size, 0, 0, 10, 4), target, "position", other),  # 40% of it, nothing else
        score_sample("concept", target, nothing, "negative", other),  # a negative has no outcome
        score_sample("complex", target, target),  # other objects unknown: no outcome
    ]
    assert [s.outcome for s in samples] == ["found", "nothing", "wrong object", "found", "with others", "partial",
                                            None, None]
    outcomes = summarize_outcomes(samples)
    assert list(outcomes) == ["simple", "all"]  # concept had only a negative, complex no known others
    assert outcomes["simple"]["samples"] == 6
    assert outcomes["simple"]["found"] == pytest.approx(2 / 6)
    assert sum(outcomes["all"][o] for o in OUTCOMES) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="other objects"):
        score_sample("simple", target, target, "", np.zeros((5, 5), bool))
