"""A training-only auxiliary loss: per-patch classification of what is drawn where (the world's shape, colour and
texture of the object under each patch, or background), on the vision features the fusion encoder reads.

Why: trained on detection losses alone, the small model's backbone learns colour but not shape (a linear probe
on its 16x16 features finds the shape under a patch at chance, 0.31 vs 0.28, and the colour at 0.90:
docs/model-card.md, "Session 14"), so every instruction that names a shape ("stars", "what has five points")
comes back as all the objects of that colour or all of them. Naming the shape under each patch is a direct,
dense signal for what the instruction needs. The heads are 1x1 convolutions that the export leaves out: the
shipped model is SAM3's architecture, unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from samstream.data.instructions import ObjectView
from samstream.data.world import COLOURS, SHAPES, TEXTURES

# what each head names for the procedural world; channel 0 of every head is the background
WORLD_DENSE_CLASSES: dict[str, tuple[str, ...]] = {"category": SHAPES, "colour": tuple(COLOURS), "texture": TEXTURES}


def _value(view: ObjectView, kind: str) -> str:
    return view.category if kind == "category" else view.attributes[kind]


def label_maps(objects: Sequence[ObjectView], visible: Mapping[int, np.ndarray], size: int,
               classes: Mapping[str, Sequence[str]] = WORLD_DENSE_CLASSES) -> dict[str, np.ndarray]:
    """Per kind, a (1 + classes, size, size) map of each class's share of every cell (channel 0: background):
    the objects' visible masks, area-resized to `size`."""
    shares = {id(view): cv2.resize(visible[view.ann_id].astype(np.float32), (size, size), interpolation=cv2.INTER_AREA)
              for view in objects}
    maps = {}
    for kind, names in classes.items():
        out = np.zeros((1 + len(names), size, size), np.float32)
        for view in objects:
            out[1 + names.index(_value(view, kind))] += shares[id(view)]
        out[0] = np.clip(1.0 - out[1:].sum(0), 0.0, 1.0)
        maps[kind] = out
    return maps


class DenseHeads(nn.Module):
    """One 1x1 convolution per kind, from the vision features to its classes (+ background)."""

    def __init__(self, width: int, classes: Mapping[str, Sequence[str]] = WORLD_DENSE_CLASSES) -> None:
        super().__init__()
        self.heads = nn.ModuleDict({kind: nn.Conv2d(width, 1 + len(names), 1) for kind, names in classes.items()})

    def loss(self, features: torch.Tensor, labels: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Mean soft-label cross-entropy over the kinds: `features` (F, C, g, g); `labels[kind]` (F, 1 + n, m, m)
        class shares at any resolution (pooled to the features' grid)."""
        total = features.new_zeros(())
        for kind, head in self.heads.items():
            target = F.adaptive_avg_pool2d(labels[kind].to(features.device, features.dtype), features.shape[-2:])
            log_p = F.log_softmax(head(features), dim=1)
            total = total - (target * log_p).sum(1).mean()
        return total / len(self.heads)


class ObjectHeads(nn.Module):
    """One linear layer per kind, from an object's mask-pooled vision features to its class (no background):
    the backbone stage's loss (train/object_batches.py). Training-only, like `DenseHeads`."""

    def __init__(self, width: int, classes: Mapping[str, Sequence[str]] = WORLD_DENSE_CLASSES) -> None:
        super().__init__()
        self.heads = nn.ModuleDict({kind: nn.Linear(width, len(names)) for kind, names in classes.items()})

    def pool(self, features: torch.Tensor, weights: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
        """(O, C): `features` (F, C, g, g) averaged over each object's cells, weighted by `weights` (O, g * g)."""
        flat = features.flatten(2)[frames.to(features.device)]  # (O, C, g * g)
        return torch.einsum("ocn,on->oc", flat, weights.to(features.device, features.dtype))

    def logits(self, pooled: torch.Tensor) -> dict[str, torch.Tensor]:
        return {kind: head(pooled) for kind, head in self.heads.items()}

    def loss(self, features: torch.Tensor, weights: torch.Tensor, frames: torch.Tensor,
             labels: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Cross-entropy per kind (`objects_<kind>`) and their sum (`loss`): a mean would give shape, the slow
        one, a third of the rate while colour and texture are learned in a few hundred steps."""
        logits = self.logits(self.pool(features, weights, frames))
        terms = {f"objects_{kind}": F.cross_entropy(logits[kind], labels[kind].to(features.device))
                 for kind in self.heads}
        return {"loss": sum(terms.values()), **terms}


HELDOUT_OBJECT_BATCHES = 12  # x 16 frames: ~600 objects of whole frames


@torch.no_grad()
def object_accuracy(module, batches, count: int = HELDOUT_OBJECT_BATCHES, pairs: int = 8) -> dict[str, float]:
    """Per kind, the share of objects of `count` batches (train/object_batches.py) that a `TrainModule`'s object
    heads name right, from its vision features; `objects` is how many were asked."""
    was_training = module.training
    module.eval()
    right: dict[str, int] = {kind: 0 for kind in module.object_heads.heads}
    asked = 0
    device = next(module.parameters()).device
    try:
        for _ in range(count):
            batch = batches.sample(pairs)
            vision = module.model.detector_model.get_vision_features(pixel_values=batch.pixels.to(device))
            pooled = module.object_heads.pool(vision.fpn_hidden_states[-2], batch.weights, batch.frames)
            for kind, logits in module.object_heads.logits(pooled).items():
                right[kind] += int((logits.argmax(1).cpu() == batch.labels[kind]).sum())
            asked += len(batch.frames)
    finally:
        module.train(was_training)
    return {"objects": asked, **{kind: round(hits / max(asked, 1), 4) for kind, hits in right.items()}}
