"""Where a new detector's object queries start (`query_init = "spread"` in a training config).

transformers initialises SAM3's DETR queries as it does any embedding, N(0, 0.02): sixteen near-identical query
vectors whose reference boxes all sit at the frame's centre (sigmoid(0) = 0.5 for x, y, w and h). Real SAM3
checkpoints have learned theirs; a model trained from scratch starts from that symmetric point, and the small
model's queries have stayed copies of one mask through every recipe (docs/model-card.md, "Sessions 12-13",
"Session 30"). DETR-family detectors trained from scratch spread their reference points over the image instead
(Deformable DETR, DAB-DETR), so each query starts looking at its own region. This does that: reference boxes tile
the frame on a grid, and the query vectors get unit-variance starts so they differ from the first step.
"""

from __future__ import annotations

import math

import torch
from torch import nn

SPREAD_PARAMETERS = ("detr_decoder.query_embed.weight", "detr_decoder.reference_points.weight")


def grid_boxes(count: int) -> torch.Tensor:
    """(count, 4) boxes (cx, cy, w, h, shares of the frame) tiling it row by row on the smallest square grid
    that holds `count`, each box one cell."""
    side = math.ceil(math.sqrt(count))
    cells = torch.arange(count)
    cx = (cells % side + 0.5) / side
    cy = (cells // side + 0.5) / side
    size = torch.full((count,), 1.0 / side)
    return torch.stack([cx, cy, size, size], dim=1)


@torch.no_grad()
def spread_queries(detector: nn.Module, generator: torch.Generator | None = None) -> None:
    """Re-initialise `detector`'s (a `Sam3Model`) DETR queries: reference boxes on a grid (stored, as SAM3 stores
    them, before the sigmoid), query vectors N(0, 1)."""
    decoder = detector.detr_decoder
    boxes = grid_boxes(decoder.reference_points.num_embeddings)
    decoder.reference_points.weight.copy_(torch.logit(boxes, eps=1e-4))
    decoder.query_embed.weight.copy_(torch.randn(decoder.query_embed.weight.shape, generator=generator))


def is_spread_parameter(name: str) -> bool:
    """Whether a trained parameter's name is one of the spread queries' (they take no weight decay: it would pull
    the boxes back to the centre and the vectors back together)."""
    return name.endswith(SPREAD_PARAMETERS)
