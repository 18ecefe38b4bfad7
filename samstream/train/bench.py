"""`samstream bench train`: the median time of one training step of the shipped model's recipe (small-stem sizes,
world batches of 16 frames and 32 instructions, dense loss), per precision, measured in one process.

Speed, not quality: the weights are fresh, and the steps are the detector stages' (the long ones) and the
tracker stage's. The bf16 row runs where the device computes bf16 natively (model/precision.py).
"""

from __future__ import annotations

import statistics
import time

import torch

from samstream.model.loader import resolve_device
from samstream.model.precision import bf16_unsupported_reason
from samstream.train.config import LossWeights, Stage, TrainConfig
from samstream.train.setup import build_trainable, trainable_parameters
from samstream.train.trainer import stage_batches, train_module

BENCH_TOKENIZER_SCENES = 200  # enough for a vocabulary; speed does not depend on it


def bench_config(device: str, model: str = "small-stem") -> TrainConfig:
    """The shipped recipe's sizes and batches (configs/small-palette.toml), one detector and one tracker stage."""
    return TrainConfig(model=model, data="world", text_init="identity", batch_pairs=8,
                       instructions_per_frame=2, contrast_rate=0.6, palette_rate=0.5, negative_rate=0.3,
                       negative_queries=True, loss_weights=LossWeights(cls=5.0, presence=5.0, dense=2.0),
                       tokenizer_scenes=BENCH_TOKENIZER_SCENES, device=device, out="unused",
                       stages=[Stage(name="joint", steps=1, train_tracker=False),
                               Stage(name="track", steps=1, train_tracker=True, freeze=["detector_model", "adapters"])])


def _step_ms(config: TrainConfig, stage: int, precision: str, repeats: int) -> float:
    device = resolve_device(config.device)
    trainable = build_trainable(config, device)
    module = train_module(config, trainable, negative_queries=True,
                          train_tracker=bool(config.stages[stage].train_tracker)).to(device).train()
    if stage == 1:
        module.train_detector = False  # the tracker stage holds the detector fixed, as the trainer does
    params = list(trainable_parameters(module).values())
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    batches = stage_batches(config, trainable, stage, 0)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")
    times = []
    for i in range(repeats + 1):  # the first is a warm-up
        batch = batches.sample(config.batch_pairs)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        with autocast:
            losses = module(batch)
        optimizer.zero_grad(set_to_none=True)
        losses["loss"].backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if i:
            times.append((time.perf_counter() - start) * 1000)
    return round(statistics.median(times), 1)


def bench_train(device: str = "auto", repeats: int = 5, model: str = "small-stem") -> dict:
    """`model`: a new-model size of `samstream train` (tests use "tiny")."""
    config = bench_config(device, model)
    torch_device = resolve_device(device)
    precisions = ["fp32"] + (["bf16"] if bf16_unsupported_reason(torch_device) is None else [])
    steps: dict[str, dict[str, float]] = {}
    for stage, name in enumerate(("detector_step_ms", "tracker_step_ms")):
        for precision in precisions:
            steps.setdefault(precision, {})[name] = _step_ms(config, stage, precision, repeats)
    report = {"benchmark": "train", "model": model, "device": str(torch_device), "torch": torch.__version__,
              "threads": torch.get_num_threads(), "repeats": repeats, "frames_per_step": 2 * config.batch_pairs,
              "instructions_per_step": 2 * config.batch_pairs * config.instructions_per_frame, "steps": steps}
    if "bf16" in steps:
        report["bf16_speedup"] = {name: round(steps["fp32"][name] / steps["bf16"][name], 2) for name in steps["fp32"]}
    return report
