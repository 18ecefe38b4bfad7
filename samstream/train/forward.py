"""One training forward of a SAM3 video model with SAM3-I adapters: the shared backbone over a batch of frame
pairs, the routed detector on every frame, and the memory tracker carrying one object from t0 to t1."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase, Sam3VideoModel
from transformers.models.sam3.modeling_sam3 import box_cxcywh_to_xyxy, inverse_sigmoid

from samstream.model.sam3 import select_frames
from samstream.model.sam3_memory import _Entry, _mask_as_output, _propagate_group, _Step, _encode_memory
from samstream.model.sam3i import Sam3I, Sam3IAdapters
from samstream.model.segmenter import FrameFeatures
from samstream.model.tokenizer import CONTEXT_LENGTH
from samstream.train.dense import DenseHeads, ObjectHeads
from samstream.train.losses import LossWeights, alignment_loss, detection_loss, match_batch, tracker_loss
from samstream.train.object_batches import ObjectBatch
from samstream.train.world_batches import Batch


@dataclass(frozen=True)
class InstancePredictions:
    pred_boxes: torch.Tensor  # (B, Q, 4) xyxy in [0, 1]
    pred_masks: torch.Tensor  # (B, Q, h, w) logits


class _Frame:
    """The tracker-feature slice of one batch item, in the layout `sam3_memory` reads."""

    def __init__(self, feats: list[torch.Tensor], pos: list[torch.Tensor], i: int) -> None:
        self.tracker_feats = [f[:, i: i + 1] for f in feats]
        self.tracker_pos = [p[:, i: i + 1] for p in pos]


class TrainModule(nn.Module):
    """model + adapters as one module (what DDP wraps); `forward(batch)` returns the loss terms."""

    def __init__(self, model: Sam3VideoModel, adapters: Sam3IAdapters, tokenizer: PreTrainedTokenizerBase,
                 weights: LossWeights = LossWeights(), train_tracker: bool = True,
                 negative_queries: bool = False, train_detector: bool = True,
                 dense_classes: Mapping[str, Sequence[str]] | None = None,
                 object_classes: Mapping[str, Sequence[str]] | None = None) -> None:
        super().__init__()
        self.model = model
        self.adapters = adapters
        self.tokenizer = tokenizer
        self.weights = weights
        self.train_tracker = train_tracker
        self.train_detector = train_detector  # False: a tracker-only stage skips the detector's decoding and losses
        self.negative_queries = negative_queries
        self.sam3i = Sam3I(model.detector_model, adapters)
        # training-only heads (not exported) that name the shape / colour / texture under each patch
        self.dense_heads = None
        if weights.dense > 0 and dense_classes:
            width = model.config.detector_config.vision_config.fpn_hidden_size
            self.dense_heads = DenseHeads(width, dense_classes).to(next(model.parameters()).device)
        # training-only heads for "objects" stages: each object's class from its mask-pooled vision features
        self.object_heads = None
        if object_classes:
            width = model.config.detector_config.vision_config.fpn_hidden_size
            self.object_heads = ObjectHeads(width, object_classes).to(next(model.parameters()).device)

    def forward(self, batch: Batch | ObjectBatch) -> dict[str, torch.Tensor]:
        device = next(self.model.parameters()).device
        detector = self.model.detector_model
        pixels = batch.pixels.to(device)
        vision = detector.get_vision_features(pixel_values=pixels)
        if isinstance(batch, ObjectBatch):
            if self.object_heads is None:
                raise ValueError("an objects batch needs the module's object heads (object_classes)")
            # the 1x level of the FPN: what the fusion (DETR) encoder reads
            return self.object_heads.loss(vision.fpn_hidden_states[-2], batch.weights, batch.frames, batch.labels)
        if not self.train_detector:
            if not (self.train_tracker and len(batch.track_prompts)):
                raise ValueError("this step trains neither the detector nor the tracker")
            return self._track(vision, batch, device)
        per_sample = vision if batch.frames is None else select_frames(vision, batch.frames, len(pixels))
        scoring_inputs: dict = {}
        head_inputs: dict = {}
        hooks = []
        if self.weights.align > 0:  # keep what the query-text scorer saw, to score every query against every text
            hooks.append(detector.dot_product_scoring.register_forward_hook(
                lambda module, args, kwargs, output: scoring_inputs.update(kwargs), with_kwargs=True))
        heads_only = self.weights.instances > 0 and self.weights.instances_heads_only
        if heads_only:  # keep what the mask heads read, to run them again on detached inputs
            mask_decoder = detector.mask_decoder
            hooks.append(mask_decoder.mask_embedder.register_forward_pre_hook(
                lambda module, args: head_inputs.update(queries=args[0])))
            hooks.append(mask_decoder.instance_projection.register_forward_pre_hook(
                lambda module, args: head_inputs.update(pixels=args[0])))
        try:
            out = self.detect(per_sample, batch.texts, batch.levels)
        finally:
            for hook in hooks:
                hook.remove()
        _losses_in_fp32(out)
        matches = match_batch(out, batch.targets, self.weights)
        instance_out = self.instance_heads(out, head_inputs, batch.levels) if heads_only else None
        losses = detection_loss(out, batch.targets, self.weights, self.negative_queries, matches, instance_out)
        if self.dense_heads is not None and batch.dense_labels is not None:
            # fpn_hidden_states: 4x, 2x, 1x, 0.5x the patch grid; the fusion (DETR) encoder reads the 1x level
            losses["dense"] = self.dense_heads.loss(vision.fpn_hidden_states[-2], batch.dense_labels) * self.weights.dense
            losses["loss"] = losses["loss"] + losses["dense"]
        if self.weights.align > 0:
            cross = cross_scores(detector.dot_product_scoring, **scoring_inputs)
            losses["align"] = alignment_loss(cross, matches, batch.texts, batch.frames) * self.weights.align
            losses["loss"] = losses["loss"] + losses["align"]
        if self.train_tracker and len(batch.track_prompts):
            track = self._track(vision, batch, device)
            losses.update({k: v for k, v in track.items() if k != "loss"})
            losses["loss"] = losses["loss"] + track["loss"]
        return losses

    def detect(self, vision, texts: list[str], levels: list[str]):
        """The detector on these frames' features, each with its instruction through its level's SAM3-I route."""
        tokens = self.tokenizer(texts, padding="max_length", max_length=CONTEXT_LENGTH, truncation=True,
                                return_tensors="pt").to(next(self.model.parameters()).device)
        with self.sam3i.routing(levels):
            return self.model.detector_model(vision_embeds=vision, input_ids=tokens.input_ids,
                                             attention_mask=tokens.attention_mask)

    def instance_heads(self, out, head_inputs: Mapping[str, torch.Tensor], levels: list[str]) -> InstancePredictions:
        """`out`'s boxes and masks again, from detached query states and pixel features: a loss on these trains
        the mask embedders (each level's), the instance projection and the box head, and nothing the scores read."""
        detector = self.model.detector_model
        states = head_inputs["queries"].detach()
        with self.sam3i.routing(levels):
            embeddings = detector.mask_decoder.mask_embedder(states)
        pixels = detector.mask_decoder.instance_projection(head_inputs["pixels"].detach())
        masks = torch.einsum("bqc,bchw->bqhw", embeddings, pixels)
        reference = inverse_sigmoid(out.decoder_reference_boxes[-1].detach())
        boxes = box_cxcywh_to_xyxy((reference + detector.detr_decoder.box_head(states)).sigmoid())
        prior = getattr(detector.mask_decoder, "box_prior", None)  # as the detector's own forward adds it
        if prior is not None:
            masks = prior(masks, boxes)
        return InstancePredictions(pred_boxes=boxes, pred_masks=masks)

    def _track(self, vision, batch: Batch, device: torch.device) -> dict[str, torch.Tensor]:
        tracker = self.model.tracker_model
        feats, pos = self.model.get_vision_features_for_tracker(vision_embeds=vision)
        pairs = len(batch.track_prompts)
        size = batch.pixels.shape[-1]
        first = [FrameFeatures(size, size, _Frame(feats, pos, i)) for i in range(pairs)]
        second = [FrameFeatures(size, size, _Frame(feats, pos, pairs + i)) for i in range(pairs)]
        prompts = batch.track_prompts.to(device)
        cond, cond_feats = _mask_as_output(tracker, first, prompts)
        encoded = _encode_memory(tracker, cond_feats, cond.high_res_masks, cond.object_score_logits, binarize=True)
        steps = [_Step(None, i, [(0, _Entry(cond.object_pointer[i: i + 1], *encoded(i)))], [gap],  # type: ignore[arg-type]
                       [cond.object_pointer[i: i + 1]]) for i, gap in enumerate(batch.track_gaps)]
        out, _ = _propagate_group(tracker, second, steps, pixels_dtype(self.model))
        targets = batch.track_targets.to(device)
        logits = out.candidates.float()  # (P, M, h, w): the best candidate learns the mask, all their IoU
        if logits.shape[-2:] != targets.shape[-2:]:
            logits = nn.functional.interpolate(logits, size=targets.shape[-2:], mode="bilinear", align_corners=False)
        return tracker_loss(logits, out.object_score_logits.reshape(-1).float(), targets, self.weights,
                            iou_predictions=out.iou_predictions)


def _losses_in_fp32(out) -> None:
    """Upcast the detector's outputs in place (no-op in fp32): under bf16 autocast they come out in bf16, and the
    matching costs and losses read them."""
    for key in ("pred_logits", "pred_boxes", "pred_masks", "presence_logits"):
        if out.get(key) is not None:
            out[key] = out[key].float()


def cross_scores(scoring: nn.Module, decoder_hidden_states: torch.Tensor, text_features: torch.Tensor,
                 text_mask: torch.Tensor | None) -> torch.Tensor:
    """(B, Q, B) logits: every sample's final-layer queries (decoded with its own instruction) scored against
    every sample's instruction by the detector's own query-text scorer (the diagonal is `pred_logits`)."""
    queries = decoder_hidden_states[-1]
    images, count, width = queries.shape
    texts = text_features.shape[0]
    every = queries.reshape(1, 1, images * count, width).expand(1, texts, images * count, width)
    scores = scoring(decoder_hidden_states=every, text_features=text_features, text_mask=text_mask)
    return scores[0, :, :, 0].reshape(texts, images, count).permute(1, 2, 0)


def pixels_dtype(model: nn.Module) -> torch.dtype:
    return next(model.parameters()).dtype
