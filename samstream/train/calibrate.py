"""Checks of a trained detector on held-out data, recorded in the model folder (not hard-coded):
- the score threshold: the one that maximises mean gIoU (negatives count 1 when nothing is returned);
- text reliance: how well the top-scoring query finds the target given the sample's own instruction versus
  another sample's. A model that ignores its instruction scores the same on both (an objectness detector)."""

from __future__ import annotations

import numpy as np
import torch

from samstream.train.forward import TrainModule
from samstream.train.world_batches import WorldBatches

THRESHOLDS = np.round(np.arange(0.05, 0.86, 0.05), 2)


def _vision(module: TrainModule, pixels: torch.Tensor):
    return module.model.detector_model.get_vision_features(pixel_values=pixels.to(next(module.parameters()).device))


def _detect(module: TrainModule, vision, texts: list[str], levels: list[str]):
    """(scores (B, Q), masks (B, Q, m, m) bool) of the detector for these frames' features and instructions."""
    out = module.detect(vision, texts, levels)
    return (out.pred_logits.sigmoid() * out.presence_logits.sigmoid()).float().cpu(), (out.pred_masks > 0).cpu()


@torch.no_grad()
def choose_threshold(module: TrainModule, batches: WorldBatches, samples: int, pairs: int = 8) -> dict:
    """{'score_threshold', 'giou' (at it), 'by_threshold'}: per-sample union-mask IoU at each threshold."""
    module.eval()
    totals = np.zeros(len(THRESHOLDS))
    count = 0
    while count < samples:
        batch = batches.sample(pairs)
        scores, masks = _detect(module, _vision(module, batch.pixels), batch.texts, batch.levels)
        for b, target in enumerate(batch.targets):
            truth = (target.masks > 0.5).any(0) if len(target.masks) else torch.zeros(masks.shape[-2:], dtype=torch.bool)
            for k, threshold in enumerate(THRESHOLDS):
                keep = scores[b] > threshold
                pred = masks[b][keep].any(0) if keep.any() else torch.zeros_like(truth)
                union = (pred | truth).sum().item()
                totals[k] += 1.0 if union == 0 else (pred & truth).sum().item() / union
            count += 1
    module.train()
    means = totals / max(count, 1)
    best = int(np.argmax(means))
    return {"score_threshold": float(THRESHOLDS[best]), "giou": float(means[best]),
            "by_threshold": {f"{t:.2f}": round(float(m), 4) for t, m in zip(THRESHOLDS, means)}}


def _top_query_iou(scores: torch.Tensor, masks: torch.Tensor, target_masks: torch.Tensor) -> float:
    """IoU of the top-scoring query's mask with the target it overlaps most."""
    top = masks[int(scores.argmax())]
    truth = target_masks > 0.5
    inter = (top[None] & truth).flatten(1).sum(-1)
    union = (top[None] | truth).flatten(1).sum(-1).clamp(min=1)
    return float((inter / union).max())


@torch.no_grad()
def text_reliance(module: TrainModule, batches: WorldBatches, samples: int, pairs: int = 8) -> dict:
    """Mean top-query IoU on positive samples with their own instruction and with the next sample's."""
    module.eval()
    own, other = [], []
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
    module.train()
    return {"top_query_iou_own_text": round(float(np.mean(own)), 4),
            "top_query_iou_other_text": round(float(np.mean(other)), 4), "samples": len(own)}
