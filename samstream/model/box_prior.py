"""A box prior for small SAM3 mask heads: each query's mask logits plus a learned function of where each pixel lies
relative to that query's own predicted box.

Why: SAM3 predicts a query's mask as the dot product of its embedding with per-pixel embeddings. Two objects that
look alike (two red circles) have alike pixel embeddings, so no query embedding can pick one of them: asked for "the
leftmost circle", the small model returns both ("with others", the simple level's commonest failure;
docs/model-card.md, "Session 32"). Its queries' boxes do differ and are trained on the named object, so a term that
reads the box lets a query's mask keep to its own object, as relative coordinates do for CondInst's mask heads
(Tian et al. 2020). The term is separable, `f_x((x - cx) / (w / 2)) + f_y((y - cy) / (h / 2))` with two small MLPs,
and starts at zero (the model's masks are unchanged until it learns). Boxes are read detached: their own losses
train them.

A model that has one records the MLPs' width in its mask decoder config (`box_prior`), so its folder loads back with
it; SAM3's own checkpoints have none.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import Sam3Model, Sam3VideoConfig, Sam3VideoModel

BOX_PRIOR_KEY = "box_prior"  # mask-decoder-config attribute: the width of the prior's MLPs, e.g. 16
PRIOR_PREFIX = "detector_model.mask_decoder.box_prior."
_REACH = 4.0  # relative coordinates are clipped to +-4 half-box widths: far pixels all read as "far"


class BoxMaskPrior(nn.Module):
    """(B, Q, H, W) mask logits + f_y(rows) + f_x(columns) relative to each query's (B, Q, 4) xyxy box in [0, 1]."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.columns = _profile(width)
        self.rows = _profile(width)

    def forward(self, masks: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        height, width = masks.shape[-2:]
        boxes = boxes.detach().to(masks.dtype)
        along_x = self.columns(_relative(boxes[..., 0], boxes[..., 2], width)[..., None])[..., 0]  # (B, Q, W)
        along_y = self.rows(_relative(boxes[..., 1], boxes[..., 3], height)[..., None])[..., 0]  # (B, Q, H)
        return masks + along_y[..., :, None] + along_x[..., None, :]


def _profile(width: int) -> nn.Sequential:
    profile = nn.Sequential(nn.Linear(1, width), nn.GELU(), nn.Linear(width, 1))
    nn.init.zeros_(profile[-1].weight)
    nn.init.zeros_(profile[-1].bias)
    return profile


def _relative(low: torch.Tensor, high: torch.Tensor, cells: int) -> torch.Tensor:
    """(B, Q, cells): each cell centre's offset from the box's centre in half-widths of the box (at least a cell)."""
    centres = (torch.arange(cells, device=low.device, dtype=low.dtype) + 0.5) / cells
    middle = (low + high) / 2
    half = ((high - low) / 2).clamp(min=1.0 / cells)
    return ((centres - middle[..., None]) / half[..., None]).clamp(-_REACH, _REACH)


def box_prior_width(config: Sam3VideoConfig) -> int | None:
    width = getattr(config.detector_config.mask_decoder_config, BOX_PRIOR_KEY, None)
    return int(width) if width else None


def set_box_prior(config: Sam3VideoConfig, width: int | None) -> Sam3VideoConfig:
    """Record a prior of this width (None: SAM3's mask head alone) in the config, so the model saves and loads
    with it."""
    setattr(config.detector_config.mask_decoder_config, BOX_PRIOR_KEY, int(width) if width else None)
    return config


def install_box_prior(model: Sam3VideoModel) -> bool:
    """Give the model the prior its config names (zero-initialised; the RNG is left as it was, so what is built
    after it initialises as it would without it). Returns whether it has one."""
    width = box_prior_width(model.config)
    if width is None:
        return False
    detector = model.detector_model
    if isinstance(getattr(detector.mask_decoder, "box_prior", None), BoxMaskPrior):
        return True
    reference = next(detector.mask_decoder.parameters())
    with torch.random.fork_rng(devices=[]):
        prior = BoxMaskPrior(width)
    detector.mask_decoder.box_prior = prior.to(device=reference.device, dtype=reference.dtype)
    detector.register_forward_hook(_add_box_prior)
    return True


def _add_box_prior(detector: Sam3Model, _args: tuple, output):
    # a module-level function reading the prior from the hooked module: a deep copy of the model stays whole
    output.pred_masks = detector.mask_decoder.box_prior(output.pred_masks, output.pred_boxes)
    return output
