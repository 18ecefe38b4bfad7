"""Loading a segmenter: the built-in tiny model, or SAM3 weights in transformers format (folder or hub id)."""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path

import torch
from transformers import AutoConfig, AutoTokenizer, Sam3VideoConfig, Sam3VideoModel

from samstream.errors import ModelLoadError
from samstream.model.adapter_io import ADAPTERS_FILE, load_adapters, save_adapters
from samstream.model.extensions import has_extensions, load_with_extensions
from samstream.model.precision import bf16_unsupported_reason
from samstream.model.sam3 import Sam3Segmenter
from samstream.model.sam3i import Sam3IAdapters
from samstream.model.segmenter import ModelInfo
from samstream.model.zoom import ZoomRescore
from samstream.model.tiny import TINY_IMAGE_SIZE, UNTRAINED_BIRTH_THRESHOLD, UNTRAINED_SCORE_THRESHOLD, build_tiny_model

log = logging.getLogger(__name__)

BUILTIN_TINY = "builtin:tiny-random"  # random weights from a fixed seed: fast, for tests of the plumbing
BUILTIN_SMALL = "builtin:small"  # the small model the project trains and ships (docs/model-card.md)
SHIPPED_FOLDER = Path(__file__).parent / "weights" / "small"
MODEL_META_FILE = "samstream.json"  # beside config.json in folders samstream trained: thresholds, training run
SAM3_SCORE_THRESHOLD = 0.5
SAM3_BIRTH_THRESHOLD = 0.7


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError as e:
        raise ModelLoadError(f"unknown device {device!r}: use cpu, cuda, cuda:N or auto") from e
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError(f"device {device!r} asked for, but this machine has no CUDA GPU")
    return resolved


PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def set_image_size(config: Sam3VideoConfig, image_size: int) -> Sam3VideoConfig:
    """Run a SAM3 video config at another square input size (SAM3 supports e.g. 560 and 1008): the detector's
    backbone and feature sizes, the tracker's prompt encoder, memory RoPE and mask sizes all follow."""
    patch = config.detector_config.vision_config.backbone_config.patch_size
    if image_size <= 0 or image_size % patch:
        raise ModelLoadError(f"image size {image_size} must be a positive multiple of the patch size {patch}")
    grid = image_size // patch
    vision = config.detector_config.vision_config
    vision.backbone_config.image_size = image_size
    vision.backbone_feature_sizes = [[4 * grid, 4 * grid], [2 * grid, 2 * grid], [grid, grid]]
    config.tracker_config.image_size = image_size  # its setter updates the tracker's own sizes
    config.tracker_config.vision_config.backbone_config.image_size = image_size
    config.low_res_mask_size = 4 * grid
    return config


def load_segmenter(model: str | None = None, device: str = "auto", adapters: str | None = None,
                   precision: str = "auto", image_size: int | None = None, compile: bool = False,
                   spatial_rules: bool | None = None) -> Sam3Segmenter:
    """`model`: None or 'builtin:tiny-random' for the built-in tiny model, else a local folder or hub id of a
    `sam3_video` checkpoint in transformers format (e.g. 'facebook/sam3').
    `adapters`: a SAM3-I adapter file (ours, see `samstream convert-checkpoint`); by default the model folder's
    `sam3i_adapters.safetensors` when present, else identity adapters (plain SAM3 behaviour at every level).
    `precision`: fp32, bf16 autocast (CUDA, or a CPU with native bf16), fp16 autocast (CUDA), or auto (bf16 on
    CUDA, fp32 on CPU).
    `image_size`: input size override; `compile`: torch.compile the vision backbone (CUDA).
    `spatial_rules`: answer side / size-rank / relation selectors by geometry (samstream.model.spatial); None: as the
    folder's samstream.json says (off where it says nothing)."""
    torch_device = resolve_device(device)
    autocast = autocast_dtype(precision, torch_device)
    model = model or default_model()
    if model == BUILTIN_TINY:
        network, tokenizer = build_tiny_model(image_size=image_size)
        name, trained = BUILTIN_TINY, False
        threshold, birth = UNTRAINED_SCORE_THRESHOLD, UNTRAINED_BIRTH_THRESHOLD
        box_crop = zoom = presence = None
        rules = False
    else:
        name = model
        if model == BUILTIN_SMALL:
            model = str(shipped_folder())
        network, tokenizer = _from_pretrained(model, image_size)
        trained = True
        threshold, birth = SAM3_SCORE_THRESHOLD, SAM3_BIRTH_THRESHOLD
        meta = read_model_meta(Path(model).expanduser())
        if meta:
            threshold = float(meta.get("score_threshold", threshold))
            birth = float(meta.get("birth_threshold", birth))
            trained = bool(meta.get("trained", True))
        meta_file = Path(model).expanduser() / MODEL_META_FILE
        box_crop = _box_crop_margin(meta, meta_file)
        zoom = _zoom_rescore(meta, meta_file)
        presence = _presence_threshold(meta, meta_file)
        rules = _spatial_rules(meta, meta_file)
        if autocast is not None and tracker_iou_untrained(meta):
            log.warning("%s: its tracker was trained without its IoU predictions (track_iou, samstream before "
                        "session 36), so under %s autocast it may propagate an untrained mask candidate; run it "
                        "with --precision fp32 or retrain its track stage (docs/finetuning.md, Notes and limits)",
                        name, precision if precision != "auto" else str(autocast).removeprefix("torch."))
        bundled = Path(model).expanduser() / ADAPTERS_FILE
        if adapters is None and bundled.is_file():
            adapters = str(bundled)
    network = network.to(torch_device)
    loaded = load_adapters(network.detector_model, adapters) if adapters else None
    image_size = network.config.detector_config.vision_config.backbone_config.image_size
    parameters = sum(p.numel() for p in network.parameters())
    if loaded is not None:
        parameters += sum(p.numel() for p in loaded.parameters())
    info = ModelInfo(name=name, parameters=parameters, trained=trained, score_threshold=threshold,
                     birth_threshold=birth, image_size=image_size, device=str(torch_device),
                     adapters=adapters or "identity (SAM3 behaviour at every level)", box_crop_margin=box_crop,
                     zoom_rescore=zoom, presence_threshold=presence,
                     spatial_rules=rules if spatial_rules is None else spatial_rules)
    segmenter = Sam3Segmenter(network, tokenizer, info, adapters=loaded, autocast_dtype=autocast)
    if compile:
        if torch_device.type != "cuda":
            raise ModelLoadError("--compile needs a CUDA device")
        network.detector_model.vision_encoder = torch.compile(network.detector_model.vision_encoder)
    return segmenter


def shipped_folder() -> Path:
    """The folder of `builtin:small`; a clear error when the package was installed without it."""
    if not (SHIPPED_FOLDER / "config.json").is_file():
        raise ModelLoadError(f"{BUILTIN_SMALL} is not installed ({SHIPPED_FOLDER} is missing): "
                             "reinstall samstream, or train it with `samstream train configs/small.toml`")
    return SHIPPED_FOLDER


def local_folder(model: str) -> Path:
    """Where a model named on the command line lies on disk: the shipped folder for `builtin:small`, else the
    path as given (which may not exist: then it is a hub id)."""
    return shipped_folder() if model == BUILTIN_SMALL else Path(model).expanduser()


def default_model() -> str:
    """The shipped small model when installed, else the random tiny one."""
    return BUILTIN_SMALL if (SHIPPED_FOLDER / "config.json").is_file() else BUILTIN_TINY


def read_model_meta(folder: Path) -> dict:
    """A model folder's samstream.json ({} where it has none); a clear error where it is not JSON."""
    file = folder / MODEL_META_FILE
    if not file.is_file():
        return {}
    try:
        return json.loads(file.read_text())
    except json.JSONDecodeError as e:
        raise ModelLoadError(f"{file}: not JSON ({e})") from None


def _optional_number(meta: dict, key: str, low: float, high: float, file: Path) -> float | None:
    """`key` of a model's samstream.json: None (absent or null: off) or a number in [low, high]."""
    value = meta.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise ModelLoadError(f"{file}: {key} must be null or a number in [{low:g}, {high:g}], not {value!r}")
    return float(value)


def _box_crop_margin(meta: dict, file: Path) -> float | None:
    """`box_crop_margin`: a share of the image each mask is cut to around its box, or None (masks whole)."""
    return _optional_number(meta, "box_crop_margin", 0, 0.5, file)


def _presence_threshold(meta: dict, file: Path) -> float | None:
    """`presence_threshold`: the presence probability an image needs for any detection, or None (no gate)."""
    return _optional_number(meta, "presence_threshold", 0, 1, file)


def tracker_iou_untrained(meta: dict) -> bool:
    """Whether samstream.json records a training run that trained the memory tracker but not the SAM head's IoU
    predictions, which pick among its mask candidates: they then tie, and bf16 / fp16 rounding can pick another
    candidate than the fp32 one the tracker learned (docs/finetuning.md, Notes and limits)."""
    training = meta.get("training")
    if not isinstance(training, dict):
        return False  # not trained by `samstream train` (SAM3 checkpoints train their IoU head)
    default = bool(training.get("train_tracker"))
    stages = [stage for stage in training.get("stages") or [] if isinstance(stage, dict)]
    tracked = any(default if stage.get("train_tracker") is None else stage["train_tracker"] for stage in stages) \
        if stages else default
    weights = training.get("loss_weights") or {}
    return tracked and training.get("data", "world") == "world" and not weights.get("track_iou")


def _spatial_rules(meta: dict, file: Path) -> bool:
    """`spatial_rules`: true or false (absent: false), chosen when the model was exported."""
    value = meta.get("spatial_rules", False)
    if not isinstance(value, bool):
        raise ModelLoadError(f"{file}: spatial_rules must be true or false, not {value!r}")
    return value


def _zoom_rescore(meta: dict, file: Path) -> ZoomRescore | None:
    """`zoom_rescore` of a model's samstream.json: null (off) or an object of `ZoomRescore` fields."""
    value = meta.get("zoom_rescore")
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ModelLoadError(f"{file}: zoom_rescore must be null or an object, not {value!r}")
    try:
        return ZoomRescore(**value)
    except (TypeError, ValueError) as e:
        raise ModelLoadError(f"{file}: zoom_rescore: {e}") from None


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype `precision` means on `device` (None: fp32); a clear error where it cannot run."""
    if precision == "auto":
        return torch.bfloat16 if device.type == "cuda" else None
    if precision not in PRECISIONS:
        raise ModelLoadError(f"unknown precision {precision!r}: use auto, {', '.join(PRECISIONS)}")
    if precision == "bf16" and (reason := bf16_unsupported_reason(device)) is not None:
        raise ModelLoadError(f"precision bf16: {reason}")
    if precision == "fp16" and device.type != "cuda":
        raise ModelLoadError(f"precision fp16 needs a CUDA device; use fp32 or bf16 on {device.type}")
    return PRECISIONS[precision]


def _from_pretrained(source: str, image_size: int | None = None):
    looks_local = source.startswith((".", "/", "~")) or Path(source).expanduser().exists()
    path = Path(source).expanduser()
    if looks_local and not path.is_dir():
        raise ModelLoadError(f"model folder {source} does not exist")
    where = str(path) if looks_local else source
    try:
        config = AutoConfig.from_pretrained(where)
    except (OSError, ValueError) as e:
        raise ModelLoadError(f"cannot load a model config from {source}: {_first_line(e)}") from e
    if config.model_type != "sam3_video":
        raise ModelLoadError(
            f"{source} holds a {config.model_type!r} model; samstream needs a 'sam3_video' checkpoint "
            "(detector + tracker), e.g. facebook/sam3"
        )
    if image_size is not None:
        set_image_size(config, image_size)
    try:
        # fp32 compute whatever the stored dtype (the shipped model is stored in fp16); CUDA runs use autocast.
        network = load_sam3_video(where, config)
        tokenizer = AutoTokenizer.from_pretrained(where)
    except (OSError, ValueError, RuntimeError) as e:
        raise ModelLoadError(f"cannot load weights from {source}: {_first_line(e)}") from e
    return network.eval(), tokenizer


def load_sam3_video(where: str, config=None) -> Sam3VideoModel:
    """A `sam3_video` model from a folder or hub id in fp32 (whatever the stored dtype; CUDA runs use autocast),
    with the samstream parts its config names, if any (small models' conv stem and box prior: model/extensions.py)."""
    config = config if config is not None else AutoConfig.from_pretrained(where)
    if has_extensions(config):
        return load_with_extensions(where, config)
    return Sam3VideoModel.from_pretrained(where, config=config, dtype=torch.float32)


def save_segmenter_model(model: Sam3VideoModel, tokenizer, folder: str | Path,
                         adapters: Sam3IAdapters | None = None, dtype: torch.dtype | None = None) -> None:
    """Write a model + tokenizer (+ SAM3-I adapters) folder that `load_segmenter(folder)` reads back. `dtype`
    stores the weights in another precision (fp16 halves the shipped model; it loads back as fp32)."""
    if dtype is not None:
        model = copy.deepcopy(model).to(dtype)
        adapters = copy.deepcopy(adapters).to(dtype) if adapters is not None else None
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    if adapters is not None:
        save_adapters(adapters, Path(folder) / ADAPTERS_FILE)


def _first_line(error: Exception) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0][:300]


__all__ = ["BUILTIN_SMALL", "BUILTIN_TINY", "default_model", "TINY_IMAGE_SIZE", "load_segmenter", "resolve_device", "save_segmenter_model"]
