"""World batches for a backbone stage: frames with one label per visible object (its shape, colour and texture)
and the share of each feature cell its visible mask covers, for mask-pooled object classification
(`ObjectHeads` in train/dense.py).

Half the frames (`mosaic_rate`) are mosaics: a grid of native-scale crops, each centred on one object of a
random scene. Why: from whole frames (objects anywhere, several a frame, mostly 2-4 patches wide) even a CNN
learns shape slowly; with every object centred in its own cell it learns in a few hundred steps, and what it
learns carries over to whole frames (docs/model-card.md, "Session 18").
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import torch

from samstream.data.world import WorldObject, make_scene, render
from samstream.model.preprocess import to_pixel_batch
from samstream.train.dense import WORLD_DENSE_CLASSES

MIN_PIXELS = 12  # objects with fewer visible pixels (at the model's input size) are not asked about
MOSAIC_CELLS = 4  # a mosaic is a 4x4 grid of crops


@dataclass
class ObjectBatch:
    pixels: torch.Tensor  # (N, 3, S, S), normalised as the model reads them
    weights: torch.Tensor  # (O, g * g): each object's share of every feature cell (rows sum to 1)
    frames: torch.Tensor  # (O,) the image each object is in
    labels: dict[str, torch.Tensor]  # per kind, (O,) class indices


def world_label(obj: WorldObject, kind: str, names: Sequence[str]) -> int:
    value = {"category": obj.shape, "colour": obj.colour, "texture": obj.texture}[kind]
    return list(names).index(value)


class ObjectBatches:
    """An endless, seeded stream of `ObjectBatch`es at the model's input size, pooled to a `grid` x `grid`
    feature map."""

    def __init__(self, image_size: int, grid: int, seed: int = 0, mosaic_rate: float = 0.5,
                 classes: Mapping[str, Sequence[str]] = WORLD_DENSE_CLASSES) -> None:
        if image_size % grid or image_size % MOSAIC_CELLS:
            raise ValueError(f"image size {image_size} must be a multiple of the grid ({grid}) and of {MOSAIC_CELLS}")
        self.image_size, self.grid = image_size, grid
        self.mosaic_rate = mosaic_rate
        self.classes = classes
        self.rng = np.random.default_rng(seed)
        self.scene_seed = int(self.rng.integers(1 << 40))

    def skip(self, steps: int) -> None:
        """Fast-forward past `steps` batches' scenes (resuming draws new scenes)."""
        self.scene_seed += steps * 1_000

    def sample(self, pairs: int) -> ObjectBatch:
        """2 x `pairs` images (a detector step's frame count)."""
        images, masks, frames = [], [], []
        for index in range(2 * pairs):
            image, objects = self._mosaic() if self.rng.random() < self.mosaic_rate else self._whole_frame()
            images.append(image)
            masks.extend(objects)
            frames.extend([index] * len(objects))
        g = self.grid
        shares = np.stack([cv2.resize(mask.astype(np.float32), (g, g), interpolation=cv2.INTER_AREA)
                           for mask, _ in masks]).reshape(len(masks), g * g)
        shares /= shares.sum(1, keepdims=True)
        labels = {kind: torch.tensor([world_label(obj, kind, names) for _, obj in masks])
                  for kind, names in self.classes.items()}
        pixels = to_pixel_batch(np.stack(images), torch.device("cpu"), torch.float32)
        return ObjectBatch(pixels, torch.from_numpy(shares), torch.tensor(frames), labels)

    def _scene(self):
        self.scene_seed += 1
        scene = make_scene(self.scene_seed, 1)
        return scene, *render(scene, 0, self.image_size, self.image_size)

    def _whole_frame(self) -> tuple[np.ndarray, list[tuple[np.ndarray, WorldObject]]]:
        while True:
            scene, rgb, visible = self._scene()
            objects = [(visible[o.id], o) for o in scene.objects if visible[o.id].sum() >= MIN_PIXELS]
            if objects:
                return rgb, objects

    def _mosaic(self) -> tuple[np.ndarray, list[tuple[np.ndarray, WorldObject]]]:
        """Cells of image_size / 4 px, each a crop centred on one visible object (scenes are used up object by
        object); the label belongs to the object the cell is centred on."""
        s = self.image_size
        cell = s // MOSAIC_CELLS
        image = np.zeros((s, s, 3), np.uint8)
        objects: list[tuple[np.ndarray, WorldObject]] = []
        queue: list[tuple[np.ndarray, np.ndarray, WorldObject]] = []
        while len(objects) < MOSAIC_CELLS ** 2:
            if not queue:
                scene, rgb, visible = self._scene()
                padded = np.pad(rgb, ((cell, cell), (cell, cell), (0, 0)), mode="reflect")  # once per scene
                queue = [(padded, visible[o.id], o) for o in scene.objects if visible[o.id].sum() >= MIN_PIXELS]
                continue
            padded, mask, obj = queue.pop()
            ys, xs = np.nonzero(mask)
            top, left = int(ys.mean()) - cell // 2 + cell, int(xs.mean()) - cell // 2 + cell  # in the padded frame
            crop = padded[top: top + cell, left: left + cell]
            crop_mask = np.pad(mask, cell)[top: top + cell, left: left + cell]
            if crop_mask.sum() < MIN_PIXELS // 2:
                continue
            row, column = divmod(len(objects), MOSAIC_CELLS)
            image[row * cell: (row + 1) * cell, column * cell: (column + 1) * cell] = crop
            placed = np.zeros((s, s), bool)
            placed[row * cell: (row + 1) * cell, column * cell: (column + 1) * cell] = crop_mask
            objects.append((placed, obj))
        return image, objects
