import numpy as np
import pytest

import samstream
from samstream.streaming.rle import decode_mask
from samstream.streaming.sources import VideoFileSource


def test_track_frames_in_process(realshort, tiny_segmenter):
    frames = [f.rgb for f in VideoFileSource(realshort, max_frames=8)]
    out = list(samstream.track(frames, instruction="the person", model=tiny_segmenter, keyframe_every=4))
    assert [f.index for f in out] == list(range(8))
    assert all(f.instances.masks.shape[1:] == (240, 320) for f in out)
    assert any(len(f.instances) for f in out)
    result = out[0].to_result("robot")
    assert result.stream == "robot"
    for inst, mask in zip(result.instances, out[0].instances.masks):
        assert np.array_equal(decode_mask(inst.mask), mask)


def test_track_a_path_gives_timestamps(realshort, tiny_segmenter):
    out = list(samstream.track(realshort, "person", model=tiny_segmenter))
    assert len(out) == 36 and out[0].pts == 0.0 and out[-1].pts > 1.0


def test_track_rejects_bad_frames_and_empty_instructions(tiny_segmenter):
    with pytest.raises(ValueError, match="instruction is empty"):
        next(samstream.track([np.zeros((8, 8, 3), np.uint8)], " ", model=tiny_segmenter))
    with pytest.raises(ValueError, match=r"frame 0: expected an \(H, W, 3\) uint8 array"):
        next(samstream.track([np.zeros((8, 8), np.uint8)], "x", model=tiny_segmenter))
