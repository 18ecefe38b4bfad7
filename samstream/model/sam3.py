"""`Sam3Segmenter`: transformers' SAM3 detector (keyframes) and SAM3 tracker (memory propagation), sharing one
vision backbone pass per frame."""

from __future__ import annotations

from collections import OrderedDict
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from transformers import PreTrainedTokenizerBase, Sam3VideoModel
from transformers.models.sam3.modeling_sam3 import Sam3VisionEncoderOutput
from transformers.models.sam3_video.modeling_sam3_video import Sam3VideoInferenceSession

from samstream.masks import fill_holes, mask_nms
from samstream.model.levels import Level
from samstream.model.preprocess import to_pixel_values
from samstream.model.sam3i import Sam3I, Sam3IAdapters
from samstream.model.segmenter import Detections, FrameFeatures, ModelInfo
from samstream.model.tokenizer import CONTEXT_LENGTH

DEFAULT_NMS_IOU = 0.1  # SAM3's detection NMS
CANDIDATE_FLOOR = 0.05  # queries below this never reach NMS (saves upsampling 200 masks)
DEFAULT_FILL_HOLE_AREA = 16  # SAM3: holes and specks up to this many low-res pixels are filled / removed
TEXT_CACHE_SIZE = 4096  # (instruction, level) embeddings kept per worker


@dataclass
class _Sam3Features:
    vision: Sam3VisionEncoderOutput  # detector input
    tracker_feats: list[torch.Tensor]  # tracker input (its own neck over the same backbone output)
    tracker_pos: list[torch.Tensor]


class Sam3Segmenter:
    """Implements `Segmenter` on a `Sam3VideoModel` (detector + tracker) with SAM3-I adapters on the detector.
    One instance serves many streams; per-stream state lives in the memories it hands out."""

    def __init__(self, model: Sam3VideoModel, tokenizer: PreTrainedTokenizerBase, info: ModelInfo,
                 adapters: Sam3IAdapters | None = None, nms_iou: float = DEFAULT_NMS_IOU,
                 fill_hole_area: int = DEFAULT_FILL_HOLE_AREA, autocast_dtype: torch.dtype | None = None) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.info = info
        self.nms_iou = nms_iou
        self.fill_hole_area = fill_hole_area
        self.device = next(model.parameters()).device
        self.dtype = next(model.parameters()).dtype
        self.image_size = info.image_size
        self.autocast_dtype = autocast_dtype  # bf16 / fp16 autocast on CUDA; None: the weights' dtype
        detector = model.detector_model
        self.sam3i = Sam3I(detector, adapters if adapters is not None else Sam3IAdapters.fresh(detector))
        self.sam3i.adapters.eval()
        self._text_cache: OrderedDict[tuple[str, str], tuple[torch.Tensor, torch.Tensor]] = OrderedDict()

    def precision(self):
        """Autocast context for model calls (a no-op in fp32)."""
        if self.autocast_dtype is None:
            return nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.autocast_dtype)

    @torch.inference_mode()
    def encode_frame(self, rgb: np.ndarray) -> FrameFeatures:
        with self.precision():
            return self._encode_frame(rgb)

    def _encode_frame(self, rgb: np.ndarray) -> FrameFeatures:
        pixels = to_pixel_values(rgb, self.image_size, self.device, self.dtype)
        vision = self.model.detector_model.get_vision_features(pixel_values=pixels)
        feats, pos = self.model.get_vision_features_for_tracker(vision_embeds=vision)
        return FrameFeatures(height=rgb.shape[0], width=rgb.shape[1], data=_Sam3Features(vision, feats, pos))

    def _text(self, keys: list[tuple[str, Level]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Text embeddings for (instruction, level) pairs. Each pair runs the text encoder once (all missing
        ones in one batch) and is cached (LRU); frames reuse the cache."""
        missing = list(dict.fromkeys(key for key in keys if key not in self._text_cache))
        if missing:
            tokens = self.tokenizer([text for text, _ in missing], padding="max_length", max_length=CONTEXT_LENGTH,
                                    truncation=True, return_tensors="pt").to(self.device)
            with self.sam3i.routing([level for _, level in missing]):
                out = self.model.detector_model.get_text_features(input_ids=tokens.input_ids,
                                                                  attention_mask=tokens.attention_mask)
            for i, key in enumerate(missing):
                self._text_cache[key] = (out.pooler_output[i], tokens.attention_mask[i])
        for key in keys:
            self._text_cache.move_to_end(key)
        while len(self._text_cache) > TEXT_CACHE_SIZE:
            self._text_cache.popitem(last=False)
        embeds = torch.stack([self._text_cache[key][0] for key in keys])  # (n, T, D)
        mask = torch.stack([self._text_cache[key][1] for key in keys])  # (n, T)
        return embeds, mask

    def forget_instruction(self, instruction: str, level: Level) -> None:
        """Drop one cached embedding (an instruction that changed at run time); the others stay."""
        self._text_cache.pop((instruction, level), None)

    @torch.inference_mode()
    def detect(self, features: FrameFeatures, instructions: list[str], levels: list[Level]) -> list[Detections]:
        """All instructions in one batched detector pass over the shared vision features, each routed
        through the SAM3-I adapters of its level."""
        with self.precision():
            return self._detect(features, instructions, levels)

    def _detect(self, features: FrameFeatures, instructions: list[str], levels: list[Level]) -> list[Detections]:
        data: _Sam3Features = features.data
        n = len(instructions)
        embeds, mask = self._text(list(zip(instructions, levels)))
        vision = Sam3VisionEncoderOutput(
            last_hidden_state=data.vision.last_hidden_state.expand(n, *data.vision.last_hidden_state.shape[1:]),
            fpn_hidden_states=tuple(h.expand(n, *h.shape[1:]) for h in data.vision.fpn_hidden_states),
            fpn_position_encoding=tuple(p.expand(n, *p.shape[1:]) for p in data.vision.fpn_position_encoding),
        )
        text = _PooledText(pooler_output=embeds)
        with self.sam3i.routing(levels):
            out = self.model.detector_model(vision_embeds=vision, text_embeds=text, attention_mask=mask)
        scores = out.pred_logits.sigmoid() * out.presence_logits.sigmoid()  # (n, Q): p(match | present) * p(present)
        return [self._postprocess(out.pred_masks[i], scores[i], features) for i in range(n)]

    def _postprocess(self, mask_logits: torch.Tensor, scores: torch.Tensor, features: FrameFeatures) -> Detections:
        keep = torch.nonzero(scores > CANDIDATE_FLOOR).squeeze(1)
        if keep.numel() == 0:
            return Detections(np.zeros((0, features.height, features.width), bool), np.zeros(0, np.float32))
        logits = mask_logits[keep].float()  # (k, h, w) at the model's mask resolution
        low_res = fill_holes(logits.cpu().numpy() > 0, self.fill_hole_area)
        kept_scores = scores[keep].float().cpu().numpy()
        order = mask_nms(low_res, kept_scores, self.nms_iou)
        # Filled / cleaned low-res masks steer the upsampled logits: holes become foreground, specks go.
        cleaned = torch.from_numpy(low_res[order]).to(logits.device)
        steered = torch.where(cleaned, logits[order].clamp(min=1e-3), logits[order].clamp(max=-1e-3))
        masks = _upsample(steered, features.height, features.width)
        return Detections(masks=masks, scores=kept_scores[order])

    def new_memory(self) -> Sam3TrackerMemory:
        return Sam3TrackerMemory(self)


class _PooledText:
    """The one attribute Sam3Model reads from precomputed text embeddings."""

    def __init__(self, pooler_output: torch.Tensor) -> None:
        self.pooler_output = pooler_output


class Sam3TrackerMemory:
    """One stream's SAM3 tracker memory. Holds only the frames the tracker can still read (the memory window:
    `num_maskmem` recent frames, the newest `max_cond_frame_num` conditioning frames, and the object-pointer
    horizon); older outputs are released every frame."""

    def __init__(self, segmenter: Sam3Segmenter) -> None:
        self.segmenter = segmenter
        tracker = segmenter.model.tracker_model
        self.tracker = tracker
        config = tracker.config
        self.window = max(config.num_maskmem, config.max_object_pointers_in_encoder)
        self.max_cond_frames = config.max_cond_frame_num
        self._reset()

    def _reset(self) -> None:
        self.session = Sam3VideoInferenceSession(
            inference_device=self.segmenter.device, inference_state_device=self.segmenter.device,
            video_storage_device="cpu", dtype=self.segmenter.dtype,
        )
        self.session.processed_frames = _FrameCount()
        self.session.obj_with_new_inputs = []
        self.frame_index = -1
        self._current: FrameFeatures | None = None  # the frame last registered (held, so `is` is reliable)

    def _register_frame(self, features: FrameFeatures) -> int:
        if self._current is not features:
            self.frame_index += 1
            self._current = features
            # The tracker reads the number of processed frames as the video length; pixels are never needed
            # (features are cached), so only the count is kept.
            self.session.processed_frames[self.frame_index] = None
            data: _Sam3Features = features.data
            self.session.cache.cache_vision_features(
                self.frame_index, {"vision_feats": data.tracker_feats, "vision_pos_embeds": data.tracker_pos}
            )
            self._release_old()
        return self.frame_index

    @torch.inference_mode()
    def condition(self, features: FrameFeatures, masks: dict[int, np.ndarray]) -> None:
        if not masks:
            return
        frame = self._register_frame(features)
        size = self.segmenter.image_size
        for obj_id, mask in masks.items():
            obj_idx = self.session.obj_id_to_idx(obj_id)
            prompt = torch.from_numpy(mask.astype(np.float32))[None, None].to(self.segmenter.device)
            prompt = F.interpolate(prompt, size=(size, size), mode="bilinear", align_corners=False) >= 0.5
            self.session.add_mask_inputs(obj_idx, frame, prompt)
        self.session.obj_with_new_inputs = list(masks)
        with self.segmenter.precision():
            self.tracker(inference_session=self.session, frame_idx=frame, run_mem_encoder=True)
        for obj_id in masks:  # a re-conditioned object's frame becomes one of its conditioning frames
            outputs = self.session.output_dict_per_obj[self.session.obj_id_to_idx(obj_id)]
            if frame in outputs["non_cond_frame_outputs"]:
                outputs["cond_frame_outputs"][frame] = outputs["non_cond_frame_outputs"].pop(frame)

    @torch.inference_mode()
    def propagate(self, features: FrameFeatures) -> dict[int, tuple[np.ndarray, float]]:
        frame = self._register_frame(features)
        if not self.session.obj_ids:
            return {}
        with self.segmenter.precision():
            out = self.tracker(inference_session=self.session, frame_idx=frame, run_mem_encoder=True)
        masks = _upsample(out.pred_masks[:, 0], features.height, features.width)  # (N, H, W)
        scores = out.object_score_logits.reshape(-1).sigmoid().float().cpu().numpy()
        return {obj_id: (masks[i], float(scores[i])) for i, obj_id in enumerate(out.object_ids)}

    def forget(self, object_ids: list[int]) -> None:
        if set(self.session.obj_ids) <= set(object_ids):
            # transformers resets the whole session (cached features too) when its last object goes; start
            # afresh instead, keeping the current frame's features registered.
            current = self._current
            self._reset()
            if current is not None:
                self._register_frame(current)
            return
        for obj_id in object_ids:
            self.session.remove_object(obj_id, strict=False)

    def _release_old(self) -> None:
        horizon = self.frame_index - self.window
        for outputs in self.session.output_dict_per_obj.values():
            for kind in ("non_cond_frame_outputs", "cond_frame_outputs"):
                for frame, out in outputs[kind].items():
                    if frame < self.frame_index:
                        out.pop("high_res_masks", None)  # image-size masks, only read within their own frame
            for frame in [f for f in outputs["non_cond_frame_outputs"] if f < horizon]:
                del outputs["non_cond_frame_outputs"][frame]
            cond = sorted(outputs["cond_frame_outputs"])
            for frame in cond[: max(0, len(cond) - self.max_cond_frames)]:
                del outputs["cond_frame_outputs"][frame]
        for per_obj in (self.session.mask_inputs_per_obj, self.session.point_inputs_per_obj,
                        self.session.frames_tracked_per_obj):
            for frames in per_obj.values():
                for frame in [f for f in frames if f < horizon]:
                    del frames[frame]

    def stored_entries(self) -> int:
        """Everything this memory holds per frame or per object, counted: flat once the window is full."""
        session = self.session
        per_object = (session.output_dict_per_obj, session.mask_inputs_per_obj, session.point_inputs_per_obj,
                      session.frames_tracked_per_obj)
        total = len(session.cache._vision_features) + dict.__len__(session.processed_frames)
        for table in per_object:
            for entry in table.values():
                total += sum(len(v) for v in entry.values()) if table is session.output_dict_per_obj else len(entry)
        return total

    def __len__(self) -> int:
        """Frames whose outputs are still held for some object."""
        held: set[int] = set()
        for outputs in self.session.output_dict_per_obj.values():
            held.update(outputs["non_cond_frame_outputs"])
            held.update(outputs["cond_frame_outputs"])
        return len(held)


class _FrameCount(dict):
    """Stands in for the session's `processed_frames`: transformers only takes its len() (the number of frames
    seen), so it counts frames and stores nothing; an endless stream costs no memory here."""

    def __init__(self) -> None:
        super().__init__()
        self._count = 0

    def __setitem__(self, frame: int, _value: object) -> None:
        self._count = max(self._count, frame + 1)

    def __len__(self) -> int:
        return self._count


def _upsample(mask_logits: torch.Tensor, height: int, width: int) -> np.ndarray:
    """(N, h, w) logits -> (N, H, W) bool at the frame's size."""
    if mask_logits.shape[0] == 0:
        return np.zeros((0, height, width), dtype=bool)
    up = F.interpolate(mask_logits[:, None].float(), size=(height, width), mode="bilinear", align_corners=False)
    return (up[:, 0] > 0).cpu().numpy()
