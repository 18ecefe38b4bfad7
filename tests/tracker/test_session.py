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


def test_restore_from_an_older_checkpoint_never_reuses_ids(realshort, tiny_segmenter):
    """The session is saved every N frames, the counters every frame: counters ahead of the blob win."""
    frames = _frames(realshort, 8)
    session = TrackingSession(tiny_segmenter, ["person"], TrackerConfig(keyframe_every=5))
    for rgb in frames[:3]:
        session.update(rgb)
    old_blob = session.state_dict()
    for rgb in frames[3:7]:
        session.update(rgb)
    moved = TrackingSession(tiny_segmenter, ["person"], TrackerConfig(keyframe_every=5))
    moved.restore(old_blob, frames_seen=session.frames_seen, next_id=session.next_id + 7)
    assert moved.frames_seen == 7 and moved.next_id == session.next_id + 7
    out = moved.update(frames[7])
    assert not {int(i) for i in out.ids} & set(range(session.next_id, session.next_id + 7))


def test_instances_are_per_instruction(realshort, tiny_segmenter):
    session = TrackingSession(tiny_segmenter, ["person", "tree"], TrackerConfig(keyframe_every=2))
    out = [session.update(rgb) for rgb in _frames(realshort, 4)]
    assert {s for o in out for s in o.instructions} == {"person", "tree"}
    ids = np.concatenate([o.ids for o in out])
    assert len(set(ids.tolist())) == len({(i, s) for o in out for i, s in zip(o.ids, o.instructions)})


def test_endless_stream_keeps_constant_state(tiny_segmenter):
    """1,500 frames (~200 windows): the session and its tracker memory hold at most the window, and their size
    is flat once the window has filled."""
    height, width = 48, 64
    session = TrackingSession(tiny_segmenter, ["square"], TrackerConfig(keyframe_every=5))
    window = session.memory.window + session.memory.max_cond_frames
    sizes = []
    for i in range(1500):
        rgb = np.full((height, width, 3), 30, np.uint8)
        x = 5 + (i * 3) % (width - 20)
        rgb[10:30, x:x + 15] = (230, 60, 60)
        session.update(rgb)
        if i >= 100 and i % 50 == 0:
            memory = session.memory
            assert len(memory) <= window + 1
            sizes.append((memory.stored_entries(), len(memory.objects)))
    assert session.memory.frame_index == 1499  # the frame count goes on
    # per tracked object, at most a window of frame entries, whatever the length
    per_object = [entries / max(1, objects) for entries, objects in sizes]
    assert max(per_object) <= window + 1, per_object
    early, late = per_object[: len(per_object) // 2], per_object[len(per_object) // 2 :]
    assert max(late) <= max(early) + 1e-9, (early, late)  # no growth after warm-up
