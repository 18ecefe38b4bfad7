"""Training batches from a COCO-format dataset a user has (fine-tuning): instructions from the instruction
engine over its annotations, images resized to the model's square input. No tracker pairs (still images)."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import torch
from pycocotools import mask as mask_utils

from samstream.data.engine import generator_for, objects_in_image
from samstream.data.instructions import Split
from samstream.errors import ConfigError
from samstream.model.levels import LEVELS
from samstream.model.preprocess import IMAGE_MEAN, IMAGE_STD
from samstream.train.world_batches import Batch, DetectionTarget, pick_instruction


class CocoBatches:
    def __init__(self, annotations: str | Path, image_size: int, mask_size: int, images_root: str | Path | None = None,
                 seed: int = 0, split: Split = "train", negative_rate: float = 0.15,
                 level_weights: dict[str, float] | None = None) -> None:
        path = Path(annotations)
        if not path.is_file():
            raise ConfigError(f"data {path}: no such COCO annotation file")
        try:
            self.data = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise ConfigError(f"data {path}: not JSON ({e})") from None
        if "images" not in self.data or "annotations" not in self.data:
            raise ConfigError(f"data {path}: not a COCO file (needs 'images' and 'annotations')")
        self.root = Path(images_root) if images_root else path.parent
        self.image_size, self.mask_size = image_size, mask_size
        self.rng = np.random.default_rng(seed)
        self.split, self.negative_rate = split, negative_rate
        weights = level_weights or {level: 1.0 for level in LEVELS}
        self.levels = [level for level in LEVELS if weights.get(level, 0) > 0]
        total = sum(weights[level] for level in self.levels)
        self.level_p = [weights[level] / total for level in self.levels]
        self.generator = generator_for(self.data, static=False)
        self.anns = {ann["id"]: ann for ann in self.data["annotations"]}
        self.images = [img for img in self.data["images"]]
        if not self.images:
            raise ConfigError(f"data {path}: no images")

    def skip(self, steps: int) -> None:
        self.rng = np.random.default_rng(int(self.rng.integers(1 << 40)) + steps)

    def sample(self, pairs: int) -> Batch:
        frames, texts, levels, targets = [], [], [], []
        for _ in range(2 * pairs):
            image = self.images[int(self.rng.integers(len(self.images)))]
            objects = objects_in_image(self.data, image["id"])
            inst = pick_instruction(self.generator, objects, self.rng, self.split, self.negative_rate, self.levels,
                                    self.level_p)
            bgr = cv2.imread(str(self.root / image["file_name"]))
            if bgr is None:
                raise ConfigError(f"cannot read image {self.root / image['file_name']}")
            rgb = cv2.cvtColor(cv2.resize(bgr, (self.image_size,) * 2, interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB)
            frames.append(rgb)
            texts.append(inst.text)
            levels.append(inst.level)
            targets.append(self._target(image, inst.targets))
        pixels = torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).float()
        pixels = (pixels / 255.0 - IMAGE_MEAN) / IMAGE_STD
        s = self.image_size
        return Batch(pixels, texts, levels, targets, torch.zeros(0, 1, s, s, dtype=torch.bool),
                     torch.zeros(0, self.mask_size, self.mask_size), [])

    def _target(self, image: dict, ids: tuple[int, ...]) -> DetectionTarget:
        h, w = image["height"], image["width"]
        m = self.mask_size
        masks, boxes = [], []
        for ann_id in ids:
            ann = self.anns[ann_id]
            segmentation = ann["segmentation"]
            if isinstance(segmentation, list):  # polygons
                rle = mask_utils.merge(mask_utils.frPyObjects(segmentation, h, w))
            elif isinstance(segmentation.get("counts"), list):  # uncompressed RLE
                rle = mask_utils.frPyObjects(segmentation, h, w)
            else:
                rle = {"size": segmentation["size"], "counts": segmentation["counts"].encode("ascii")
                       if isinstance(segmentation["counts"], str) else segmentation["counts"]}
            full = mask_utils.decode(rle).astype(np.float32)
            masks.append(cv2.resize(full, (m, m), interpolation=cv2.INTER_AREA))
            x, y, bw, bh = ann["bbox"]
            boxes.append([x / w, y / h, (x + bw) / w, (y + bh) / h])
        return DetectionTarget(torch.from_numpy(np.stack(masks)) if masks else torch.zeros(0, m, m),
                               torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4), torch.zeros(m, m, dtype=torch.bool))
