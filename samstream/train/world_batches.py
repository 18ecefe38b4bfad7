"""Training batches drawn from the procedural world, rendered on the fly (no files, endless, seeded).

Each sample is a pair of frames (t0, t0 + gap) of one random scene. The detector learns from both frames, each
with its own instruction (any level, or a negative) and target masks; the tracker learns to carry one object's
mask from t0 to t0 + gap (where it may have left the frame: an empty target teaches its object score).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch

from samstream.data.engine import hidden_objects, objects_in_frame, world_generator
from samstream.data.instructions import Instruction, Split, TemplateGenerator
from samstream.data.world import WHOLE_FRAME, View, make_scene, object_mask, render
from samstream.model.levels import LEVELS, Level
from samstream.model.preprocess import IMAGE_MEAN, IMAGE_STD
from samstream.train.dense import label_maps
from samstream.train.every_object import every_object_instruction


@dataclass
class DetectionTarget:
    masks: torch.Tensor  # (n, m, m) float in [0, 1] at the model's mask size
    boxes: torch.Tensor  # (n, 4) normalised xyxy
    ignore: torch.Tensor  # (m, m) bool: pixels of too-hidden objects (no loss there)
    # the frame's other visible objects (not named by the instruction): with `LossWeights.instances` > 0 free
    # queries learn their masks too (score 0), so every query is an instance, not a copy of the semantic mask
    others_masks: torch.Tensor | None = None  # (k, m, m)
    others_boxes: torch.Tensor | None = None  # (k, 4)

    def on(self, device: torch.device) -> DetectionTarget:
        move = (lambda t: None if t is None else t.to(device))
        return DetectionTarget(self.masks.to(device), self.boxes.to(device), self.ignore.to(device),
                               move(self.others_masks), move(self.others_boxes))


@dataclass
class Batch:
    pixels: torch.Tensor  # (2P, 3, S, S): frames t0 of P pairs, then their frames t1
    texts: list[str]  # one instruction per frame
    levels: list[Level]
    targets: list[DetectionTarget]
    track_prompts: torch.Tensor  # (P, 1, S, S) bool: one object's mask at t0
    track_targets: torch.Tensor  # (P, m, m) float: its mask at t1 (all zero when gone)
    track_gaps: list[int]
    frames: list[int] | None = None  # per sample, its row of `pixels` (None: sample i is row i)
    # per kind, (2P, 1 + classes, m, m) class shares of every pixel row (train/dense.py); None unless asked
    dense_labels: dict[str, torch.Tensor] | None = None


def pick_instruction(generator: TemplateGenerator, objects, rng: np.random.Generator, split: Split,
                     negative_rate: float, levels: list[Level], level_p: list[float]) -> Instruction:
    """A level by weight, then a negative (at `negative_rate`, or when nothing is visible) or a positive of it."""
    level = levels[int(rng.choice(len(levels), p=level_p))]
    negative = rng.random() < negative_rate or not objects
    pool = generator.all_negative(objects, split) if negative else generator.all_positive(objects, split)
    if not pool:  # e.g. no absent category to name: fall back to the other kind
        pool = generator.all_positive(objects, split) if negative else generator.all_negative(objects, split)
    same_level = [inst for inst in pool if inst.level == level]
    pool = same_level or pool
    return pool[int(rng.integers(len(pool)))]


class WorldBatches:
    """An endless, seeded stream of `Batch`es. `levels` weights the instruction levels; `negative_rate` is the
    share of negatives; `split` picks the templates (train for training, heldout for validation)."""

    def __init__(self, image_size: int, mask_size: int, seed: int = 0, split: Split = "train",
                 negative_rate: float = 0.15, level_weights: dict[str, float] | None = None, max_gap: int = 6,
                 frames: int = 48, min_objects: int = 1, max_objects: int = 6, instructions_per_frame: int = 1,
                 dense_labels: bool = False, zoom_rate: float = 0.0, zoom_fill: tuple[float, float] = (0.25, 0.45),
                 contrast_rate: float = 0.0, contrast_shape_share: float = 0.5, palette_rate: float = 0.0,
                 every_object_rate: float = 0.0) -> None:
        self.image_size, self.mask_size = image_size, mask_size
        self.rng = np.random.default_rng(seed)
        self.split = split
        self.negative_rate = negative_rate
        weights = level_weights or {level: 1.0 for level in LEVELS}
        self.levels = [level for level in LEVELS if weights.get(level, 0) > 0]
        total = sum(weights[level] for level in self.levels)
        self.level_p = [weights[level] / total for level in self.levels]
        self.max_gap, self.frames = max_gap, frames
        self.min_objects, self.max_objects = min_objects, max_objects
        self.instructions_per_frame = instructions_per_frame
        # the share of frames whose first two instructions are a contrast pair (TemplateGenerator.contrast)
        self.contrast_rate = contrast_rate if instructions_per_frame >= 2 else 0.0
        self.contrast_shape_share = contrast_shape_share
        # the share of scenes whose objects share one or two colours (make_scene's `palette`): there the colour
        # word alone rarely names the targets, the shape word must
        self.palette_rate = palette_rate
        # the share of frames asked one more instruction, for every visible object at once (train/every_object.py)
        self.every_object_rate = every_object_rate
        self.dense_labels = dense_labels  # also return per-pixel shape / colour / texture shares (train/dense.py)
        # the share of pairs shown as an object-centred, zoomed-in view (both frames): that object's radius fills
        # `zoom_fill` of the view's short side
        self.zoom_rate, self.zoom_fill = zoom_rate, zoom_fill
        self.generator = world_generator()
        self.scene_seed = int(self.rng.integers(1 << 40))

    def skip(self, steps: int) -> None:
        """Fast-forward past `steps` batches' scenes (resuming draws new scenes, not the same ones again)."""
        self.scene_seed += steps * 1_000

    def sample(self, pairs: int) -> Batch:
        frames, texts, levels, targets, prompts, track_targets, gaps, dense = [], [], [], [], [], [], [], []
        for _ in range(pairs):
            self.scene_seed += 1
            palette = None
            if self.palette_rate > 0 and self.rng.random() < self.palette_rate:
                palette = int(self.rng.integers(1, 3))
            scene = make_scene(self.scene_seed, self.frames, self.min_objects, self.max_objects, palette=palette)
            gap = int(self.rng.integers(1, self.max_gap + 1))
            t0 = int(self.rng.integers(0, self.frames - gap))
            view = self._view(scene, t0)
            rendered = [self._frame(scene, t, view) for t in (t0, t0 + gap)]
            for rgb, visible, objects, hidden in rendered:
                frames.append(rgb)
                if self.dense_labels:
                    dense.append(label_maps(objects, visible, self.mask_size))
                chosen = self._instructions(objects)
                texts.append([inst.text for inst in chosen])
                levels.append([inst.level for inst in chosen])
                targets.append([self._target(visible, inst.targets, hidden, [o.ann_id for o in objects])
                                for inst in chosen])
            (_, vis0, objects0, _), (_, vis1, objects1, _) = rendered
            pick = objects0[int(self.rng.integers(len(objects0)))].ann_id if objects0 else None
            prompts.append(vis0[pick] if pick else np.zeros((self.image_size,) * 2, bool))
            still = pick in {o.ann_id for o in objects1}
            track_targets.append(self._small(vis1[pick]) if pick and still else np.zeros((self.mask_size,) * 2, np.float32))
            gaps.append(gap)
        order = list(range(0, 2 * pairs, 2)) + list(range(1, 2 * pairs, 2))  # t0 frames first, then t1 frames
        pixels = torch.from_numpy(np.stack([frames[i] for i in order])).permute(0, 3, 1, 2).float()
        pixels = (pixels / 255.0 - IMAGE_MEAN) / IMAGE_STD
        rows = [row for row, i in enumerate(order) for _ in texts[i]]  # every frame's instructions, in pixel order
        labels = None
        if self.dense_labels:
            labels = {kind: torch.from_numpy(np.stack([dense[i][kind] for i in order])) for kind in dense[0]}
        return Batch(pixels, [t for i in order for t in texts[i]], [v for i in order for v in levels[i]],
                     [t for i in order for t in targets[i]], torch.from_numpy(np.stack(prompts))[:, None],
                     torch.from_numpy(np.stack(track_targets)), gaps,
                     None if len(rows) == len(order) else rows, labels)

    def _view(self, scene, t: int) -> View:
        """The whole frame, or (at `zoom_rate`) a view centred near one object in the frame at t, magnified so its
        radius fills `zoom_fill` of the view. Why: the small ViT learns shapes from objects many patches wide, not
        from the 2-6 patches most objects span in a whole frame (docs/model-card.md, "Session 15")."""
        if self.zoom_rate <= 0 or self.rng.random() >= self.zoom_rate:
            return WHOLE_FRAME
        inside = [o for o in scene.objects if all(0.0 <= v <= 1.0 for v in o.position(t))]
        if not inside:
            return WHOLE_FRAME
        obj = inside[int(self.rng.integers(len(inside)))]
        zoom = max(1.0, float(self.rng.uniform(*self.zoom_fill)) / obj.radius)
        x, y = obj.position(t)
        jitter = self.rng.uniform(-0.5, 0.5, size=2) * obj.radius  # not always dead centre
        return View(x + float(jitter[0]), y + float(jitter[1]), zoom)

    def _frame(self, scene, t: int, view: View = WHOLE_FRAME):
        silhouettes = {o.id: object_mask(o, t, self.image_size, self.image_size, view) for o in scene.objects}
        rgb, visible = render(scene, t, self.image_size, self.image_size, view, silhouettes)
        objects = objects_in_frame(scene, visible, silhouettes, view)
        return rgb, visible, objects, hidden_objects(scene, visible, objects)

    def _instruction(self, objects) -> Instruction:
        return pick_instruction(self.generator, objects, self.rng, self.split, self.negative_rate, self.levels,
                                self.level_p)

    def _instructions(self, objects) -> list[Instruction]:
        """`instructions_per_frame` instructions with different texts (SAM3 asks one image many phrases: with the
        pixels fixed, only the text explains why the targets differ); at `contrast_rate` the first two differ in
        one word; at `every_object_rate` one more asks for every visible object."""
        chosen = []
        if self.contrast_rate > 0 and self.rng.random() < self.contrast_rate:
            chosen = self.generator.contrast(objects, self.rng, self.split,
                                             self.contrast_shape_share)[:self.instructions_per_frame]
        chosen = chosen or [self._instruction(objects)]
        for _ in range(8 * self.instructions_per_frame):
            if len(chosen) == self.instructions_per_frame:
                break
            inst = self._instruction(objects)
            if all(inst.text != c.text for c in chosen):
                chosen.append(inst)
        if self.every_object_rate > 0 and objects and self.rng.random() < self.every_object_rate:
            chosen.append(every_object_instruction(objects, self.rng))
        return chosen

    def _small(self, mask: np.ndarray) -> np.ndarray:
        return cv2.resize(mask.astype(np.float32), (self.mask_size, self.mask_size), interpolation=cv2.INTER_AREA)

    def _target(self, visible: dict[int, np.ndarray], ids: tuple[int, ...], hidden: list[int],
                in_frame: list[int]) -> DetectionTarget:
        ignore = np.zeros((self.mask_size,) * 2, bool)
        for i in hidden:
            ignore |= self._small(visible[i]) > 0
        others = [i for i in in_frame if i not in ids]
        return DetectionTarget(*self._objects(visible, ids), torch.from_numpy(ignore), *self._objects(visible, others))

    def _objects(self, visible: dict[int, np.ndarray], ids) -> tuple[torch.Tensor, torch.Tensor]:
        """(n, m, m) masks at the mask size and (n, 4) normalised xyxy boxes of these objects."""
        s, m = float(self.image_size), self.mask_size
        masks, boxes = [], []
        for i in ids:
            ys, xs = np.nonzero(visible[i])
            masks.append(self._small(visible[i]))
            boxes.append([xs.min() / s, ys.min() / s, (xs.max() + 1) / s, (ys.max() + 1) / s])
        return (torch.from_numpy(np.stack(masks)) if masks else torch.zeros(0, m, m),
                torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4))
