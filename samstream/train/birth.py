"""Choosing a trained model's birth threshold (the score a new track needs) on tracked held-out clips.

A fixed margin over the score threshold (SAM3: 0.5 -> 0.7) suits SAM3's score scale, not a small model's: one
whose confident detections score 0.3 never starts a track under a birth bar of 0.30. So the bar is chosen the
way it is used: the exported model tracks a few generated clips (scenes no evaluation set uses, held-out
instruction templates) through the worker's tracking path at each candidate bar, and the bar with the best
(1 - share) x HOTA on positives + share x no-target accuracy on negatives wins. Each frame's backbone features
are computed once and reused by every bar.

The same passes can also choose a box-crop margin (each mask cut to its own query's box, grown by the margin;
`ModelInfo.box_crop_margin`): every candidate margin, and no crop, is tracked at every bar, and the best pair wins.
"""

from __future__ import annotations

import dataclasses
import tempfile
from collections.abc import Sequence
from pathlib import Path

from tqdm import tqdm

from samstream.data.engine import instruction_set, write_instructions
from samstream.data.formats import load_dataset
from samstream.data.synth import synthesize
from samstream.eval.evaluator import evaluate_videos
from samstream.model.feature_cache import FrameFeatureCache
from samstream.model.segmenter import Segmenter

MARGINS = (0.0, 0.05, 0.1, 0.15, 0.2, 0.3)  # birth bar = score threshold + margin (capped at 0.95)
CLIP_SEED = 900_000  # scene seeds of the calibration clips: apart from the evaluation preset's (500 + i)
CLIP_SIZE = 224


def birth_candidates(score_threshold: float, margins: tuple[float, ...] = MARGINS) -> list[float]:
    return sorted({round(min(score_threshold + m, 0.95), 3) for m in margins})


def pick_birth(results: dict[float, dict], negative_share: float) -> dict:
    """`results`: per candidate bar, the `evaluate_videos` summary ('all' level) -> the chosen bar and its table."""
    table = {}
    for bar, summary in results.items():
        hota = summary.get("HOTA") or 0.0
        empty = summary.get("no_target_accuracy")
        empty = 1.0 if empty is None else empty
        table[bar] = {"objective": round((1 - negative_share) * hota + negative_share * empty, 4),
                      "HOTA": round(hota, 4), "IDF1": round(summary.get("IDF1") or 0.0, 4),
                      "no_target_accuracy": round(empty, 4)}
    best = max(table, key=lambda bar: (table[bar]["objective"], -bar))  # ties: the lower bar (fewer lost births)
    return {"birth_threshold": best, **table[best], "negative_share": negative_share,
            "by_birth_threshold": {f"{bar:g}": row for bar, row in sorted(table.items())}}


def margin_key(margin: float | None) -> str:
    return "none" if margin is None else f"{margin:g}"


def pick_margin(choices: dict[float | None, dict]) -> dict:
    """Per box-crop margin (None: no crop), `pick_birth`'s choice -> the best margin's choice (ties: no crop, then
    the smaller margin) with `box_crop_margin` and every margin's best row (`by_box_crop_margin`)."""
    best = max(choices, key=lambda m: (choices[m]["objective"], m is None, -(m or 0)))
    rows = {margin_key(m): {k: c[k] for k in ("objective", "birth_threshold", "HOTA", "IDF1", "no_target_accuracy")}
            for m, c in choices.items()}
    return {**choices[best], "box_crop_margin": best, "by_box_crop_margin": rows}


def choose_birth_threshold(segmenter: Segmenter, videos: int = 8, frames: int = 30, negative_share: float = 0.25,
                           keyframe_every: int = 5, seed: int = CLIP_SEED, progress: bool = True,
                           crop_margins: Sequence[float | None] = (None,)) -> dict:
    """Track `videos` generated clips at each candidate birth bar and each box-crop margin (None: no crop);
    returns `pick_birth`'s choice and table for the best margin, that margin (`box_crop_margin`) and the best
    objective of every margin (`by_box_crop_margin`). The segmenter is left with its own margin."""
    with tempfile.TemporaryDirectory(prefix="samstream-birth-") as tmp:
        folder = Path(tmp)
        written = synthesize(folder, videos=videos, frames=frames, width=CLIP_SIZE, height=CLIP_SIZE, seed=seed,
                             min_objects=1, max_objects=6, progress=False)
        records = instruction_set(load_dataset(written["videos"]), split="heldout", per_level=2, negatives=1, seed=seed)
        write_instructions(folder / "videos.instructions.json", records, str(written["videos"]), "heldout", seed)
        bars = birth_candidates(segmenter.info.score_threshold)
        own = segmenter.info
        cached = FrameFeatureCache(segmenter)  # every pass tracks the same frames: the backbone runs once on each
        runs = [(margin, bar) for margin in crop_margins for bar in bars]
        results: dict[float | None, dict[float, dict]] = {margin: {} for margin in crop_margins}
        try:
            for margin, bar in tqdm(runs, desc="birth threshold", unit="pass", disable=not progress):
                segmenter.info = cached.info = dataclasses.replace(own, box_crop_margin=margin)
                report = evaluate_videos(cached, folder, keyframe_every, progress=False, birth_threshold=bar)
                results[margin][bar] = report["levels"]["all"]
        finally:
            segmenter.info = own
    choice = pick_margin({margin: pick_birth(results[margin], negative_share) for margin in crop_margins})
    choice["clips"] = {"videos": videos, "frames": frames, "size": CLIP_SIZE, "seed": seed}
    return choice


__all__ = ["birth_candidates", "choose_birth_threshold", "pick_birth", "pick_margin"]
