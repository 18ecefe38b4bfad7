"""Writing the world to standard formats, and reading them back.

- videos: MP4 (H.264 via PyAV) or one PNG per frame, plus `videos.json` in YouTube-VIS style
  (`videos`, `categories`, `annotations` with one COCO RLE per frame, null where the object is not visible);
- images: PNGs plus `images.json` in COCO style (`images`, `categories`, `annotations`).
Every annotation also carries the object's `attributes` (colour, size, texture, motion) and `object_id`; the
instruction engine reads them. Files are written to a temporary name and renamed when complete.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict
from pathlib import Path

import cv2
import numpy as np
from pycocotools import mask as mask_utils

from samstream.data.world import SHAPES, Scene, render
from samstream.streaming.messages import RleMask
from samstream.streaming.rle import decode_mask, encode_masks
from samstream.streaming.sinks import Mp4Writer

CATEGORIES = [{"id": i + 1, "name": name} for i, name in enumerate(SHAPES)]
CATEGORY_ID = {c["name"]: c["id"] for c in CATEGORIES}
FPS = 15


def rle_of(mask: np.ndarray) -> dict:
    """(H, W) bool -> COCO compressed RLE as JSON ({"size": [h, w], "counts": str})."""
    rle = encode_masks(mask[None])[0]
    return {"size": list(rle.size), "counts": rle.counts}


def decode_rle(rle: dict) -> np.ndarray:
    return decode_mask(RleMask(size=tuple(rle["size"]), counts=rle["counts"]))


def _box(rle: dict) -> list[float]:
    """Tight [x, y, w, h] of an RLE (pycocotools)."""
    return [float(v) for v in mask_utils.toBbox({"size": rle["size"], "counts": rle["counts"].encode("ascii")})]


def annotation_id(video_or_image_id: int, object_id: int) -> int:
    return video_or_image_id * 1000 + object_id


def _attributes(obj) -> dict:
    return {"colour": obj.colour, "size": obj.size, "texture": obj.texture, "motion": obj.motion}


def write_video(path: Path, frames: Iterable[np.ndarray], width: int, height: int, fps: int = FPS) -> None:
    """RGB frames -> H.264 MP4 (near-lossless: crf 18), renamed into place once complete."""
    with Mp4Writer(path, width, height, fps, crf=18) as writer:
        for rgb in frames:
            writer.write(rgb)


def write_json(path: Path, data: dict) -> None:
    part = path.with_name(path.name + ".part")
    part.write_text(json.dumps(data, separators=(",", ":")))
    part.replace(path)


def video_record(scene: Scene, width: int, height: int, as_images: bool, out: Path,
                 ) -> tuple[dict, list[dict]]:
    """Render one scene into `out` (an MP4 or a folder of PNGs); returns its YouTube-VIS video entry and its
    annotations."""
    name = f"scene_{scene.id:05d}"
    masks: dict[int, list[np.ndarray]] = {obj.id: [] for obj in scene.objects}

    def frames():
        for t in range(scene.frames):
            rgb, visible = render(scene, t, width, height)
            for obj_id, mask in visible.items():
                masks[obj_id].append(mask)
            yield rgb

    if as_images:
        folder = out / "videos" / name
        folder.mkdir(parents=True, exist_ok=True)
        file_names = []
        for t, rgb in enumerate(frames()):
            file = folder / f"{t:05d}.png"
            cv2.imwrite(str(file), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
            file_names.append(f"videos/{name}/{t:05d}.png")
        video = {"id": scene.id, "name": name, "width": width, "height": height, "length": scene.frames,
                 "file_names": file_names}
    else:
        (out / "videos").mkdir(parents=True, exist_ok=True)
        write_video(out / "videos" / f"{name}.mp4", frames(), width, height)
        video = {"id": scene.id, "name": name, "width": width, "height": height, "length": scene.frames,
                 "file": f"videos/{name}.mp4", "fps": FPS}
    annotations = []
    for obj in scene.objects:
        segs = [rle_of(m) if m.any() else None for m in masks[obj.id]]
        areas = [int(m.sum()) for m in masks[obj.id]]
        boxes = [_box(rle) if rle else None for rle in segs]
        annotations.append({
            "id": annotation_id(scene.id, obj.id), "video_id": scene.id, "object_id": obj.id,
            "category_id": CATEGORY_ID[obj.shape], "iscrowd": 0, "segmentations": segs, "areas": areas,
            "bboxes": boxes, "attributes": _attributes(obj), "world": asdict(obj),
        })
    return video, annotations


def image_record(scene: Scene, width: int, height: int, out: Path) -> tuple[dict, list[dict]]:
    """Render frame 0 of one scene as a PNG; returns its COCO image entry and annotations."""
    name = f"image_{scene.id:05d}.png"
    rgb, visible = render(scene, 0, width, height)
    (out / "images").mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(out / "images" / name), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    image = {"id": scene.id, "file_name": f"images/{name}", "width": width, "height": height}
    annotations = []
    for obj in scene.objects:
        mask = visible[obj.id]
        if not mask.any():
            continue
        rle = rle_of(mask)
        box = _box(rle)
        annotations.append({
            "id": annotation_id(scene.id, obj.id), "image_id": scene.id, "object_id": obj.id,
            "category_id": CATEGORY_ID[obj.shape], "iscrowd": 0, "segmentation": rle, "area": int(mask.sum()),
            "bbox": box, "attributes": _attributes(obj), "world": asdict(obj),
        })
    return image, annotations


def load_dataset(path: Path, kind: str = "videos") -> dict:
    """A YouTube-VIS (`videos.json`) or COCO (`images.json`) annotation file, or the folder holding it."""
    path = Path(path)
    file = path / f"{kind}.json" if path.is_dir() else path
    if not file.exists():
        raise FileNotFoundError(f"{file}: no such annotation file (make one with `samstream synth`)")
    try:
        return json.loads(file.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{file}: not JSON ({e})") from None
