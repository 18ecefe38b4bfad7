"""Training configs: a TOML file (configs/*.toml) read into a validated `TrainConfig`."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from samstream.errors import ConfigError
from samstream.model.levels import LEVELS
from samstream.train.losses import LossWeights


class Stage(BaseModel):
    """One stage of training: `steps` steps drawing instructions of these levels (weights). SAM3-I trains
    simple, then complex, then joint; the small model trains all levels at once."""

    model_config = ConfigDict(extra="forbid")
    name: str = "joint"
    steps: int = Field(gt=0)
    # "detect": instructions -> detector (+ tracker) losses; "objects" (world data): the backbone alone learns to
    # name each visible object's shape, colour and texture from its mask-pooled features (train/object_batches.py),
    # a cheap first stage for a backbone trained from scratch
    task: Literal["detect", "objects"] = "detect"
    mosaic_rate: float = Field(0.5, ge=0, le=1)  # objects stages: the share of frames shown as mosaics of crops
    levels: dict[str, float] = Field(default_factory=lambda: {level: 1.0 for level in LEVELS})
    freeze: list[str] = Field(default_factory=list)  # parameter-name prefixes held fixed in this stage
    # train memory propagation in this stage (None: the config's `train_tracker`); a detector-only stage skips the
    # tracker's forward and backward, about half of a small-model step
    train_tracker: bool | None = None
    # restart the learning-rate warmup and cosine decay over this stage's steps (e.g. a last stage that trains
    # the tracker on a fixed detector would otherwise inherit the run's decayed rate)
    own_schedule: bool = False
    # per-stage overrides (None: the config's value); e.g. a short last stage that recalibrates detection scores
    # with fewer negatives and a lower learning rate
    negative_rate: float | None = Field(None, ge=0, lt=1)
    negative_queries: bool | None = None
    zoom_rate: float | None = Field(None, ge=0, le=1)
    # e.g. 0 in a last scores stage, so it ranks the named object above the frame's others undiluted
    every_object_rate: float | None = Field(None, ge=0, le=1)
    lr_scale: float = Field(1.0, gt=0)  # this stage's learning rate (warmup, decay and all) x this
    # e.g. "fp32" for a tracker stage of a bf16 run, as the committed configs do (before session 36 a tracker trained
    # under bf16 autocast picked another mask candidate than fp32 does: docs/finetuning.md, "Notes and limits")
    precision: Literal["fp32", "bf16"] | None = None

    @field_validator("levels")
    @classmethod
    def _known_levels(cls, value: dict[str, float]) -> dict[str, float]:
        unknown = set(value) - set(LEVELS)
        if unknown or not any(v > 0 for v in value.values()):
            raise ValueError(f"levels must weight some of {', '.join(LEVELS)} (got {value})")
        return value


# options only the procedural world can serve, and why
WORLD_ONLY_OPTIONS = {"palette_rate": "draws scenes of the procedural world",
                      "every_object_rate": "asks for every object of the procedural world's frames",
                      "checkpoint_probes": "measures the model on the procedural world's held-out frames"}


class TrainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    # what to train
    model: str = "small"  # "small" (the first release's size), "small-fine" (a 16x16 grid), "small-stem" (small-fine
    # with a convolutional patch embedding), "small-stem-box" (+ a box prior in the mask head), "small-stem-rank" (+ a
    # rank scorer of the query scores), "tiny", "tiny-stem", "tiny-box" or "tiny-rank" (for tests): a new model; else
    # "builtin:small" (the shipped weights), a sam3_video folder or a hub id to start from
    tokenizer_scenes: int = Field(1500, gt=0)  # new models: world scenes whose instructions train the BPE
    # new models: a word is one token wherever it stands, first or not (model/tokenizer.build_bpe_tokenizer)
    tokenizer_prefix_space: bool = False
    # how the text encoder starts (setup.identity_text_start): new models default to CLIP's start; a loaded model
    # keeps its own unless "identity" restarts it (e.g. the shipped model's, which ignores its instruction)
    text_init: Literal["clip", "identity"] | None = None
    # new models: where the DETR queries start. "sam3": transformers' init (near-identical vectors, every reference
    # box at the frame's centre); "spread": boxes tiling the frame, unit-variance vectors, no weight decay on
    # either (model/queries.py), so the queries start as different instances
    query_init: Literal["sam3", "spread"] = "sam3"
    mode: Literal["full", "adapters", "lora"] = "full"  # adapters: SAM3 frozen, SAM3-I adapters only
    lora_rank: int = 16  # SAM3-I's LoRA alternative: r=16, alpha=32
    lora_alpha: int = 32
    train_tracker: bool = True  # also train memory propagation (world videos only)
    # data
    data: str = "world"  # "world" (rendered on the fly) or a COCO-format annotation file
    images_root: str | None = None  # COCO images folder (default: the annotation file's folder)
    negative_rate: float = Field(0.15, ge=0, lt=1)
    instructions_per_frame: int = Field(1, ge=1, le=8)  # world data: instructions asked of each frame (SAM3: many)
    # world data: the share of frames asked a contrast pair, one template filled twice with one word swapped ("the
    # red circle" / "the blue circle"; TemplateGenerator.contrast). Needs instructions_per_frame >= 2
    contrast_rate: float = Field(0.0, ge=0, le=1)
    contrast_shape_share: float = Field(0.5, ge=0, le=1)  # ...of which this share swap the shape, the rest the colour
    # world data: the share of training scenes whose objects share one or two colours, so that shape words, not
    # colour words alone, have to pick the targets (make_scene's `palette`); validation keeps the usual scenes
    palette_rate: float = Field(0.0, ge=0, le=1)
    # the share of training instructions given word noise: some function words dropped, random strings inserted
    # (train/word_noise.py), so the content words, not the templates' scaffolding, are what the model reads
    word_noise_rate: float = Field(0.0, ge=0, le=1)
    # world data: the share of training frames asked one more instruction, for every visible object at once ("all
    # objects"; train/every_object.py), so that queries learn to be instances, not copies of one mask
    every_object_rate: float = Field(0.0, ge=0, le=1)
    max_gap: int = Field(6, ge=1)  # tracker pairs are 1..max_gap frames apart
    loss_weights: LossWeights = Field(default_factory=LossWeights)
    negative_queries: bool = False  # negatives also teach query scores 0 (SAM3: presence only)
    # world data: the share of training pairs shown as a zoomed-in view centred on one object, whose radius then
    # fills `zoom_fill` (a range) of the view's short side: objects many patches wide, where a small ViT learns
    # shapes (docs/model-card.md, "Session 15"); 0 = whole frames only, as in use
    zoom_rate: float = Field(0.0, ge=0, le=1)
    zoom_fill: tuple[Annotated[float, Field(gt=0, le=0.5)], Annotated[float, Field(gt=0, le=0.5)]] = (0.25, 0.45)
    # optimisation
    stages: list[Stage] = Field(default_factory=lambda: [Stage(steps=1000)])
    batch_pairs: int = Field(8, gt=0)  # frame pairs per step (two frames each: 2x images)
    lr: float = Field(8e-4, gt=0)
    min_lr_ratio: float = Field(0.05, ge=0, le=1)  # cosine decay to lr * this
    warmup_steps: int = Field(200, ge=0)
    weight_decay: float = 0.05
    grad_clip: float = 1.0
    seed: int = 0
    # machine
    device: str = "auto"
    precision: Literal["fp32", "bf16"] = "fp32"  # bf16: autocast (CUDA, or a CPU with native bf16: model/precision.py)
    gradient_checkpointing: bool = False
    threads: int | None = None  # CPU threads (default: torch's)
    # output
    out: str = "runs/train"
    checkpoint_every: int = Field(500, gt=0)
    log_every: int = Field(20, gt=0)
    validation_samples: int = Field(256, ge=0)  # held-out samples to choose the score threshold on
    # at each checkpoint of a stage that trains the detector, log text reliance and query separation over this many held-out
    # samples (0: off; 64 costs ~20 s for the small model on 2 cores): whether the words take hold mid-run
    checkpoint_probes: int = Field(0, ge=0)
    # how the threshold weighs the two kinds of sample: (1 - share) x gIoU on positives + share x no-target accuracy
    calibration_negative_share: float = Field(0.25, ge=0, le=1)
    birth_calibration_videos: int = Field(8, ge=0)  # world data: clips the birth threshold is chosen on (0: a margin)
    birth_calibration_frames: int = Field(30, ge=2)  # ...and their length
    # world data: held-out images on which the export chooses whether spatial selectors are answered by rule
    # (train/spatial_choice.py; 0: off, the model alone)
    spatial_calibration_images: int = Field(100, ge=0)
    # world data: box-crop margins (shares of the image) the same clips also try, against not cropping; the best
    # goes to samstream.json as `box_crop_margin` (docs/finetuning.md). Empty: masks are never cropped (SAM3)
    box_crop_margins: list[Annotated[float, Field(ge=0, le=0.5)]] = Field(default_factory=list, max_length=4)
    export_dtype: Literal["fp32", "fp16", "bf16"] = "fp32"  # precision the exported weights are stored in

    @model_validator(mode="after")
    def _dense_needs_world(self) -> TrainConfig:
        if self.loss_weights.dense > 0 and self.data != "world":
            raise ValueError("loss_weights.dense names the world's shapes, colours and textures: it needs "
                             "data = \"world\"")
        return self

    @model_validator(mode="after")
    def _spread_needs_new_model(self) -> TrainConfig:
        from samstream.train.setup import NEW_MODEL_SIZES  # setup imports this module
        if self.query_init == "spread" and self.model not in NEW_MODEL_SIZES:
            raise ValueError(f'query_init = "spread" starts new queries; {self.model} brings trained ones '
                             f"(drop query_init to keep them)")
        return self

    @model_validator(mode="after")
    def _contrast_needs_pairs(self) -> TrainConfig:
        if self.contrast_rate > 0 and (self.data != "world" or self.instructions_per_frame < 2):
            raise ValueError("contrast_rate asks each frame two instructions of the procedural world: it needs "
                             "data = \"world\" and instructions_per_frame >= 2")
        return self

    @model_validator(mode="after")
    def _world_options_need_world(self) -> TrainConfig:
        for name, what in WORLD_ONLY_OPTIONS.items():
            staged = any(getattr(stage, name, None) for stage in self.stages)
            if (getattr(self, name) > 0 or staged) and self.data != "world":
                raise ValueError(f"{name} {what}: it needs data = \"world\"")
        return self

    @model_validator(mode="after")
    def _objects_stages(self) -> TrainConfig:
        if any(stage.task == "objects" for stage in self.stages):
            if self.data != "world":
                raise ValueError("task = \"objects\" names the world's shapes, colours and textures: it needs "
                                 "data = \"world\"")
            if self.stages[-1].task == "objects":
                raise ValueError("the last stage must detect (the export calibrates the detector's scores)")
        return self

    @model_validator(mode="after")
    def _zoom_needs_world(self) -> TrainConfig:
        zooms = self.zoom_rate > 0 or any(stage.zoom_rate for stage in self.stages)
        if zooms and self.data != "world":
            raise ValueError("zoom_rate renders zoomed-in views of the procedural world: it needs data = \"world\"")
        if self.zoom_fill[0] > self.zoom_fill[1]:
            raise ValueError(f"zoom_fill must be a (low, high) range (got {list(self.zoom_fill)})")
        return self

    @property
    def total_steps(self) -> int:
        return sum(stage.steps for stage in self.stages)

    def negative_rate_of(self, stage: Stage) -> float:
        return self.negative_rate if stage.negative_rate is None else stage.negative_rate

    def precision_of(self, stage: Stage) -> str:
        return self.precision if stage.precision is None else stage.precision

    def negative_queries_of(self, stage: Stage) -> bool:
        return self.negative_queries if stage.negative_queries is None else stage.negative_queries

    def zoom_rate_of(self, stage: Stage) -> float:
        return self.zoom_rate if stage.zoom_rate is None else stage.zoom_rate

    def every_object_rate_of(self, stage: Stage) -> float:
        return self.every_object_rate if stage.every_object_rate is None else stage.every_object_rate


def load_config(path: str | Path, overrides: dict | None = None) -> TrainConfig:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"training config {path} does not exist")
    try:
        raw = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: not valid TOML ({e})") from None
    raw.update({k: v for k, v in (overrides or {}).items() if v is not None})
    try:
        return TrainConfig(**raw)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        message = first["msg"].removeprefix("Value error, ")
        raise ConfigError(f"{path}: {where}: {message}" if where else f"{path}: {message}") from None
