"""A scripted `Segmenter` for tracker-policy tests: scenes of moving boxes with exact ground truth.

The detector returns the ground-truth masks of visible objects (optionally with misses and duplicates); the
memory is deliberately weak: it returns each object's last conditioned mask (no motion), so the tracker's
keyframe association and drift correction are what keep identities. The real model paths are tested with
transformers' SAM3 classes elsewhere; this isolates the policy.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from samstream.model.segmenter import Detections, FrameFeatures, ModelInfo

H, W = 60, 80


@dataclass
class Box:
    """An object moving linearly: box (x, y, w, h) at frame t = start + t * velocity; hidden in `hidden`."""

    x: float
    y: float
    w: int
    h: int
    vx: float = 0.0
    vy: float = 0.0
    hidden: range = range(0)
    z: int = 0  # higher occludes lower
    look: int | None = None  # appearance class (objects with one look are indistinguishable); None: its index

    def mask(self, t: int) -> np.ndarray:
        m = np.zeros((H, W), dtype=bool)
        if t in self.hidden:
            return m
        x, y = int(round(self.x + self.vx * t)), int(round(self.y + self.vy * t))
        m[max(0, y): max(0, y + self.h), max(0, x): max(0, x + self.w)] = True
        return m


@dataclass
class Scene:
    objects: list[Box]
    frames: int
    duplicate_every: int = 0  # also detect a shifted copy of object 0 on these keyframes
    score: float = 0.9  # every detection's score

    def gt_masks(self, t: int) -> list[np.ndarray]:
        """Visible ground-truth masks at frame t, occlusion applied (front objects cut back ones)."""
        order = sorted(range(len(self.objects)), key=lambda i: -self.objects[i].z)
        taken = np.zeros((H, W), dtype=bool)
        masks: list[np.ndarray] = [np.zeros((H, W), bool)] * len(self.objects)
        for i in order:
            m = self.objects[i].mask(t) & ~taken
            masks[i] = m
            taken |= m
        return masks


@dataclass
class _StaleMemory:
    scene: Scene
    masks: dict[int, np.ndarray] = field(default_factory=dict)
    window: int = 16
    max_cond_frames: int = 4

    def condition(self, features: FrameFeatures, masks: dict[int, np.ndarray]) -> None:
        self.masks.update({k: v.copy() for k, v in masks.items()})

    def propagate(self, features: FrameFeatures) -> dict[int, tuple[np.ndarray, float]]:
        """Each object's last conditioned mask; confident (0.9) while it still overlaps a visible object."""
        visible = np.any(self.scene.gt_masks(features.data), axis=0)
        return {k: (v, 0.9 if (v & visible).any() else 0.1) for k, v in self.masks.items()}

    def forget(self, object_ids: list[int]) -> None:
        for k in object_ids:
            self.masks.pop(k, None)

    def __len__(self) -> int:
        return 1


class ScriptedSegmenter:
    info = ModelInfo(name="scripted", parameters=0, trained=True, score_threshold=0.5, birth_threshold=0.7,
                     image_size=W, device="cpu")

    def __init__(self, scene: Scene, info: ModelInfo | None = None) -> None:
        self.scene = scene
        self.info = info or ScriptedSegmenter.info
        self.t = -1
        self.detected_frames: list[int] = []

    def encode_frame(self, rgb: np.ndarray) -> FrameFeatures:
        self.t += 1
        return FrameFeatures(height=H, width=W, data=self.t)

    def detect(self, features: FrameFeatures, instructions: list[str], levels: list[str]) -> list[Detections]:
        self.detected_frames.append(features.data)
        masks = [m for m in self.scene.gt_masks(features.data) if m.sum() >= 20]
        if self.scene.duplicate_every and features.data % self.scene.duplicate_every == 0 and masks:
            masks.append(np.roll(masks[0], 1, axis=1))
        stacked = np.stack(masks) if masks else np.zeros((0, H, W), bool)
        return [Detections(stacked, np.full(len(masks), self.scene.score, np.float32))]

    def embed(self, features: FrameFeatures, masks: np.ndarray) -> np.ndarray:
        """One-hot of the look of the ground-truth object each mask covers most."""
        gts = self.scene.gt_masks(features.data)
        out = np.zeros((len(masks), 8), np.float32)
        for i, mask in enumerate(masks):
            best = int(np.argmax([(mask & g).sum() for g in gts]))
            look = self.scene.objects[best].look
            out[i, best if look is None else look] = 1.0
        return out

    def new_memory(self) -> _StaleMemory:
        return _StaleMemory(self.scene)


def identity_map(scene: Scene, outputs) -> dict[int, set[int]]:
    """For each ground-truth object, the set of track ids that covered it (IoU >= 0.5) over the video."""
    ids: dict[int, set[int]] = {i: set() for i in range(len(scene.objects))}
    for t, out in enumerate(outputs):
        gts = scene.gt_masks(t)
        for mask, track_id in zip(out.masks, out.ids):
            ious = [(mask & g).sum() / max(1, (mask | g).sum()) for g in gts]
            best = int(np.argmax(ious))
            if ious[best] >= 0.5:
                ids[best].add(int(track_id))
    return ids
