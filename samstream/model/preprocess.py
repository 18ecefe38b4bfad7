"""Frame -> model input without torchvision: resize to a square, scale to [-1, 1] (SAM3's mean/std 0.5).

transformers' Sam3ImageProcessor resizes with torchvision's antialiased bilinear filter; Pillow's BILINEAR
resize is the same triangle filter (antialiased when shrinking), so we use it and need no torchvision.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

IMAGE_MEAN = 0.5
IMAGE_STD = 0.5


def to_pixel_values(rgb: np.ndarray, image_size: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """(H, W, 3) uint8 RGB -> (1, 3, S, S) normalised, as transformers' Sam3ImageProcessor does it."""
    resized = np.array(Image.fromarray(rgb).resize((image_size, image_size), Image.Resampling.BILINEAR))
    return to_pixel_batch(resized[None], device, dtype)


def to_pixel_batch(rgb: np.ndarray, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """(N, S, S, 3) uint8 RGB already at the model's input size -> (N, 3, S, S) normalised."""
    pixels = torch.from_numpy(np.ascontiguousarray(rgb)).to(device).permute(0, 3, 1, 2)
    return ((pixels.to(dtype) / 255.0) - IMAGE_MEAN) / IMAGE_STD
