"""`samstream calibrate MODEL_DIR --out DIR`: re-choose the thresholds of a model folder samstream trained.

A model's score threshold, presence gate and birth threshold are chosen when training exports it. When the way they
are chosen improves (the presence gate came after the shipped model was trained), a folder can take the new choice
without its training checkpoints: its weights are loaded as they are, calibrated with the training run's own data
recipe (from its samstream.json), and written to a new folder with the same weights and the new samstream.json.
"""

from __future__ import annotations

from pathlib import Path

import torch
from pydantic import ValidationError

from samstream.errors import ConfigError
from samstream.model.loader import local_folder, read_model_meta
from samstream.train.config import TrainConfig
from samstream.train.setup import build_trainable
from samstream.train.trainer import MODEL_META_FILE, export, train_module


def recalibrate(model: str, out: str | Path, samples: int | None = None, progress: bool = True) -> Path:
    """Write `out`: `model`'s weights with thresholds chosen anew on its training recipe's held-out data."""
    source = local_folder(model)
    out = Path(out).expanduser()
    if not (source / MODEL_META_FILE).is_file():
        raise ConfigError(f"{model}: not a model folder samstream trained (no {MODEL_META_FILE}); its thresholds "
                          f"are chosen by `samstream train`")
    if out.resolve() == source.resolve():
        raise ConfigError(f"--out {out} is the model folder itself: write the recalibrated model to a new folder")
    if out.exists() and any(out.iterdir()):
        raise ConfigError(f"--out {out} exists and is not empty")
    training = read_model_meta(source).get("training")
    if not isinstance(training, dict):
        raise ConfigError(f"{source / MODEL_META_FILE}: no training record to calibrate with")
    overrides = {"model": str(source), "text_init": None, "device": "cpu"}
    if samples is not None:
        overrides["validation_samples"] = samples
    try:
        config = TrainConfig(**{**training, **overrides})
    except ValidationError as e:
        raise ConfigError(f"{source / MODEL_META_FILE}: its training record is not a valid config "
                          f"({e.errors()[0]['msg']})") from e
    if config.data != "world" or not config.validation_samples:
        raise ConfigError(f"{model}: its thresholds can be chosen again only on the procedural world's held-out "
                          f"data (its training data was {config.data!r})")
    trainable = build_trainable(config, torch.device("cpu"))
    module = train_module(config, trainable)
    return export(config, module, trainable, out, progress=progress, training=training)
