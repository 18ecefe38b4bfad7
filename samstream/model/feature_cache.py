"""A `Segmenter` that encodes each distinct frame once.

Sweeps that track the same clips several times (the birth-threshold calibration tracks its clips once per
candidate bar) otherwise run the backbone again on every pass (about a quarter of a tracked frame's cost with
the small model on CPU). It keeps every distinct frame's features, so it is for short clips, not for streams.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

from samstream.model.segmenter import FrameFeatures, Segmenter


class FrameFeatureCache:
    """Wraps a segmenter: `encode_frame` answers a frame seen before (same pixels) from memory; everything else
    (detect, embed, memories, batched propagation) is the wrapped segmenter's."""

    def __init__(self, segmenter: Segmenter) -> None:
        self.segmenter = segmenter
        self.info = segmenter.info
        self._features: dict[bytes, FrameFeatures] = {}
        self.encoded = 0  # frames the backbone ran on
        self.reused = 0  # frames answered from memory

    def encode_frame(self, rgb: np.ndarray) -> FrameFeatures:
        pixels = np.ascontiguousarray(rgb)
        digest = hashlib.blake2b(pixels.data, digest_size=16)
        digest.update(repr((pixels.shape, pixels.dtype.str)).encode())
        key = digest.digest()
        features = self._features.get(key)
        if features is None:
            features = self._features[key] = self.segmenter.encode_frame(rgb)
            self.encoded += 1
        else:
            self.reused += 1
        return features

    def __getattr__(self, name: str) -> Any:  # only called for what this class does not define
        return getattr(self.segmenter, name)


__all__ = ["FrameFeatureCache"]
