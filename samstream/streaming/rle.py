"""Instance masks <-> COCO compressed RLE (pycocotools) and the result messages built from them."""

from __future__ import annotations

import numpy as np
from pycocotools import mask as mask_utils

from samstream.instances import Instances
from samstream.streaming.messages import FrameResult, InstanceResult, RleMask


def _coco_rles(masks: np.ndarray) -> list[dict]:
    if len(masks) == 0:
        return []
    return mask_utils.encode(np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8)))


def encode_masks(masks: np.ndarray) -> list[RleMask]:
    """(N, H, W) bool -> N compressed RLEs."""
    return [RleMask(size=tuple(r["size"]), counts=r["counts"].decode("ascii")) for r in _coco_rles(masks)]


def decode_mask(rle: RleMask) -> np.ndarray:
    """One RLE -> (H, W) bool."""
    return mask_utils.decode({"size": list(rle.size), "counts": rle.counts.encode("ascii")}).astype(bool)


def to_frame_result(stream: str, frame: int, pts: float, instances: Instances) -> FrameResult:
    coco = _coco_rles(instances.masks)
    rles = [RleMask(size=tuple(r["size"]), counts=r["counts"].decode("ascii")) for r in coco]
    boxes = mask_utils.toBbox(coco) if coco else np.zeros((0, 4))  # tight [x, y, w, h] per mask
    return FrameResult(
        stream=stream,
        frame=frame,
        pts=pts,
        instances=[
            InstanceResult(
                id=int(instances.ids[i]),
                instruction=instances.instructions[i],
                level=instances.levels[i],
                score=round(float(instances.scores[i]), 4),
                confirmed=bool(instances.confirmed[i]),
                bbox=tuple(float(v) for v in boxes[i]),
                mask=rles[i],
            )
            for i in range(len(instances))
        ],
    )


def from_frame_result(result: FrameResult) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(masks (N, H, W) bool, ids (N,), scores (N,)) of a result; for drawing and evaluation."""
    if not result.instances:
        return np.zeros((0, 0, 0), dtype=bool), np.zeros(0, np.int64), np.zeros(0, np.float32)
    masks = np.stack([decode_mask(inst.mask) for inst in result.instances])
    ids = np.array([inst.id for inst in result.instances], dtype=np.int64)
    scores = np.array([inst.score for inst in result.instances], dtype=np.float32)
    return masks, ids, scores
