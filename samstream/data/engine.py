"""The instruction engine's sources: the world's scenes, and any COCO-format or YouTube-VIS dataset.

`objects_in_frame` (a rendered world frame), `objects_in_image` (a COCO image: category, box, area, and the
`attributes` our writer stores when present), `objects_in_video` (a video's objects: whole-video attributes)
turn annotations into `ObjectView`s; `instruction_set` runs a generator over a whole dataset file and returns
the records `samstream instructions` writes (docs/data.md).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
from tqdm import tqdm

from samstream.data.instructions import (COCO_FUNCTIONS, WORLD_FUNCTIONS, InstructionGenerator, ObjectView, Split,
                                         TemplateGenerator)
from samstream.data.world import COLOURS, SHAPES, TEXTURES, WHOLE_FRAME, Scene, View, size_class

MIN_VISIBLE_FRACTION = 0.3  # an object less visible than this (occluded, or mostly outside) is no target
MIN_VISIBLE_PIXELS = 12


def world_generator(static: bool = False) -> TemplateGenerator:
    return TemplateGenerator(WORLD_FUNCTIONS, vocabulary=SHAPES,
                             attributes={"colour": list(COLOURS), "texture": list(TEXTURES)}, static=static)


def objects_in_frame(scene: Scene, visible: dict[int, np.ndarray], silhouettes: dict[int, np.ndarray] | None = None,
                     view: View = WHOLE_FRAME) -> list[ObjectView]:
    """The scene's objects that are visible enough in one rendered frame (ann_id = the object's id). In a zoomed
    `view` an object's size word is what it looks like there (a small star filling the view is a large one)."""
    out = []
    for obj in scene.objects:
        mask = visible[obj.id]
        area = int(mask.sum())
        full = int(silhouettes[obj.id].sum()) if silhouettes is not None else area
        if area < MIN_VISIBLE_PIXELS or area < MIN_VISIBLE_FRACTION * max(full, 1):
            continue
        ys, xs = np.nonzero(mask)
        bbox = (float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1), float(ys.max() - ys.min() + 1))
        size = obj.size if view.zoom == 1.0 else size_class(obj.radius * view.zoom)
        out.append(ObjectView(obj.id, obj.shape, {"colour": obj.colour, "texture": obj.texture, "size": size},
                              bbox, float(area), extent=obj.radius))
    return out


def hidden_objects(scene: Scene, visible: dict[int, np.ndarray], kept: Iterable[ObjectView]) -> list[int]:
    """Ids of objects with some visible pixels that are too hidden to be targets (losses ignore them)."""
    kept_ids = {o.ann_id for o in kept}
    return [obj.id for obj in scene.objects if obj.id not in kept_ids and visible[obj.id].any()]


def _category_names(data: dict) -> dict[int, str]:
    return {c["id"]: c["name"] for c in data.get("categories", [])}


def objects_in_image(data: dict, image_id: int) -> list[ObjectView]:
    """A COCO image's annotations (crowd ones left out)."""
    names = _category_names(data)
    out = []
    for ann in data["annotations"]:
        if ann.get("image_id") != image_id or ann.get("iscrowd", 0):
            continue
        extent = ann.get("world", {}).get("radius")
        out.append(ObjectView(ann["id"], names[ann["category_id"]], dict(ann.get("attributes", {})),
                              tuple(ann["bbox"]), float(ann.get("area", 0.0)), extent=extent))
    return out


def objects_in_video(data: dict, video_id: int) -> list[ObjectView]:
    """A YouTube-VIS video's objects, by what holds for the whole video (box and area of their largest frame)."""
    names = _category_names(data)
    out = []
    for ann in data["annotations"]:
        if ann.get("video_id") != video_id:
            continue
        areas = ann.get("areas") or [0]
        t = int(np.argmax(areas))
        if not areas[t]:
            continue
        extent = ann.get("world", {}).get("radius")
        out.append(ObjectView(ann["id"], names[ann["category_id"]], dict(ann.get("attributes", {})),
                              tuple(ann["bboxes"][t]), float(areas[t]), extent=extent))
    return out


def generator_for(data: dict, static: bool) -> TemplateGenerator:
    """The world's generator for our own datasets; for other COCO data, its categories and the COCO table."""
    names = sorted(_category_names(data).values())
    if set(names) <= set(SHAPES):
        return world_generator(static)
    attributes: dict[str, set[str]] = {}
    for ann in data["annotations"]:
        for key, value in ann.get("attributes", {}).items():
            if key == "colour":
                attributes.setdefault(key, set()).add(value)
    return TemplateGenerator(COCO_FUNCTIONS, vocabulary=names, attributes={k: sorted(v) for k, v in attributes.items()},
                             static=static)


def instruction_set(data: dict, split: Split | None = "heldout", per_level: int = 2, negatives: int = 1, seed: int = 0,
                    generator: InstructionGenerator | None = None, progress: bool = False) -> list[dict]:
    """Instruction records for every image (COCO) or video (YouTube-VIS) of a dataset."""
    videos = "videos" in data
    generator = generator or generator_for(data, static=videos)
    rng = np.random.default_rng(seed)
    records: list[dict] = []
    items = data["videos"] if videos else data["images"]
    for item in tqdm(items, desc="instructions", unit="video" if videos else "image", disable=not progress):
        objects = objects_in_video(data, item["id"]) if videos else objects_in_image(data, item["id"])
        for inst in generator.generate(objects, rng, split=split, per_level=per_level, negatives=negatives):
            records.append({"id": len(records) + 1, ("video_id" if videos else "image_id"): item["id"],
                            "instruction": inst.text, "level": inst.level, "kind": inst.kind,
                            "template": inst.template, "split": inst.split, "targets": list(inst.targets)})
    return records


def write_instructions(path: Path, records: list[dict], source: str, split: Split | None, seed: int) -> None:
    from samstream.data.formats import write_json

    write_json(Path(path), {"info": {"generator": "samstream instructions", "source": source, "split": split,
                                     "seed": seed}, "instructions": records})
