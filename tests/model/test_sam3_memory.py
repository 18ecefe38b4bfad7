"""The batched tracker memory against transformers' own (per-object) SAM3 video session, frame by frame."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from transformers.models.sam3_video.modeling_sam3_video import Sam3VideoInferenceSession

from samstream.model.sam3_memory import Sam3TrackerMemory, propagate_streams


class ReferenceMemory:
    """SAM3 tracking as transformers runs it: one inference session, objects stepped one at a time."""

    def __init__(self, segmenter) -> None:
        self.segmenter = segmenter
        self.tracker = segmenter.model.tracker_model
        self.session = Sam3VideoInferenceSession(inference_device="cpu", inference_state_device="cpu",
                                                 video_storage_device="cpu", dtype=torch.float32)
        self.session.obj_with_new_inputs = []
        self.session.processed_frames = {}
        self.frame = -1
        self.current = None

    def _register(self, features) -> int:
        if self.current is not features:
            self.frame += 1
            self.current = features
            self.session.processed_frames[self.frame] = None
            self.session.cache.cache_vision_features(
                self.frame, {"vision_feats": features.data.tracker_feats, "vision_pos_embeds": features.data.tracker_pos})
        return self.frame

    @torch.inference_mode()
    def condition(self, features, masks) -> None:
        frame = self._register(features)
        size = self.segmenter.image_size
        for obj_id, mask in masks.items():
            prompt = torch.from_numpy(mask.astype(np.float32))[None, None]
            prompt = F.interpolate(prompt, size=(size, size), mode="bilinear", align_corners=False) >= 0.5
            self.session.add_mask_inputs(self.session.obj_id_to_idx(obj_id), frame, prompt)
        self.session.obj_with_new_inputs = list(masks)
        self.tracker(inference_session=self.session, frame_idx=frame, run_mem_encoder=True)

    @torch.inference_mode()
    def propagate(self, features):
        frame = self._register(features)
        out = self.tracker(inference_session=self.session, frame_idx=frame, run_mem_encoder=True)
        up = F.interpolate(out.pred_masks[:, 0][:, None].float(), size=(features.height, features.width),
                           mode="bilinear", align_corners=False)[:, 0] > 0
        scores = out.object_score_logits.reshape(-1).sigmoid().numpy()
        return {obj_id: (up[i].numpy(), float(scores[i])) for i, obj_id in enumerate(out.object_ids)}


def _frames(n: int, seed: int = 0) -> list[np.ndarray]:
    """A moving bright square over noise: enough structure for the features to differ frame to frame."""
    rng = np.random.default_rng(seed)
    frames = []
    for t in range(n):
        frame = rng.integers(0, 60, size=(72, 96, 3), dtype=np.uint8)
        frame[20:44, 10 + 3 * t: 34 + 3 * t] = (250, 40, 40)
        frames.append(frame)
    return frames


def _box_mask(y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    mask = np.zeros((72, 96), bool)
    mask[y0:y1, x0:x1] = True
    return mask


@pytest.mark.parametrize("frames", [20])
def test_batched_propagation_matches_transformers_session(tiny_segmenter, frames: int) -> None:
    """Objects born on different frames (so memories of different lengths), propagated 20 frames: scores and
    masks equal to transformers' per-object loop."""
    ours, reference = Sam3TrackerMemory(tiny_segmenter), ReferenceMemory(tiny_segmenter)
    births = {0: {1: _box_mask(20, 44, 10, 34), 2: _box_mask(50, 70, 60, 90)}, 3: {3: _box_mask(0, 30, 40, 80)},
              7: {1: _box_mask(20, 44, 31, 55)}}  # frame 7 re-conditions object 1
    compared = 0
    for t, rgb in enumerate(_frames(frames)):
        features = tiny_segmenter.encode_frame(rgb)
        if t > 0:
            got, want = ours.propagate(features), reference.propagate(features)
            assert set(got) == set(want)
            for obj_id in want:
                assert got[obj_id][1] == pytest.approx(want[obj_id][1], abs=1e-4), (t, obj_id)
                agreement = (got[obj_id][0] == want[obj_id][0]).mean()
                assert agreement > 0.995, (t, obj_id, agreement)  # borderline pixels: float order
                compared += 1
        if t in births:
            ours.condition(features, births[t])
            reference.condition(features, births[t])
    assert compared == 2 * 19 + 16  # objects 1, 2 on frames 1..19; object 3 on frames 4..19


def test_several_streams_propagate_in_one_call_as_they_would_alone(tiny_segmenter) -> None:
    """Two streams batched together give what each gives on its own (the cross-stream batch is exact)."""
    streams = [_frames(6, seed=1), _frames(6, seed=2)]
    alone = [Sam3TrackerMemory(tiny_segmenter) for _ in streams]
    together = [Sam3TrackerMemory(tiny_segmenter) for _ in streams]
    seed_masks = [{1: _box_mask(20, 44, 10, 34)}, {1: _box_mask(20, 44, 10, 34), 2: _box_mask(0, 20, 0, 30)}]
    for t in range(6):
        feats = [tiny_segmenter.encode_frame(s[t]) for s in streams]
        if t == 0:
            for mems in (alone, together):
                for memory, f, masks in zip(mems, feats, seed_masks):
                    memory.condition(f, masks)
            continue
        single = [m.propagate(f) for m, f in zip(alone, feats)]
        batched = propagate_streams(list(zip(together, feats)))
        for one, both in zip(single, batched):
            assert set(one) == set(both)
            for obj_id in one:
                assert both[obj_id][1] == pytest.approx(one[obj_id][1], abs=1e-5)
                assert (both[obj_id][0] == one[obj_id][0]).mean() > 0.999


def test_memory_holds_only_its_window(tiny_segmenter) -> None:
    memory = Sam3TrackerMemory(tiny_segmenter)
    frames = _frames(40)
    for t, rgb in enumerate(frames):
        features = tiny_segmenter.encode_frame(rgb)
        if t % 10 == 0:  # re-conditioned every 10 frames: conditioning frames are capped too
            memory.condition(features, {1: _box_mask(20, 44, 10, 34)})
        else:
            memory.propagate(features)
    obj = memory.objects[1]
    assert len(obj.conditioning) == memory.max_cond_frames
    assert len(obj.recent) <= memory.window
    # spatial memories: the frames the next propagation reads, plus the one it will stop reading
    assert sum(e.features is not None for e in obj.recent.values()) <= memory.mask_window + 1
    assert len(memory) <= memory.window + memory.max_cond_frames
