"""What the tracker needs from a model: the `Segmenter` and `ObjectMemory` protocols.

A segmenter computes a frame's vision features once; the detector (keyframes) and the memory tracker
(every frame) both read them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from samstream.model.levels import Level
from samstream.model.zoom import ZoomRescore


@dataclass(frozen=True)
class ModelInfo:
    name: str  # folder, hub id, or "builtin:tiny-random"
    parameters: int
    trained: bool  # False for random weights: the summary says so loudly
    score_threshold: float  # detection score threshold recommended for these weights (SAM3: 0.5)
    birth_threshold: float  # score a detection needs to start a new track (SAM3: 0.7)
    image_size: int
    device: str
    adapters: str = "identity"  # where the SAM3-I adapters came from
    # each mask cut to its query's box grown by this share of the image (None: off, SAM3's behaviour). For small
    # models whose queries return one shared mask: the boxes still tell instances apart (docs/model-card.md)
    box_crop_margin: float | None = None
    # look again at each candidate on a magnified view of it (samstream.model.zoom); None: off (SAM3's behaviour)
    zoom_rescore: ZoomRescore | None = None
    # an instruction whose presence score (SAM3's "is it in this frame at all" head) is under this returns nothing,
    # whatever its queries score. None: off (SAM3's behaviour: presence only multiplies each query's score). For
    # small models the presence head tells negatives apart better than the product does (docs/model-card.md)
    presence_threshold: float | None = None
    # simple instructions with a side, size-rank or relation selector ("the leftmost circle") are asked as their
    # noun phrase and answered by geometry over its instances (samstream.model.spatial). False: the model alone
    spatial_rules: bool = False


@dataclass(frozen=True)
class Detections:
    """One instruction's detections on one frame, masks at the frame's size."""

    masks: np.ndarray  # (N, H, W) bool
    scores: np.ndarray  # (N,) float32
    presence: float | None = None  # p(the instruction's object is in the frame at all), where the model says
    # for an answer a selector picked among a noun phrase's instances (samstream.model.spatial): every instance and
    # which were picked, so a tracker can follow them all and keep its pick steady across keyframes. None: the
    # detections are the answer as they are
    selection: Selection | None = None

    def __len__(self) -> int:
        return len(self.scores)


@dataclass(frozen=True)
class Selection:
    """The instances a selector ("the leftmost circle") chose among on one frame, and its choice."""

    candidates: Detections  # every instance of the noun phrase, scored as the answer scores them
    picked: tuple[int, ...]  # indices into `candidates` of the instances the selector chose on this frame
    count: int = 1  # how many instances the selector asks for ("the two largest circles": 2)


@dataclass
class FrameFeatures:
    """A frame's backbone output, computed once and shared by detector and tracker."""

    height: int
    width: int
    data: Any  # model-specific tensors


class ObjectMemory(Protocol):
    """Per-stream memory of tracked objects (SAM3's tracker): bounded, one per stream."""

    def condition(self, features: FrameFeatures, masks: dict[int, np.ndarray]) -> None:
        """Take these objects' masks on this frame as ground truth (new objects, or re-conditioning)."""

    def propagate(self, features: FrameFeatures) -> dict[int, tuple[np.ndarray, float]]:
        """Every remembered object's (mask at frame size, score in [0, 1]) on this frame."""

    def forget(self, object_ids: list[int]) -> None: ...

    def __len__(self) -> int:
        """Frames currently held."""


class Segmenter(Protocol):
    info: ModelInfo

    def encode_frame(self, rgb: np.ndarray) -> FrameFeatures: ...

    def detect(self, features: FrameFeatures, instructions: list[str], levels: list[Level]) -> list[Detections]:
        """One `Detections` per instruction, each routed by its SAM3-I level."""

    def embed(self, features: FrameFeatures, masks: np.ndarray) -> np.ndarray:
        """(N, D) unit-length appearance vectors of the masked regions (for re-identification)."""

    def new_memory(self) -> ObjectMemory: ...
