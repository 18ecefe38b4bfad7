"""SAM3-I adapter weights on disk: our safetensors file, and conversion from official SAM3-I checkpoints.

Our file holds `Sam3IAdapters.state_dict()` (keys like `text.3.adapter1.down_proj.weight`), with the adapter
config in the safetensors metadata. Official SAM3-I checkpoints are full state dicts in the
facebookresearch/sam3 module layout; `convert_official` keeps only their adapter keys and renames them:

| official key (any prefix)                                   | ours                              |
|-------------------------------------------------------------|-----------------------------------|
| `...resblocks.{i}.{adapter1,adapter12,adapter2}.{rest}`     | `text.{i}.{adapter}.{rest}`       |
| `...encoder.layers.{i}.{adapter}.{down_proj,up_proj,norm}.*` | `encoder.{i}.{adapter}.*`         |
| `...decoder.layers.{i}.{adapter}.{down_proj,up_proj,norm}.*` | `decoder.{i}.{adapter}.*`         |
| `...segmentation_head.mask_predictor_{adapter1,adapter2}.mask_embed.layers.{j}.*` | `mask_embedder.{adapter}.layers.{j}.*` |

It refuses, listing the keys, when an adapter key maps nowhere or an expected key is missing: never a
partial load.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from transformers import Sam3Model

from samstream.errors import ModelLoadError
from samstream.model.sam3i import AdapterConfig, Sam3IAdapters

ADAPTERS_FILE = "sam3i_adapters.safetensors"
_CONFIG_KEY = "samstream.adapter_config"

_OFFICIAL_RULES: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"(?:^|\.)resblocks\.(\d+)\.(adapter1|adapter12|adapter2)\.(.+)$"), r"text.\1.\2.\3"),
    (re.compile(r"(?:^|\.)encoder\.layers\.(\d+)\.(adapter1|adapter12|adapter2)\.(.+)$"), r"encoder.\1.\2.\3"),
    (re.compile(r"(?:^|\.)decoder\.layers\.(\d+)\.(adapter1|adapter12|adapter2)\.(.+)$"), r"decoder.\1.\2.\3"),
    (re.compile(r"(?:^|\.)segmentation_head\.mask_predictor_(adapter1|adapter2)\.mask_embed\.(.+)$"),
     r"mask_embedder.\1.\2"),
]
_ADAPTER_WORD = re.compile(r"adapter")


def save_adapters(adapters: Sam3IAdapters, path: str | Path) -> None:
    state = {k: v.detach().contiguous().cpu() for k, v in adapters.state_dict().items()}
    config = {"bottleneck": adapters.config.bottleneck, "text_heads": adapters.config.text_heads}
    save_file(state, str(path), metadata={_CONFIG_KEY: json.dumps(config)})


def load_adapters(detector: Sam3Model, path: str | Path) -> Sam3IAdapters:
    """Adapters for `detector` from our safetensors file; a clear `ModelLoadError` naming the key otherwise."""
    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"{path}: no such adapter file")
    try:
        state = load_file(str(path))
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
    except (SafetensorError, OSError, ValueError) as e:
        raise ModelLoadError(f"{path}: not a readable safetensors file ({e})") from e
    config = AdapterConfig(**json.loads(metadata.get(_CONFIG_KEY, "{}")))
    adapters = Sam3IAdapters.fresh(detector, config)
    _check_and_load(adapters, state, str(path))
    return adapters


def _check_and_load(adapters: Sam3IAdapters, state: dict[str, torch.Tensor], source: str) -> None:
    expected = adapters.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing keys {_few(missing)}")
        if unexpected:
            parts.append(f"unexpected keys {_few(unexpected)}")
        raise ModelLoadError(f"{source}: does not fit this model: " + "; ".join(parts))
    for key, tensor in state.items():
        if tuple(tensor.shape) != tuple(expected[key].shape):
            raise ModelLoadError(
                f"{source}: key {key!r} has shape {tuple(tensor.shape)} but this model needs {tuple(expected[key].shape)}"
            )
    adapters.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()})


def convert_official(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """(our adapter state dict, adapter keys that matched no rule) from an official SAM3-I state dict."""
    converted: dict[str, torch.Tensor] = {}
    unmatched: list[str] = []
    for key, tensor in state.items():
        for pattern, replacement in _OFFICIAL_RULES:
            match = pattern.search(key)
            if match:
                converted[match.expand(replacement)] = tensor
                break
        else:
            if _ADAPTER_WORD.search(key):
                unmatched.append(key)
    return converted, unmatched


def convert_checkpoint(src: str | Path, dst: str | Path, detector: Sam3Model, config: AdapterConfig = AdapterConfig()) -> int:
    """Official SAM3-I checkpoint (.pt/.pth or .safetensors) -> our adapter file for `detector`. Returns the
    number of tensors written; writes nothing unless every adapter key maps and every expected key exists."""
    src, dst = Path(src), Path(dst)
    if not src.is_file():
        raise ModelLoadError(f"{src}: no such checkpoint")
    try:
        if src.suffix == ".safetensors":
            state = load_file(str(src))
        else:
            state = torch.load(str(src), map_location="cpu", weights_only=True)
    except (SafetensorError, OSError, RuntimeError, ValueError, EOFError) as e:
        raise ModelLoadError(f"{src}: not a readable checkpoint ({str(e).splitlines()[0] if str(e) else e})") from e
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]  # training checkpoints wrap the weights
    converted, unmatched = convert_official(state)
    if unmatched:
        raise ModelLoadError(f"{src}: {len(unmatched)} adapter keys match no known layout: {_few(unmatched)}")
    adapters = Sam3IAdapters.fresh(detector, config)
    _check_and_load(adapters, converted, str(src))
    tmp = dst.with_name(dst.name + ".part")
    save_adapters(adapters, tmp)
    tmp.replace(dst)
    return len(converted)


def _few(keys: list[str], limit: int = 8) -> str:
    shown = ", ".join(keys[:limit])
    return f"[{shown}{f', ... ({len(keys) - limit} more)' if len(keys) > limit else ''}]"
