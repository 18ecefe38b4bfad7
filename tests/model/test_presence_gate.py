"""The presence gate (`ModelInfo.presence_threshold`): an instruction whose presence score is under it returns
nothing; the others are returned exactly as without the gate."""

from dataclasses import replace

import numpy as np

from samstream.streaming.sources import VideoFileSource

INSTRUCTIONS = ["a person", "the red car on the left", "whatever could roll", "dog", "the tree"]
LEVELS = ["concept", "simple", "complex", "concept", "concept"]


def _first_frame(path):
    return next(iter(VideoFileSource(path, max_frames=1))).rgb


def _detect(segmenter, rgb, gate):
    original = segmenter.info
    segmenter.info = replace(original, presence_threshold=gate)
    try:
        return segmenter.detect(segmenter.encode_frame(rgb), INSTRUCTIONS, LEVELS)
    finally:
        segmenter.info = original


def test_the_gate_empties_exactly_the_instructions_under_it(realshort, tiny_segmenter):
    rgb = _first_frame(realshort)
    ungated = _detect(tiny_segmenter, rgb, None)
    presence = np.array([d.presence for d in ungated])
    assert ((presence > 0) & (presence < 1)).all() and len(set(presence.round(6))) > 1, presence
    assert all(len(d) for d in ungated)  # random weights: every instruction has candidates over the floor
    gate = float(np.median(presence))
    gated = _detect(tiny_segmenter, rgb, gate)
    for before, after in zip(ungated, gated):
        assert after.presence == before.presence
        if before.presence < gate:
            assert len(after) == 0 and after.masks.shape == (0, *rgb.shape[:2])
        else:
            np.testing.assert_array_equal(after.scores, before.scores)
            np.testing.assert_array_equal(after.masks, before.masks)
    assert sum(len(d) == 0 for d in gated) == int((presence < gate).sum()) >= 1


def test_no_gate_and_a_zero_gate_are_the_same(realshort, tiny_segmenter):
    rgb = _first_frame(realshort)
    for off, zero in zip(_detect(tiny_segmenter, rgb, None), _detect(tiny_segmenter, rgb, 0.0)):
        np.testing.assert_array_equal(off.scores, zero.scores)
