"""Scene-cut detection: a hard change of the whole picture (camera switch, edit) between consecutive frames.

Compared on a small HSV colour histogram (hue x saturation), which ignores motion inside a shot and reacts to
a new shot; the Bhattacharyya distance runs from 0 (same colours) to 1 (disjoint).
"""

from __future__ import annotations

import cv2
import numpy as np

THUMBNAIL = (64, 36)
BINS = [16, 8]  # hue, saturation


class SceneCutDetector:
    def __init__(self, threshold: float) -> None:
        self.threshold = threshold
        self._previous: np.ndarray | None = None

    def __call__(self, rgb: np.ndarray) -> bool:
        """Whether this frame starts a new shot (never true for the first frame)."""
        small = cv2.resize(rgb, THUMBNAIL, interpolation=cv2.INTER_AREA)
        hsv = cv2.cvtColor(small, cv2.COLOR_RGB2HSV)
        hist = cv2.calcHist([hsv], [0, 1], None, BINS, [0, 180, 0, 256])
        cv2.normalize(hist, hist, 1.0, 0.0, cv2.NORM_L1)
        previous, self._previous = self._previous, hist
        if previous is None:
            return False
        return cv2.compareHist(previous, hist, cv2.HISTCMP_BHATTACHARYYA) >= self.threshold
