"""SAM3's memory tracker, batched: every tracked object of one or many streams propagates in one forward.

transformers' `Sam3TrackerVideoModel.forward` steps objects one at a time (per-object inputs may differ) and
keeps every frame's outputs in an inference session. Between keyframes samstream only propagates, so the
objects' inputs never differ in kind: this module keeps each stream's memory itself (bounded: the tracker's
window and nothing older) and runs the tracker's own modules — memory attention, SAM mask decoder, memory
encoder — once per group of objects whose memories have the same length (in steady state, one group).
The computation is SAM3's (a parity test compares it with transformers' session frame by frame); only the
bookkeeping and the batching are ours.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from transformers.models.sam3_tracker_video.modeling_sam3_tracker_video import get_1d_sine_pe

from samstream.model.segmenter import FrameFeatures
from samstream.model.upsample import upsample_masks

if TYPE_CHECKING:
    from samstream.model.sam3 import Sam3Segmenter


_NO_OBJECT_LOGIT = -1024.0  # SAM3's mask logit where the object is judged absent (NO_OBJ_SCORE)


@dataclass
class _Entry:
    """One object's memory of one frame."""

    pointer: torch.Tensor  # (1, C) object pointer
    features: torch.Tensor | None  # (HW, 1, mem) spatial memory; dropped once older than the mask-memory window
    position: torch.Tensor | None  # (HW, 1, mem)


@dataclass
class _ObjectMemory:
    conditioning: dict[int, _Entry] = field(default_factory=dict)  # frame -> entry (prompted: detections)
    recent: dict[int, _Entry] = field(default_factory=dict)  # frame -> entry (propagated)


@dataclass
class _Step:
    """One object's propagation inputs for this frame."""

    memory: Sam3TrackerMemory
    obj_id: int
    memories: list[tuple[int, _Entry]]  # (temporal offset, entry); offset 0 = a conditioning frame
    pointer_offsets: list[int]
    pointers: list[torch.Tensor]

    @property
    def shape_key(self) -> tuple[int, int]:
        return len(self.memories), len(self.pointers)


class Sam3TrackerMemory:
    """One stream's SAM3 tracker memory: per object, the newest `max_cond_frame_num` conditioning frames and
    the recent frames the tracker reads (`num_maskmem - 1` spatial memories, `max_object_pointers_in_encoder - 1`
    object pointers). Nothing older is held, so its size is constant on an endless stream."""

    def __init__(self, segmenter: Sam3Segmenter) -> None:
        self.segmenter = segmenter
        self.tracker = segmenter.model.tracker_model
        config = self.tracker.config
        self.max_cond_frames = config.max_cond_frame_num
        self.mask_window = self.tracker.num_maskmem - 1
        self.pointer_window = config.max_object_pointers_in_encoder - 1
        self.objects: dict[int, _ObjectMemory] = {}
        self.frame_index = -1
        self._current: FrameFeatures | None = None  # the frame last registered (held, so `is` is reliable)

    @property
    def window(self) -> int:
        return max(self.mask_window, self.pointer_window)

    def _register_frame(self, features: FrameFeatures) -> int:
        if self._current is not features:
            self.frame_index += 1
            self._current = features
            self._release_old()
        return self.frame_index

    @torch.inference_mode()
    def condition(self, features: FrameFeatures, masks: dict[int, np.ndarray]) -> None:
        if not masks:
            return
        frame = self._register_frame(features)
        size = self.segmenter.image_size
        prompts = torch.from_numpy(np.stack([m.astype(np.float32) for m in masks.values()]))[:, None]
        prompts = F.interpolate(prompts.to(self.segmenter.device), size=(size, size), mode="bilinear",
                                align_corners=False) >= 0.5
        with self.segmenter.precision():
            out, feats = _mask_as_output(self.tracker, features, prompts)
            encoded = _encode_memory(self.tracker, feats, out.high_res_masks, out.object_score_logits, binarize=True)
        for i, obj_id in enumerate(masks):
            memory = self.objects.setdefault(obj_id, _ObjectMemory())
            memory.recent.pop(frame, None)  # re-conditioned on a frame it was propagated to: the prompt wins
            memory.conditioning[frame] = _Entry(out.object_pointer[i: i + 1], *encoded(i))
            for old in sorted(memory.conditioning)[: max(0, len(memory.conditioning) - self.max_cond_frames)]:
                del memory.conditioning[old]

    def propagate(self, features: FrameFeatures) -> dict[int, tuple[np.ndarray, float]]:
        return propagate_streams([(self, features)])[0]

    def _steps(self, frame: int) -> list[_Step]:
        steps = []
        for obj_id, memory in self.objects.items():
            if frame in memory.conditioning:
                continue  # conditioned on this very frame: its prompt is its output
            memories = [(0, entry) for entry in memory.conditioning.values()]
            for offset in range(self.mask_window, 0, -1):
                entry = memory.recent.get(frame - offset)
                if entry is not None and entry.features is not None:
                    memories.append((offset, entry))
            offsets = [frame - f for f in memory.conditioning]
            pointers = [e.pointer for e in memory.conditioning.values()]
            for offset in range(1, self.pointer_window + 1):
                entry = memory.recent.get(frame - offset)
                if entry is not None:
                    offsets.append(offset)
                    pointers.append(entry.pointer)
            steps.append(_Step(self, obj_id, memories, offsets, pointers))
        return steps

    def forget(self, object_ids: list[int]) -> None:
        for obj_id in object_ids:
            self.objects.pop(obj_id, None)

    def _release_old(self) -> None:
        frame = self.frame_index
        for memory in self.objects.values():
            for old in [f for f in memory.recent if f < frame - self.window]:
                del memory.recent[old]
            for f, entry in memory.recent.items():
                if f < frame - self.mask_window:
                    entry.features = entry.position = None  # only its object pointer is still read

    def stored_entries(self) -> int:
        """Frame entries held across all objects: flat once the window is full."""
        return sum(len(m.conditioning) + len(m.recent) for m in self.objects.values())

    def __len__(self) -> int:
        """Frames whose outputs are still held for some object."""
        return len({f for m in self.objects.values() for f in (*m.conditioning, *m.recent)})


@torch.inference_mode()
def propagate_streams(requests: list[tuple[Sam3TrackerMemory, FrameFeatures]]
                      ) -> list[dict[int, tuple[np.ndarray, float]]]:
    """Propagate every object of every (memory, frame) pair — one stream each, all on one model — in as few
    batched tracker forwards as there are distinct memory shapes. Returns per request {obj_id: (mask, score)}."""
    results: list[dict[int, tuple[np.ndarray, float]]] = [{} for _ in requests]
    if not requests:
        return results
    segmenter = requests[0][0].segmenter
    tracker = requests[0][0].tracker
    groups: dict[tuple[int, int], list[tuple[int, _Step]]] = defaultdict(list)
    frames = []
    for r, (memory, features) in enumerate(requests):
        if memory.segmenter is not segmenter:
            raise ValueError("streams propagated together must share one model")
        frames.append(memory._register_frame(features))
        for step in memory._steps(frames[-1]):
            groups[step.shape_key].append((r, step))
    with segmenter.precision():
        for members in groups.values():
            feats = [requests[r][1] for r, _ in members]
            out, encoded = _propagate_group(tracker, feats, [step for _, step in members], segmenter.dtype)
            masks = _upsample_each(out.pred_masks[:, 0], feats)
            scores = out.object_score_logits.reshape(-1).sigmoid().float().cpu().numpy()
            for i, (r, step) in enumerate(members):
                step.memory.objects[step.obj_id].recent[frames[r]] = _Entry(out.object_pointer[i: i + 1],
                                                                             *encoded(i))
                results[r][step.obj_id] = (masks[i], float(scores[i]))
    return results


def _stack_features(tracker, features: list[FrameFeatures]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Per-level (HW, B, C) tracker features and positions for a batch whose item i reads frame features[i]."""
    first = features[0].data
    if all(f is features[0] for f in features):
        b = len(features)
        return ([x.expand(-1, b, -1) for x in first.tracker_feats], [p.expand(-1, b, -1) for p in first.tracker_pos])
    levels = range(len(first.tracker_feats))
    return ([torch.cat([f.data.tracker_feats[k] for f in features], dim=1) for k in levels],
            [torch.cat([f.data.tracker_pos[k] for f in features], dim=1) for k in levels])


def _image_embeddings(tracker, feats: list[torch.Tensor], top: torch.Tensor) -> list[torch.Tensor]:
    """The SAM head's inputs: high-resolution levels (HW)BC -> BCHW, then `top` (already BCHW)."""
    sizes = tracker.backbone_feature_sizes
    high = [x.permute(1, 2, 0).reshape(x.size(1), x.size(2), *s) for x, s in zip(feats[:-1], sizes[:-1])]
    return high + [top]


def _mask_as_output(tracker, features: FrameFeatures | list[FrameFeatures], prompts: torch.Tensor):
    """SAM3's `_use_mask_as_output` for a batch of mask prompts on one frame (or item i on frame features[i]): the
    prompt is the output (logits -10 / +10), the SAM head only makes the object pointer. (transformers' version
    broadcasts the appearance flag across the batch, so it is only right for one object.)"""
    b = len(prompts)
    feats, _ = _stack_features(tracker, features if isinstance(features, list) else [features] * b)
    height, width = tracker.backbone_feature_sizes[-1]
    top = feats[-1].permute(1, 2, 0).reshape(b, tracker.hidden_dim, height, width)
    dtype = top.dtype
    prompt = prompts.to(dtype)
    high_res = prompt * 20.0 - 10.0
    low_res = F.interpolate(high_res.float(), size=tracker.prompt_encoder.mask_input_size, align_corners=False,
                            mode="bilinear", antialias=True).to(dtype)
    dense_prompt = tracker.mask_downsample(prompt)
    if dense_prompt.shape[-2:] != tuple(tracker.prompt_encoder.mask_input_size):
        dense_prompt = F.interpolate(dense_prompt.float(), size=tracker.prompt_encoder.mask_input_size,
                                     align_corners=False, mode="bilinear", antialias=True).to(dtype)
    pointer = _sam_head(tracker, _image_embeddings(tracker, feats, top), multimask=True,
                        mask_prompts=dense_prompt).object_pointer
    appearing = prompts.flatten(1).any(dim=1, keepdim=True).to(dtype)  # (B, 1)
    pointer = appearing * pointer + (1 - appearing) * tracker.no_object_pointer
    return _SamOutput(pred_masks=low_res, high_res_masks=high_res, object_pointer=pointer,
                      object_score_logits=(appearing * 20.0 - 10.0)[:, :, None]), feats


@dataclass
class _SamOutput:
    pred_masks: torch.Tensor  # (B, 1, h, w) low-resolution logits
    high_res_masks: torch.Tensor  # (B, 1, S, S)
    object_pointer: torch.Tensor  # (B, C)
    object_score_logits: torch.Tensor  # (B, 1, 1)
    candidates: torch.Tensor | None = None  # (B, M, h, w) every mask the head proposed (M = 3 with multimask)
    iou_predictions: torch.Tensor | None = None  # (B, M) its predicted IoU of each, which picks among them


def _propagate_group(tracker, features: list[FrameFeatures], steps: list[_Step], dtype: torch.dtype):
    """Memory attention + SAM head + memory encoder for objects whose memories have one shape."""
    b = len(steps)
    feats, pos = _stack_features(tracker, features)
    channels, mem_dim = tracker.hidden_dim, tracker.mem_dim
    height, width = tracker.backbone_feature_sizes[-1]
    temporal = tracker.memory_temporal_positional_encoding  # (num_maskmem, 1, 1, mem)
    memory = torch.cat([torch.cat([e.features for _, e in s.memories], dim=0) for s in steps], dim=1)
    memory_pos = torch.cat(
        [torch.cat([e.position + temporal[t - 1] for t, e in s.memories], dim=0) for s in steps], dim=1)
    n_pointers = len(steps[0].pointers)
    if n_pointers:
        pointers = torch.stack([torch.cat(s.pointers, dim=0) for s in steps], dim=1)  # (P, B, C)
        offsets = torch.tensor([s.pointer_offsets for s in steps], dtype=torch.float32, device=pointers.device)
        if tracker.config.enable_temporal_pos_encoding_for_object_pointers:
            horizon = float(tracker.config.max_object_pointers_in_encoder - 1)
            sine = get_1d_sine_pe(offsets.T.reshape(-1) / horizon, dim=channels)
            pointer_pos = tracker.temporal_positional_encoding_projection_layer(sine.to(pointers.dtype))
            pointer_pos = pointer_pos.reshape(n_pointers, b, mem_dim)
        else:
            pointer_pos = pointers.new_zeros(n_pointers, b, mem_dim)
        if mem_dim < channels:  # each C-wide pointer becomes C/mem tokens of the memory's width
            splits = channels // mem_dim
            pointers = pointers.reshape(n_pointers, b, splits, mem_dim).permute(0, 2, 1, 3).flatten(0, 1)
            pointer_pos = pointer_pos.repeat_interleave(splits, dim=0)
        memory = torch.cat([memory.to(pointers.dtype), pointers], dim=0)
        memory_pos = torch.cat([memory_pos, pointer_pos], dim=0)
    conditioned = _memory_attention(
        tracker.memory_attention, feats[-1], pos[-1], memory.to(dtype), memory_pos,
        n_pointer_tokens=memory.shape[0] - len(steps[0].memories) * feats[-1].shape[0],
        one_frame=all(f is features[0] for f in features),
    )  # (1, B, HW, C): batch-first behind a singleton axis
    conditioned = conditioned.reshape(b, height * width, channels).transpose(1, 2).reshape(b, channels, height, width)
    out = _sam_head(tracker, _image_embeddings(tracker, feats, conditioned), tracker._use_multimask(False, None))
    encoded = _encode_memory(tracker, feats, out.high_res_masks, out.object_score_logits, binarize=False)
    return out, encoded


def _memory_attention(attention, current: torch.Tensor, current_pos: torch.Tensor, memory: torch.Tensor,
                      memory_pos: torch.Tensor, n_pointer_tokens: int, one_frame: bool) -> torch.Tensor:
    """transformers' `Sam3TrackerVideoMemoryAttention.forward` ((HW, B, C) frame features, (M, B, mem) memories),
    except that when every object reads the same frame the first layer's self-attention runs once, not once
    per object: its queries (the frame's features) are identical across the batch until the first cross-attention."""
    output = (current + 0.1 * current_pos).transpose(0, 1).unsqueeze(1)  # (B, 1, HW, C)
    memory = memory.transpose(0, 1).unsqueeze(1)
    memory_pos = memory_pos.transpose(0, 1).unsqueeze(1)
    rope = attention.rotary_emb(output, attention.position_ids)
    for index, layer in enumerate(attention.layers):
        if index == 0 and one_frame and output.shape[0] > 1:
            first = output[:1]
            query = layer.layer_norm1(first)
            query, _ = layer.self_attn(query=query, key=query, value=query, position_embeddings=rope)
            output = _cross_attention_and_mlp(layer, (first + query).expand_as(output), memory, memory_pos, rope,
                                              n_pointer_tokens)
        else:
            output = layer(queries=output, keys=memory, key_point_embedding=memory_pos, rope_position_embeddings=rope,
                           num_k_exclude_rope=n_pointer_tokens)
    return attention.layer_norm(output).transpose(0, 1)


def _cross_attention_and_mlp(layer, queries: torch.Tensor, memory: torch.Tensor, memory_pos: torch.Tensor, rope,
                             n_pointer_tokens: int) -> torch.Tensor:
    """The second half of `Sam3TrackerVideoMemoryAttentionLayer.forward` (inference: dropout is identity)."""
    query = layer.layer_norm2(queries)
    query, _ = layer.cross_attn_image(query=query, key=memory + memory_pos, value=memory, position_embeddings=rope,
                                      num_k_exclude_rope=n_pointer_tokens)
    queries = queries + query
    query = layer.layer_norm3(queries)
    return queries + layer.linear2(layer.activation(layer.linear1(query)))


def _sam_head(tracker, image_embeddings: list[torch.Tensor], multimask: bool,
              mask_prompts: torch.Tensor | None = None) -> _SamOutput:
    """SAM3's `_single_frame_forward` for a batch of objects, one each, with no prompt (propagation) or a dense
    mask prompt at the prompt encoder's size (a detection's mask): selects the best of the multimask outputs
    per item (transformers' indexing broadcasts that to B x B) and upsamples only the selected mask."""
    top = image_embeddings[-1]
    b, device, dtype = top.shape[0], top.device, top.dtype
    positions = tracker.get_image_wide_positional_embeddings().repeat(b, 1, 1, 1)
    points = torch.zeros(b, 1, 1, 2, dtype=dtype, device=device)  # no prompt: one padding point, label -1
    labels = -torch.ones(b, 1, 1, dtype=torch.int32, device=device)
    sparse, dense = tracker.prompt_encoder(input_points=points, input_labels=labels, input_boxes=None,
                                           input_masks=mask_prompts)
    low, iou, tokens, score_logits = tracker.mask_decoder(
        image_embeddings=top, image_positional_embeddings=positions, sparse_prompt_embeddings=sparse,
        dense_prompt_embeddings=dense, multimask_output=multimask, high_resolution_features=image_embeddings[:-1],
    )  # low: (B, 1, M, h, w); iou: (B, 1, M); tokens: (B, 1, T, C); score_logits: (B, 1)
    appearing = (score_logits.reshape(b) > 0)
    index = torch.arange(b, device=device)
    iou = iou.reshape(b, -1)
    best = iou.float().argmax(dim=-1) if multimask else torch.zeros(b, dtype=torch.long, device=device)
    candidates = low.reshape(b, -1, *low.shape[-2:])
    low = candidates[index, best]  # (B, h, w)
    low = torch.where(appearing[:, None, None], low, torch.full_like(low, _NO_OBJECT_LOGIT))
    tokens = tokens.reshape(b, -1, tokens.shape[-1])
    token = tokens[index, best] if multimask and tokens.shape[1] > 1 else tokens[:, 0]
    size = tracker.image_size
    high = F.interpolate(low[:, None].float(), size=(size, size), mode="bilinear", align_corners=False).to(low.dtype)
    pointer = tracker.object_pointer_proj(token)
    weight = appearing[:, None].to(pointer.dtype)
    pointer = weight * pointer + (1 - weight) * tracker.no_object_pointer
    return _SamOutput(pred_masks=low[:, None], high_res_masks=high, object_pointer=pointer,
                      object_score_logits=score_logits.reshape(b, 1, 1), candidates=candidates,
                      iou_predictions=iou)


def _encode_memory(tracker, feats: list[torch.Tensor], high_res_masks: torch.Tensor, score_logits: torch.Tensor,
                   binarize: bool):
    """SAM3's memory encoder over a batch; returns i -> (features, position) of item i."""
    features, position = tracker._encode_new_memory(
        current_vision_feats=feats[-1], pred_masks_high_res=high_res_masks, object_score_logits=score_logits,
        is_mask_from_pts=binarize,
    )
    return lambda i: (features[:, i: i + 1], position[:, i: i + 1])


def _upsample_each(mask_logits: torch.Tensor, features: list[FrameFeatures]) -> list[np.ndarray]:
    """(B, h, w) logits -> per item a (H, W) bool mask at its frame's size (one call per distinct size)."""
    out: list[np.ndarray | None] = [None] * len(features)
    by_size: dict[tuple[int, int], list[int]] = defaultdict(list)
    for i, f in enumerate(features):
        by_size[(f.height, f.width)].append(i)
    for (height, width), items in by_size.items():
        for i, mask in zip(items, upsample_masks(mask_logits[items], height, width)):
            out[i] = mask
    return out  # type: ignore[return-value]
