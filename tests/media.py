"""Synthetic test clips written with PyAV (faststart MP4, so a cut file still opens and breaks mid-way)."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np


def write_moving_squares(path: Path, frames: int = 24, width: int = 160, height: int = 128, fps: int = 12) -> Path:
    container = av.open(str(path), mode="w", format="mp4", options={"movflags": "faststart"})
    stream = container.add_stream("libx264", rate=fps)
    stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
    stream.options = {"g": "4"}  # frequent keyframes so a truncated file still decodes its first part
    for i in range(frames):
        rgb = np.full((height, width, 3), 40, dtype=np.uint8)
        x = 10 + 4 * i
        rgb[30:70, x:x + 40] = (220, 40, 40)
        rgb[80:110, 100 - 2 * i:130 - 2 * i] = (40, 200, 60)
        for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
            container.mux(packet)
    for packet in stream.encode(None):
        container.mux(packet)
    container.close()
    return path


def truncate(src: Path, dst: Path, fraction: float) -> Path:
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * fraction)])
    return dst
