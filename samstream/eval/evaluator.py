"""`samstream eval --model M --data DIR`: run a model over a dataset through the worker's tracking path and
score it. Images (COCO `images.json`) give the instruction-segmentation metrics per level; videos
(YouTube-VIS `videos.json`) give J&F and HOTA / IDF1 / MOTA per instruction, averaged per level.

Instructions come from `DIR/images.instructions.json` / `DIR/videos.instructions.json` (written by
`samstream instructions`), or, when those are missing, are generated from the held-out templates (seed 0).
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from samstream.data.engine import instruction_set
from samstream.data.formats import decode_rle, load_dataset
from samstream.eval.segmentation import (OUTCOMES, SIZE_BINS, SampleResult, by_size, score_sample, summarize,
                                         summarize_kinds, summarize_outcomes, summarize_sizes, summarize_templates)
from samstream.eval.tracking import TrackSequence, _rle, tracking_metrics
from samstream.model.levels import LEVELS
from samstream.model.segmenter import Segmenter
from samstream.streaming.rle import encode_masks
from samstream.streaming.sources import VideoFileSource
from samstream.tracker.session import TrackerConfig, TrackingSession

VIDEO_METRICS = ("J&F", "J", "F", "HOTA", "DetA", "AssA", "IDF1", "MOTA")


def instruction_records(data_dir: Path, kind: str, data: dict) -> list[dict]:
    file = data_dir / f"{kind}.instructions.json"
    if file.exists():
        return json.loads(file.read_text())["instructions"]
    return instruction_set(data, split="heldout", seed=0)


def evaluate(segmenter: Segmenter, data_dir: Path, keyframe_every: int = 5, max_items: int | None = None,
             progress: bool = True) -> dict:
    data_dir = Path(data_dir)
    report: dict = {"model": segmenter.info.name, "data": str(data_dir), "keyframe_every": keyframe_every}
    found = False
    if (data_dir / "images.json").exists():
        found = True
        report["images"] = evaluate_images(segmenter, data_dir, max_items, progress)
    if (data_dir / "videos.json").exists():
        found = True
        report["videos"] = evaluate_videos(segmenter, data_dir, keyframe_every, max_items, progress)
    if not found:
        raise FileNotFoundError(f"{data_dir}: no images.json or videos.json (make a set with `samstream synth`)")
    return report


def evaluate_images(segmenter: Segmenter, data_dir: Path, max_items: int | None = None, progress: bool = True) -> dict:
    """A one-frame stream per image. With no later frame to confirm a track, the birth bar is the detection bar."""
    data = load_dataset(data_dir, "images")
    records = instruction_records(data_dir, "images", data)
    by_image: dict[int, list[dict]] = defaultdict(list)
    for record in records:
        by_image[record["image_id"]].append(record)
    masks = {ann["id"]: ann["segmentation"] for ann in data["annotations"]}
    objects_of: dict[int, list[int]] = defaultdict(list)
    for ann in data["annotations"]:
        objects_of[ann["image_id"]].append(ann["id"])
    images = [img for img in data["images"] if img["id"] in by_image][:max_items]
    config = TrackerConfig(keyframe_every=1, birth_threshold=segmenter.info.score_threshold)
    samples: list[SampleResult] = []
    rows: list[dict] = []
    for image in tqdm(images, desc="eval images", unit="image", disable=not progress):
        bgr = cv2.imread(str(data_dir / image["file_name"]))
        if bgr is None:
            raise ValueError(f"{data_dir / image['file_name']}: cannot read image")
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        items = by_image[image["id"]]
        objects = {ann_id: decode_rle(masks[ann_id]) for ann_id in objects_of[image["id"]]}  # once per image
        texts = list(dict.fromkeys(r["instruction"] for r in items))
        levels = [next(r["level"] for r in items if r["instruction"] == t) for t in texts]
        instances = TrackingSession(segmenter, texts, config, levels=levels).update(rgb)
        for record in items:
            chosen = [i for i, text in enumerate(instances.instructions) if text == record["instruction"]]
            prediction = instances.masks[chosen].any(0) if chosen else np.zeros(rgb.shape[:2], bool)
            truth = np.zeros(rgb.shape[:2], bool)
            others = np.zeros(rgb.shape[:2], bool)
            for ann_id, mask in objects.items():
                if ann_id in record["targets"]:
                    truth |= mask
                else:
                    others |= mask
            sample = score_sample(record["level"], prediction, truth, record.get("kind", ""), others,
                                  record.get("template", ""))
            samples.append(sample)
            rows.append({**_row_of(record, "image_id"), "IoU": None if sample.negative else sample.iou,
                         "outcome": sample.outcome, "empty": sample.predicted_pixels == 0})
    return {"levels": summarize(samples), "sizes": summarize_sizes(samples), "kinds": summarize_kinds(samples),
            "outcomes": summarize_outcomes(samples), "templates": summarize_templates(samples),
            "instructions": len(samples),
            "images": len(images), "per_instruction": rows}


def _row_of(record: dict, item_key: str) -> dict:
    """The instruction's identity in a per-instruction row of the report (where a user looks for what failed)."""
    return {item_key: record[item_key], "instruction": record["instruction"], "level": record["level"],
            "kind": record.get("kind", ""), "template": record.get("template", ""),
            "targets": len(record["targets"])}


def _frames(data_dir: Path, video: dict):
    if "file" in video:
        for frame in VideoFileSource(data_dir / video["file"]):
            yield frame.rgb
    else:
        for name in video["file_names"]:
            bgr = cv2.imread(str(data_dir / name))
            if bgr is None:
                raise ValueError(f"{data_dir / name}: cannot read frame")
            yield cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def evaluate_videos(segmenter: Segmenter, data_dir: Path, keyframe_every: int = 5, max_items: int | None = None,
                    progress: bool = True, birth_threshold: float | None = None) -> dict:
    """All instructions of a video in one tracking session (as a worker runs a stream). `birth_threshold`
    overrides the model's (None: the model's own)."""
    data = load_dataset(data_dir, "videos")
    records = instruction_records(data_dir, "videos", data)
    by_video: dict[int, list[dict]] = defaultdict(list)
    for record in records:
        by_video[record["video_id"]].append(record)
    videos = [v for v in data["videos"] if v["id"] in by_video][:max_items]
    per_record: list[tuple[dict, dict | None]] = []
    for video in tqdm(videos, desc="eval videos", unit="video", disable=not progress):
        items = by_video[video["id"]]
        texts = list(dict.fromkeys(r["instruction"] for r in items))
        levels = [next(r["level"] for r in items if r["instruction"] == t) for t in texts]
        config = TrackerConfig(keyframe_every=keyframe_every, birth_threshold=birth_threshold)
        session = TrackingSession(segmenter, texts, config, levels=levels)
        tracks: dict[str, tuple[list[list[int]], list[list[dict]]]] = {t: ([], []) for t in texts}
        for rgb in _frames(data_dir, video):
            instances = session.update(rgb)
            rles = encode_masks(instances.masks) if len(instances.scores) else []
            for text in texts:
                ids, frame_rles = [], []
                for i, inst_text in enumerate(instances.instructions):
                    if inst_text == text:
                        ids.append(int(instances.ids[i]))
                        frame_rles.append(_rle({"size": list(rles[i].size), "counts": rles[i].counts}))
                tracks[text][0].append(ids)
                tracks[text][1].append(frame_rles)
        for record in items:
            ids, rles = tracks[record["instruction"]]
            pred = TrackSequence(video["height"], video["width"], ids, rles)
            if not record["targets"]:
                per_record.append((record, {"empty": not any(ids)}))
                continue
            gt = ground_truth_of(data, video, set(record["targets"]))
            metrics = tracking_metrics(gt, pred.truncated(gt.frames))
            per_record.append((record, {**metrics, "target_share": gt.mean_share()}))
    return {"levels": _video_summary(per_record), "sizes": _video_sizes(per_record), "instructions": len(per_record),
            "videos": len(videos), "per_instruction": [{**_row_of(r, "video_id"), **m} for r, m in per_record]}


def ground_truth_of(data: dict, video: dict, ann_ids: set[int]) -> TrackSequence:
    length = video["length"]
    ids: list[list[int]] = [[] for _ in range(length)]
    rles: list[list[dict]] = [[] for _ in range(length)]
    for ann in data["annotations"]:
        if ann["id"] in ann_ids:
            for t, seg in enumerate(ann["segmentations"]):
                if seg is not None:
                    ids[t].append(int(ann["id"]))
                    rles[t].append(_rle(seg))
    return TrackSequence(video["height"], video["width"], ids, rles)


def _video_summary(per_record: list[tuple[dict, dict | None]]) -> dict:
    out = {}
    for level in (*LEVELS, "all"):
        chosen = [(r, m) for r, m in per_record if level == "all" or r["level"] == level]
        positives = [m for r, m in chosen if r["targets"]]
        negatives = [m for r, m in chosen if not r["targets"]]
        if not chosen:
            continue
        summary = {"samples": len(positives), "negatives": len(negatives)}
        for key in VIDEO_METRICS:
            summary[key] = float(np.mean([m[key] for m in positives])) if positives else None
        summary["no_target_accuracy"] = float(np.mean([m["empty"] for m in negatives])) if negatives else None
        out[level] = summary
    return out


def _video_sizes(per_record: list[tuple[dict, dict | None]]) -> dict:
    """{small|medium|large: {samples, J&F, HOTA, IDF1, MOTA}} over the instructions with targets, by the share of
    the frame their targets cover (averaged over the frames where they are visible)."""
    groups = by_size([m for r, m in per_record if r["targets"]], lambda m: m["target_share"])
    return {name: {"samples": len(chosen), **{key: float(np.mean([m[key] for m in chosen])) for key in VIDEO_COLUMNS}}
            for name, chosen in groups.items()}


IMAGE_COLUMNS = ("gIoU", "cIoU", "P@0.5")
VIDEO_COLUMNS = ("J&F", "HOTA", "IDF1", "MOTA")


def markdown(report: dict) -> str:
    """The report as markdown tables (what the model card shows)."""
    lines = [f"Model `{report['model']}` on `{report['data']}` (keyframes every {report['keyframe_every']} frames)", ""]
    if "images" in report:
        lines += _table("images", report["images"]["levels"], IMAGE_COLUMNS) + [""]
        if report["images"].get("sizes"):
            lines += _size_table("images", report["images"]["sizes"], IMAGE_COLUMNS) + [""]
        if report["images"].get("kinds"):
            lines += _table("images: level/kind", report["images"]["kinds"], IMAGE_COLUMNS, header_kind=True) + [""]
        if report["images"].get("outcomes"):
            lines += _outcome_table(report["images"]["outcomes"]) + [""]
    if "videos" in report:
        lines += _table("videos", report["videos"]["levels"], VIDEO_COLUMNS)
        if report["videos"].get("sizes"):
            lines += [""] + _size_table("videos", report["videos"]["sizes"], VIDEO_COLUMNS)
    if "grounding" in report:
        g = report["grounding"]
        lines += ["", f"Word grounding ({g['objects']} objects): the value named best, per attribute", "",
                  "| attribute | whole frame | zoomed | chance |", "|---|---|---|---|"]
        lines += [f"| {a} | {_f(g[a]['whole'])} | {_f(g[a]['zoomed'])} | {_f(g[a]['chance'])} |" for a in ("shape", "colour")]
    return "\n".join(lines) + "\n"


def _table(kind: str, levels: dict, columns: tuple[str, ...], header_kind: bool = False) -> list[str]:
    """One markdown table: a row per level (or level/kind), the metric columns between samples and negatives."""
    header = [kind if header_kind else f"{kind}: level", "samples", *columns, "negatives", "no-target acc."]
    rows = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for level, s in levels.items():
        cells = [level, str(s["samples"]), *(_f(s[key]) for key in columns), str(s["negatives"]),
                 _f(s["no_target_accuracy"])]
        rows.append("| " + " | ".join(cells) + " |")
    return rows


def _outcome_table(outcomes: dict) -> list[str]:
    """Shares of the samples with targets by how they went (samstream.eval.segmentation.OUTCOMES)."""
    rows = ["| images: outcome | samples | " + " | ".join(OUTCOMES) + " |", "|" + "---|" * (2 + len(OUTCOMES))]
    for level, s in outcomes.items():
        rows.append(f"| {level} | {s['samples']} | " + " | ".join(_f(s[o]) for o in OUTCOMES) + " |")
    return rows


def _size_table(kind: str, sizes: dict, columns: tuple[str, ...]) -> list[str]:
    """The metric columns of the samples with targets, by the share of the frame their targets cover."""
    bounds = {name: (low, high) for name, low, high in SIZE_BINS}
    rows = [f"| {kind}: target size | share of frame | samples | " + " | ".join(columns) + " |",
            "|" + "---|" * (3 + len(columns))]
    for name, s in sizes.items():
        low, high = bounds[name]
        share = f"< {high:.0%}" if low == 0 else f">= {low:.0%}" if high > 1 else f"{low:.0%}-{high:.0%}"
        rows.append(f"| {name} | {share} | {s['samples']} | " + " | ".join(_f(s[key]) for key in columns) + " |")
    return rows


def _f(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"
