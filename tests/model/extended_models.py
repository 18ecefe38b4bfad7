"""Tiny SAM3 video models with samstream's own parts (samstream/model/extensions.py), for the parts' tests."""

from __future__ import annotations

import torch
from transformers import Sam3VideoModel

from samstream.model.extensions import install_extensions
from samstream.model.tiny import tiny_video_config


def tiny_model_with(**parts: int | None) -> Sam3VideoModel:
    """A seeded tiny model with a conv stem and these parts (e.g. `box_prior=8`), in eval mode."""
    torch.manual_seed(3)
    model = Sam3VideoModel(tiny_video_config(conv_stem=(16,), **parts))
    install_extensions(model)
    return model.eval()


def detect(model: Sam3VideoModel):
    """The detector's output on two seeded random frames and instructions."""
    generator = torch.Generator().manual_seed(5)
    with torch.no_grad():
        return model.detector_model(pixel_values=torch.rand(2, 3, 112, 112, generator=generator),
                                    input_ids=torch.randint(0, 250, (2, 32), generator=generator),
                                    attention_mask=torch.ones(2, 32, dtype=torch.long))
