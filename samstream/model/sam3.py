"""`Sam3Segmenter`: transformers' SAM3 detector (keyframes) and SAM3 tracker (memory propagation), sharing one
vision backbone pass per frame."""

from __future__ import annotations

from collections import OrderedDict
from contextlib import nullcontext
from dataclasses import dataclass, replace

import cv2
import numpy as np
import torch
from transformers import PreTrainedTokenizerBase, Sam3VideoModel
from transformers.models.sam3.modeling_sam3 import Sam3VisionEncoderOutput

from samstream.masks import fill_holes, mask_nms
from samstream.model.levels import Level
from samstream.model.preprocess import to_pixel_batch, to_pixel_values
from samstream.model.sam3_memory import Sam3TrackerMemory, propagate_streams
from samstream.model.sam3i import Sam3I, Sam3IAdapters
from samstream.model.upsample import upsample_masks
from samstream.model.segmenter import Detections, FrameFeatures, ModelInfo
from samstream.model.spatial import detect_with_spatial_rules
from samstream.model.tokenizer import CONTEXT_LENGTH
from samstream.model.zoom import (REFINE_MIN_IOU, ZoomView, best_matching_query, combine, cut_views, logits_to_frame,
                                  mask_to_view, view_around)

DEFAULT_NMS_IOU = 0.1  # SAM3's detection NMS
CANDIDATE_FLOOR = 0.05  # queries below this never reach NMS (saves upsampling 200 masks)
DEFAULT_FILL_HOLE_AREA = 16  # SAM3: holes and specks up to this many low-res pixels are filled / removed
TEXT_CACHE_SIZE = 4096  # (instruction, level) embeddings kept per worker
BACKGROUND_LOGIT = 10.0  # magnitude of the logit a box crop writes outside the box


@dataclass
class _Sam3Features:
    vision: Sam3VisionEncoderOutput  # detector input
    tracker_feats: list[torch.Tensor]  # tracker input (its own neck over the same backbone output)
    tracker_pos: list[torch.Tensor]
    rgb: np.ndarray | None = None  # the frame itself, kept only when zoomed re-scoring needs it


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
        self.autocast_dtype = autocast_dtype  # bf16 / fp16 autocast (bf16 also on CPU); None: the weights' dtype
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
        kept = rgb if self.info.zoom_rescore is not None else None
        return FrameFeatures(height=rgb.shape[0], width=rgb.shape[1], data=_Sam3Features(vision, feats, pos, kept))

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
            if self.info.spatial_rules:
                return detect_with_spatial_rules(lambda texts, lv: self._detect(features, texts, lv),
                                                 instructions, levels)
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
        presence = out.presence_logits.sigmoid().reshape(n, -1)[:, :1]  # (n, 1): p(present)
        scores = out.pred_logits.sigmoid() * presence  # (n, Q): p(match | present) * p(present)
        gate = self.info.presence_threshold
        found = []
        for i in range(n):
            present = float(presence[i])
            found.append(replace(self._nothing(features) if gate is not None and present < gate else
                                 self._postprocess(out.pred_masks[i], out.pred_boxes[i], scores[i], features),
                                 presence=present))
        if self.info.zoom_rescore is not None and data.rgb is not None:
            found = self._rescore_zoomed(data.rgb, instructions, levels, found)
        return found

    def _rescore_zoomed(self, rgb: np.ndarray, instructions: list[str], levels: list[Level],
                        found: list[Detections]) -> list[Detections]:
        """Look again at each candidate on a view centred on it and magnified (`samstream.model.zoom`): the
        detector, with the same instruction, scores the view's query that best matches the candidate; the final
        score combines both. Views shared by several instructions' candidates are encoded once."""
        zoom = self.info.zoom_rescore
        jobs: list[tuple[int, int, int]] = []  # (instruction, candidate, view index)
        views: dict[tuple[int, int, int], int] = {}
        view_list: list[ZoomView] = []
        for i, det in enumerate(found):
            for j in range(min(len(det), zoom.max_candidates)):
                view = view_around(det.masks[j], zoom.fill)
                if view is None:
                    continue
                key = (round(view.cx), round(view.cy), round(view.side))
                if key not in views:
                    views[key] = len(view_list)
                    view_list.append(view)
                jobs.append((i, j, views[key]))
        if not jobs:
            return found
        pixels = to_pixel_batch(cut_views(rgb, view_list, self.image_size), self.device, self.dtype)
        vision = select_frames(self.model.detector_model.get_vision_features(pixel_values=pixels),
                               [v for _, _, v in jobs], len(view_list))
        job_levels = [levels[i] for i, _, _ in jobs]
        embeds, mask = self._text([(instructions[i], levels[i]) for i, _, _ in jobs])
        with self.sam3i.routing(job_levels):
            out = self.model.detector_model(vision_embeds=vision, text_embeds=_PooledText(embeds), attention_mask=mask)
        scores = (out.pred_logits.sigmoid() * out.presence_logits.sigmoid()).float().cpu().numpy()  # (k, Q)
        logits = out.pred_masks.float().cpu().numpy()  # (k, Q, m, m)
        size = logits.shape[-1]
        zoomed = [np.zeros(zoom.max_candidates, np.float32) for _ in found]
        masks = [det.masks.copy() if zoom.refine else det.masks for det in found]
        for k, (i, j, v) in enumerate(jobs):
            candidate = mask_to_view(found[i].masks[j], view_list[v], size)
            best, zoomed[i][j], overlap = best_matching_query(scores[k], logits[k] > 0, candidate)
            if zoom.refine and overlap >= REFINE_MIN_IOU:
                masks[i][j] = logits_to_frame(logits[k, best], view_list[v], rgb.shape[0], rgb.shape[1])
        rescored = []
        for i, det in enumerate(found):
            k = min(len(det), zoom.max_candidates)
            final = combine(det.scores[:k], zoomed[i][:k], zoom.weight)
            order = np.argsort(-final, kind="stable")
            rescored.append(Detections(masks=masks[i][:k][order], scores=final[order], presence=det.presence))
        return rescored

    @staticmethod
    def _nothing(features: FrameFeatures) -> Detections:
        return Detections(np.zeros((0, features.height, features.width), bool), np.zeros(0, np.float32))

    def _postprocess(self, mask_logits: torch.Tensor, boxes: torch.Tensor, scores: torch.Tensor,
                     features: FrameFeatures) -> Detections:
        keep = torch.nonzero(scores > CANDIDATE_FLOOR).squeeze(1)
        if keep.numel() == 0:
            return self._nothing(features)
        logits = mask_logits[keep].float()  # (k, h, w) at the model's mask resolution
        if self.info.box_crop_margin is not None:
            logits = crop_to_boxes(logits, boxes[keep].float(), self.info.box_crop_margin)
        low_res = fill_holes(logits.cpu().numpy() > 0, self.fill_hole_area)
        kept_scores = scores[keep].float().cpu().numpy()
        order = mask_nms(low_res, kept_scores, self.nms_iou)
        # Filled / cleaned low-res masks steer the upsampled logits: holes become foreground, specks go.
        cleaned = torch.from_numpy(low_res[order]).to(logits.device)
        steered = torch.where(cleaned, logits[order].clamp(min=1e-3), logits[order].clamp(max=-1e-3))
        masks = upsample_masks(steered, features.height, features.width)
        return Detections(masks=masks, scores=kept_scores[order])

    @torch.inference_mode()
    def embed(self, features: FrameFeatures, masks: np.ndarray) -> np.ndarray:
        """Appearance vectors for re-identification: the tracker's top-level features averaged inside each
        mask (the mask resized to the feature grid by area), L2-normalised."""
        if len(masks) == 0:
            return np.zeros((0, self.model.tracker_model.hidden_dim), np.float32)
        data: _Sam3Features = features.data
        top = data.tracker_feats[-1][:, 0].float().cpu().numpy()  # (h*w, C)
        h, w = self.model.tracker_model.backbone_feature_sizes[-1]
        weights = np.stack([cv2.resize(m.astype(np.float32), (w, h), interpolation=cv2.INTER_AREA).reshape(-1)
                            for m in masks])  # (N, h*w), the fraction of each cell inside the mask
        pooled = weights @ top / np.maximum(weights.sum(axis=1, keepdims=True), 1e-6)
        return (pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-6)).astype(np.float32)

    def new_memory(self) -> Sam3TrackerMemory:
        return Sam3TrackerMemory(self)

    def propagate_streams(self, requests: list[tuple[Sam3TrackerMemory, FrameFeatures]]
                          ) -> list[dict[int, tuple[np.ndarray, float]]]:
        """Propagate several streams' objects together (one batched tracker forward per memory shape)."""
        return propagate_streams(requests)


def select_frames(vision, rows: list[int], frames: int):
    """The vision features of `rows` of a batch of `frames` encoded frames: a frame asked several instructions (in
    training), or a zoomed view several candidates share, is encoded once."""
    index = torch.as_tensor(rows, device=vision.fpn_hidden_states[0].device)

    def pick(value):
        if isinstance(value, torch.Tensor) and value.ndim and value.shape[0] == frames:
            return value[index]
        if isinstance(value, tuple):
            return tuple(pick(v) for v in value)
        return value

    return type(vision)(**{key: pick(value) for key, value in vision.items()})


def crop_to_boxes(logits: torch.Tensor, boxes: torch.Tensor, margin: float) -> torch.Tensor:
    """(k, h, w) mask logits with everything outside each mask's own box (normalised xyxy), grown by `margin`
    of the image on every side, set to background."""
    h, w = logits.shape[-2:]
    ys = (torch.arange(h, device=logits.device) + 0.5) / h
    xs = (torch.arange(w, device=logits.device) + 0.5) / w
    x0, y0, x1, y1 = (boxes + torch.tensor([-margin, -margin, margin, margin], device=boxes.device)).unbind(-1)
    inside_x = (xs >= x0[:, None]) & (xs <= x1[:, None])  # (k, w)
    inside_y = (ys >= y0[:, None]) & (ys <= y1[:, None])  # (k, h)
    inside = inside_y[:, :, None] & inside_x[:, None, :]
    return logits.masked_fill(~inside, -BACKGROUND_LOGIT)


class _PooledText:
    """The one attribute Sam3Model reads from precomputed text embeddings."""

    def __init__(self, pooler_output: torch.Tensor) -> None:
        self.pooler_output = pooler_output
