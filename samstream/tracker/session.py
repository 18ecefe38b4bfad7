"""`TrackingSession`: one stream's tracking state; one frame in, identity-tracked instances out.

Policy (SAM3's video defaults where it has them; docs/tracker.md):
- Keyframes (every `keyframe_every` frames, and whenever nothing is tracked) run the detector; every frame
  runs memory propagation of the tracked objects.
- At a keyframe, detections are matched to tracks of the same instruction by mask IoU (Hungarian, `lap`).
  A match keeps the track's id; a confident unmatched detection that overlaps no track starts a new one;
  a track unmatched for more than `max_missed_frames` frames is removed.
- A selector's answer ("the leftmost circle", `Detections.selection`): every instance it chose among is tracked,
  each keyframe's pick is a vote for its track, and the session reports the track(s) with the most votes, so a
  pick that flickers between two objects for a keyframe or two neither starts new tracks nor jumps.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import lap
import numpy as np

from samstream.instances import Instances
from samstream.masks import mask_iou
from samstream.model.levels import Level, resolve_level
from samstream.model.segmenter import Detections, FrameFeatures, ObjectMemory, Segmenter
from samstream.streaming.messages import RleMask
from samstream.streaming.rle import decode_mask, encode_masks
from samstream.tracker.scene_cut import SceneCutDetector

STATE_VERSION = 2
RECONDITION_MARGIN = 0.1  # re-conditioning needs the birth score + this (SAM3: 0.7 -> 0.8)
APPEARANCE_MOMENTUM = 0.8  # a track's appearance: 80% its history, 20% the newest matched detection


@dataclass(frozen=True)
class TrackerConfig:
    keyframe_every: int = 5  # 1 = detector on every frame (SAM3's own loop); higher is faster, drifts more
    detection_threshold: float | None = None  # None: the model's recommended threshold (SAM3: 0.5)
    birth_threshold: float | None = None  # a new track needs this score; None: the model's (SAM3: 0.7)
    birth_max_iou: float = 0.1  # ...and IoU below this with every track (SAM3: 0.1)
    match_iou: float = 0.1  # a detection may continue a track at IoU >= this (SAM3's assoc_iou_thresh: 0.1)
    max_missed_frames: int = 30  # keep-alive of unmatched tracks (SAM3: 30)
    recondition_score: float | None = None  # a matched detection this confident re-seeds the memory...
    # None: the model's birth threshold + 0.1, capped at 0.95 (SAM3: 0.7 + 0.1 = 0.8)
    recondition_iou: float = 0.8  # ...at once when the propagated mask drifted below this IoU with it
    recondition_every: int = 16  # ...and at least this often when they agree (SAM3: every 16 frames)
    min_hits_confirmed: int = 2  # matched keyframes before a track is reported `confirmed`
    duplicate_iou: float = 0.7  # two tracks of one instruction this alike are one object: the younger goes
    keyframe_below_score: float = 0.5  # a tracked object's score dropping below this makes the frame a keyframe
    scene_cut_distance: float | None = 0.5  # colour-histogram distance that makes a frame a keyframe (None: off)
    reid_frames: int = 150  # a lost track (unmatched, or removed after keep-alive) may return with its id this long
    reid_similarity: float = 0.75  # ...when a new detection's appearance is this close (cosine) to the track's
    pick_memory: float = 0.8  # a selector's earlier picks keep this share of their weight per `keyframe_every`
    # frames: 0 = only the latest pick counts (it may jump every keyframe); 0.8 = a new object needs ~3 keyframes
    # of picks in a row. A pick weighs the frames since the previous one, so a burst of extra keyframes (a
    # confidence drop) counts as the time it covers, not as one vote each

    def __post_init__(self) -> None:
        if self.keyframe_every < 1:
            raise ValueError(f"keyframe_every must be >= 1, got {self.keyframe_every}")
        if not 0.0 <= self.pick_memory < 1.0:
            raise ValueError(f"pick_memory must be in [0, 1), got {self.pick_memory}")


@dataclass
class Track:
    id: int
    instruction: str
    mask: np.ndarray  # (H, W) bool, latest
    score: float
    hits: int = 1
    last_matched_frame: int = 0
    seen_this_frame: bool = True
    last_conditioned_frame: int = 0
    appearance: np.ndarray | None = None  # running mean of unit appearance vectors at matched keyframes
    votes: float = 0.0  # a selector's picks of this track, older ones decayed (TrackerConfig.pick_memory)

    @property
    def empty(self) -> bool:
        return not self.mask.any()


@dataclass
class LostTrack:
    """A track removed after its keep-alive, kept for re-identification until `reid_frames` after its last match."""

    id: int
    instruction: str
    appearance: np.ndarray
    hits: int
    last_matched_frame: int
    votes: float = 0.0


@dataclass
class _Counters:
    frames_seen: int = 0
    next_id: int = 1
    keyframes: int = 0


class TrackingSession:
    """Per-stream state. Nothing here is shared between streams."""

    def __init__(self, segmenter: Segmenter, instructions: list[str], config: TrackerConfig = TrackerConfig(),
                 levels: list[str | None] | str | None = None) -> None:
        """`levels`: one SAM3-I level per instruction, one for all, or None / 'auto' to classify each."""
        if not instructions:
            raise ValueError("a tracking session needs at least one instruction")
        self.segmenter = segmenter
        self.instructions = list(instructions)
        if levels is None or isinstance(levels, str):
            levels = [levels] * len(self.instructions)
        if len(levels) != len(self.instructions):
            raise ValueError(f"{len(levels)} levels for {len(self.instructions)} instructions")
        self.levels: list[Level] = [resolve_level(text, level) for text, level in zip(self.instructions, levels)]
        self._level_of = dict(zip(self.instructions, self.levels))
        self.config = config
        self.detection_threshold = (
            config.detection_threshold if config.detection_threshold is not None else segmenter.info.score_threshold
        )
        self.birth_threshold = (
            config.birth_threshold if config.birth_threshold is not None else segmenter.info.birth_threshold
        )
        self.recondition_score = (
            config.recondition_score if config.recondition_score is not None
            else min(self.birth_threshold + RECONDITION_MARGIN, 0.95)
        )
        self.memory: ObjectMemory = segmenter.new_memory()
        self.tracks: dict[int, Track] = {}
        self.lost: dict[int, LostTrack] = {}
        self._selectors: dict[str, tuple[int, int]] = {}  # selector's instruction -> (tracks it reports, last pick)
        self._counters = _Counters()
        self._scene_cut = SceneCutDetector(config.scene_cut_distance) if config.scene_cut_distance else None
        self._scores_dropped = False  # a tracked object's score fell below keyframe_below_score this frame
        self._cut = False  # this frame starts a new shot
        self._reseed = False  # after restore(): condition the memory from restored masks on the next frame

    @property
    def frames_seen(self) -> int:
        return self._counters.frames_seen

    @property
    def keyframes(self) -> int:
        return self._counters.keyframes

    # -- one frame ---------------------------------------------------------------------------------------
    def update(self, rgb: np.ndarray) -> Instances:
        return update_sessions([(self, rgb)])[0]

    def _begin(self, rgb: np.ndarray) -> tuple[FrameFeatures, bool]:
        """Encode the frame; returns (features, whether tracked objects propagate now)."""
        self._cut = self._scene_cut(rgb) if self._scene_cut is not None else False
        self._scores_dropped = False
        features = self.segmenter.encode_frame(rgb)
        for track in self.tracks.values():
            track.seen_this_frame = False
        return features, bool(self.tracks) and not self._reseed

    def _finish(self, features: FrameFeatures, propagated: dict[int, tuple[np.ndarray, float]] | None) -> Instances:
        frame = self._counters.frames_seen
        reseeding, self._reseed = self._reseed, False
        if reseeding:  # after restore(): the last masks seed the memory and stand for this frame
            self.memory.condition(features, {t.id: t.mask for t in self.tracks.values() if not t.empty})
            for track in self.tracks.values():
                track.seen_this_frame = not track.empty
        elif propagated is not None:
            self._apply_propagation(propagated)
        if reseeding or self._is_keyframe(frame) or self._cut or self._scores_dropped:
            self._counters.keyframes += 1
            detections = self.segmenter.detect(features, self.instructions, self.levels)
            self._associate(features, detections, frame)
        self._suppress_duplicates()
        self._counters.frames_seen += 1
        return self._output(features)

    def _is_keyframe(self, frame: int) -> bool:
        return frame % self.config.keyframe_every == 0 or not self.tracks

    def _apply_propagation(self, propagated: dict[int, tuple[np.ndarray, float]]) -> None:
        low = self.config.keyframe_below_score
        self._scores_dropped = False
        for track_id, (mask, score) in propagated.items():
            track = self.tracks.get(track_id)
            if track is not None:
                if track.score >= low > score:
                    self._scores_dropped = True  # confidence just fell: check with the detector now
                track.mask, track.score, track.seen_this_frame = mask, score, True

    def _associate(self, features: FrameFeatures, detections: list[Detections], frame: int) -> None:
        condition: dict[int, np.ndarray] = {}
        for instruction, answer in zip(self.instructions, detections):
            dets = answer.selection.candidates if answer.selection is not None else answer
            keep = dets.scores > self.detection_threshold
            masks, scores = dets.masks[keep], dets.scores[keep]
            assigned: dict[int, Track] = {}  # kept detection index -> the track it continues or starts
            appearance = self.segmenter.embed(features, masks)
            tracks = [t for t in self.tracks.values() if t.instruction == instruction]
            track_masks = np.stack([t.mask for t in tracks]) if tracks else np.zeros((0, *masks.shape[1:]), bool)
            iou = mask_iou(track_masks, masks)
            matches, unmatched_dets = _hungarian(iou, self.config.match_iou)
            matched_tracks = set()
            for t_index, d_index in matches:
                track = tracks[t_index]
                matched_tracks.add(track.id)
                confident = scores[d_index] >= self.recondition_score
                drifted = iou[t_index, d_index] < self.config.recondition_iou
                due = frame - track.last_conditioned_frame >= self.config.recondition_every
                if not track.seen_this_frame or (confident and (drifted or due)):
                    condition[track.id] = masks[d_index]  # correct drift / refresh the memory from a detection
                    track.last_conditioned_frame = frame
                self._matched(track, masks[d_index], float(scores[d_index]), appearance[d_index], frame)
                assigned[d_index] = track
            candidates = [d for d in unmatched_dets if scores[d] >= self.birth_threshold
                          and not (len(track_masks) and iou[:, d].max() >= self.config.birth_max_iou)]
            missing = [t for t in tracks if t.id not in matched_tracks and (t.empty or not t.seen_this_frame)]
            for d_index, track in self._reidentify(instruction, candidates, appearance, missing):
                condition[track.id] = masks[d_index]
                track.last_conditioned_frame = frame
                self._matched(track, masks[d_index], float(scores[d_index]), appearance[d_index], frame)
                assigned[d_index] = track
                candidates.remove(d_index)
            for d_index in candidates:
                if len(track_masks) and iou[:, d_index].max() >= self.config.birth_max_iou:
                    continue  # overlaps a track born this frame: a duplicate, not a new object
                track = self._new_track(instruction, masks[d_index], float(scores[d_index]), frame)
                track.appearance = appearance[d_index]
                track_masks = np.concatenate([track_masks, masks[d_index][None]])
                iou = np.concatenate([iou, mask_iou(masks[d_index][None], masks)])
                condition[track.id] = track.mask
                assigned[d_index] = track
            if answer.selection is not None:
                kept_index = np.cumsum(keep) - 1
                picked = [assigned.get(int(kept_index[i])) for i in answer.selection.picked if keep[i]]
                self._vote(instruction, [t for t in picked if t is not None], answer.selection.count, frame)
        self._expire(frame)
        if condition:
            self.memory.condition(features, condition)

    def _vote(self, instruction: str, picked: list[Track], count: int, frame: int) -> None:
        """One keyframe's pick of a selector: earlier votes decay by the time since the last pick, and the picked
        tracks gain that time's share of one keyframe period (at most one vote)."""
        period = self.config.keyframe_every
        last = self._selectors.get(instruction, (count, frame - period))[1]
        share = min(max(frame - last, 1) / period, 1.0)
        decay = self.config.pick_memory ** share
        for track in [*self.tracks.values(), *self.lost.values()]:
            if track.instruction == instruction:
                track.votes *= decay
        for track in picked:
            track.votes += share
        self._selectors[instruction] = (count, frame)

    def _matched(self, track: Track, mask: np.ndarray, score: float, appearance: np.ndarray, frame: int) -> None:
        track.hits += 1
        track.last_matched_frame = frame
        track.mask, track.score, track.seen_this_frame = mask, score, True
        if track.appearance is None:
            track.appearance = appearance
        else:
            mixed = APPEARANCE_MOMENTUM * track.appearance + (1 - APPEARANCE_MOMENTUM) * appearance
            track.appearance = mixed / max(float(np.linalg.norm(mixed)), 1e-6)

    def _reidentify(self, instruction: str, candidates: list[int], appearance: np.ndarray,
                    missing: list[Track]) -> list[tuple[int, Track]]:
        """Match new detections to tracks of this instruction that are out of sight (live but empty, or lost
        after their keep-alive) by appearance. Returns (detection index, revived live track) pairs."""
        pool: list[Track | LostTrack] = [t for t in missing if t.appearance is not None]
        pool += [t for t in self.lost.values() if t.instruction == instruction]
        if not candidates or not pool:
            return []
        similarity = np.stack([t.appearance for t in pool]) @ appearance[candidates].T  # (tracks, candidates)
        pairs, _ = _hungarian(similarity, self.config.reid_similarity)
        revived = []
        for p_index, c_index in pairs:
            entry = pool[p_index]
            if isinstance(entry, LostTrack):
                del self.lost[entry.id]
                entry = Track(id=entry.id, instruction=entry.instruction, mask=np.zeros(0, bool), score=0.0,
                              hits=entry.hits, last_matched_frame=entry.last_matched_frame,
                              appearance=entry.appearance, votes=entry.votes)
                self.tracks[entry.id] = entry
            revived.append((candidates[c_index], entry))
        return revived

    def _expire(self, frame: int) -> None:
        """Tracks unmatched past the keep-alive leave the memory (kept for re-identification); lost tracks
        unmatched past `reid_frames` are forgotten for good."""
        stale = [t for t in self.tracks.values() if frame - t.last_matched_frame > self.config.max_missed_frames]
        for track in stale:
            del self.tracks[track.id]
            if track.appearance is not None and self.config.reid_frames > self.config.max_missed_frames:
                self.lost[track.id] = LostTrack(track.id, track.instruction, track.appearance, track.hits,
                                                track.last_matched_frame, track.votes)
        if stale:
            self.memory.forget([t.id for t in stale])
        for track_id in [i for i, t in self.lost.items() if frame - t.last_matched_frame > self.config.reid_frames]:
            del self.lost[track_id]

    def _suppress_duplicates(self) -> None:
        """Drop the younger of any two live tracks of one instruction whose masks overlap by duplicate_iou."""
        live = sorted((t for t in self.tracks.values() if t.seen_this_frame and not t.empty), key=lambda t: t.id)
        if len(live) < 2:
            return
        iou = mask_iou(np.stack([t.mask for t in live]), np.stack([t.mask for t in live]))
        doomed: set[int] = set()
        for i, older in enumerate(live):
            if older.id in doomed:
                continue
            for j in range(i + 1, len(live)):
                younger = live[j]
                if younger.instruction == older.instruction and iou[i, j] >= self.config.duplicate_iou:
                    doomed.add(younger.id)
                    older.votes += younger.votes  # one object: its picks count once, for the track that stays
        for track_id in doomed:
            del self.tracks[track_id]
        if doomed:
            self.memory.forget(sorted(doomed))

    def _new_track(self, instruction: str, mask: np.ndarray, score: float, frame: int) -> Track:
        track = Track(id=self._counters.next_id, instruction=instruction, mask=mask, score=score,
                      last_matched_frame=frame, last_conditioned_frame=frame)
        self._counters.next_id += 1
        self.tracks[track.id] = track
        return track

    def _output(self, features: FrameFeatures) -> Instances:
        reported = self._reported()
        live = [t for t in self.tracks.values() if t.seen_this_frame and not t.empty and t.id in reported]
        if not live:
            return Instances.empty(features.height, features.width)
        return Instances(
            masks=np.stack([t.mask for t in live]),
            scores=np.array([t.score for t in live], dtype=np.float32),
            ids=np.array([t.id for t in live], dtype=np.int64),
            instructions=tuple(t.instruction for t in live),
            confirmed=np.array([t.hits >= self.config.min_hits_confirmed for t in live]),
            levels=tuple(self._level_of[t.instruction] for t in live),
        )

    def _reported(self) -> set[int]:
        """Ids of the tracks the session reports: every track, except that a selector's instruction reports only
        its `count` most-voted tracks (older first on ties), and only while they are in sight."""
        hidden: set[int] = set()
        for instruction, (count, _) in self._selectors.items():
            mine = sorted((t for t in self.tracks.values() if t.instruction == instruction),
                          key=lambda t: (-t.votes, t.id))
            hidden.update(t.id for i, t in enumerate(mine) if i >= count or t.votes <= 0.0)
        return {t for t in self.tracks if t not in hidden}

    # -- checkpoint / restore ----------------------------------------------------------------------------
    def state_dict(self) -> bytes:
        """Ids, counters, last masks and scores (not the model's memory bank), as JSON bytes."""
        tracks = list(self.tracks.values())
        rles = encode_masks(np.stack([t.mask for t in tracks])) if tracks else []
        state = {
            "version": STATE_VERSION,
            "instructions": self.instructions,
            "frames_seen": self._counters.frames_seen,
            "next_id": self._counters.next_id,
            "keyframes": self._counters.keyframes,
            "tracks": [
                {"id": t.id, "instruction": t.instruction, "score": t.score, "hits": t.hits,
                 "last_matched_frame": t.last_matched_frame, "mask": rle.model_dump(),
                 "appearance": _vector(t.appearance), "votes": t.votes}
                for t, rle in zip(tracks, rles)
            ],
            "selectors": self._selectors,
            "lost": [
                {"id": t.id, "instruction": t.instruction, "hits": t.hits, "last_matched_frame": t.last_matched_frame,
                 "appearance": _vector(t.appearance), "votes": t.votes}
                for t in self.lost.values()
            ],
        }
        return json.dumps(state, separators=(",", ":")).encode()

    @property
    def next_id(self) -> int:
        return self._counters.next_id

    def restore(self, blob: bytes | None, frames_seen: int | None = None, next_id: int | None = None) -> None:
        """Continue from `state_dict()` output: same ids; the memory is re-seeded from the last masks.
        `frames_seen` / `next_id`: counters saved after the blob (a checkpoint is written every N frames, the
        counters every frame); they win when ahead, so ids are never reused. No blob: counters only."""
        if blob is None:
            self._counters = _Counters(frames_seen or 0, next_id or 1, 0)
            return
        self._restore(blob)
        self._counters.frames_seen = max(self._counters.frames_seen, frames_seen or 0)
        self._counters.next_id = max(self._counters.next_id, next_id or 0)

    def _restore(self, blob: bytes) -> None:
        state = json.loads(blob)
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"tracking state version {state.get('version')} is not {STATE_VERSION}")
        self._counters = _Counters(state["frames_seen"], state["next_id"], state["keyframes"])
        self.tracks = {}
        for t in state["tracks"]:
            if t["instruction"] not in self.instructions:
                continue  # the stream's instructions changed since
            mask = decode_mask(RleMask.model_validate(t["mask"]))
            self.tracks[t["id"]] = Track(t["id"], t["instruction"], mask, t["score"], t["hits"],
                                         t["last_matched_frame"], seen_this_frame=False,
                                         appearance=_array(t["appearance"]), votes=t.get("votes", 0.0))
        self.lost = {
            t["id"]: LostTrack(t["id"], t["instruction"], _array(t["appearance"]), t["hits"], t["last_matched_frame"],
                               t.get("votes", 0.0))
            for t in state["lost"] if t["instruction"] in self.instructions
        }
        self._selectors = {k: (int(v[0]), int(v[1])) for k, v in state.get("selectors", {}).items()
                           if k in self.instructions}
        self.memory = self.segmenter.new_memory()
        self._reseed = bool(self.tracks)


def update_sessions(items: list[tuple[TrackingSession, np.ndarray]]) -> list[Instances]:
    """One frame for each of several sessions (streams) on one segmenter: their tracked objects propagate in
    one batched tracker call where the segmenter can batch across streams. Same results as `update` each."""
    if not items:
        return []
    begun = [session._begin(rgb) for session, rgb in items]
    requests = [(session.memory, features) for (session, _), (features, propagates) in zip(items, begun) if propagates]
    segmenter = items[0][0].segmenter
    batched = getattr(segmenter, "propagate_streams", None)
    if batched is not None and all(session.segmenter is segmenter for session, _ in items):
        results = iter(batched(requests))
    else:
        results = iter([memory.propagate(features) for memory, features in requests])
    return [session._finish(features, next(results) if propagates else None)
            for (session, _), (features, propagates) in zip(items, begun)]


def _vector(v: np.ndarray | None) -> list[float] | None:
    return None if v is None else [round(float(x), 6) for x in v]


def _array(v: list[float] | None) -> np.ndarray | None:
    return None if v is None else np.asarray(v, dtype=np.float32)


def _hungarian(iou: np.ndarray, min_iou: float) -> tuple[list[tuple[int, int]], list[int]]:
    """Maximum-IoU one-to-one matching with every pair below `min_iou` forbidden.
    Returns (matched (row, col) pairs, unmatched cols)."""
    rows, cols = iou.shape
    if rows == 0 or cols == 0:
        return [], list(range(cols))
    _, row_to_col, col_to_row = lap.lapjv(1.0 - iou, extend_cost=True, cost_limit=1.0 - min_iou + 1e-6)
    matches = [(r, int(c)) for r, c in enumerate(row_to_col) if c >= 0 and iou[r, c] >= min_iou]
    matched_cols = {c for _, c in matches}
    return matches, [c for c in range(cols) if c not in matched_cols]
