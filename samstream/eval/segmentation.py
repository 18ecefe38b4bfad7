"""Instruction-segmentation metrics, per instruction level (definitions as in SAM3-I / ReasonSeg; see
docs/evaluation.md). A sample is one instruction on one image: its prediction is the union of the instances
returned for it, its ground truth the union of its targets.

- gIoU: the mean of per-sample IoUs over samples with targets;
- cIoU: total intersection / total union over samples with targets (large objects weigh more);
- P@0.5: the share of samples with targets whose IoU exceeds 0.5;
- no-target accuracy: the share of negatives (no targets) for which nothing is returned.

`summarize_sizes` splits samples with targets by how much of the frame their targets cover (COCO's small /
medium / large, as shares of the frame rather than pixel counts, so one set rendered at two sizes bins alike).

`summarize_outcomes` says how each sample with targets went, which tells grounding errors from mask errors:
- found: IoU >= 0.5;
- nothing: nothing returned;
- wrong object: the prediction covers under 20% of the targets (it is on something else);
- with others: it covers the targets but also other objects, their pixels over 30% of those on the targets (the
  instruction's noun found, its qualifier not: "the hexagon on the left" answered with every hexagon);
- partial: the rest (part of the targets, or a loose mask).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from samstream.model.levels import LEVELS

T = TypeVar("T")


@dataclass(frozen=True)
class SampleResult:
    level: str
    negative: bool
    intersection: int
    union: int
    predicted_pixels: int
    target_share: float = 0.0  # the ground-truth union's share of the frame
    kind: str = ""  # the instruction's kind (concept, attribute, position, ..., negative), where known
    target_pixels: int = 0
    other_pixels: int | None = None  # predicted pixels on the frame's objects the instruction does not name
    template: str = ""  # the instruction engine's template id (e.g. "complex/function/4"), where known

    @property
    def iou(self) -> float:
        return self.intersection / self.union if self.union else 1.0

    @property
    def outcome(self) -> str | None:
        """One of OUTCOMES for a sample with targets whose other objects are known; None otherwise."""
        if self.negative or self.other_pixels is None:
            return None
        if self.predicted_pixels == 0:
            return "nothing"
        if self.iou >= 0.5:
            return "found"
        if self.intersection < 0.2 * self.target_pixels:
            return "wrong object"
        if self.other_pixels > 0.3 * self.intersection:
            return "with others"
        return "partial"


OUTCOMES = ("found", "nothing", "wrong object", "with others", "partial")


def score_sample(level: str, prediction: np.ndarray, truth: np.ndarray, kind: str = "",
                 others: np.ndarray | None = None, template: str = "") -> SampleResult:
    """(H, W) bool prediction and ground-truth unions -> one sample's counts. `others`: the union of the frame's
    objects the instruction does not name, where known (for `SampleResult.outcome`)."""
    for name, array in (("ground truth", truth), ("other objects", others)):
        if array is not None and prediction.shape != array.shape:
            raise ValueError(f"prediction is {prediction.shape}, {name} {array.shape}")
    inter = int(np.logical_and(prediction, truth).sum())
    union = int(np.logical_or(prediction, truth).sum())
    other = None if others is None else int(np.logical_and(prediction, others & ~truth).sum())
    return SampleResult(level, not truth.any(), inter, union, int(prediction.sum()), float(truth.mean()), kind,
                        int(truth.sum()), other, template)


SIZE_BINS = (("small", 0.0, 0.01), ("medium", 0.01, 0.04), ("large", 0.04, 1.01))  # share of the frame: [lo, hi)


def size_of(share: float) -> str:
    return next(name for name, low, high in SIZE_BINS if low <= share < high)


def by_size(items: list[T], share: Callable[[T], float]) -> dict[str, list[T]]:
    """The items in each non-empty size bin, in SIZE_BINS order, by `share(item)` (their targets' share of the frame)."""
    groups = {name: [item for item in items if size_of(share(item)) == name] for name, _, _ in SIZE_BINS}
    return {name: chosen for name, chosen in groups.items() if chosen}


def summarize_sizes(samples: list[SampleResult]) -> dict:
    """{small|medium|large: {gIoU, cIoU, P@0.5, samples}} over the samples with targets, by target share."""
    groups = by_size([s for s in samples if not s.negative], lambda s: s.target_share)
    return {name: {key: summary[key] for key in ("samples", "gIoU", "cIoU", "P@0.5")}
            for name, summary in ((name, _summary(chosen)) for name, chosen in groups.items())}


def summarize_kinds(samples: list[SampleResult]) -> dict:
    """{level/kind: summary} for samples whose kind is known (e.g. "simple/position", "complex/negative"): which
    sort of instruction a model fails, under one level's average."""
    groups: dict[str, list[SampleResult]] = defaultdict(list)
    for s in samples:
        if s.kind:
            groups[f"{s.level}/{s.kind}"].append(s)
    return {name: _summary(groups[name]) for name in sorted(groups, key=lambda n: (LEVELS.index(n.split("/")[0])
                                                                                   if n.split("/")[0] in LEVELS else 99, n))}


def summarize_templates(samples: list[SampleResult]) -> dict:
    """{template id: summary} for samples whose template is known: a phrasing the model does not generalize to
    shows here, under its kind's average (docs/evaluation.md)."""
    groups: dict[str, list[SampleResult]] = defaultdict(list)
    for s in samples:
        if s.template:
            groups[s.template].append(s)
    return {name: _summary(groups[name]) for name in sorted(groups)}


def summarize_outcomes(samples: list[SampleResult]) -> dict:
    """{level: {samples, found, nothing, ...}} plus 'all': the share of each outcome (OUTCOMES) among the samples
    with targets and known other objects; levels without such samples are left out."""
    by_level: dict[str, list[str]] = defaultdict(list)
    for s in samples:
        if s.outcome is not None:
            by_level[s.level].append(s.outcome)
            by_level["all"].append(s.outcome)
    groups = {level: by_level[level] for level in (*LEVELS, "all") if by_level.get(level)}
    return {level: {"samples": len(outcomes), **{o: outcomes.count(o) / len(outcomes) for o in OUTCOMES}}
            for level, outcomes in groups.items()}


def summarize(samples: list[SampleResult]) -> dict:
    """{level: {gIoU, cIoU, P@0.5, samples, negatives, no_target_accuracy}} plus 'all'."""
    by_level: dict[str, list[SampleResult]] = defaultdict(list)
    for s in samples:
        by_level[s.level].append(s)
    report = {level: _summary(by_level[level]) for level in LEVELS if by_level.get(level)}
    report["all"] = _summary(samples)
    return report


def _summary(samples: list[SampleResult]) -> dict:
    positives = [s for s in samples if not s.negative]
    negatives = [s for s in samples if s.negative]
    ious = np.array([s.iou for s in positives])
    total_union = sum(s.union for s in positives)
    return {
        "samples": len(positives),
        "gIoU": float(ious.mean()) if len(ious) else None,
        "cIoU": float(sum(s.intersection for s in positives) / total_union) if total_union else None,
        "P@0.5": float((ious > 0.5).mean()) if len(ious) else None,
        "negatives": len(negatives),
        "no_target_accuracy": float(np.mean([s.predicted_pixels == 0 for s in negatives])) if negatives else None,
    }
