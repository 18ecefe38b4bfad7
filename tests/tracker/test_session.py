import numpy as np

from samstream.streaming.sources import VideoFileSource
from samstream.tracker.session import TrackerConfig, TrackingSession


def _frames(realshort, n):
    return [f.rgb for f in VideoFileSource(realshort, max_frames=n)]


def test_keyframes_follow_the_configured_period(realshort, tiny_segmenter):
    session = TrackingSession(tiny_segmenter, ["person"], TrackerConfig(keyframe_every=4))
    for rgb in _frames(realshort, 12):
        session.update(rgb)
    assert session.frames_seen == 12 and session.keyframes == 3  # frames 0, 4, 8 (tracks exist from frame 0)


def test_memory_window_is_bounded(realshort, tiny_segmenter):
    session = TrackingSession(tiny_segmenter, ["person"], TrackerConfig(keyframe_every=3))
    frames = _frames(realshort, 36)
    held = []
    for rgb in frames + frames:
        session.update(rgb)
        held.append(len(session.memory))
    window = session.memory.window + session.memory.max_cond_frames
    assert max(held) <= window + 1
    assert held[-1] <= window + 1


def test_restore_keeps_ids_and_counters(realshort, tiny_segmenter):
    frames = _frames(realshort, 10)
    session = TrackingSession(tiny_segmenter, ["person"], TrackerConfig(keyframe_every=5))
    for rgb in frames[:6]:
        out = session.update(rgb)
    ids_before = set(out.ids.tolist())
    assert ids_before
    moved = TrackingSession(tiny_segmenter, ["person"], TrackerConfig(keyframe_every=5))
    moved.restore(session.state_dict())
    assert moved.frames_seen == 6 and set(moved.tracks) == set(session.tracks)
    after = moved.update(frames[6])
    assert set(after.ids.tolist()) & ids_before  # the same objects keep their ids on the new worker
    assert max(moved.tracks) < moved._counters.next_id  # no id is ever reused


def test_instances_are_per_instruction(realshort, tiny_segmenter):
    session = TrackingSession(tiny_segmenter, ["person", "tree"], TrackerConfig(keyframe_every=2))
    out = [session.update(rgb) for rgb in _frames(realshort, 4)]
    assert {s for o in out for s in o.instructions} == {"person", "tree"}
    ids = np.concatenate([o.ids for o in out])
    assert len(set(ids.tolist())) == len({(i, s) for o in out for i, s in zip(o.ids, o.instructions)})
