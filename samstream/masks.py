"""Small mask operations shared by the model's post-processing, the tracker and the evaluators."""

from __future__ import annotations

import cv2
import numpy as np


def mask_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, H, W) x (M, H, W) bool -> (N, M) IoU; 0 where both masks are empty."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)), dtype=np.float32)
    fa = a.reshape(len(a), -1).astype(np.float32)
    fb = b.reshape(len(b), -1).astype(np.float32)
    inter = fa @ fb.T
    union = fa.sum(1)[:, None] + fb.sum(1)[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1), 0.0).astype(np.float32)


def mask_nms(masks: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Indices to keep, best score first: greedy suppression of masks overlapping a kept one by > threshold."""
    order = np.argsort(-scores, kind="stable")
    iou = mask_iou(masks[order], masks[order])
    keep: list[int] = []
    for rank in range(len(order)):
        if all(iou[rank, k] <= iou_threshold for k in keep):
            keep.append(rank)
    return order[keep]


def fill_holes(masks: np.ndarray, max_area: int) -> np.ndarray:
    """(N, H, W) bool: fill background holes and remove foreground specks of at most `max_area` pixels
    (SAM3's post-processing, done here with OpenCV instead of a hub-downloaded kernel)."""
    if max_area <= 0 or len(masks) == 0:
        return masks
    out = masks.copy()
    for i, mask in enumerate(out):
        for value in (False, True):  # holes are small background components, specks small foreground ones
            region = (mask == value).astype(np.uint8)
            count, labels, stats, _ = cv2.connectedComponentsWithStats(region, connectivity=8)
            small = [c for c in range(1, count) if stats[c, cv2.CC_STAT_AREA] <= max_area]
            if small:
                mask[np.isin(labels, small)] = not value
    return out
