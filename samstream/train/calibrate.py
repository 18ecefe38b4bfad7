"""Choosing the score threshold on held-out data (recorded in the model folder, not hard-coded): the one that
maximises mean gIoU (negatives count 1 when nothing is returned) over validation samples."""

from __future__ import annotations

import numpy as np
import torch

from samstream.model.tokenizer import CONTEXT_LENGTH
from samstream.train.forward import TrainModule
from samstream.train.world_batches import WorldBatches

THRESHOLDS = np.round(np.arange(0.05, 0.86, 0.05), 2)


@torch.no_grad()
def choose_threshold(module: TrainModule, batches: WorldBatches, samples: int, pairs: int = 8) -> dict:
    """{'score_threshold', 'giou' (at it), 'by_threshold'}: per-sample union-mask IoU at each threshold."""
    module.eval()
    device = next(module.parameters()).device
    detector = module.model.detector_model
    totals = np.zeros(len(THRESHOLDS))
    count = 0
    while count < samples:
        batch = batches.sample(pairs)
        vision = detector.get_vision_features(pixel_values=batch.pixels.to(device))
        tokens = module.tokenizer(batch.texts, padding="max_length", max_length=CONTEXT_LENGTH, truncation=True,
                                  return_tensors="pt").to(device)
        with module.sam3i.routing(batch.levels):
            out = detector(vision_embeds=vision, input_ids=tokens.input_ids, attention_mask=tokens.attention_mask)
        scores = (out.pred_logits.sigmoid() * out.presence_logits.sigmoid()).float().cpu()  # (B, Q)
        masks = (out.pred_masks > 0).cpu()  # (B, Q, m, m)
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
