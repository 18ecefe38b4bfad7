"""Frame pixels on the wire: JPEG (small, lossy) or raw RGB bytes (exact, ~10x larger)."""

from __future__ import annotations

from typing import Literal

import cv2
import numpy as np

Encoding = Literal["jpeg", "raw"]
DEFAULT_JPEG_QUALITY = 90


def encode_frame(rgb: np.ndarray, encoding: Encoding, jpeg_quality: int = DEFAULT_JPEG_QUALITY) -> bytes:
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"expected an (H, W, 3) uint8 RGB frame, got {rgb.dtype} {rgb.shape}")
    if encoding == "raw":
        return np.ascontiguousarray(rgb).tobytes()
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return buf.tobytes()


def decode_frame(payload: bytes, encoding: Encoding, height: int, width: int) -> np.ndarray:
    """Back to an (H, W, 3) uint8 RGB array; raises ValueError on a payload that does not fit."""
    if encoding == "raw":
        expected = height * width * 3
        if len(payload) != expected:
            raise ValueError(f"raw frame has {len(payload)} bytes, expected {expected} for {width}x{height}")
        return np.frombuffer(payload, dtype=np.uint8).reshape(height, width, 3)
    bgr = cv2.imdecode(np.frombuffer(payload, dtype=np.uint8), cv2.IMREAD_COLOR)
    if bgr is None or bgr.shape[:2] != (height, width):
        got = None if bgr is None else bgr.shape[:2]
        raise ValueError(f"JPEG frame does not decode to {height}x{width} (got {got})")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
