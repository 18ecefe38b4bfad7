"""Where results go on the client side: a JSON-lines file and an MP4 (annotated frames, or any frames).

Both are safe to stop at any point: every line of results.jsonl is complete when written, and the MP4 is
written beside its final name and renamed only once it is closed and valid.
"""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path
from typing import TextIO

import av
import cv2
import numpy as np

from samstream.streaming.messages import FrameResult
from samstream.streaming.rle import from_frame_result


class ResultsJsonlWriter:
    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._file: TextIO = open(self.path, "w", encoding="utf-8")
        self.frames = 0

    def write(self, result: FrameResult) -> None:
        self._file.write(result.to_jsonl() + "\n")
        self._file.flush()
        self.frames += 1

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> ResultsJsonlWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def id_colour(track_id: int) -> tuple[int, int, int]:
    """A stable, well-spread RGB colour per id (golden-ratio hue steps)."""
    hue = int((track_id * 0.618033988749895 % 1.0) * 180)
    hsv = np.array([[[hue, 220, 255]]], dtype=np.uint8)
    r, g, b = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0]
    return int(r), int(g), int(b)


def draw_result(rgb: np.ndarray, result: FrameResult, alpha: float = 0.45) -> np.ndarray:
    """The frame with each instance's mask, box and id drawn in its id's colour."""
    out = rgb.copy()
    masks, ids, scores = from_frame_result(result)
    for mask, track_id in zip(masks, ids):
        colour = np.array(id_colour(int(track_id)), dtype=np.float32)
        out[mask] = (out[mask] * (1 - alpha) + colour * alpha).astype(np.uint8)
        contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(out, contours, -1, id_colour(int(track_id)), 2)
    thickness = max(1, round(min(rgb.shape[:2]) / 360))
    for inst in result.instances:
        x, y, w, h = (int(round(v)) for v in inst.bbox)
        if w == 0 or h == 0:
            continue
        colour = id_colour(inst.id)
        cv2.rectangle(out, (x, y), (x + w - 1, y + h - 1), colour, thickness)
        label = f"#{inst.id} {inst.score:.2f}"
        scale = 0.4 * thickness
        (tw, th), base = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
        top = max(0, y - th - base - 2)
        cv2.rectangle(out, (x, top), (x + tw + 4, top + th + base + 2), colour, -1)
        cv2.putText(out, label, (x + 2, top + th + 1), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), thickness)
    return out


class Mp4Writer:
    """H.264 MP4 writer. Frames of odd size are padded by one pixel (yuv420p needs even sizes)."""

    def __init__(self, path: str | os.PathLike[str], width: int, height: int, fps: float, crf: int = 23) -> None:
        self.path = Path(path)
        self._partial = self.path.with_name(self.path.name + ".part")
        self._size = (width + width % 2, height + height % 2)
        self._container = av.open(str(self._partial), mode="w", format="mp4")
        rate = Fraction(fps).limit_denominator(1001)
        self._stream = self._container.add_stream("libx264", rate=rate)
        self._stream.width, self._stream.height = self._size
        self._stream.pix_fmt = "yuv420p"
        self._stream.options = {"crf": str(crf), "preset": "veryfast"}
        self.frames = 0

    def write(self, rgb: np.ndarray) -> None:
        pad_w, pad_h = self._size[0] - rgb.shape[1], self._size[1] - rgb.shape[0]
        if pad_w or pad_h:
            rgb = cv2.copyMakeBorder(rgb, 0, pad_h, 0, pad_w, cv2.BORDER_REPLICATE)
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        for packet in self._stream.encode(frame):
            self._container.mux(packet)
        self.frames += 1

    def close(self) -> None:
        """Flush and finalise; the file appears under its final name only if it holds at least one frame."""
        if self._container is None:
            return
        try:
            for packet in self._stream.encode(None):
                self._container.mux(packet)
        finally:
            self._container.close()
            self._container = None
        if self.frames:
            os.replace(self._partial, self.path)
        else:
            self._partial.unlink(missing_ok=True)

    def __enter__(self) -> Mp4Writer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
