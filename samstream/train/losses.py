"""SAM3 / SAM3-I detection losses: Hungarian matching of queries to targets (lap), query classification,
presence, box L1 + GIoU, mask BCE + dice, a semantic-mask loss; and the tracker's propagation loss.

Scores are trained to be calibrated (plain BCE, not alpha-0.25 focal: see ../shared training notes):
a query's score is p(match | present) * p(present), and SAM3 supervises p(match) only where the concept is
present, p(present) everywhere.
"""

from __future__ import annotations

import lap
import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field

from samstream.train.world_batches import DetectionTarget


class LossWeights(BaseModel):
    """Each loss term's weight (also the Hungarian matching cost's): SAM3's defaults; `[loss_weights]` in a config."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    cls: float = Field(2.0, ge=0)
    presence: float = Field(2.0, ge=0)
    box_l1: float = Field(5.0, ge=0)
    giou: float = Field(2.0, ge=0)
    mask_bce: float = Field(5.0, ge=0)
    dice: float = Field(5.0, ge=0)
    semantic: float = Field(1.0, ge=0)
    track_mask: float = Field(5.0, ge=0)
    track_score: float = Field(1.0, ge=0)
    track_iou: float = Field(1.0, ge=0)  # the SAM head's predicted IoU of each mask candidate (SAM2's iou loss: L1)
    align: float = Field(0.0, ge=0)  # instruction-query InfoNCE (SAM3-I's stage-3 alignment); 0 = off
    # per-patch shape / colour / texture of the vision features the fusion encoder reads (training-only heads,
    # world data: train/dense.py); 0 = off
    dense: float = Field(0.0, ge=0)
    # the frame's other objects matched to free queries: their box and mask losses x this (scores taught 0); 0 = off
    instances: float = Field(0.0, ge=0)
    # True: the `instances` loss reaches only the heads (mask embedders, instance projection, box head), through
    # detached query states and pixel features (TrainModule.instance_heads). The scores read the same query states;
    # the full loss reshapes them and the scores stop following the words (model card, "Session 21").
    instances_heads_only: bool = False


def box_giou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pairwise generalized IoU of xyxy boxes: (N, 4), (M, 4) -> (N, M)."""
    area_a = (a[:, 2] - a[:, 0]).clamp(min=0) * (a[:, 3] - a[:, 1]).clamp(min=0)
    area_b = (b[:, 2] - b[:, 0]).clamp(min=0) * (b[:, 3] - b[:, 1]).clamp(min=0)
    lt = torch.max(a[:, None, :2], b[None, :, :2])
    rb = torch.min(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    union = area_a[:, None] + area_b[None] - inter
    iou = inter / union.clamp(min=1e-6)
    lt_c = torch.min(a[:, None, :2], b[None, :, :2])
    rb_c = torch.max(a[:, None, 2:], b[None, :, 2:])
    hull = (rb_c - lt_c).clamp(min=0).prod(-1)
    return iou - (hull - union) / hull.clamp(min=1e-6)


def dice_loss(logits: torch.Tensor, targets: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Per-row dice loss of (N, P) logits vs (N, P) soft targets."""
    p = logits.sigmoid()
    if weight is not None:
        p, targets = p * weight, targets * weight
    return 1 - (2 * (p * targets).sum(-1) + 1) / (p.sum(-1) + targets.sum(-1) + 1)


def pairwise_dice_cost(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """(Q, P) logits, (N, P) targets -> (Q, N) dice cost."""
    p = logits.sigmoid()
    numerator = 2 * p @ targets.T + 1
    return 1 - numerator / (p.sum(-1)[:, None] + targets.sum(-1)[None] + 1)


@torch.no_grad()
def match(logits: torch.Tensor, boxes: torch.Tensor, masks: torch.Tensor, target: DetectionTarget,
          weights: LossWeights) -> tuple[torch.Tensor, torch.Tensor]:
    """Hungarian matching of one sample's Q queries to its N targets: (query indices, target indices)."""
    if len(target.masks) == 0:
        empty = torch.zeros(0, dtype=torch.long)
        return empty, empty
    cost = -weights.cls * logits.sigmoid()[:, None] + _shape_cost(boxes, masks, target.boxes, target.masks, weights)
    return _assign(cost)


def _shape_cost(boxes: torch.Tensor, masks: torch.Tensor, goal_boxes: torch.Tensor, goal_masks: torch.Tensor,
                weights: LossWeights) -> torch.Tensor:
    """(Q, N) matching cost of Q predicted boxes and masks against N objects (no score term)."""
    return (weights.box_l1 * torch.cdist(boxes, goal_boxes, p=1) - weights.giou * box_giou(boxes, goal_boxes)
            + weights.dice * pairwise_dice_cost(masks.flatten(1), goal_masks.flatten(1)))


def _assign(cost: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Minimum-cost assignment of a (Q, N) cost's N columns to distinct rows: (row indices, column indices)."""
    _, x, _ = lap.lapjv(cost.T.double().cpu().numpy(), extend_cost=True)  # x[column] = row
    return torch.as_tensor(x, dtype=torch.long), torch.arange(cost.shape[1], dtype=torch.long)


@torch.no_grad()
def match_others(boxes: torch.Tensor, masks: torch.Tensor, target: DetectionTarget, taken: torch.Tensor,
                 weights: LossWeights) -> tuple[torch.Tensor, torch.Tensor]:
    """The frame's other objects matched to the queries the targets left free: (query indices, object indices)."""
    empty = torch.zeros(0, dtype=torch.long)
    if target.others_masks is None or len(target.others_masks) == 0:
        return empty, empty
    free = torch.ones(len(boxes), dtype=torch.bool)
    free[taken.cpu()] = False
    rows = free.nonzero()[:, 0].to(boxes.device)
    k = min(len(rows), len(target.others_masks))
    if k == 0:
        return empty, empty
    cost = _shape_cost(boxes[rows], masks[rows], target.others_boxes[:k], target.others_masks[:k], weights)
    q, t = _assign(cost)
    return rows.cpu()[q], t


Matches = list[tuple[torch.Tensor, torch.Tensor]]


def match_batch(out, targets: list[DetectionTarget], weights: LossWeights) -> Matches:
    """Each sample's Hungarian match, (query indices, target indices); empty for negatives."""
    device = out.pred_logits.device
    return [match(out.pred_logits[b], out.pred_boxes[b], out.pred_masks[b], t.on(device), weights)
            for b, t in enumerate(targets)]


def detection_loss(out, targets: list[DetectionTarget], weights: LossWeights,
                   negative_queries: bool = False, matches: Matches | None = None,
                   instance_out=None) -> dict[str, torch.Tensor]:
    """SAM3's detector losses over a batch; returns each term (weighted) and their sum as 'loss'.
    `negative_queries`: also teach every query of a negative sample a score of 0 (DETR's way). SAM3 leaves
    negatives to the presence head alone; a small model trained from scratch learns presence slowly, and until
    it does, query scores on negatives are untrained. `matches`: from `match_batch` (computed here if None).
    `instance_out`: the boxes and masks (`pred_boxes`, `pred_masks`) the `instances` loss reads, if not `out`'s
    (the same values through another gradient path: `TrainModule.instance_heads`)."""
    if matches is None:
        matches = match_batch(out, targets, weights)
    device = out.pred_logits.device
    terms = {k: torch.zeros((), device=device) for k in ("cls", "presence", "box_l1", "giou", "mask_bce", "dice",
                                                        "semantic", "instances")}
    mask_size = out.pred_masks.shape[-2:]
    present = torch.tensor([len(t.masks) > 0 for t in targets], dtype=torch.float32, device=device)
    terms["presence"] = F.binary_cross_entropy_with_logits(out.presence_logits.reshape(-1), present)
    matched = others = 0
    free = out if instance_out is None else instance_out  # what the `instances` loss reads
    for b, target in enumerate(targets):
        target = target.on(device)
        keep = (~target.ignore).float().flatten()
        if weights.instances > 0:
            q, t = match_others(free.pred_boxes[b], free.pred_masks[b], target, matches[b][0], weights)
            if len(q):
                terms["instances"] = terms["instances"] + _shape_loss(
                    free.pred_boxes[b][q], free.pred_masks[b][q], target.others_boxes[t], target.others_masks[t],
                    keep, weights)
                others += len(q)
        if out.semantic_seg is not None:
            union = target.masks.amax(0) if len(target.masks) else torch.zeros(mask_size, device=device)
            semantic = F.interpolate(out.semantic_seg[b: b + 1].float(), size=mask_size, mode="bilinear",
                                     align_corners=False)[0, 0]
            terms["semantic"] = terms["semantic"] + (F.binary_cross_entropy_with_logits(
                semantic.flatten(), (union > 0.5).float().flatten(), reduction="none") * keep).mean()
        if len(target.masks) == 0:  # a negative: presence and the semantic mask learn from it (and scores, if asked)
            if negative_queries:
                terms["cls"] = terms["cls"] + F.binary_cross_entropy_with_logits(
                    out.pred_logits[b], torch.zeros_like(out.pred_logits[b]))
            continue
        logits, boxes, masks = out.pred_logits[b], out.pred_boxes[b], out.pred_masks[b]
        q, t = matches[b]
        labels = torch.zeros_like(logits)
        labels[q] = 1.0
        terms["cls"] = terms["cls"] + F.binary_cross_entropy_with_logits(logits, labels)
        terms["box_l1"] = terms["box_l1"] + F.l1_loss(boxes[q], target.boxes[t], reduction="sum")
        terms["giou"] = terms["giou"] + (1 - torch.diag(box_giou(boxes[q], target.boxes[t]))).sum()
        pred = masks[q].flatten(1)
        goal = target.masks[t].flatten(1)
        terms["mask_bce"] = terms["mask_bce"] + (F.binary_cross_entropy_with_logits(
            pred, goal, reduction="none") * keep).mean(-1).sum()
        terms["dice"] = terms["dice"] + dice_loss(pred, goal, keep).sum()
        matched += len(q)
    batch = len(targets)
    scored = max(batch if negative_queries else int(present.sum().item()), 1)  # samples whose query scores learn
    norm = max(matched, 1)
    scaled = {
        "cls": terms["cls"] / scored, "presence": terms["presence"], "box_l1": terms["box_l1"] / norm,
        "giou": terms["giou"] / norm, "mask_bce": terms["mask_bce"] / norm, "dice": terms["dice"] / norm,
        "semantic": terms["semantic"] / batch, "instances": terms["instances"] / max(others, 1),
    }
    if weights.instances == 0:
        del scaled["instances"]
    weighted = {k: v * getattr(weights, k) for k, v in scaled.items()}
    weighted["loss"] = sum(weighted.values())
    return weighted


def _shape_loss(boxes: torch.Tensor, masks: torch.Tensor, goal_boxes: torch.Tensor, goal_masks: torch.Tensor,
                keep: torch.Tensor, weights: LossWeights) -> torch.Tensor:
    """Summed box L1 + GIoU + mask BCE + dice of matched rows, each term at its own weight."""
    pred, goal = masks.flatten(1), goal_masks.flatten(1)
    return (weights.box_l1 * F.l1_loss(boxes, goal_boxes, reduction="sum")
            + weights.giou * (1 - torch.diag(box_giou(boxes, goal_boxes))).sum()
            + weights.mask_bce * (F.binary_cross_entropy_with_logits(pred, goal, reduction="none") * keep).mean(-1).sum()
            + weights.dice * dice_loss(pred, goal, keep).sum())


def alignment_loss(cross_logits: torch.Tensor, matches: Matches, texts: list[str],
                   frames: list[int] | None = None) -> torch.Tensor:
    """Instruction-query InfoNCE. `cross_logits[i, q, j]` is sample i's query q scored against instruction j
    (the detector's own query-text score). Each matched query must score its own instruction above the batch's
    other instructions; instructions with the same text as its own count as its own. Another instruction asked
    of the same frame (`frames`: each sample's frame) is left out: it may name the same object, and the
    classification loss already teaches that frame's queries which instruction they answer. Without this a
    small model trained from scratch can satisfy the detection losses with instruction-blind scores."""
    frames = frames if frames is not None else list(range(len(texts)))
    same_text = torch.tensor([[a == b for b in texts] for a in texts], device=cross_logits.device)
    same_frame = torch.tensor([[a == b for b in frames] for a in frames], device=cross_logits.device)
    counted = same_text | ~same_frame
    rows, positives, columns = [], [], []
    for i, (q, _) in enumerate(matches):
        if len(q):
            rows.append(cross_logits[i, q.to(cross_logits.device)])
            positives.append(same_text[i].expand(len(q), -1))
            columns.append(counted[i].expand(len(q), -1))
    if not rows or len(set(texts)) < 2:
        return cross_logits.sum() * 0
    logits = torch.cat(rows).float().masked_fill(~torch.cat(columns), float("-inf"))
    positive = torch.cat(positives)
    return (logits.logsumexp(-1) - logits.masked_fill(~positive, float("-inf")).logsumexp(-1)).mean()


def tracker_loss(mask_logits: torch.Tensor, score_logits: torch.Tensor, targets: torch.Tensor,
                 weights: LossWeights, iou_predictions: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Propagated mask logits, (P, m, m) or the SAM head's M candidates (P, M, m, m), and (P,) object-score logits
    vs (P, m, m) targets (empty: gone). As SAM2 / SAM3 train it: of several candidates only the best (lowest
    BCE + dice) learns the mask, and `iou_predictions` (P, M), the head's predicted IoU of each candidate, learn
    every candidate's real IoU (L1). The tracker picks its candidate by that prediction (the largest); untrained,
    the predictions tie, and which candidate wins then depends on rounding (bf16 autocast picks another)."""
    candidates = mask_logits if mask_logits.dim() == 4 else mask_logits[:, None]
    present = (targets.flatten(1).amax(-1) > 0.5).float()
    score = F.binary_cross_entropy_with_logits(score_logits.reshape(-1), present)
    mask = iou = torch.zeros((), device=mask_logits.device)
    if present.any():
        rows = present.bool()
        pred = candidates[rows].flatten(2).float()  # (N, M, m*m)
        goal = targets[rows].flatten(1)[:, None].expand_as(pred)
        per_candidate = F.binary_cross_entropy_with_logits(pred, goal, reduction="none").mean(-1) + \
            dice_loss(pred, goal)  # (N, M)
        mask = per_candidate.min(dim=1).values.mean()
        if iou_predictions is not None:
            shown, truth = pred > 0, goal > 0.5
            inter = (shown & truth).sum(-1).float()
            union = (shown | truth).sum(-1).float()
            real = torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(inter))
            iou = F.l1_loss(iou_predictions[rows].float(), real)
    out = {"track_mask": mask * weights.track_mask, "track_score": score * weights.track_score}
    out["loss"] = out["track_mask"] + out["track_score"]
    if iou_predictions is not None:
        out["track_iou"] = iou * weights.track_iou
        out["loss"] = out["loss"] + out["track_iou"]
    return out
