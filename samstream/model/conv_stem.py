"""A convolutional stem for small SAM3 backbones: the ViT's patch embedding (one stride-P convolution) replaced by
stride-2 3x3 convolutions that reach the same patch grid ("early convolutions", Xiao et al. 2021).

Why: the small model's 3-layer ViT, trained from scratch for ~2 hours, learns colour but not shape (docs/model-card.md,
"Session 14"). With a 3-convolution stem the same ViT learns the world's shapes from direct labels in 500-1,500
steps, where with the plain patch embedding it stays near chance (sessions 17-18). A model that has one records its
widths in its backbone config (`conv_stem`), so its folder loads back with it; SAM3's own checkpoints have none.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from transformers import Sam3VideoConfig, Sam3VideoModel

CONV_STEM_KEY = "conv_stem"  # backbone-config attribute: the stem's widths, e.g. [32, 64, 96]
STEM_PREFIX = "detector_model.vision_encoder.backbone.embeddings.patch_embeddings.projection."


class ConvStem(nn.Module):
    """3x3 convolutions of stride 2 (GroupNorm, GELU), then one convolution to the ViT's width that covers the
    rest of the patch (1x1 when the stride-2 convolutions already reach it)."""

    def __init__(self, widths: Sequence[int], hidden_size: int, patch_size: int, channels: int = 3) -> None:
        super().__init__()
        reach = 2 ** len(widths)
        if not widths or patch_size % reach:
            raise ValueError(f"a conv stem of {len(widths)} stride-2 layers cannot make patches of {patch_size} px")
        layers: list[nn.Module] = []
        for width in widths:
            layers += [nn.Conv2d(channels, width, 3, stride=2, padding=1, bias=False), nn.GroupNorm(1, width),
                       nn.GELU()]
            channels = width
        rest = patch_size // reach
        layers.append(nn.Conv2d(channels, hidden_size, rest, stride=rest))
        self.layers = nn.Sequential(*layers)

    @property
    def weight(self) -> torch.Tensor:
        """transformers' patch embedding reads `projection.weight.dtype` to cast the pixels."""
        return self.layers[-1].weight

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.layers(pixels)


def conv_stem_widths(config: Sam3VideoConfig) -> list[int] | None:
    widths = getattr(config.detector_config.vision_config.backbone_config, CONV_STEM_KEY, None)
    return list(widths) if widths else None


def set_conv_stem(config: Sam3VideoConfig, widths: Sequence[int] | None) -> Sam3VideoConfig:
    """Record a stem of these widths (None: SAM3's patch embedding) in the config, so the model saves and loads
    with it."""
    setattr(config.detector_config.vision_config.backbone_config, CONV_STEM_KEY, list(widths) if widths else None)
    return config


def install_conv_stem(model: Sam3VideoModel) -> bool:
    """Give the model the stem its config names (fresh weights). Returns whether it has one."""
    widths = conv_stem_widths(model.config)
    if widths is None:
        return False
    backbone = model.detector_model.vision_encoder.backbone
    embedding = backbone.embeddings.patch_embeddings
    if isinstance(embedding.projection, ConvStem):
        return True
    old = embedding.projection
    stem = ConvStem(widths, backbone.config.hidden_size, backbone.config.patch_size, backbone.config.num_channels)
    embedding.projection = stem.to(device=old.weight.device, dtype=old.weight.dtype)
    return True
