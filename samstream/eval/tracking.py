"""Tracking metrics for one video: HOTA, IDF1 and MOTA from TrackEval (not re-implemented), and J&F for masks.

Similarity between a predicted and a ground-truth instance is their mask IoU (pycocotools on the RLEs). J&F
follows DAVIS: each ground-truth object is paired with one predicted track (one-to-one, maximum total IoU
over the video); J is the per-frame region IoU and F the boundary F-measure at a tolerance of 0.8% of the
image diagonal, both averaged over frames (a frame where both are empty scores 1), then over objects.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import lap
import numpy as np
from pycocotools import mask as mask_utils

BOUNDARY_TOLERANCE = 0.008  # of the image diagonal (DAVIS)


@dataclass
class TrackSequence:
    """Instances of one video, frame by frame: track ids and COCO RLEs (bytes counts, pycocotools' form)."""

    height: int
    width: int
    ids: list[list[int]]
    rles: list[list[dict]]

    @property
    def frames(self) -> int:
        return len(self.ids)

    def truncated(self, frames: int) -> TrackSequence:
        return TrackSequence(self.height, self.width, self.ids[:frames], self.rles[:frames])

    def mean_share(self) -> float:
        """The union of the instances' share of the frame, averaged over the frames where any is visible."""
        shares = [float(mask_utils.area(mask_utils.merge(rles, intersect=False))) / (self.height * self.width)
                  for rles in self.rles if rles]
        return float(np.mean(shares)) if shares else 0.0


def _rle(rle: dict) -> dict:
    counts = rle["counts"]
    return {"size": list(rle["size"]), "counts": counts.encode("ascii") if isinstance(counts, str) else counts}


def load_predictions(path: Path, instruction: str | None = None) -> TrackSequence:
    """`results.jsonl` from `samstream run` / `samstream results` (one line per frame, in order)."""
    frames: dict[int, tuple[list[int], list[dict]]] = {}
    size = None
    instructions = set()
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                frame = int(record["frame"])
                instances = record["instances"]
            except (ValueError, KeyError, TypeError) as e:
                raise ValueError(f"{path}:{n}: not a samstream result line ({e})") from None
            ids, rles = [], []
            for inst in instances:
                instructions.add(inst["instruction"])
                if instruction is not None and inst["instruction"] != instruction:
                    continue
                ids.append(int(inst["id"]))
                rles.append(_rle(inst["mask"]))
                size = size or tuple(inst["mask"]["size"])
            frames[frame] = (ids, rles)
    if not frames:
        raise ValueError(f"{path}: no result lines")
    if instruction is not None and instruction not in instructions and instructions:
        raise ValueError(f"{path}: no instance has instruction {instruction!r} (it has {sorted(instructions)})")
    count = max(frames) + 1
    ids = [frames.get(t, ([], []))[0] for t in range(count)]
    rles = [frames.get(t, ([], []))[1] for t in range(count)]
    height, width = size if size else (0, 0)
    return TrackSequence(height, width, ids, rles)


def load_ground_truth(data: dict, video: str | int | None = None, category: str | None = None,
                      object_ids: set[int] | None = None) -> TrackSequence:
    """One video of a YouTube-VIS style annotation dict, optionally only one category's or some objects'
    tracks (the targets of an instruction)."""
    videos = data.get("videos")
    if not videos:
        raise ValueError("ground truth has no videos (is it a YouTube-VIS style file?)")
    if video is None:
        if len(videos) != 1:
            raise ValueError(f"ground truth has {len(videos)} videos; choose one with --video "
                             f"(e.g. {videos[0]['name']!r})")
        chosen = videos[0]
    else:
        matches = [v for v in videos if str(v["id"]) == str(video) or v.get("name") == video]
        if not matches:
            raise ValueError(f"no video {video!r} in the ground truth")
        chosen = matches[0]
    category_id = None
    if category is not None:
        names = {c["name"]: c["id"] for c in data.get("categories", [])}
        if category not in names:
            raise ValueError(f"no category {category!r} (categories: {sorted(names)})")
        category_id = names[category]
    length = chosen["length"]
    ids: list[list[int]] = [[] for _ in range(length)]
    rles: list[list[dict]] = [[] for _ in range(length)]
    for ann in data["annotations"]:
        if ann["video_id"] != chosen["id"]:
            continue
        if category_id is not None and ann["category_id"] != category_id:
            continue
        if object_ids is not None and ann.get("object_id", ann["id"]) not in object_ids:
            continue
        for t, seg in enumerate(ann["segmentations"]):
            if seg is not None:
                ids[t].append(int(ann["id"]))
                rles[t].append(_rle(seg))
    return TrackSequence(chosen["height"], chosen["width"], ids, rles)


def _iou(gt: list[dict], pred: list[dict]) -> np.ndarray:
    """(len(gt), len(pred)) mask IoU."""
    if not gt or not pred:
        return np.zeros((len(gt), len(pred)))
    return np.asarray(mask_utils.iou(gt, pred, [0] * len(pred))).reshape(len(gt), len(pred))


def tracking_metrics(gt: TrackSequence, pred: TrackSequence) -> dict:
    """HOTA (and its DetA / AssA), MOTA, IDF1, id switches, J, F and J&F of `pred` against `gt`."""
    from trackeval.metrics import CLEAR, HOTA, Identity

    if pred.frames != gt.frames:
        raise ValueError(f"predictions have {pred.frames} frames, ground truth {gt.frames}")
    if pred.height and (pred.height, pred.width) != (gt.height, gt.width):
        raise ValueError(f"prediction masks are {pred.width}x{pred.height}, ground truth {gt.width}x{gt.height}")
    gt_index = {i: k for k, i in enumerate(sorted({i for ids in gt.ids for i in ids}))}
    pred_index = {i: k for k, i in enumerate(sorted({i for ids in pred.ids for i in ids}))}
    similarity = [_iou(g, p) for g, p in zip(gt.rles, pred.rles)]
    data = {
        "num_timesteps": gt.frames,
        "num_gt_ids": len(gt_index),
        "num_tracker_ids": len(pred_index),
        "num_gt_dets": sum(len(ids) for ids in gt.ids),
        "num_tracker_dets": sum(len(ids) for ids in pred.ids),
        "gt_ids": [np.array([gt_index[i] for i in ids], dtype=int) for ids in gt.ids],
        "tracker_ids": [np.array([pred_index[i] for i in ids], dtype=int) for ids in pred.ids],
        "similarity_scores": similarity,
    }
    hota = HOTA().eval_sequence(data)
    clear = CLEAR({"PRINT_CONFIG": False}).eval_sequence(data)
    identity = Identity({"PRINT_CONFIG": False}).eval_sequence(data)
    j, f = region_and_boundary(gt, pred, gt_index, pred_index, similarity)
    return {
        "frames": gt.frames,
        "gt_tracks": len(gt_index),
        "predicted_tracks": len(pred_index),
        "HOTA": float(np.mean(hota["HOTA"])),
        "DetA": float(np.mean(hota["DetA"])),
        "AssA": float(np.mean(hota["AssA"])),
        "MOTA": float(clear["MOTA"]),
        "IDF1": float(identity["IDF1"]),
        "IDSW": int(clear["IDSW"]),
        "J": j,
        "F": f,
        "J&F": (j + f) / 2,
    }


def region_and_boundary(gt: TrackSequence, pred: TrackSequence, gt_index: dict[int, int],
                        pred_index: dict[int, int], similarity: list[np.ndarray]) -> tuple[float, float]:
    """DAVIS J and F, averaged over ground-truth objects (1.0, 1.0 when there are none and nothing is predicted)."""
    if not gt_index:
        return (1.0, 1.0) if not pred_index else (0.0, 0.0)
    total = np.zeros((len(gt_index), len(pred_index)))
    for t, sim in enumerate(similarity):
        for g, gid in enumerate(gt.ids[t]):
            for p, pid in enumerate(pred.ids[t]):
                total[gt_index[gid], pred_index[pid]] += sim[g, p]
    partner: dict[int, int] = {}
    if pred_index:
        _, row_to_col, _ = lap.lapjv(-total, extend_cost=True)
        partner = {r: int(c) for r, c in enumerate(row_to_col) if c >= 0 and total[r, c] > 0}
    inverse_gt = {k: i for i, k in gt_index.items()}
    inverse_pred = {k: i for i, k in pred_index.items()}
    tolerance = max(1, round(BOUNDARY_TOLERANCE * np.hypot(gt.height, gt.width)))
    js, fs = [], []
    for g in range(len(gt_index)):
        gid, pid = inverse_gt[g], inverse_pred.get(partner.get(g, -1))
        frame_j, frame_f = [], []
        for t in range(gt.frames):
            gm = _mask_of(gt, t, gid)
            pm = _mask_of(pred, t, pid) if pid is not None else None
            gm = gm if gm is not None else np.zeros((gt.height, gt.width), bool)
            pm = pm if pm is not None else np.zeros((gt.height, gt.width), bool)
            frame_j.append(region_similarity(gm, pm))
            frame_f.append(boundary_f(gm, pm, tolerance))
        js.append(float(np.mean(frame_j)))
        fs.append(float(np.mean(frame_f)))
    return float(np.mean(js)), float(np.mean(fs))


def _mask_of(seq: TrackSequence, t: int, track_id: int) -> np.ndarray | None:
    if track_id in seq.ids[t]:
        return mask_utils.decode(seq.rles[t][seq.ids[t].index(track_id)]).astype(bool)
    return None


def region_similarity(gt: np.ndarray, pred: np.ndarray) -> float:
    """J: IoU, 1.0 when both are empty."""
    union = np.logical_or(gt, pred).sum()
    return 1.0 if union == 0 else float(np.logical_and(gt, pred).sum() / union)


def boundary(mask: np.ndarray) -> np.ndarray:
    """One-pixel inner boundary of a mask."""
    m = mask.astype(np.uint8)
    return (m - cv2.erode(m, np.ones((3, 3), np.uint8), borderType=cv2.BORDER_CONSTANT, borderValue=0)).astype(bool)


def boundary_f(gt: np.ndarray, pred: np.ndarray, tolerance: int) -> float:
    """F: boundary precision/recall F-measure with `tolerance` pixels of slack; 1.0 when both are empty."""
    gb, pb = boundary(gt), boundary(pred)
    if not gb.any() and not pb.any():
        return 1.0
    if not gb.any() or not pb.any():
        return 0.0
    disk = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * tolerance + 1, 2 * tolerance + 1))
    gd = cv2.dilate(gb.astype(np.uint8), disk).astype(bool)
    pd = cv2.dilate(pb.astype(np.uint8), disk).astype(bool)
    precision = (pb & gd).sum() / pb.sum()
    recall = (gb & pd).sum() / gb.sum()
    return 0.0 if precision + recall == 0 else float(2 * precision * recall / (precision + recall))
