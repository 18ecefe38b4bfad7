"""How a trained model's thresholds are chosen: the score threshold weighs positives and negatives by a stated
share (not by how many of each were drawn), the birth threshold by tracking clips at each candidate bar; and
whether the queries are instances or copies of one mask."""

import numpy as np
import pytest
import torch

from samstream.train.birth import birth_candidates, pick_birth, pick_margin
from samstream.train.calibrate import pick_presence_gate, pick_threshold, separation_of
from samstream.train.world_batches import DetectionTarget

THRESHOLDS = np.array([0.1, 0.2, 0.3])
# A weak model: positives' IoU falls as the threshold rises, negatives come back empty more often.
POSITIVE_IOU = np.array([[0.8, 0.6, 0.1], [0.6, 0.4, 0.0]])  # gIoU 0.7, 0.5, 0.05
NEGATIVE_EMPTY = np.array([[0, 1, 1], [0, 1, 1], [0, 0, 1], [0, 0, 0]], dtype=bool)  # no-target accuracy 0, 0.5, 0.75


@pytest.mark.parametrize("share, chosen", [(0.0, 0.1), (0.25, 0.1), (0.5, 0.2), (0.9, 0.3)])
def test_the_stated_negative_share_decides_the_score_threshold(share, chosen):
    picked = pick_threshold(POSITIVE_IOU, NEGATIVE_EMPTY, share, THRESHOLDS)
    assert picked["score_threshold"] == chosen
    giou, empty = POSITIVE_IOU.mean(0), NEGATIVE_EMPTY.mean(0)
    k = list(THRESHOLDS).index(chosen)
    assert picked["objective"] == pytest.approx((1 - share) * giou[k] + share * empty[k], abs=1e-4)
    assert picked["giou"] == pytest.approx(giou[k]) and picked["no_target_accuracy"] == pytest.approx(empty[k])
    assert set(picked["by_threshold"]) == {"0.1", "0.2", "0.3"}


def test_drawing_more_negatives_does_not_move_the_threshold():
    """The old objective (negatives counting 1 or 0 in one mean) moved with the share of negatives drawn."""
    once = pick_threshold(POSITIVE_IOU, NEGATIVE_EMPTY, 0.5, THRESHOLDS)
    many = pick_threshold(POSITIVE_IOU, np.repeat(NEGATIVE_EMPTY, 20, axis=0), 0.5, THRESHOLDS)
    assert once["score_threshold"] == many["score_threshold"] == 0.2
    pooled = np.concatenate([POSITIVE_IOU, np.repeat(NEGATIVE_EMPTY, 20, axis=0)]).mean(0)
    assert THRESHOLDS[int(np.argmax(pooled))] == 0.3  # what one pooled mean would have picked


def test_no_negatives_drawn_leaves_positives_to_decide():
    picked = pick_threshold(POSITIVE_IOU, np.zeros((0, 3), bool), 0.25, THRESHOLDS)
    assert picked["score_threshold"] == 0.1 and picked["negatives"] == 0


def _gated(presence_pos: list[float], presence_neg: list[float], gates: np.ndarray):
    """POSITIVE_IOU / NEGATIVE_EMPTY as each presence gate leaves them: a sample under the gate returns nothing."""
    pos = np.stack([np.where(np.array(presence_pos)[:, None] >= g, POSITIVE_IOU, 0.0) for g in gates], 1)
    neg = np.stack([np.where(np.array(presence_neg)[:, None] >= g, NEGATIVE_EMPTY, True) for g in gates], 1)
    return pos, neg


def test_a_presence_gate_that_drops_only_negatives_wins():
    gates = np.array([0.0, 0.5, 0.9])
    # positives are present (0.95, 0.8), negatives mostly not: the 0.5 gate empties three of four negatives
    pos, neg = _gated([0.95, 0.8], [0.1, 0.2, 0.3, 0.7], gates)
    picked = pick_presence_gate(pos, neg, 0.25, gates, THRESHOLDS)
    assert picked["presence_threshold"] == 0.5
    assert picked["score_threshold"] == 0.1  # behind the gate the lowest bar keeps the positives' best masks
    assert picked["giou"] == pytest.approx(0.7) and picked["no_target_accuracy"] == pytest.approx(0.75)
    assert picked["by_presence_threshold"]["0.9"]["giou"] == pytest.approx(0.4)  # 0.9 drops a positive too
    ungated = picked["by_presence_threshold"]["0"]  # without it the best bar (0.1) keeps every negative's mask
    assert ungated["score_threshold"] == 0.1 and ungated["no_target_accuracy"] == 0.0
    assert picked["objective"] == pytest.approx(0.75 * 0.7 + 0.25 * 0.75)
    assert picked["objective"] > ungated["objective"]


def test_a_presence_gate_that_helps_nothing_stays_off():
    gates = np.array([0.0, 0.5])
    pos, neg = _gated([0.95, 0.8], [0.9, 0.9, 0.9, 0.9], gates)  # negatives look present: the gate changes nothing
    picked = pick_presence_gate(pos, neg, 0.25, gates, THRESHOLDS)
    assert picked["presence_threshold"] is None  # a tie keeps the lower gate, and gate 0 is none
    assert picked == {**pick_threshold(POSITIVE_IOU, NEGATIVE_EMPTY, 0.25, THRESHOLDS), "presence_threshold": None,
                      "by_presence_threshold": picked["by_presence_threshold"]}


def test_birth_candidates_start_at_the_score_threshold_and_stay_below_one():
    assert birth_candidates(0.05) == [0.05, 0.1, 0.15, 0.2, 0.25, 0.35]
    assert birth_candidates(0.8) == [0.8, 0.85, 0.9, 0.95]


def test_the_birth_bar_with_the_best_tracking_wins():
    results = {0.05: {"HOTA": 0.30, "IDF1": 0.35, "no_target_accuracy": 0.2},
               0.1: {"HOTA": 0.28, "IDF1": 0.33, "no_target_accuracy": 0.6},
               0.2: {"HOTA": 0.05, "IDF1": 0.06, "no_target_accuracy": 1.0}}
    picked = pick_birth(results, negative_share=0.25)
    assert picked["birth_threshold"] == 0.1  # 0.75 x 0.28 + 0.25 x 0.6 = 0.36 beats 0.275 and 0.2875
    assert picked["objective"] == pytest.approx(0.36)
    assert list(picked["by_birth_threshold"]) == ["0.05", "0.1", "0.2"]
    assert pick_birth(results, negative_share=0.0)["birth_threshold"] == 0.05


def test_equal_tracking_prefers_the_lower_birth_bar():
    same = {"HOTA": 0.4, "IDF1": 0.4, "no_target_accuracy": None}
    assert pick_birth({0.3: same, 0.2: same}, 0.25)["birth_threshold"] == 0.2


def _two_objects():
    masks = torch.zeros(2, 8, 8)
    masks[0, :4, :4] = 1
    masks[1, 4:, 4:] = 1
    boxes = torch.tensor([[0.0, 0.0, 0.5, 0.5], [0.5, 0.5, 1.0, 1.0]])
    return DetectionTarget(masks[:1], boxes[:1], torch.zeros(8, 8, dtype=torch.bool), masks[1:], boxes[1:])


def test_queries_that_copy_one_mask_are_told_apart_from_instances():
    target = _two_objects()
    objects = torch.cat([target.masks, target.others_masks]) > 0.5
    instances = torch.zeros(4, 8, 8, dtype=torch.bool)
    instances[:2] = objects  # two queries, one object each; the rest empty
    overlap, best = separation_of(instances, target)
    assert overlap == 0.0 and best == [1.0, 1.0]
    copies = objects.any(0).expand(4, 8, 8)  # every query the union of both: the semantic-mask collapse
    overlap, best = separation_of(copies, target)
    assert overlap == 1.0 and best == [0.5, 0.5]
    alone = DetectionTarget(target.masks, target.boxes, target.ignore)  # one object: nothing to separate
    assert separation_of(copies, alone) is None


def test_the_box_crop_margin_with_the_best_tracking_wins_and_ties_keep_masks_whole():
    def row(objective):
        return {"objective": objective, "birth_threshold": 0.1, "HOTA": objective, "IDF1": objective,
                "no_target_accuracy": 0.5}
    chosen = pick_margin({None: row(0.30), 0.03: row(0.36), 0.08: row(0.33)})
    assert chosen["box_crop_margin"] == 0.03 and chosen["objective"] == 0.36
    assert list(chosen["by_box_crop_margin"]) == ["none", "0.03", "0.08"]
    assert pick_margin({None: row(0.3), 0.03: row(0.3)})["box_crop_margin"] is None
    assert pick_margin({0.08: row(0.3), 0.03: row(0.3)})["box_crop_margin"] == 0.03
