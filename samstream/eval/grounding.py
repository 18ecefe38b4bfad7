"""Which words a model grounds: for every object of an image set, each value of one attribute is asked in turn
("the circle", "the square", ...; for colour "the red circle", "the blue circle", ... with the object's own
shape), and the value whose instruction covers the object best (detection score x mask IoU) is the model's
answer. Accuracy per attribute, on the whole frame and on a view zoomed in on the object (where a small model
sees more of its shape). A model that ignores a word sits at chance, whatever its gIoU
(docs/model-card.md, "Session 16")."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from samstream.data.formats import decode_rle, load_dataset
from samstream.masks import mask_iou
from samstream.model.segmenter import FrameFeatures, Segmenter
from samstream.model.zoom import cut_views, mask_to_view, view_around

ZOOM_FILL = 0.35  # the object's radius as a share of the zoomed view's side
VIEW_SIZE = 224  # zoomed views are cut at this size (then resized to the model's input as any frame)
MIN_AREA = 20  # pixels: smaller (mostly hidden) objects are skipped


def _prompts(attribute: str, values: list[str], shape: str) -> list[str]:
    if attribute == "shape":
        return [f"the {value}" for value in values]
    return [f"the {value} {shape}" for value in values]


def _answer(segmenter: Segmenter, features: FrameFeatures, target: np.ndarray, prompts: list[str]) -> int:
    """Index of the prompt whose detections cover `target` best (score x IoU); -1 when none covers it at all."""
    detections = segmenter.detect(features, prompts, ["concept"] * len(prompts))
    best = [float((d.scores * mask_iou(d.masks, target[None])[:, 0]).max()) if len(d) else 0.0 for d in detections]
    return int(np.argmax(best)) if max(best) > 0 else -1


def word_grounding(segmenter: Segmenter, data_dir: Path, max_images: int | None = None, progress: bool = True) -> dict:
    """Shape and colour accuracy of the model's answers (see the module doc) over the objects of an image set
    made by `samstream synth` (images.json: category = shape, attributes.colour), whole frame and zoomed."""
    data = load_dataset(Path(data_dir), "images")
    categories = {c["id"]: c["name"] for c in data["categories"]}
    shapes = sorted(set(categories.values()))
    by_image: dict[int, list[dict]] = defaultdict(list)
    for ann in data["annotations"]:
        by_image[ann["image_id"]].append(ann)
    colours = sorted({ann["attributes"]["colour"] for ann in data["annotations"] if "colour" in ann.get("attributes", {})})
    right = {(attribute, where): 0 for attribute in ("shape", "colour") for where in ("whole", "zoomed")}
    objects = 0
    for image in tqdm(data["images"][:max_images], desc="word grounding", unit="image", disable=not progress):
        bgr = cv2.imread(str(Path(data_dir) / image["file_name"]))
        if bgr is None:
            raise ValueError(f"{Path(data_dir) / image['file_name']}: cannot read image")
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        whole = segmenter.encode_frame(rgb)  # once per image, once per zoomed view: every prompt reuses them
        for ann in by_image[image["id"]]:
            mask = decode_rle(ann["segmentation"]).astype(bool)
            if mask.sum() < MIN_AREA:
                continue
            objects += 1
            shape, colour = categories[ann["category_id"]], ann.get("attributes", {}).get("colour")
            view = view_around(mask, ZOOM_FILL)
            zoomed = segmenter.encode_frame(cut_views(rgb, [view], VIEW_SIZE)[0])
            zoomed_mask = mask_to_view(mask, view, VIEW_SIZE)
            for attribute, values, truth in (("shape", shapes, shape), ("colour", colours, colour)):
                if truth is None or len(values) < 2:
                    continue
                prompts = _prompts(attribute, values, shape)
                right[attribute, "whole"] += _answer(segmenter, whole, mask, prompts) == values.index(truth)
                right[attribute, "zoomed"] += _answer(segmenter, zoomed, zoomed_mask, prompts) == values.index(truth)
    accuracy = {attribute: {where: round(right[attribute, where] / objects, 4) if objects else None
                            for where in ("whole", "zoomed")} for attribute in ("shape", "colour")}
    accuracy["shape"]["chance"] = round(1 / len(shapes), 4) if shapes else None
    accuracy["colour"]["chance"] = round(1 / len(colours), 4) if colours else None
    return {**accuracy, "objects": objects, "images": min(len(data["images"]), max_images or len(data["images"]))}


__all__ = ["word_grounding"]
