"""SAM3-I adapters on the real transformers Sam3Model (tiny random config)."""

import numpy as np
import pytest
import torch

from samstream.model.sam3i import Sam3I, Sam3IAdapters
from samstream.model.tiny import build_tiny_model
from samstream.streaming.sources import VideoFileSource
from samstream.tracker.session import TrackerConfig, TrackingSession

OUTPUTS = ("pred_masks", "pred_logits", "pred_boxes", "presence_logits")
TEXTS = ["a cat", "the red dog on the left", "something to sit on"]


@pytest.fixture(scope="module")
def detector_and_inputs():
    model, tokenizer = build_tiny_model(seed=3)
    detector = model.detector_model
    torch.manual_seed(0)
    pixels = torch.randn(len(TEXTS), 3, 112, 112)
    tokens = tokenizer(TEXTS, padding="max_length", max_length=32, return_tensors="pt")
    return detector, pixels, tokens


def _run(detector, pixels, tokens):
    with torch.no_grad():
        return detector(pixel_values=pixels, input_ids=tokens.input_ids, attention_mask=tokens.attention_mask)


def _max_diff(a, b, rows=slice(None)):
    return max((getattr(a, k)[rows] - getattr(b, k)[rows]).abs().max().item() for k in OUTPUTS)


def test_fresh_adapters_are_the_identity_at_every_level(detector_and_inputs):
    detector, pixels, tokens = detector_and_inputs
    base = _run(detector, pixels, tokens)
    sam3i = Sam3I(detector, Sam3IAdapters.fresh(detector))
    try:
        with sam3i.routing(["concept", "simple", "complex"]):
            routed = _run(detector, pixels, tokens)
    finally:
        sam3i.detach()
    assert _max_diff(base, routed) <= 1e-5


def test_concept_bypasses_trained_adapters_and_other_levels_use_them(detector_and_inputs):
    detector, pixels, tokens = detector_and_inputs
    base = _run(detector, pixels, tokens)
    adapters = Sam3IAdapters.fresh(detector)
    with torch.no_grad():
        for p in adapters.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    sam3i = Sam3I(detector, adapters)
    try:
        with sam3i.routing(["concept", "simple", "complex"]):
            routed = _run(detector, pixels, tokens)
        with sam3i.routing(["simple", "simple", "simple"]):
            all_simple = _run(detector, pixels, tokens)
    finally:
        sam3i.detach()
    assert _max_diff(base, routed, 0) <= 1e-5  # concept row: SAM3 exactly
    assert _max_diff(base, routed, 1) > 1e-3 and _max_diff(base, routed, 2) > 1e-3
    assert _max_diff(routed, all_simple, 1) <= 1e-5  # a row's route does not depend on its neighbours
    assert _max_diff(routed, all_simple, 2) > 1e-3  # complex chain differs from the simple adapter
    assert _max_diff(base, _run(detector, pixels, tokens)) <= 1e-5  # outside routing(): plain SAM3


def test_adapter_placement_and_size(detector_and_inputs):
    detector, _, _ = detector_and_inputs
    adapters = Sam3IAdapters.fresh(detector)
    keys = set(adapters.state_dict())
    n_text = len(detector.text_encoder.text_model.encoder.layers)
    for i in range(n_text):
        for route in ("adapter1", "adapter12", "adapter2"):
            assert f"text.{i}.{route}.mha_adapter.in_proj_weight" in keys
            assert f"text.{i}.{route}.down_proj.weight" in keys
    assert {f"encoder.{i}.adapter1.norm.weight" for i in range(len(detector.detr_encoder.layers))} <= keys
    assert {f"decoder.{i}.adapter2.up_proj.weight" for i in range(len(detector.detr_decoder.layers))} <= keys
    original = detector.mask_decoder.mask_embedder.state_dict()
    for route in ("adapter1", "adapter2"):
        copy = adapters.mask_embedder[route].state_dict()
        assert all(torch.equal(copy[k], original[k]) for k in original)


def test_text_encoder_runs_once_for_many_frames(realshort, tiny_segmenter):
    calls = []
    handle = tiny_segmenter.model.detector_model.text_encoder.register_forward_hook(lambda *a: calls.append(1))
    tiny_segmenter._text_cache.clear()
    try:
        session = TrackingSession(tiny_segmenter, ["the runner on the left", "a tree"],
                                  TrackerConfig(keyframe_every=1))
        for frame in VideoFileSource(realshort, max_frames=6):
            session.update(frame.rgb)
        assert len(calls) == 1  # both instructions, one batched text pass, reused by 6 keyframes
        tiny_segmenter.forget_instruction("a tree", session.levels[1])
        assert ("the runner on the left", "simple") in tiny_segmenter._text_cache
        session.update(frame.rgb)
        assert len(calls) == 2  # only the changed entry was re-encoded
    finally:
        handle.remove()


def test_instructions_share_one_detector_pass(realshort, tiny_segmenter):
    calls = []
    handle = tiny_segmenter.model.detector_model.detr_decoder.register_forward_hook(lambda *a: calls.append(1))
    try:
        rgb = next(iter(VideoFileSource(realshort))).rgb
        features = tiny_segmenter.encode_frame(rgb)
        texts = ["a", "the b on the left", "something to c", "d"]
        out = tiny_segmenter.detect(features, texts, ["concept", "simple", "complex", "concept"])
        assert len(out) == 4 and len(calls) == 1
        single = tiny_segmenter.detect(features, ["the b on the left"], ["simple"])[0]
        assert np.array_equal(single.masks, out[1].masks) and np.allclose(single.scores, out[1].scores, atol=1e-5)
    finally:
        handle.remove()


def test_results_report_the_level(realshort, tiny_segmenter):
    session = TrackingSession(tiny_segmenter, ["person", "the person on the left"], TrackerConfig(keyframe_every=2))
    assert session.levels == ["concept", "simple"]
    seen = set()
    for frame in VideoFileSource(realshort, max_frames=4):
        out = session.update(frame.rgb)
        seen.update(zip(out.instructions, out.levels))
    assert seen <= {("person", "concept"), ("the person on the left", "simple")} and seen


def test_ffn_adapter_reads_the_stream_entering_the_ffn_block(detector_and_inputs):
    """In a (pre-norm) encoder layer the adapter reads the stream before layer_norm3, not the FFN's input."""
    detector, _, _ = detector_and_inputs
    adapters = Sam3IAdapters.fresh(detector)
    with torch.no_grad():
        for p in adapters.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    layer = detector.detr_encoder.layers[-1]
    stream = torch.randn(2, 10, layer.layer_norm3.normalized_shape[0])
    sam3i = Sam3I(detector, adapters)
    try:
        with torch.no_grad():
            plain = layer.mlp(layer.layer_norm3(stream))
            with sam3i.routing(["simple", "complex"]):
                routed = layer.mlp(layer.layer_norm3(stream))  # hooks fire as inside the layer's forward
            g = adapters.encoder[-1]
            expected = torch.stack([g["adapter1"](stream[0]), g["adapter2"](g["adapter12"](stream[1]))])
    finally:
        sam3i.detach()
    assert torch.allclose(routed - plain, expected, atol=1e-5)
