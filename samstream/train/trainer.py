"""`samstream train CONFIG`: the training loop (stages, cosine schedule, checkpoints, resume, loss log, DDP)
and the export of a model folder that `samstream run --model` and `load_segmenter` read."""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from pathlib import Path

import torch
from tqdm import tqdm

from samstream.errors import ConfigError
from samstream.model.loader import load_segmenter, resolve_device, save_segmenter_model
from samstream.model.precision import bf16_unsupported_reason
from samstream.model.queries import is_spread_parameter
from samstream.train.birth import choose_birth_threshold
from samstream.train.calibrate import choose_threshold, instance_separation, text_reliance
from samstream.train.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from samstream.train.config import Stage, TrainConfig
from samstream.train.dense import WORLD_DENSE_CLASSES, object_accuracy
from samstream.train.forward import TrainModule
from samstream.train.object_batches import ObjectBatches
from samstream.train.setup import build_trainable, merge_lora, trainable_parameters
from samstream.train.spatial_choice import choose_spatial_rules
from samstream.train.word_noise import WordNoise
from samstream.train.world_batches import WorldBatches

TRACKER_PREFIXES = ("model.tracker_model.", "model.tracker_neck.")
DETECTOR_PREFIXES = ("model.detector_model.", "adapters.")  # the detector and its SAM3-I adapters

MODEL_META_FILE = "samstream.json"  # trained-model metadata beside config.json: thresholds, training run
BIRTH_MARGIN = 0.15  # without clips to choose it on: a new track needs threshold + this (SAM3: 0.5 -> 0.7)


def lr_at(step: int, config: TrainConfig) -> float:
    """Warmup then cosine decay over the run's stages; a stage with `own_schedule` runs its own warmup and decay
    (and the others' schedule spans only their steps); each stage scales its rate by its `lr_scale`."""
    shared_total = sum(stage.steps for stage in config.stages if not stage.own_schedule)
    start = shared_before = 0
    for stage in config.stages:
        if step < start + stage.steps:
            if stage.own_schedule:
                return stage.lr_scale * _warmup_cosine(step - start, stage.steps, config)
            return stage.lr_scale * _warmup_cosine(shared_before + step - start, shared_total, config)
        shared_before += 0 if stage.own_schedule else stage.steps
        start += stage.steps
    return config.lr * config.min_lr_ratio


def _warmup_cosine(step: int, total: int, config: TrainConfig) -> float:
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(total - config.warmup_steps, 1)
    floor = config.lr * config.min_lr_ratio
    return floor + (config.lr - floor) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


def _distributed() -> tuple[int, int]:
    """(rank, world size) under torchrun; (0, 1) otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not torch.distributed.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        torch.distributed.init_process_group(backend)
    return (torch.distributed.get_rank() if world > 1 else 0), world


def train_module(config: TrainConfig, trainable, **options) -> TrainModule:
    """The model, its adapters and the training-only heads (dense ones with `[loss_weights] dense`, object ones when
    a stage has `task = "objects"`), as one module."""
    objects = any(stage.task == "objects" for stage in config.stages)
    return TrainModule(trainable.model, trainable.adapters, trainable.tokenizer, weights=config.loss_weights,
                       dense_classes=WORLD_DENSE_CLASSES if config.data == "world" else None,
                       object_classes=WORLD_DENSE_CLASSES if objects else None, **options)


def stage_batches(config: TrainConfig, trainable, stage_index: int, rank: int, split: str = "train"):
    """The endless, seeded batch stream of one stage (per rank; `split="heldout"`: validation and calibration)."""
    stage = config.stages[stage_index]
    seed = config.seed * 1000 + stage_index * 97 + rank
    if stage.task == "objects":
        return ObjectBatches(trainable.image_size, _grid(trainable), seed=seed, mosaic_rate=stage.mosaic_rate)
    batches = _instruction_batches(config, trainable, stage, seed, split)
    if config.word_noise_rate > 0 and split == "train":
        return WordNoise(batches, config.word_noise_rate, seed)
    return batches


def _instruction_batches(config: TrainConfig, trainable, stage: Stage, seed: int, split: str):
    if config.data == "world":
        return WorldBatches(trainable.image_size, trainable.mask_size, seed=seed,
                            split=split, negative_rate=config.negative_rate_of(stage), level_weights=stage.levels,
                            max_gap=config.max_gap,  # validation: one instruction per frame, as in use
                            instructions_per_frame=config.instructions_per_frame if split == "train" else 1,
                            dense_labels=config.loss_weights.dense > 0 and split == "train",
                            # validation and calibration see whole frames, as in use
                            zoom_rate=config.zoom_rate_of(stage) if split == "train" else 0.0,
                            zoom_fill=config.zoom_fill, contrast_rate=config.contrast_rate if split == "train" else 0.0,
                            contrast_shape_share=config.contrast_shape_share,
                            palette_rate=config.palette_rate if split == "train" else 0.0,
                            every_object_rate=config.every_object_rate_of(stage) if split == "train" else 0.0)
    from samstream.train.coco_batches import CocoBatches

    return CocoBatches(config.data, trainable.image_size, trainable.mask_size, images_root=config.images_root,
                       seed=seed, split=split,
                       negative_rate=config.negative_rate_of(stage), level_weights=stage.levels)


def train(config: TrainConfig, resume: bool = True, progress: bool = True) -> Path:
    """Run (or resume) training; returns the exported model folder (`<out>/model`)."""
    rank, world = _distributed()
    device = resolve_device(config.device)
    if world > 1 and device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if config.threads:
        torch.set_num_threads(config.threads)
    if any(config.precision_of(stage) == "bf16" for stage in config.stages) \
            and (reason := bf16_unsupported_reason(device)) is not None:
        raise ConfigError(f"precision = \"bf16\": {reason}")
    out = Path(config.out)
    trainable = build_trainable(config, device)
    module = train_module(config, trainable, negative_queries=config.negative_queries_of(config.stages[0]),
                          train_tracker=_stage_tracks(config, config.stages[0])).to(device).train()
    params = trainable_parameters(module)
    frozen_by_stage = [frozen_parameters(params, stage.freeze, stage.name) for stage in config.stages]
    for p in held_in_every_stage(frozen_by_stage):
        p.requires_grad_(False)  # no stage trains it: backward skips it (a frozen backbone costs no backward pass)
    every = {id(p) for p in params.values()}
    detecting = {id(p) for name, p in params.items() if name.startswith(DETECTOR_PREFIXES)}
    holds_detector = []  # per stage: it holds the whole detector fixed, so it skips the detector's decoding
    for stage, frozen in zip(config.stages, frozen_by_stage):
        held = {id(p) for p in frozen}
        if held >= every:  # prefixes may overlap: compare sets, not counts
            raise ConfigError(f"stage {stage.name!r}: freeze holds every trained parameter fixed")
        holds_detector.append(held >= detecting)
        if stage.task == "detect" and holds_detector[-1] and not _stage_tracks(config, stage):
            raise ConfigError(f"stage {stage.name!r}: freezes the detector and does not train the tracker "
                              "(which trains on world videos only)")
    out.mkdir(parents=True, exist_ok=True)
    optimizer = torch.optim.AdamW(parameter_groups(params, config), lr=config.lr)
    step = 0
    checkpoint = latest_checkpoint(out) if resume else None
    if checkpoint is not None:
        step = load_checkpoint(checkpoint, module, optimizer)["step"]
    (out / "config.json").write_text(config.model_dump_json(indent=1))
    runner = module
    if world > 1:
        runner = torch.nn.parallel.DistributedDataParallel(module, find_unused_parameters=True)
    log = (out / "train_log.jsonl").open("a") if rank == 0 else None
    bar = tqdm(total=config.total_steps, initial=step, desc="train", unit="step", disable=not progress or rank != 0)
    started = time.time()
    try:
        stage_end = 0
        for index, stage in enumerate(config.stages):
            stage_start, stage_end = stage_end, stage_end + stage.steps
            if step >= stage_end:
                continue
            batches = stage_batches(config, trainable, index, rank)
            batches.skip(step - stage_start)
            frozen = frozen_by_stage[index]
            module.train_tracker = _stage_tracks(config, stage)
            module.negative_queries = config.negative_queries_of(stage)
            module.train_detector = not holds_detector[index]  # else only the backbone runs, for the tracker
            autocast = torch.autocast(device.type, dtype=torch.bfloat16) if config.precision_of(stage) == "bf16" \
                else torch.autocast(device.type, enabled=False)
            if world == 1:  # DDP registered its parameters once, so there frozen ones only lose their gradient
                hold_fixed(params, frozen)
            while step < stage_end:
                for group in optimizer.param_groups:
                    group["lr"] = lr_at(step, config)
                batch = batches.sample(config.batch_pairs)
                with autocast:
                    losses = runner(batch)
                optimizer.zero_grad(set_to_none=True)
                losses["loss"].backward()
                for p in frozen:
                    p.grad = None  # AdamW leaves a parameter without a gradient (and its moments) untouched
                grad_norm = torch.nn.utils.clip_grad_norm_(list(params.values()), config.grad_clip)
                optimizer.step()
                step += 1
                bar.update(1)
                if log is not None and (step % config.log_every == 0 or step == 1):
                    record = {"step": step, "stage": stage.name, "lr": lr_at(step - 1, config),
                              "grad_norm": round(float(grad_norm), 4), "elapsed_s": round(time.time() - started, 1),
                              **{k: round(float(v.detach()), 5) for k, v in losses.items()}}
                    log.write(json.dumps(record) + "\n")
                    log.flush()
                    bar.set_postfix(loss=f"{record['loss']:.3f}")
                if rank == 0 and (step % config.checkpoint_every == 0 or step == config.total_steps):
                    save_checkpoint(out / "checkpoints" / f"step-{step:07d}", module, optimizer,
                                    {"step": step, "stage": stage.name}, stored=params)
                    # a stage that holds the detector fixed (the tracker's) would measure the same detector again
                    if config.checkpoint_probes and stage.task == "detect" and not holds_detector[index]:
                        log_probes(log, config, module, trainable, step, stage.name)
            if stage.task == "objects" and log is not None:
                # what the backbone now names on held-out whole frames, as it will see them when detecting
                record = {"step": step, "stage": stage.name,
                          "heldout_objects": object_accuracy(module, _heldout_objects(config, trainable))}
                log.write(json.dumps(record) + "\n")
                log.flush()
    finally:
        bar.close()
        if log is not None:
            log.close()
    if world > 1:
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
    if rank != 0:
        return out / "model"
    return export(config, module, trainable, out / "model", progress=progress)


def parameter_groups(params: dict[str, torch.nn.Parameter], config: TrainConfig) -> list[dict]:
    """AdamW's groups: weight decay on matrices, none on vectors (norms, biases) nor on spread queries."""
    def decays(name: str, p: torch.nn.Parameter) -> bool:
        return p.ndim >= 2 and not (config.query_init == "spread" and is_spread_parameter(name))
    return [{"params": [p for n, p in params.items() if decays(n, p)], "weight_decay": config.weight_decay},
            {"params": [p for n, p in params.items() if not decays(n, p)], "weight_decay": 0.0}]


def log_probes(log, config: TrainConfig, module: TrainModule, trainable, step: int, stage: str) -> None:
    """Text reliance and query separation on held-out frames, as export measures them, into the loss log."""
    last = len(config.stages) - 1
    record = {"step": step, "stage": stage,
              "heldout_text_reliance": text_reliance(module, stage_batches(config, trainable, last, 1, "heldout"),
                                                     config.checkpoint_probes),
              "heldout_instances": instance_separation(module, stage_batches(config, trainable, last, 2, "heldout"),
                                                       config.checkpoint_probes)}
    log.write(json.dumps(record) + "\n")
    log.flush()


def _heldout_objects(config: TrainConfig, trainable) -> ObjectBatches:
    """Whole frames from scenes the objects stages never draw (another seed stream)."""
    return ObjectBatches(trainable.image_size, _grid(trainable), seed=config.seed * 1000 + 999_983, mosaic_rate=0.0)


def _grid(trainable) -> int:
    """The side of the model's patch grid (the objects stages pool each object over its cells)."""
    return trainable.image_size // trainable.model.config.detector_config.vision_config.backbone_config.patch_size


def frozen_parameters(params: dict[str, torch.nn.Parameter], prefixes: list[str],
                      stage: str) -> list[torch.nn.Parameter]:
    """The trained parameters a stage holds fixed: names (as in the model's state dict, or `adapters.` for the
    SAM3-I adapters) starting with one of `prefixes`."""
    frozen = []
    for prefix in prefixes:
        hits = [p for name, p in params.items() if name.removeprefix("model.").startswith(prefix)]
        if not hits:
            raise ConfigError(f"stage {stage!r}: freeze {prefix!r} names no trained parameter "
                              f"(e.g. \"detector_model.text_encoder\", \"tracker_model\", \"adapters\")")
        frozen.extend(hits)
    return frozen


def _stage_tracks(config: TrainConfig, stage: Stage) -> bool:
    tracks = config.train_tracker if stage.train_tracker is None else stage.train_tracker
    return tracks and config.data == "world"


def hold_fixed(params: dict[str, torch.nn.Parameter], frozen: list[torch.nn.Parameter]) -> None:
    """This stage's frozen parameters get no gradient (backward skips what only they need); the rest do."""
    fixed = {id(p) for p in frozen}
    for p in params.values():
        p.requires_grad_(id(p) not in fixed)


def held_in_every_stage(frozen_by_stage: list[list[torch.nn.Parameter]]) -> list[torch.nn.Parameter]:
    """The parameters that every stage holds fixed."""
    if not frozen_by_stage:
        return []
    later = [{id(p) for p in frozen} for frozen in frozen_by_stage[1:]]
    return [p for p in frozen_by_stage[0] if all(id(p) in ids for ids in later)]


def export_latest(config: TrainConfig, progress: bool = True) -> Path:
    """Export the newest checkpoint of a run (stopped early, or still going) as a model folder `<out>/model`."""
    return export_checkpoint(config, None, progress=progress)


def export_checkpoint(config: TrainConfig, step: int | None, progress: bool = True) -> Path:
    """Export one checkpoint of a run as a model folder, calibrated as at the end of training: the newest as
    `<out>/model` (step None), an earlier one as `<out>/model-step-NNNNNNN` (to compare checkpoints with `samstream
    eval` without touching the run's own model)."""
    out = Path(config.out)
    if step is None:
        checkpoint, folder = latest_checkpoint(out), out / "model"
        if checkpoint is None:
            raise ConfigError(f"{out}: no checkpoints to export")
    else:
        checkpoint, folder = out / "checkpoints" / f"step-{step:07d}", out / f"model-step-{step:07d}"
        if not checkpoint.is_dir():
            have = sorted(int(p.name.removeprefix("step-")) for p in (out / "checkpoints").glob("step-*[0-9]"))
            saved = f"saved: {have[0]}..{have[-1]}, every {config.checkpoint_every}" if have else "none saved"
            raise ConfigError(f"{out}: no checkpoint at step {step} ({saved})")
    trainable = build_trainable(config, torch.device("cpu"))
    module = train_module(config, trainable)
    load_checkpoint(checkpoint, module, None)
    return export(config, module, trainable, folder, progress=progress)


def export(config: TrainConfig, module: TrainModule, trainable, folder: Path, progress: bool = True,
           training: dict | None = None) -> Path:
    """Choose the score threshold and presence gate (held-out templates) and the birth threshold (tracked held-out
    clips), and write the model folder. `training` is the run recorded in its samstream.json (default: `config`)."""
    calibration = {"score_threshold": 0.5, "giou": None}
    if config.validation_samples and config.data == "world":
        calibration = choose_threshold(module, stage_batches(config, trainable, len(config.stages) - 1, 0, "heldout"),
                                       config.validation_samples, negative_share=config.calibration_negative_share,
                                       progress=progress)
        calibration["text_reliance"] = text_reliance(
            module, stage_batches(config, trainable, len(config.stages) - 1, 1, "heldout"), config.validation_samples // 2,
            progress=progress)
        calibration["instances"] = instance_separation(
            module, stage_batches(config, trainable, len(config.stages) - 1, 2, "heldout"), config.validation_samples // 2,
            progress=progress)
    if config.mode == "lora":
        merge_lora(trainable.model)
    model = trainable.model.cpu().eval()
    folder = Path(folder)
    part = folder.with_name(folder.name + ".part")
    shutil.rmtree(part, ignore_errors=True)
    dtype = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}[config.export_dtype]
    save_segmenter_model(model, trainable.tokenizer, part, trainable.adapters.cpu(), dtype=dtype)
    threshold = calibration["score_threshold"]
    meta = {"trained": True, "score_threshold": threshold, "birth_threshold": round(min(threshold + BIRTH_MARGIN, 0.95), 2),
            "calibration": calibration,
            "training": training if training is not None else json.loads(config.model_dump_json())}
    if calibration.get("presence_threshold") is not None:
        meta["presence_threshold"] = calibration["presence_threshold"]  # before the birth bar: tracking uses it too
    (part / MODEL_META_FILE).write_text(json.dumps(meta, indent=1))
    if config.validation_samples and config.data == "world" and config.birth_calibration_videos:
        # the birth bar is chosen by tracking clips with the exported model itself, as users load it
        birth = choose_birth_threshold(load_segmenter(str(part), device=config.device),
                                       videos=config.birth_calibration_videos, frames=config.birth_calibration_frames,
                                       negative_share=config.calibration_negative_share, progress=progress,
                                       crop_margins=[None, *config.box_crop_margins])
        meta["birth_threshold"] = birth["birth_threshold"]
        if birth["box_crop_margin"] is not None:
            meta["box_crop_margin"] = birth["box_crop_margin"]
        calibration["birth"] = birth
        (part / MODEL_META_FILE).write_text(json.dumps(meta, indent=1))
    if config.validation_samples and config.data == "world" and config.spatial_calibration_images:
        # rules or the model alone for "the leftmost X": chosen by segmenting images with the exported model
        spatial = choose_spatial_rules(load_segmenter(str(part), device=config.device),
                                       images=config.spatial_calibration_images, progress=progress)
        meta["spatial_rules"] = spatial["spatial_rules"]
        calibration["spatial_rules"] = spatial
        (part / MODEL_META_FILE).write_text(json.dumps(meta, indent=1))
    shutil.rmtree(folder, ignore_errors=True)
    part.rename(folder)
    return folder
