"""Loading a segmenter: the built-in tiny model, or SAM3 weights in transformers format (folder or hub id)."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from transformers import AutoConfig, AutoTokenizer, Sam3VideoModel

from samstream.errors import ModelLoadError
from samstream.model.adapter_io import ADAPTERS_FILE, load_adapters, save_adapters
from samstream.model.sam3 import Sam3Segmenter
from samstream.model.sam3i import Sam3IAdapters
from samstream.model.segmenter import ModelInfo
from samstream.model.tiny import TINY_IMAGE_SIZE, UNTRAINED_BIRTH_THRESHOLD, UNTRAINED_SCORE_THRESHOLD, build_tiny_model

log = logging.getLogger(__name__)

BUILTIN_TINY = "builtin:tiny-random"
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


def load_segmenter(model: str | None = None, device: str = "auto", adapters: str | None = None) -> Sam3Segmenter:
    """`model`: None or 'builtin:tiny-random' for the built-in tiny model, else a local folder or hub id of a
    `sam3_video` checkpoint in transformers format (e.g. 'facebook/sam3').
    `adapters`: a SAM3-I adapter file (ours, see `samstream convert-checkpoint`); by default the model folder's
    `sam3i_adapters.safetensors` when present, else identity adapters (plain SAM3 behaviour at every level)."""
    torch_device = resolve_device(device)
    if model in (None, BUILTIN_TINY):
        network, tokenizer = build_tiny_model()
        name, trained = BUILTIN_TINY, False
        threshold, birth = UNTRAINED_SCORE_THRESHOLD, UNTRAINED_BIRTH_THRESHOLD
    else:
        network, tokenizer = _from_pretrained(model)
        name, trained = model, True
        threshold, birth = SAM3_SCORE_THRESHOLD, SAM3_BIRTH_THRESHOLD
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
                     adapters=adapters or "identity (SAM3 behaviour at every level)")
    return Sam3Segmenter(network, tokenizer, info, adapters=loaded)


def _from_pretrained(source: str):
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
    try:
        network = Sam3VideoModel.from_pretrained(where)
        tokenizer = AutoTokenizer.from_pretrained(where)
    except (OSError, ValueError, RuntimeError) as e:
        raise ModelLoadError(f"cannot load weights from {source}: {_first_line(e)}") from e
    return network.eval(), tokenizer


def save_segmenter_model(model: Sam3VideoModel, tokenizer, folder: str | Path,
                         adapters: Sam3IAdapters | None = None) -> None:
    """Write a model + tokenizer (+ SAM3-I adapters) folder that `load_segmenter(folder)` reads back."""
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    if adapters is not None:
        save_adapters(adapters, Path(folder) / ADAPTERS_FILE)


def _first_line(error: Exception) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0][:300]


__all__ = ["BUILTIN_TINY", "TINY_IMAGE_SIZE", "load_segmenter", "resolve_device", "save_segmenter_model"]
