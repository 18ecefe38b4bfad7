"""Checks of a trained detector on held-out data, recorded in the model folder (not hard-coded):
- the score threshold: the one that maximises gIoU on positives and no-target accuracy on negatives, weighed
  by a stated share of negatives (`pick_threshold`), together with a presence gate (`pick_presence_gate`): an
  instruction whose presence score is under it returns nothing;
- text reliance: how well the top-scoring query finds the target given the sample's own instruction versus
  another sample's. A model that ignores its instruction scores the same on both (an objectness detector);
- instance separation: whether the queries are instances at all. A model whose queries all return one copy
  of the instruction's semantic mask finds "the targets" but cannot tell them apart (nor track them)."""

from __future__ import annotations

import numpy as np
import torch
from tqdm import tqdm

from samstream.masks import mask_iou
from samstream.train.forward import TrainModule
from samstream.train.world_batches import DetectionTarget, WorldBatches

THRESHOLDS = np.array([0.02, 0.03, 0.05, 0.07, 0.1, 0.125, 0.15, 0.175, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.55,
                       0.6, 0.65, 0.7, 0.75, 0.8, 0.85])
NEGATIVE_SHARE = 0.25  # the share of asked instructions assumed to have no target when weighing the two kinds
PRESENCE_GATES = np.array([0.0, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9])  # 0: no gate (SAM3's behaviour)


def _advance(bar: tqdm, count: int) -> None:
    bar.update(max(0, min(count, bar.total - bar.n)))  # whole batches are drawn: the last one may pass the total


def _vision(module: TrainModule, pixels: torch.Tensor):
    return module.model.detector_model.get_vision_features(pixel_values=pixels.to(next(module.parameters()).device))


def _detect(module: TrainModule, vision, texts: list[str], levels: list[str], with_presence: bool = False):
    """(scores (B, Q), masks (B, Q, m, m) bool[, presence (B,)]) of the detector for these frames' features and
    instructions."""
    out = module.detect(vision, texts, levels)
    presence = out.presence_logits.sigmoid().reshape(len(texts), -1)[:, :1]
    found = (out.pred_logits.sigmoid() * presence).float().cpu(), (out.pred_masks > 0).cpu()
    return (*found, presence[:, 0].float().cpu()) if with_presence else found


def pick_threshold(positive_iou: np.ndarray, negative_empty: np.ndarray, negative_share: float = NEGATIVE_SHARE,
                   thresholds: np.ndarray = THRESHOLDS) -> dict:
    """Choose the score threshold from per-sample results at every threshold: `positive_iou` (P, K) the IoU of
    each positive's returned union with its targets, `negative_empty` (N, K) whether each negative returned
    nothing. The objective weighs the two kinds by a stated share, (1 - share) x gIoU + share x no-target
    accuracy, so the choice does not follow how many negatives happened to be drawn."""
    giou = positive_iou.mean(0) if len(positive_iou) else np.zeros(len(thresholds))
    empty = negative_empty.mean(0) if len(negative_empty) else np.ones(len(thresholds))
    objective = (1 - negative_share) * giou + negative_share * empty
    best = int(np.argmax(objective))
    return {"score_threshold": float(thresholds[best]), "objective": round(float(objective[best]), 4),
            "giou": round(float(giou[best]), 4), "no_target_accuracy": round(float(empty[best]), 4),
            "negative_share": negative_share, "positives": len(positive_iou), "negatives": len(negative_empty),
            "by_threshold": {f"{t:g}": {"objective": round(float(o), 4), "giou": round(float(g), 4),
                                        "no_target_accuracy": round(float(e), 4)}
                             for t, o, g, e in zip(thresholds, objective, giou, empty)}}


def pick_presence_gate(positive_iou: np.ndarray, negative_empty: np.ndarray, negative_share: float = NEGATIVE_SHARE,
                       gates: np.ndarray = PRESENCE_GATES, thresholds: np.ndarray = THRESHOLDS) -> dict:
    """`pick_threshold` under each presence gate: `positive_iou` (P, G, K), `negative_empty` (N, G, K) per gate and
    score threshold. The gate whose best threshold has the best objective wins; a tie keeps the lower gate (gate 0
    is none). Returns the winner's `pick_threshold` result with `presence_threshold` (None for no gate) and every
    gate's best in `by_presence_threshold`."""
    picks = [pick_threshold(positive_iou[:, g], negative_empty[:, g], negative_share, thresholds)
             for g in range(len(gates))]
    best = int(np.argmax([p["objective"] for p in picks]))  # first of equals: the lowest gate
    chosen = dict(picks[best])
    chosen["presence_threshold"] = float(gates[best]) if gates[best] > 0 else None
    chosen["by_presence_threshold"] = {
        f"{g:g}": {k: p[k] for k in ("score_threshold", "objective", "giou", "no_target_accuracy")}
        for g, p in zip(gates, picks)}
    return chosen


@torch.no_grad()
def choose_threshold(module: TrainModule, batches: WorldBatches, samples: int, pairs: int = 8,
                     negative_share: float = NEGATIVE_SHARE, progress: bool = False) -> dict:
    """Run the detector on `samples` held-out samples and `pick_presence_gate` on what each presence gate and score
    threshold return."""
    module.eval()
    positive, negative = [], []
    shape = (len(PRESENCE_GATES), len(THRESHOLDS))
    bar = tqdm(total=samples, desc="score threshold", unit="sample", disable=not progress)
    while len(positive) + len(negative) < samples:
        batch = batches.sample(pairs)
        scores, masks, presence = _detect(module, _vision(module, batch.pixels), batch.texts, batch.levels, True)
        for b, target in enumerate(batch.targets):
            truth = (target.masks > 0.5).any(0) if len(target.masks) else torch.zeros(masks.shape[-2:], dtype=torch.bool)
            keep = scores[b][None] > torch.as_tensor(THRESHOLDS, dtype=scores.dtype)[:, None]  # (K, Q)
            pred = (keep[:, :, None, None] & masks[b][None]).any(1)  # (K, m, m): the union returned at each threshold
            passes = torch.as_tensor(float(presence[b]) >= PRESENCE_GATES)[:, None]  # (G, 1): gated off below
            if truth.any():
                inter = (pred & truth).flatten(1).sum(-1).float()
                union = (pred | truth).flatten(1).sum(-1).float()
                positive.append(torch.where(passes, (inter / union)[None], 0.0).numpy())  # (G, K)
            else:
                negative.append((~passes | ~pred.flatten(1).any(-1)[None]).numpy())
        _advance(bar, len(positive) + len(negative) - bar.n)
    bar.close()
    module.train()
    return pick_presence_gate(np.array(positive).reshape(-1, *shape), np.array(negative).reshape(-1, *shape),
                              negative_share)


def _top_query_iou(scores: torch.Tensor, masks: torch.Tensor, target_masks: torch.Tensor) -> float:
    """IoU of the top-scoring query's mask with the target it overlaps most."""
    top = masks[int(scores.argmax())]
    truth = target_masks > 0.5
    inter = (top[None] & truth).flatten(1).sum(-1)
    union = (top[None] | truth).flatten(1).sum(-1).clamp(min=1)
    return float((inter / union).max())


@torch.no_grad()
def text_reliance(module: TrainModule, batches: WorldBatches, samples: int, pairs: int = 8,
                  progress: bool = False) -> dict:
    """Mean top-query IoU on positive samples with their own instruction and with the next sample's."""
    module.eval()
    own, other = [], []
    bar = tqdm(total=samples, desc="text reliance", unit="sample", disable=not progress)
    while len(own) < samples:
        batch = batches.sample(pairs)
        shift = list(range(1, len(batch.texts))) + [0]
        vision = _vision(module, batch.pixels)
        mine = _detect(module, vision, batch.texts, batch.levels)
        theirs = _detect(module, vision, [batch.texts[j] for j in shift], [batch.levels[j] for j in shift])
        for b, target in enumerate(batch.targets):
            if len(target.masks):
                own.append(_top_query_iou(mine[0][b], mine[1][b], target.masks))
                other.append(_top_query_iou(theirs[0][b], theirs[1][b], target.masks))
        _advance(bar, len(own) - bar.n)
    bar.close()
    module.train()
    return {"top_query_iou_own_text": round(float(np.mean(own)), 4),
            "top_query_iou_other_text": round(float(np.mean(other)), 4), "samples": len(own)}


def separation_of(masks: torch.Tensor, target: DetectionTarget) -> tuple[float | None, list[float]] | None:
    """One frame's (mean IoU between two of its non-empty query masks, each object's best query IoU); None for
    a frame with fewer than two objects. `masks` (Q, m, m) bool; objects are the targets and the others."""
    others = target.others_masks if target.others_masks is not None else target.masks[:0]
    objects = (torch.cat([target.masks, others]) > 0.5).numpy()
    if len(objects) < 2:
        return None
    masks = masks.numpy()
    shown = masks[masks.reshape(len(masks), -1).any(-1)]
    overlap = None
    if len(shown) >= 2:
        overlap = float(mask_iou(shown, shown)[~np.eye(len(shown), dtype=bool)].mean())
    return overlap, mask_iou(objects, masks).max(-1).tolist()


@torch.no_grad()
def instance_separation(module: TrainModule, batches: WorldBatches, samples: int, pairs: int = 8,
                        progress: bool = False) -> dict:
    """Over `samples` frames with two or more objects: the mean IoU between two queries' non-empty masks (1.0:
    every query is a copy of one mask) and each object's best query IoU (how well some query segments it alone,
    whether named or not)."""
    module.eval()
    overlap, best = [], []
    frames = 0
    bar = tqdm(total=samples, desc="instance separation", unit="frame", disable=not progress)
    while frames < samples:
        batch = batches.sample(pairs)
        _, masks = _detect(module, _vision(module, batch.pixels), batch.texts, batch.levels)
        for b, target in enumerate(batch.targets):
            result = separation_of(masks[b], target)
            if result is None:
                continue
            frames += 1
            if result[0] is not None:
                overlap.append(result[0])
            best.extend(result[1])
        _advance(bar, frames - bar.n)
    bar.close()
    module.train()
    return {"query_mask_overlap": round(float(np.mean(overlap)), 4) if overlap else None,
            "best_query_iou_per_object": round(float(np.mean(best)), 4), "frames": frames}
