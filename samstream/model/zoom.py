"""Zoomed views of candidate objects: where a small detector can see what its whole-frame view is too coarse for.

A small ViT (patch 8 at 128 px) sees an object of the world 2-6 patches wide on a whole frame and cannot learn its
shape there; on a view centred on the object and magnified so it spans most of the view it can
(docs/model-card.md, "Session 15"). Zoomed re-scoring runs the detector again on one such view per candidate,
cut from the full-resolution frame, and combines the two scores. This module is the geometry: where a view
lies in the frame, cutting it out, and moving masks between the two.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

REFINE_MIN_IOU = 0.5  # a zoomed mask replaces its candidate's only when they overlap at least this much
RADIUS_PERCENTILE = 98.0  # the candidate's radius: this percentile of its pixels' distances from its centroid


@dataclass(frozen=True)
class ZoomView:
    """A square window on a frame: centre (cx, cy) and side, in frame pixels (it may reach past the frame)."""

    cx: float
    cy: float
    side: float

    def to_view(self, size: int) -> np.ndarray:
        """The 2x3 affine matrix taking frame pixel indices to a `size` x `size` view's. `cx`, `cy` are continuous
        (pixel i spans [i, i + 1]); OpenCV's matrices map indices (pixel i's centre is i), hence the half pixels."""
        scale = size / self.side
        return np.array([[scale, 0.0, scale * (0.5 - self.cx) + (size - 1) / 2],
                         [0.0, scale, scale * (0.5 - self.cy) + (size - 1) / 2]], np.float64)


def view_around(mask: np.ndarray, fill: float, min_side: float = 8.0) -> ZoomView | None:
    """The view centred on a mask's centroid in which the mask's radius is `fill` of the side; None for an
    empty mask. The side never drops under `min_side` pixels (a speck is not magnified without bound)."""
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return None
    cx, cy = float(xs.mean()) + 0.5, float(ys.mean()) + 0.5
    radius = float(np.percentile(np.hypot(xs + 0.5 - cx, ys + 0.5 - cy), RADIUS_PERCENTILE)) + 0.5
    return ZoomView(cx, cy, max(radius / fill, min_side))


def cut_views(rgb: np.ndarray, views: list[ZoomView], size: int) -> np.ndarray:
    """(k, size, size, 3) uint8: each view cut from the frame and resized (area-averaged when shrinking,
    bilinear when magnifying); outside the frame the edge pixels repeat."""
    out = np.empty((len(views), size, size, 3), np.uint8)
    for i, view in enumerate(views):
        shrink = view.side > size
        flags = cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
        if shrink:  # warpAffine does not area-average: cut at full resolution, then resize
            side = int(np.ceil(view.side))
            full = cv2.warpAffine(rgb, ZoomView(view.cx, view.cy, side).to_view(side), (side, side),
                                  flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
            out[i] = cv2.resize(full, (size, size), interpolation=flags)
        else:
            out[i] = cv2.warpAffine(rgb, view.to_view(size), (size, size), flags=flags,
                                    borderMode=cv2.BORDER_REPLICATE)
    return out


def mask_to_view(mask: np.ndarray, view: ZoomView, size: int) -> np.ndarray:
    """A frame-sized bool mask -> the (size, size) bool mask it covers in the view (pixels whose centre lies
    inside; nothing outside the frame)."""
    warped = cv2.warpAffine(mask.astype(np.float32), view.to_view(size), (size, size), flags=cv2.INTER_LINEAR,
                            borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)
    return warped > 0.5


def logits_to_frame(logits: np.ndarray, view: ZoomView, height: int, width: int) -> np.ndarray:
    """(s, s) mask logits on a view -> a (height, width) bool mask in the frame; False outside the view."""
    s = logits.shape[0]
    # WARP_INVERSE_MAP: the matrix given maps output (frame) pixels to input (view) pixels
    warped = cv2.warpAffine(logits.astype(np.float32), view.to_view(s), (width, height),
                            flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_CONSTANT,
                            borderValue=-1.0)
    return warped > 0


@dataclass(frozen=True)
class ZoomRescore:
    """Zoomed re-scoring settings (a model folder's samstream.json `zoom_rescore`)."""

    fill: float = 0.35  # the candidate's radius as a share of its view's side (training: zoom_fill 0.25-0.45)
    weight: float = 0.5  # final score = whole-frame score^(1 - weight) x zoomed score^weight
    max_candidates: int = 8  # per instruction and frame, best first; the others are dropped
    refine: bool = False  # replace a candidate's mask by the zoomed view's (finer for small objects)

    def __post_init__(self) -> None:
        if not 0.05 <= self.fill <= 0.5:
            raise ValueError(f"zoom fill must be in [0.05, 0.5], not {self.fill}")
        if not 0.0 <= self.weight <= 1.0:
            raise ValueError(f"zoom weight must be in [0, 1], not {self.weight}")
        if self.max_candidates < 1:
            raise ValueError(f"zoom max_candidates must be at least 1, not {self.max_candidates}")


def combine(whole: np.ndarray, zoomed: np.ndarray, weight: float) -> np.ndarray:
    """The weighted geometric mean of the two scores."""
    return (np.power(np.clip(whole, 0, 1), 1.0 - weight) * np.power(np.clip(zoomed, 0, 1), weight)).astype(np.float32)


def best_matching_query(scores: np.ndarray, masks: np.ndarray, candidate: np.ndarray) -> tuple[int, float, float]:
    """Of a zoomed view's queries ((Q,) scores, (Q, m, m) bool masks), the one whose score x mask IoU with the
    candidate (m, m) is highest: (its index, that product, its IoU)."""
    inter = (masks & candidate).reshape(len(masks), -1).sum(1)
    union = (masks | candidate).reshape(len(masks), -1).sum(1)
    iou = np.where(union > 0, inter / np.maximum(union, 1), 0.0)
    match = scores * iou
    best = int(match.argmax())
    return best, float(match[best]), float(iou[best])
