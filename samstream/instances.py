"""`Instances`: the one result type for the objects found in one frame.

Columns are n-aligned arrays, so filtering is numpy-style (`inst[inst.scores > 0.5]`). Detections from the
model carry `ids == -1`; the tracker fills in identities.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Instances:
    masks: np.ndarray  # (N, H, W) bool, at the frame's original size
    scores: np.ndarray  # (N,) float32 in [0, 1]
    ids: np.ndarray  # (N,) int64, -1 for "not tracked yet"
    instructions: tuple[str, ...]  # (N,) the instruction each instance answers
    confirmed: np.ndarray = field(default=None)  # (N,) bool; None -> all True
    levels: tuple[str, ...] = field(default=None)  # (N,) instruction level per instance; None -> "concept"

    def __post_init__(self) -> None:
        n = len(self.scores)
        if self.masks.ndim != 3 or self.masks.dtype != np.bool_:
            raise ValueError(f"masks must be a (N, H, W) bool array, got {self.masks.dtype} {self.masks.shape}")
        if self.masks.shape[0] != n or self.ids.shape != (n,) or len(self.instructions) != n:
            raise ValueError(
                f"columns disagree: masks {self.masks.shape[0]}, scores {n}, ids {self.ids.shape}, "
                f"instructions {len(self.instructions)}"
            )
        if self.confirmed is None:
            object.__setattr__(self, "confirmed", np.ones(n, dtype=bool))
        elif self.confirmed.shape != (n,):
            raise ValueError(f"confirmed must have shape ({n},), got {self.confirmed.shape}")
        if self.levels is None:
            object.__setattr__(self, "levels", ("concept",) * n)
        elif len(self.levels) != n:
            raise ValueError(f"levels must have {n} entries, got {len(self.levels)}")

    @classmethod
    def empty(cls, height: int, width: int) -> Instances:
        return cls(
            masks=np.zeros((0, height, width), dtype=bool),
            scores=np.zeros(0, dtype=np.float32),
            ids=np.zeros(0, dtype=np.int64),
            instructions=(),
        )

    @classmethod
    def concat(cls, parts: list[Instances], height: int, width: int) -> Instances:
        if not parts:
            return cls.empty(height, width)
        return cls(
            masks=np.concatenate([p.masks for p in parts]),
            scores=np.concatenate([p.scores for p in parts]),
            ids=np.concatenate([p.ids for p in parts]),
            instructions=tuple(s for p in parts for s in p.instructions),
            confirmed=np.concatenate([p.confirmed for p in parts]),
            levels=tuple(s for p in parts for s in p.levels),
        )

    def __len__(self) -> int:
        return len(self.scores)

    def __getitem__(self, index: np.ndarray | slice | list[int]) -> Instances:
        rows = np.arange(len(self))[index]
        return Instances(
            masks=self.masks[rows],
            scores=self.scores[rows],
            ids=self.ids[rows],
            instructions=tuple(self.instructions[i] for i in rows),
            confirmed=self.confirmed[rows],
            levels=tuple(self.levels[i] for i in rows),
        )

    @property
    def frame_size(self) -> tuple[int, int]:
        """(height, width) of the frame the masks belong to."""
        return self.masks.shape[1], self.masks.shape[2]
