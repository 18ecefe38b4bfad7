"""Frame -> model input without torchvision: resize to a square, scale to [-1, 1] (SAM3's mean/std 0.5)."""

from __future__ import annotations

import cv2
import numpy as np
import torch

IMAGE_MEAN = 0.5
IMAGE_STD = 0.5


def to_pixel_values(rgb: np.ndarray, image_size: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """(H, W, 3) uint8 RGB -> (1, 3, S, S) normalised, as transformers' Sam3ImageProcessor does it."""
    resized = cv2.resize(rgb, (image_size, image_size), interpolation=cv2.INTER_LINEAR)
    pixels = torch.from_numpy(resized).to(device).permute(2, 0, 1).unsqueeze(0)  # (1, 3, S, S)
    return ((pixels.to(dtype) / 255.0) - IMAGE_MEAN) / IMAGE_STD
