"""Choosing whether a trained model answers spatial selectors by rule (`ModelInfo.spatial_rules`).

The rules (samstream.model.spatial) ask the detector for a simple instruction's noun phrase and pick among its
instances by geometry. Whether that beats the model's own answer depends on the model: on how well it finds a
noun phrase's every instance, and on how well its simple route reads "leftmost". So the choice is made the way
it is used: the exported model segments generated held-out images (scenes no evaluation set uses, held-out
instruction templates) through the worker's path with the rules off and on, and the rules are kept where they
raise the simple instructions' gIoU. Each image's backbone features are computed once and reused by both passes.
"""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path

from tqdm import tqdm

from samstream.data.engine import instruction_set, write_instructions
from samstream.data.formats import load_dataset
from samstream.data.synth import synthesize
from samstream.eval.evaluator import evaluate_images
from samstream.model.feature_cache import FrameFeatureCache
from samstream.model.segmenter import Segmenter

IMAGE_SEED = 950_000  # scene seeds apart from the evaluation preset's (500 + i) and the birth clips' (900,000 + i)
IMAGE_SIZE = 224


def choose_spatial_rules(segmenter: Segmenter, images: int = 100, seed: int = IMAGE_SEED,
                         progress: bool = True) -> dict:
    """Segment `images` generated held-out images with the rules off and on; returns the choice
    (`spatial_rules`), the simple instructions' gIoU and samples each way, and the images' recipe. The segmenter is
    left with its own setting."""
    with tempfile.TemporaryDirectory(prefix="samstream-spatial-") as tmp:
        folder = Path(tmp)
        written = synthesize(folder, images=images, width=IMAGE_SIZE, height=IMAGE_SIZE, seed=seed,
                             min_objects=1, max_objects=6, progress=False)
        records = instruction_set(load_dataset(written["images"]), split="heldout", per_level=2, negatives=1,
                                  seed=seed)
        write_instructions(folder / "images.instructions.json", records, str(written["images"]), "heldout", seed)
        own = segmenter.info
        cached = FrameFeatureCache(segmenter)
        simple: dict[bool, dict] = {}
        try:
            for rules in tqdm((False, True), desc="spatial rules", unit="pass", disable=not progress):
                segmenter.info = cached.info = dataclasses.replace(own, spatial_rules=rules)
                levels = evaluate_images(cached, folder, progress=False)["levels"]
                simple[rules] = levels.get("simple") or {"gIoU": None, "samples": 0}
        finally:
            segmenter.info = own
    giou = {rules: simple[rules]["gIoU"] or 0.0 for rules in simple}
    return {"spatial_rules": giou[True] > giou[False],
            "simple_giou": {"off": round(giou[False], 4), "on": round(giou[True], 4)},
            "simple_samples": simple[True]["samples"],
            "images": {"count": images, "size": IMAGE_SIZE, "seed": seed}}


__all__ = ["choose_spatial_rules"]
