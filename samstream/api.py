"""The in-process Python API: the worker's tracking path with no Redis, for embedding (robotics, notebooks).

    import samstream
    for frame in samstream.track("clip.mp4", instruction="the person in the red jacket"):
        print(frame.index, frame.instances.ids, frame.instances.masks.shape)
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from samstream.instances import Instances
from samstream.model.segmenter import Segmenter
from samstream.settings import DEFAULT_KEYFRAME_EVERY
from samstream.streaming.messages import FrameResult, check_instruction
from samstream.streaming.rle import to_frame_result
from samstream.streaming.sources import VideoFileSource
from samstream.tracker.session import TrackerConfig, TrackingSession


@dataclass(frozen=True)
class TrackedFrame:
    index: int
    pts: float | None  # seconds, when the frames came from a file
    instances: Instances

    def to_result(self, stream: str = "local") -> FrameResult:
        """The same message a worker writes to Redis (COCO RLE masks)."""
        return to_frame_result(stream, self.index, self.pts or 0.0, self.instances)


def track(
    frames: Iterable[np.ndarray] | str | os.PathLike[str],
    instruction: str | Sequence[str],
    *,
    model: str | Segmenter | None = None,
    device: str = "auto",
    keyframe_every: int = DEFAULT_KEYFRAME_EVERY,
    tracker_config: TrackerConfig | None = None,
    bgr: bool = False,
    level: str | Sequence[str | None] | None = "auto",
) -> Iterator[TrackedFrame]:
    """Track what `instruction` describes, one frame at a time.

    `frames`: a video path, or any iterable of (H, W, 3) uint8 arrays (RGB; pass `bgr=True` for OpenCV order).
    `model`: a loaded segmenter, a folder / hub id, or None for the built-in model.
    `level`: SAM3-I level ('concept', 'simple', 'complex' or 'auto'), one for all or one per instruction.
    """
    instructions = [instruction] if isinstance(instruction, str) else list(instruction)
    instructions = [check_instruction(text) for text in instructions]
    if model is None or isinstance(model, str):
        from samstream.model.loader import load_segmenter

        model = load_segmenter(model, device=device)
    config = tracker_config or TrackerConfig(keyframe_every=keyframe_every)
    levels = level if level is None or isinstance(level, str) else list(level)
    session = TrackingSession(model, instructions, config, levels=levels)
    if isinstance(frames, (str, os.PathLike)):
        for frame in VideoFileSource(frames):
            yield TrackedFrame(frame.index, frame.pts, session.update(frame.rgb))
        return
    for index, image in enumerate(frames):
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"frame {index}: expected an (H, W, 3) uint8 array, got {image.dtype} {image.shape}")
        yield TrackedFrame(index, None, session.update(image[..., ::-1].copy() if bgr else image))
