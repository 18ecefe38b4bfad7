"""A selector's answer ("the largest box") in a tracking session: every instance is followed, the picks vote, and
the session reports the most-voted track(s) only. The detector is scripted (scripted.py); the selection is the real
`samstream.model.spatial` code over its noun-phrase detections."""

from dataclasses import replace

import numpy as np
import pytest

from samstream.model.segmenter import Detections
from samstream.model.spatial import detect_with_spatial_rules
from samstream.tracker.session import TrackerConfig, TrackingSession
from tests.tracker.scripted import H, W, Box, Scene, ScriptedSegmenter

BLANK = np.zeros((H, W, 3), np.uint8)


class SelectingSegmenter(ScriptedSegmenter):
    """Every phrase detects every visible box; the spatial rules pick among them as a rules-on model does."""

    def __init__(self, scene: Scene) -> None:
        super().__init__(scene, replace(ScriptedSegmenter.info, spatial_rules=True))

    def detect(self, features, instructions, levels) -> list[Detections]:
        return detect_with_spatial_rules(lambda texts, lv: super(SelectingSegmenter, self).detect(features, texts, lv)
                                         * len(texts), instructions, levels)


def _owner(scene: Scene, t: int, mask: np.ndarray) -> int | None:
    """The scene object a reported mask covers (IoU >= 0.5), if any."""
    ious = [(mask & g).sum() / max(1, (mask | g).sum()) for g in scene.gt_masks(t)]
    best = int(np.argmax(ious))
    return best if ious[best] >= 0.5 else None


def _run(scene: Scene, instruction: str, config: TrackerConfig = TrackerConfig(keyframe_every=5)):
    session = TrackingSession(SelectingSegmenter(scene), [instruction], config, levels="simple")
    outputs = [session.update(BLANK) for _ in range(scene.frames)]
    owners = [[_owner(scene, t, m) for m in out.masks] for t, out in enumerate(outputs)]
    return session, outputs, owners


def test_a_pick_that_flickers_for_one_keyframe_neither_starts_a_reported_track_nor_jumps():
    """The largest box is out of sight at keyframe 10, so that keyframe picks the other box. It is followed (so
    it could win later) but never reported: the session reports the largest box only, and nothing while it is
    hidden."""
    scene = Scene([Box(10, 10, 18, 18, hidden=range(10, 13)), Box(50, 30, 12, 12)], frames=40)
    session, outputs, owners = _run(scene, "the largest box")
    assert all(len(out) <= 1 for out in outputs)
    assert {o for frame in owners for o in frame} <= {0, None}  # None: the scripted memory's stale mask of box 0
    assert {int(i) for out in outputs for i in out.ids} == {1}
    assert all(owners[t] == [0] for t in range(13, 40))
    assert len(session.tracks) == 2  # the smaller box was followed all the same
    # with no memory of earlier picks, the latest keyframe's pick is what is reported
    _, _, latest = _run(scene, "the largest box", TrackerConfig(keyframe_every=5, pick_memory=0.0))
    assert latest[10] == [1] and latest[20] == [0]


def test_a_new_pick_that_holds_takes_over_within_a_few_keyframes():
    """Box 1 slides left past box 0: "the leftmost box" moves to it after a few keyframes, one box at a time."""
    scene = Scene([Box(30, 5, 12, 12), Box(62, 40, 12, 12, vx=-1.0)], frames=60)
    _, outputs, owners = _run(scene, "the leftmost box")
    crossed = next(t for t in range(scene.frames) if 62 - 1.0 * t < 30)  # box 1 is now the leftmost
    assert all(len(out) == 1 for out in outputs)
    assert all(owners[t] == [0] for t in range(crossed + 1))  # one keyframe's pick does not move the answer
    # by four keyframes later the answer is box 1 (checked on keyframes: the scripted memory does not move masks)
    assert all(owners[t] == [1] for t in range(crossed + 20, scene.frames, 5))
    assert len({int(out.ids[0]) for out in outputs}) == 2


def test_a_counted_selector_reports_that_many_tracks():
    scene = Scene([Box(5, 5, 18, 18), Box(40, 5, 15, 15), Box(30, 38, 10, 10)], frames=20)
    _, outputs, owners = _run(scene, "the two largest boxes")
    assert all(sorted(frame) == [0, 1] for frame in owners)


def test_votes_survive_a_checkpoint():
    scene = Scene([Box(10, 10, 18, 18, hidden=range(10, 13)), Box(50, 30, 12, 12)], frames=40)
    session = TrackingSession(SelectingSegmenter(scene), ["the largest box"], TrackerConfig(keyframe_every=5),
                              levels="simple")
    for _ in range(10):
        session.update(BLANK)
    moved = TrackingSession(SelectingSegmenter(scene), ["the largest box"], TrackerConfig(keyframe_every=5),
                            levels="simple")
    moved.segmenter.t = session.segmenter.t
    moved.restore(session.state_dict())
    outputs = [moved.update(BLANK) for _ in range(10, 20)]
    assert {int(i) for out in outputs for i in out.ids} == {1}  # not the box picked while the largest was hidden


def test_pick_memory_must_be_below_one():
    with pytest.raises(ValueError, match="pick_memory"):
        TrackerConfig(pick_memory=1.0)
