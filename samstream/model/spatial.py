"""Spatial rules: answer "the leftmost circle" as "circle", then pick among the instances by geometry.

A simple instruction often names a noun phrase and a selector the detector must rank its instances by: a side
("the cup on the left", "the topmost box"), a size rank ("the largest circle", "the two smallest boxes") or a
relation to another object ("the circle left of the square"). SAM3's detector finds a noun phrase's instances
well; ranking them by where they are is geometry, which rules do exactly. As SAM3's agent decomposes a
referring expression into noun phrases for the detector and reasons over the masks it returns, these rules
decompose the selectors they know and leave every other instruction to the model as it is.

`parse_spatial` reads the selector; `detect_with_spatial_rules` asks the detector for the noun phrases (one
batched pass with the other instructions), splits each phrase's masks into instances (connected pieces, so a
model whose queries return one mask for several objects still yields one instance each), and selects.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Literal

import cv2
import numpy as np

from samstream.model.levels import Level, classify_level
from samstream.model.segmenter import Detections, Selection

Side = Literal["left", "right", "top", "bottom"]
Rank = Literal["largest", "smallest"]

_SIDE_WORDS = {"left": "left", "right": "right", "top": "top", "bottom": "bottom", "upper": "top", "lower": "bottom"}
_RANK_WORDS = {"largest": "largest", "biggest": "largest", "smallest": "smallest", "tiniest": "smallest"}
_COUNT_WORDS = {"two": 2, "three": 3, "four": 4, "five": 5, "2": 2, "3": 3, "4": 4, "5": 5}
_RELATION_WORDS = {"left of": "left", "right of": "right", "above": "top", "over": "top", "on top of": "top",
                   "below": "bottom", "under": "bottom", "beneath": "bottom", "underneath": "bottom"}

_SIDE = r"(?P<side>left|right|top|bottom|upper|lower)"
_RANK = r"(?P<rank>largest|biggest|smallest|tiniest)"
_IS = r"(?:(?:that|which) (?:is|are) |that's )?"
_PATTERNS: list[re.Pattern] = [re.compile(p) for p in (
    # relations first: "left of" must not read as a side
    rf"^(?P<np>.+?) {_IS}(?:to the |directly |just )?(?P<relation>left of|right of|above|over|on top of|below|under|"
    rf"beneath|underneath) (?:the |a |an )?(?P<anchor>.+)$",
    rf"^(?:the |all )?(?P<count>two|three|four|five|2|3|4|5) {_RANK} (?P<np>.+)$",
    rf"^(?:the )?{_RANK} (?P<np>.+)$",
    rf"^(?P<np>.+?) {_IS}(?:the )?{_RANK}(?: one| ones)?$",
    rf"^(?:the )?{_SIDE}most (?P<np>.+)$",
    rf"^(?P<np>.+?) {_IS}(?:furthest|farthest|closest|nearest) to the {_SIDE}$",
    rf"^(?P<np>.+?) {_IS}(?:furthest|farthest) {_SIDE}$",
    rf"^(?P<np>.+?) {_IS}(?:on|at|to|in) the (?:far )?{_SIDE}(?: side)?$",
    rf"^(?:the )?{_SIDE} (?P<np>.+)$",
)]
_ARTICLE = re.compile(r"^(the|a|an|all|both)\s+")


@dataclass(frozen=True)
class SpatialQuery:
    """An instruction read as a noun phrase and a selector over its instances."""

    noun_phrase: str
    noun_level: Level = "concept"  # a noun phrase with its own clause ("the person in red") is simple
    side: Side | None = None  # the instance furthest to this side
    rank: Rank | None = None  # the `count` largest / smallest instances
    count: int = 1
    anchor: str | None = None  # relations: the noun phrase of the object the others are placed against
    relation: Side | None = None  # the side of the anchor the selected instance lies on


def parse_spatial(instruction: str) -> SpatialQuery | None:
    """The instruction's noun phrase and selector, or None where no rule reads it (the model answers as is)."""
    text = " ".join(instruction.lower().strip(" .!?").split())
    if classify_level(text) == "complex":
        return None  # "the thing that is largest" names no noun phrase to ask for
    for pattern in _PATTERNS:
        match = pattern.match(text)
        if match is None:
            continue
        found = match.groupdict()
        noun = _noun_phrase(found["np"])
        if noun is None:
            return None
        level = classify_level(noun)
        if found.get("relation"):
            anchor = _noun_phrase(found["anchor"])
            if anchor is None or classify_level(anchor) != "concept":
                return None  # "left of the box that is red": the anchor must be one noun phrase
            return SpatialQuery(noun, level, anchor=anchor, relation=_RELATION_WORDS[found["relation"]])
        if found.get("rank"):
            count = _COUNT_WORDS[found["count"]] if found.get("count") else 1
            return SpatialQuery(noun, level, rank=_RANK_WORDS[found["rank"]], count=count)
        return SpatialQuery(noun, level, side=_SIDE_WORDS[found["side"]])
    return None


def _noun_phrase(text: str) -> str | None:
    """The phrase without its article, or None where nothing is left or it is not a noun phrase (complex)."""
    noun = _ARTICLE.sub("", text.strip())
    if not noun or classify_level(noun) == "complex":
        return None
    return noun


@dataclass(frozen=True)
class Instance:
    mask: np.ndarray  # (H, W) bool
    score: float
    area: int
    centre: tuple[float, float]  # (x, y)


def split_instances(found: Detections, relative_score: float = 0.5, min_area_share: float = 5e-4,
                    duplicate_iou: float = 0.5) -> list[Instance]:
    """The detections' connected pieces as instances, best score first. Detections scoring under `relative_score`
    of the best are left out (their pieces are the detector's doubts, not other instances); pieces under
    `min_area_share` of the frame are specks; a piece overlapping a better-scored one by `duplicate_iou` is a copy."""
    if len(found) == 0:
        return []
    best = float(found.scores.max())
    height, width = found.masks.shape[1:]
    min_area = max(1, int(min_area_share * height * width))
    pieces: list[Instance] = []
    for mask, score in sorted(zip(found.masks, found.scores), key=lambda pair: -float(pair[1])):
        if score < relative_score * best:
            break
        count, labels, stats, centroids = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
        for label in range(1, count):
            area = int(stats[label, cv2.CC_STAT_AREA])
            if area < min_area:
                continue
            piece = labels == label
            if any(_iou(piece, other.mask, area, other.area) >= duplicate_iou for other in pieces):
                continue
            pieces.append(Instance(piece, float(score), area, (float(centroids[label][0]), float(centroids[label][1]))))
    return pieces


def _iou(a: np.ndarray, b: np.ndarray, area_a: int, area_b: int) -> float:
    inter = int(np.count_nonzero(a & b))
    return inter / max(area_a + area_b - inter, 1)


def _toward(side: Side, centre: tuple[float, float]) -> float:
    """How far toward `side` a point lies (larger: further)."""
    x, y = centre
    return {"left": -x, "right": x, "top": -y, "bottom": y}[side]


def select(query: SpatialQuery, instances: list[Instance], anchors: list[Instance] | None = None) -> list[Instance]:
    """The instances the query's selector picks."""
    if not instances:
        return []
    if query.side is not None:
        return [max(instances, key=lambda inst: _toward(query.side, inst.centre))]
    if query.rank is not None:
        ordered = sorted(instances, key=lambda inst: inst.area, reverse=query.rank == "largest")
        return ordered[:query.count]
    if not anchors:
        return []
    anchor = anchors[0]  # the anchor phrase's best-scored instance
    margin = 0.5 * np.sqrt(anchor.area)  # half the anchor's size: "left of" means clearly left of it
    beyond = [inst for inst in instances if not _same(inst, anchor)  # "the circle left of the circle"
              and _toward(query.relation, inst.centre) > _toward(query.relation, anchor.centre) + margin]
    return beyond[:1]  # best score first


def _same(a: Instance, b: Instance) -> bool:
    return _iou(a.mask, b.mask, a.area, b.area) >= 0.5


def _as_detections(chosen: list[Instance], found: Detections, sure: float = 0.0) -> Detections:
    """The chosen instances as detections, each scored the higher of its noun phrase's score and `sure` (the
    model's own top score for the whole instruction: a noun phrase asked alone can score under a track's birth bar
    where the instruction it came from does not)."""
    if not chosen:
        return Detections(masks=np.zeros((0, *found.masks.shape[1:]), bool), scores=np.zeros(0, np.float32),
                          presence=found.presence)
    return Detections(masks=np.stack([inst.mask for inst in chosen]),
                      scores=np.array([max(inst.score, sure) for inst in chosen], np.float32), presence=found.presence)


def answer(query: SpatialQuery, instances: list[Instance], anchors: list[Instance] | None, found: Detections,
           sure: float = 0.0) -> Detections:
    """The selector's pick as detections, carrying every instance it chose among (`Detections.selection`). The
    picked instances score as `_as_detections` scores them; the others keep their noun phrase's score."""
    chosen = select(query, instances, anchors)
    picked = [next(i for i, inst in enumerate(instances) if inst is c) for c in chosen]  # in `select`'s order
    every = _as_detections(instances, found)
    scores = every.scores.copy()
    scores[picked] = np.maximum(scores[picked], sure)
    candidates = Detections(every.masks, scores, found.presence)
    return Detections(every.masks[picked], scores[picked], found.presence,
                      Selection(candidates, tuple(picked), query.count))


Detect = Callable[[list[str], list[Level]], list[Detections]]


def detect_with_spatial_rules(detect: Detect, instructions: list[str], levels: list[Level]) -> list[Detections]:
    """`detect`'s answers, where each simple instruction a rule reads is asked as its noun phrase(s) and answered
    by the rule's selection among their instances. Every phrase goes through the detector in one call."""
    queries = [parse_spatial(text) if level == "simple" else None for text, level in zip(instructions, levels)]
    asked: dict[tuple[str, Level], int] = {}
    for text, level, query in zip(instructions, levels, queries):
        phrases = [(text, level)]  # a rule's instruction too: its own score says how sure the model is of it
        if query is not None:
            phrases += [(query.noun_phrase, query.noun_level)] + ([(query.anchor, "concept")] if query.anchor else [])
        for phrase in phrases:
            asked.setdefault(phrase, len(asked))
    keys = list(asked)
    found = detect([text for text, _ in keys], [level for _, level in keys])
    out = []
    for text, level, query in zip(instructions, levels, queries):
        if query is None:
            out.append(found[asked[(text, level)]])
            continue
        nouns = found[asked[(query.noun_phrase, query.noun_level)]]
        anchors = split_instances(found[asked[(query.anchor, "concept")]]) if query.anchor else None
        own = found[asked[(text, level)]]
        sure = float(own.scores.max()) if len(own) else 0.0
        out.append(answer(query, split_instances(nouns), anchors, nouns, sure))
    return out
