"""FrameFeatureCache: tracking through it gives exactly what the model gives, with the backbone run once a frame."""

import numpy as np

from samstream.model.feature_cache import FrameFeatureCache
from samstream.streaming.sources import VideoFileSource
from samstream.tracker.session import TrackerConfig, TrackingSession


def _track(segmenter, frames, birth_threshold=None):
    session = TrackingSession(segmenter, ["person"], TrackerConfig(keyframe_every=3, birth_threshold=birth_threshold))
    return [session.update(rgb) for rgb in frames]


def _same(a, b) -> bool:
    return all(np.array_equal(x.ids, y.ids) and np.array_equal(x.masks, y.masks) and np.allclose(x.scores, y.scores)
               for x, y in zip(a, b, strict=True))


def test_repeated_passes_reuse_features_and_track_identically(realshort, tiny_segmenter):
    frames = [f.rgb for f in VideoFileSource(realshort, max_frames=10)]
    plain = _track(tiny_segmenter, frames)
    assert any(len(out.ids) for out in plain)  # something to compare
    cached = FrameFeatureCache(tiny_segmenter)
    first = _track(cached, frames)
    again = _track(cached, [rgb.copy() for rgb in frames])  # same pixels, new arrays (decoded again)
    assert _same(plain, first) and _same(plain, again)
    distinct = len({rgb.tobytes() for rgb in frames})
    assert cached.encoded == distinct and cached.reused == 2 * len(frames) - distinct


def test_a_different_frame_is_encoded_not_reused(realshort, tiny_segmenter):
    rgb = next(iter(VideoFileSource(realshort, max_frames=1))).rgb
    cached = FrameFeatureCache(tiny_segmenter)
    changed = rgb.copy()
    changed[0, 0, 0] ^= 1
    assert cached.encode_frame(rgb) is not cached.encode_frame(changed)
    assert cached.encode_frame(rgb[:, :-1]) is not cached.encode_frame(rgb)  # another size
    assert cached.encoded == 3 and cached.reused == 1
    assert cached.info is tiny_segmenter.info
