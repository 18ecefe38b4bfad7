"""A rank scorer for small SAM3 detectors: each query's score plus a learned, instruction-conditioned term read from
where its box ranks among the frame's other likely instances.

Why: SAM3 scores a query by the dot product of its final decoder state with the pooled instruction. Asked for "the
leftmost circle", the query on the left circle must carry "I am the leftmost of the circles" in that state, but the
decoder adds box positions to its attention only, never to the states it outputs, and a 2-layer, 64-wide decoder
does not learn to write relative position into them: the small model's simple instructions pick the wrong
instance or several (docs/model-card.md, "Session 32"). This reads it directly. For each query it computes soft
ranks of its box's centre x, centre y and area among the other queries, each weighted by how likely that query is
an instance of the instruction at all (its own score, detached): "leftmost circle" is a rank near 0 along x among
circles. A one-layer transformer over the queries mixes these with the query states, and a bilinear read-out
against the pooled instruction gives the term, zero at the start (the model's scores are unchanged until it learns).

A model that has one records its width in its DETR decoder config (`rank_scorer`), so its folder loads back with
it; SAM3's own checkpoints have none.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import Sam3Model, Sam3VideoConfig, Sam3VideoModel

RANK_SCORER_KEY = "rank_scorer"  # DETR-decoder-config attribute: the scorer's width, e.g. 32
RANKER_PREFIX = "detector_model.dot_product_scoring.rank_scorer."
# soft-rank temperatures of centre x, centre y (shares of the frame) and log area: a box ranks "before" another
# by a margin of about this much
_TEMPERATURES = (0.03, 0.03, 0.2)
_GEOMETRY = 11  # per-query features: box (cx, cy, w, h, log area), own probability, 3 soft ranks, 2 masses


class RankScorer(nn.Module):
    """(B, Q) score logits + a term from (B, Q, D) final query states, (B, Q, 4) xyxy boxes in [0, 1] and the
    (B, T, D) instruction features the detector scored them against."""

    def __init__(self, hidden_size: int, width: int) -> None:
        super().__init__()
        self.states = nn.Linear(hidden_size, width)
        self.geometry = nn.Sequential(nn.Linear(_GEOMETRY, width), nn.GELU(), nn.Linear(width, width))
        self.instruction = nn.Linear(hidden_size, width)
        self.norm = nn.LayerNorm(width)
        self.mix = nn.TransformerEncoderLayer(width, nhead=4, dim_feedforward=2 * width, dropout=0.0,
                                              activation="gelu", batch_first=True, norm_first=True)
        self.read_queries = nn.Linear(width, width)
        self.read_instruction = nn.Linear(hidden_size, width)
        nn.init.zeros_(self.read_instruction.weight)
        nn.init.zeros_(self.read_instruction.bias)

    def forward(self, logits: torch.Tensor, states: torch.Tensor, boxes: torch.Tensor, text: torch.Tensor,
                text_mask: torch.Tensor | None) -> torch.Tensor:
        instruction = _pooled(text, text_mask)  # (B, D)
        features = query_geometry(boxes.detach().to(states.dtype), logits.detach().sigmoid().to(states.dtype))
        tokens = self.states(states) + self.geometry(features) + self.instruction(instruction)[:, None]
        tokens = self.mix(self.norm(tokens))
        reading = self.read_instruction(instruction)  # (B, W)
        term = torch.einsum("bqw,bw->bq", self.read_queries(tokens), reading) / reading.shape[-1] ** 0.5
        return logits + term.to(logits.dtype)


def query_geometry(boxes: torch.Tensor, probabilities: torch.Tensor) -> torch.Tensor:
    """(B, Q, 11): each query's box (cx, cy, w, h, log area / 5), its probability, the soft ranks of its centre x,
    centre y and log area among the other queries weighted by their probabilities (0: before all of them, 1: after
    all), the others' total probability (about how many other instances there are) and that total / Q."""
    cx = (boxes[..., 0] + boxes[..., 2]) / 2
    cy = (boxes[..., 1] + boxes[..., 3]) / 2
    w = (boxes[..., 2] - boxes[..., 0]).clamp(min=1e-4)
    h = (boxes[..., 3] - boxes[..., 1]).clamp(min=1e-4)
    log_area = torch.log(w * h)
    values = torch.stack([cx, cy, log_area], dim=-1)  # (B, Q, 3)
    temperatures = values.new_tensor(_TEMPERATURES)
    above = torch.sigmoid((values[:, :, None] - values[:, None, :]) / temperatures)  # (B, i, j, 3): i after j
    count = boxes.shape[1]
    others = probabilities[:, None, :] * (1 - torch.eye(count, device=boxes.device, dtype=boxes.dtype))  # (B, i, j)
    mass = others.sum(-1)  # (B, Q)
    ranks = (above * others[..., None]).sum(2) / (mass[..., None] + 1e-3)
    return torch.cat([torch.stack([cx, cy, w, h, log_area / 5, probabilities], dim=-1), ranks,
                      torch.stack([mass, mass / count], dim=-1)], dim=-1)


def _pooled(text: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    if mask is None:
        return text.mean(1)
    valid = mask.to(text.dtype)[..., None]
    return (text * valid).sum(1) / valid.sum(1).clamp(min=1.0)


def rank_scorer_width(config: Sam3VideoConfig) -> int | None:
    width = getattr(config.detector_config.detr_decoder_config, RANK_SCORER_KEY, None)
    return int(width) if width else None


def set_rank_scorer(config: Sam3VideoConfig, width: int | None) -> Sam3VideoConfig:
    """Record a scorer of this width (None: SAM3's scores alone) in the config, so the model saves and loads
    with it."""
    setattr(config.detector_config.detr_decoder_config, RANK_SCORER_KEY, int(width) if width else None)
    return config


def install_rank_scorer(model: Sam3VideoModel) -> bool:
    """Give the model the scorer its config names (its term zero at the start; the RNG is left as it was). Returns
    whether it has one."""
    width = rank_scorer_width(model.config)
    if width is None:
        return False
    detector = model.detector_model
    scoring = detector.dot_product_scoring
    if isinstance(getattr(scoring, "rank_scorer", None), RankScorer):
        return True
    reference = next(scoring.parameters())
    with torch.random.fork_rng(devices=[]):
        scorer = RankScorer(detector.config.detr_decoder_config.hidden_size, width)
    scoring.rank_scorer = scorer.to(device=reference.device, dtype=reference.dtype)
    scoring.rank_scorer_inputs = None
    detector.register_forward_pre_hook(_arm)
    scoring.register_forward_hook(_keep_scorer_inputs, with_kwargs=True)
    detector.register_forward_hook(_add_rank_term)
    return True


# Module-level hooks reading their state from the hooked modules, so a deep copy of the model stays whole. The
# detector's forward scores its queries before it has returned their boxes: the scorer's inputs are kept when the
# query-text scorer runs inside a detector forward (not when a loss calls it again on its own), and the term is
# added to the detector's output. So one model runs one forward at a time, as a samstream worker runs its model
# from its one thread.
def _arm(detector: Sam3Model, _args: tuple) -> None:
    detector.dot_product_scoring.rank_scorer_inputs = {}


def _keep_scorer_inputs(scoring: nn.Module, _args: tuple, kwargs: dict, _output) -> None:
    if scoring.rank_scorer_inputs == {}:
        scoring.rank_scorer_inputs = {"states": kwargs["decoder_hidden_states"][-1],
                                      "text": kwargs["text_features"], "text_mask": kwargs.get("text_mask")}


def _add_rank_term(detector: Sam3Model, _args: tuple, output):
    scoring = detector.dot_product_scoring
    inputs, scoring.rank_scorer_inputs = scoring.rank_scorer_inputs, None
    if not inputs:
        raise RuntimeError("the rank scorer did not see the detector's query-text scores")
    output.pred_logits = scoring.rank_scorer(output.pred_logits, inputs["states"], output.pred_boxes,
                                             inputs["text"], inputs["text_mask"])
    return output
