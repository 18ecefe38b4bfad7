"""Hungarian matching and the SAM3 losses on hand-made predictions."""

import pytest
import torch

from samstream.train.losses import (LossWeights, alignment_loss, box_giou, detection_loss, match, match_others,
                                     tracker_loss)
from samstream.train.world_batches import DetectionTarget


class Out:
    def __init__(self, logits, boxes, masks, presence):
        self.pred_logits, self.pred_boxes, self.pred_masks = logits, boxes, masks
        self.presence_logits, self.semantic_seg = presence, None


def target():
    masks = torch.zeros(2, 8, 8)
    masks[0, :4, :4] = 1
    masks[1, 4:, 4:] = 1
    boxes = torch.tensor([[0.0, 0.0, 0.5, 0.5], [0.5, 0.5, 1.0, 1.0]])
    return DetectionTarget(masks, boxes, torch.zeros(8, 8, dtype=torch.bool))


def prediction(t, order=(2, 0)):
    """4 queries; query order[k] predicts target k exactly and confidently, the others are junk."""
    logits = torch.full((4,), -6.0)
    boxes = torch.tensor([[0.1, 0.1, 0.2, 0.2]] * 4)
    masks = torch.full((4, 8, 8), -8.0)
    for k, q in enumerate(order):
        logits[q] = 6.0
        boxes[q] = t.boxes[k]
        masks[q] = t.masks[k] * 16 - 8
    return logits, boxes, masks


def test_giou_of_known_boxes():
    a = torch.tensor([[0.0, 0.0, 2.0, 2.0]])
    b = torch.tensor([[1.0, 1.0, 3.0, 3.0], [0.0, 0.0, 2.0, 2.0], [4.0, 0.0, 6.0, 2.0]])
    # IoU 1/7, hull 9 -> 1/7 - 2/9; identical -> 1; disjoint, hull 12, union 8 -> -1/3
    assert torch.allclose(box_giou(a, b), torch.tensor([[1 / 7 - 2 / 9, 1.0, -1 / 3]]), atol=1e-6)


def test_matching_finds_the_queries_that_predict_each_target():
    t = target()
    q, k = match(*prediction(t, order=(2, 0)), t, LossWeights())
    assert dict(zip(k.tolist(), q.tolist())) == {0: 2, 1: 0}


def test_perfect_predictions_cost_almost_nothing_and_wrong_ones_cost_more():
    t = target()
    good = detection_loss(Out(*[x[None] for x in prediction(t)], torch.tensor([[6.0]])), [t], LossWeights())
    assert good["box_l1"] < 1e-6 and good["giou"] < 1e-5 and good["dice"] < 0.01 and good["cls"] < 0.01
    logits, boxes, masks = prediction(t)
    masks = masks.flip(-1)  # right places, wrong masks
    bad = detection_loss(Out(logits[None], boxes[None], masks[None], torch.tensor([[-6.0]])), [t], LossWeights())
    assert bad["dice"] > 1.0 and bad["mask_bce"] > 1.0 and bad["presence"] > good["presence"] * 100


def test_a_negative_teaches_only_presence():
    t = target()
    empty = DetectionTarget(torch.zeros(0, 8, 8), torch.zeros(0, 4), torch.zeros(8, 8, dtype=torch.bool))
    logits, boxes, masks = prediction(t)
    out = Out(logits[None], boxes[None], masks[None].requires_grad_(), torch.tensor([[3.0]], requires_grad=True))
    losses = detection_loss(out, [empty], LossWeights())
    assert losses["cls"] == 0 and losses["dice"] == 0 and losses["presence"] > 1.0
    losses["loss"].backward()
    assert out.presence_logits.grad.abs().sum() > 0


def test_a_negative_can_also_teach_query_scores():
    t = target()
    empty = DetectionTarget(torch.zeros(0, 8, 8), torch.zeros(0, 4), torch.zeros(8, 8, dtype=torch.bool))
    logits, boxes, masks = prediction(t)
    logits = logits.clone().requires_grad_()
    out = Out(logits[None], boxes[None], masks[None], torch.tensor([[3.0]]))
    losses = detection_loss(out, [empty], LossWeights(), negative_queries=True)
    assert losses["cls"] > 0 and losses["dice"] == 0
    losses["loss"].backward()
    assert (logits.grad > 0).all()  # every query's score is pushed down
    confident = detection_loss(Out(torch.full_like(logits, 8.0)[None], boxes[None], masks[None], torch.tensor([[3.0]])),
                               [empty], LossWeights(), negative_queries=True)
    assert confident["cls"] > losses["cls"]


def test_tracker_loss_teaches_masks_where_present_and_scores_everywhere():
    targets = torch.zeros(2, 8, 8)
    targets[0, 2:6, 2:6] = 1  # item 1: the object has gone
    logits = (targets * 16 - 8).clone().requires_grad_()
    right = tracker_loss(logits, torch.tensor([5.0, -5.0]), targets, LossWeights())
    wrong = tracker_loss(logits, torch.tensor([-5.0, 5.0]), targets, LossWeights())
    assert right["track_score"] < 0.01 < wrong["track_score"]
    assert right["track_mask"] < 0.1


def test_tracker_loss_trains_the_best_candidate_and_every_predicted_iou():
    """SAM2 / SAM3: of the SAM head's candidates only the best learns the mask; the predicted IoU of every one learns
    its real IoU, so the tracker's pick (the largest prediction) means something and no rounding can flip it."""
    targets = torch.zeros(2, 8, 8)
    targets[0, 2:6, 2:6] = 1  # item 1: the object has gone (no mask or IoU to learn)
    right = targets * 16 - 8
    wrong = torch.full((2, 8, 8), -8.0)
    wrong[:, :4] = 8.0  # the top half: IoU 8 / 40 with the target
    candidates = torch.stack([wrong, right, -right], dim=1).requires_grad_()  # (P, M=3, m, m)
    real = torch.tensor([[0.2, 1.0, 0.0], [0.0, 0.0, 0.0]])
    scores = torch.tensor([5.0, -5.0])
    exact = tracker_loss(candidates, scores, targets, LossWeights(), iou_predictions=real.clone().requires_grad_())
    alone = tracker_loss(right, scores, targets, LossWeights())
    assert float((exact["track_mask"]).detach()) == pytest.approx(float((alone["track_mask"]).detach()))  # the best candidate's loss only
    assert float((exact["track_iou"]).detach()) == pytest.approx(0.0, abs=1e-6)
    exact["loss"].backward()
    grad = candidates.grad[0].flatten(1).abs().sum(-1)
    assert grad[1] > 0 and grad[0] == 0 and grad[2] == 0  # the others' masks are left alone
    tied = torch.full((2, 3), 0.5, requires_grad=True)  # an untrained head: every candidate "0.5"
    loss = tracker_loss(candidates.detach(), scores, targets, LossWeights(), iou_predictions=tied)
    assert float((loss["track_iou"]).detach()) == pytest.approx((0.3 + 0.5 + 0.5) / 3)  # only the item whose object is there
    loss["loss"].backward()
    assert tied.grad[0, 1] < 0 < tied.grad[0, 2] and torch.all(tied.grad[1] == 0)  # right up, wrong down
    assert float((loss["loss"]).detach()) == pytest.approx(float((loss["track_mask"] + loss["track_score"] + loss["track_iou"]).detach()))


def test_alignment_prefers_each_matched_query_scoring_its_own_instruction_highest():
    texts = ["circle", "square", "circle", "star"]
    matches = [(torch.tensor([1]), torch.tensor([0])), (torch.tensor([0, 2]), torch.tensor([0, 1])),
               (torch.tensor([3]), torch.tensor([0])), (torch.zeros(0, dtype=torch.long),) * 2]  # sample 3: negative
    own = torch.tensor([[t == u for u in texts] for t in texts], dtype=torch.float32)  # same text = own
    aligned = torch.zeros(4, 4, 4)
    aligned[:] = own[:, None, :] * 8 - 4  # every query scores its sample's instruction (and its twins) high
    swapped = aligned.roll(1, dims=-1)  # ... or someone else's
    good, bad = alignment_loss(aligned, matches, texts), alignment_loss(swapped, matches, texts)
    assert good < 0.01 < 1.0 < bad  # < 0.01: the twin "circle" columns count as own, not as negatives
    flat = alignment_loss(torch.zeros(4, 4, 4), matches, texts)  # scores blind to the text: log(4 / own count)
    expected = torch.tensor([4 / 2, 4 / 1, 4 / 1, 4 / 2]).log().mean()  # rows: s0 q1, s1 q0, s1 q2, s2 q3
    assert torch.isclose(flat, expected)


def test_alignment_of_a_batch_without_matches_is_zero_but_keeps_the_graph():
    scores = torch.randn(2, 3, 2, requires_grad=True)
    loss = alignment_loss(scores, [(torch.zeros(0, dtype=torch.long),) * 2] * 2, ["a", "b"])
    assert loss.item() == 0 and loss.requires_grad


def with_others(t: DetectionTarget) -> DetectionTarget:
    """`t`'s first object as the target and its second as another object in the frame."""
    return DetectionTarget(t.masks[:1], t.boxes[:1], t.ignore, t.masks[1:], t.boxes[1:])


def test_other_objects_go_to_free_queries_and_teach_their_masks_only_when_asked():
    t = with_others(target())
    logits, boxes, masks = prediction(target(), order=(2, 0))  # query 2 on the target, query 0 on the other object
    out = Out(logits[None], boxes[None], masks[None], torch.tensor([[6.0]]))
    matches = [match(logits, boxes, masks, t, LossWeights())]
    assert matches[0][0].tolist() == [2]
    q, k = match_others(boxes, masks, t, matches[0][0], LossWeights())
    assert q.tolist() == [0] and k.tolist() == [0]
    assert "instances" not in detection_loss(out, [t], LossWeights())  # off by default (SAM3's losses)
    right = detection_loss(out, [t], LossWeights(instances=1.0))
    assert right["instances"] < 0.01
    copied = masks.clone()
    copied[:] = masks[2]  # every query a copy of the target's mask: the semantic-mask collapse
    collapsed = detection_loss(Out(logits[None], boxes[None], copied[None], torch.tensor([[6.0]])), [t],
                               LossWeights(instances=1.0))
    assert collapsed["instances"] > 5.0 and collapsed["dice"] < 0.01  # the target alone cannot tell them apart


def test_other_objects_never_take_a_targets_query():
    t = with_others(target())
    logits, boxes, masks = prediction(target(), order=(2, 0))
    q, _ = match_others(boxes, masks, t, torch.tensor([0]), LossWeights())  # query 0 is taken: the next best
    assert q.tolist() != [0] and len(q) == 1
    none = DetectionTarget(t.masks, t.boxes, t.ignore)
    assert len(match_others(boxes, masks, none, torch.tensor([2]), LossWeights())[0]) == 0
