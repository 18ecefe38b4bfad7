"""Choosing a trained model's birth threshold (the score a new track needs) on tracked held-out clips.

A fixed margin over the score threshold (SAM3: 0.5 -> 0.7) suits SAM3's score scale, not a small model's: one
whose confident detections score 0.3 never starts a track under a birth bar of 0.30. So the bar is chosen the
way it is used: the exported model tracks a few generated clips (scenes no evaluation set uses, held-out
instruction templates) through the worker's tracking path at each candidate bar, and the bar with the best
(1 - share) x HOTA on positives + share x no-target accuracy on negatives wins. Each frame's backbone features
are computed once and reused by every bar.
"""

from __future__ import annotations

import tempfile
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


def choose_birth_threshold(segmenter: Segmenter, videos: int = 8, frames: int = 30, negative_share: float = 0.25,
                           keyframe_every: int = 5, seed: int = CLIP_SEED, progress: bool = True) -> dict:
    """Track `videos` generated clips at each candidate birth bar; returns `pick_birth`'s choice and table."""
    results: dict[float, dict] = {}
    with tempfile.TemporaryDirectory(prefix="samstream-birth-") as tmp:
        folder = Path(tmp)
        written = synthesize(folder, videos=videos, frames=frames, width=CLIP_SIZE, height=CLIP_SIZE, seed=seed,
                             min_objects=1, max_objects=6, progress=False)
        records = instruction_set(load_dataset(written["videos"]), split="heldout", per_level=2, negatives=1, seed=seed)
        write_instructions(folder / "videos.instructions.json", records, str(written["videos"]), "heldout", seed)
        bars = birth_candidates(segmenter.info.score_threshold)
        cached = FrameFeatureCache(segmenter)  # every bar tracks the same frames: the backbone runs once on each
        for bar in tqdm(bars, desc="birth threshold", unit="bar", disable=not progress):
            report = evaluate_videos(cached, folder, keyframe_every, progress=False, birth_threshold=bar)
            results[bar] = report["levels"]["all"]
    choice = pick_birth(results, negative_share)
    choice["clips"] = {"videos": videos, "frames": frames, "size": CLIP_SIZE, "seed": seed}
    return choice


__all__ = ["birth_candidates", "choose_birth_threshold", "pick_birth"]
