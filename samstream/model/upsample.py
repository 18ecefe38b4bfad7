"""Low-resolution mask logits -> boolean masks at the frame's size."""

from __future__ import annotations

from math import gcd

import cv2
import numpy as np
import torch
import torch.nn.functional as F


def upsample_masks(mask_logits: torch.Tensor, height: int, width: int) -> np.ndarray:
    """(N, h, w) logits -> (N, H, W) bool, bilinear with half-pixel centres (align_corners=False).
    On CPU OpenCV's resize does it ~8x faster than torch's interpolate (identical up to float rounding), and only
    over each mask's own window (see `_positive_window`): an object's cost follows its size, not the frame's.
    On a GPU torch upsamples there and only the booleans cross to the host."""
    n = mask_logits.shape[0]
    if n == 0:
        return np.zeros((0, height, width), dtype=bool)
    if mask_logits.device.type != "cpu":
        up = F.interpolate(mask_logits[:, None].float(), size=(height, width), mode="bilinear", align_corners=False)
        return (up[:, 0] > 0).cpu().numpy()
    logits = mask_logits.detach().float().numpy()
    out = np.zeros((n, height, width), dtype=bool)
    for i in range(n):
        rows = _positive_window(logits[i].max(axis=1) > 0, height)
        cols = _positive_window(logits[i].max(axis=0) > 0, width)
        if rows is None or cols is None:
            continue  # nothing positive: all False
        (r0, r1, y0, y1), (c0, c1, x0, x1) = rows, cols
        window = cv2.resize(np.ascontiguousarray(logits[i, r0:r1, c0:c1]), (x1 - x0, y1 - y0),
                            interpolation=cv2.INTER_LINEAR)
        np.greater(window, 0, out=out[i, y0:y1, x0:x1])
    return out


def _positive_window(positive: np.ndarray, out_size: int) -> tuple[int, int, int, int] | None:
    """Along one axis: the source span [s0, s1) around the positive cells, and the output span [o0, o1) it maps to,
    such that resizing just that span gives exactly the full resize's values wherever they can be positive.
    Exact because (1) the span keeps one non-positive cell of margin on each side (a pixel sampling only
    non-positive cells is False either way, and only such pixels feel the span's border clamping), and
    (2) s0 is a multiple of the step at which source and output pixel grids realign (s0 * out / src is whole),
    so the span's sampling positions are the full frame's. Returns None when nothing is positive."""
    hits = np.flatnonzero(positive)
    if hits.size == 0:
        return None
    size = positive.size
    step = size // gcd(size, out_size)  # source cells per realignment of the two grids
    s0 = max(0, (int(hits[0]) - 1) // step * step)
    s1 = min(size, -(-(int(hits[-1]) + 2) // step) * step)
    return s0, s1, s0 * out_size // size, s1 * out_size // size
