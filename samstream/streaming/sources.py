"""Video sources: decode frames one at a time with PyAV.

A file source waits for its consumer (nothing is dropped). Live sources (RTSP, webcam, WebRTC) will keep
only the newest frame and count what they drop; see docs/architecture.md.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from samstream.errors import SourceError

DEFAULT_FPS = 25.0


@dataclass(frozen=True)
class DecodedFrame:
    index: int  # 0-based position in the source
    pts: float  # seconds from the first frame
    rgb: np.ndarray  # (H, W, 3) uint8


@dataclass(frozen=True)
class VideoInfo:
    width: int
    height: int
    fps: float
    frames: int | None  # as the container declares it; None when unknown


class VideoFileSource:
    """Frames of a video file, in order. Raises `SourceError` naming the file (and frame) on bad input.

    Use as a context manager or call `close()`; iterating twice re-opens the file.
    """

    def __init__(self, path: str | os.PathLike[str], max_frames: int | None = None) -> None:
        self.path = Path(path)
        if max_frames is not None and max_frames <= 0:
            raise SourceError(f"--max-frames must be positive, got {max_frames}")
        self.max_frames = max_frames
        self._container = self._open()
        stream = self._container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate
        self.info = VideoInfo(
            width=stream.codec_context.width,
            height=stream.codec_context.height,
            fps=float(rate) if rate else DEFAULT_FPS,
            frames=stream.frames or None,
        )
        if self.info.width <= 0 or self.info.height <= 0:
            self.close()
            raise SourceError(f"{self.path}: video stream has no frame size")

    def _open(self) -> av.container.InputContainer:
        if not self.path.exists():
            raise SourceError(f"{self.path}: no such file")
        if not self.path.is_file():
            raise SourceError(f"{self.path}: not a file")
        if not os.access(self.path, os.R_OK):
            raise SourceError(f"{self.path}: permission denied")
        try:
            container = av.open(str(self.path))
        except av.error.FFmpegError as e:
            raise SourceError(f"{self.path}: not a readable video ({_short(e)})") from e
        if not container.streams.video:
            container.close()
            raise SourceError(f"{self.path}: contains no video stream")
        return container

    @property
    def expected_frames(self) -> int | None:
        """How many frames iteration should yield, when the container says."""
        if self.info.frames is None:
            return self.max_frames
        return min(self.info.frames, self.max_frames) if self.max_frames else self.info.frames

    def __iter__(self) -> Iterator[DecodedFrame]:
        if self._container is None:
            self._container = self._open()
        container, self._container = self._container, None
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        index = 0
        first_pts: float | None = None
        try:
            frames = container.decode(stream)
            while self.max_frames is None or index < self.max_frames:
                try:
                    frame = next(frames)
                except StopIteration:
                    break
                except av.error.FFmpegError as e:
                    raise SourceError(f"{self.path}: decoding failed at frame {index} ({_short(e)})") from e
                pts = _seconds(frame.pts, frame.time_base, index, self.info.fps)
                first_pts = pts if first_pts is None else first_pts
                yield DecodedFrame(index=index, pts=round(pts - first_pts, 6), rgb=frame.to_ndarray(format="rgb24"))
                index += 1
        finally:
            container.close()
        if index == 0:
            raise SourceError(f"{self.path}: no decodable frames")
        expected = self.expected_frames
        if self.info.frames is not None and expected is not None and index < expected:
            raise SourceError(f"{self.path}: truncated: decoding stopped at frame {index} of {expected}")

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
            self._container = None

    def __enter__(self) -> VideoFileSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _seconds(pts: int | None, time_base: Fraction | None, index: int, fps: float) -> float:
    if pts is None or time_base is None:
        return index / fps
    return float(pts * time_base)


def _short(error: Exception) -> str:
    """FFmpeg's reason without the repeated file name."""
    text = getattr(error, "strerror", None) or str(error) or type(error).__name__
    return text.splitlines()[0][:200]
