"""Low-resolution mask logits -> boolean masks at the frame's size."""

from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn.functional as F


def upsample_masks(mask_logits: torch.Tensor, height: int, width: int) -> np.ndarray:
    """(N, h, w) logits -> (N, H, W) bool, bilinear with half-pixel centres (align_corners=False).
    On CPU OpenCV's resize does it ~8x faster than torch's interpolate (identical up to float rounding); on a
    GPU torch upsamples there and only the booleans cross to the host."""
    n = mask_logits.shape[0]
    if n == 0:
        return np.zeros((0, height, width), dtype=bool)
    if mask_logits.device.type != "cpu":
        up = F.interpolate(mask_logits[:, None].float(), size=(height, width), mode="bilinear", align_corners=False)
        return (up[:, 0] > 0).cpu().numpy()
    logits = mask_logits.detach().float().numpy()
    out = np.empty((n, height, width), dtype=bool)
    for i in range(n):
        np.greater(cv2.resize(logits[i], (width, height), interpolation=cv2.INTER_LINEAR), 0, out=out[i])
    return out
