"""Resumable training checkpoints in safetensors: the trained parameters, the optimizer's state, and a small
JSON of counters. Only trainable parameters are stored (adapters-only runs on big models stay small)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

PARAMS_FILE = "trainable.safetensors"
OPTIMIZER_FILE = "optimizer.safetensors"
STATE_FILE = "trainer_state.json"


def save_checkpoint(folder: Path, module: nn.Module, optimizer: torch.optim.Optimizer, state: dict,
                    stored: Iterable[str] | None = None) -> Path:
    """Write checkpoint `folder` atomically (a .part folder renamed when complete). `stored`: the parameters to
    store (default: those that require a gradient now)."""
    folder = Path(folder)
    part = folder.with_name(folder.name + ".part")
    shutil.rmtree(part, ignore_errors=True)
    part.mkdir(parents=True)
    names = {id(p): n for n, p in module.named_parameters()}
    stored = set(stored) if stored is not None else {n for n, p in module.named_parameters() if p.requires_grad}
    params = {n: p.detach().contiguous().cpu() for n, p in module.named_parameters() if n in stored}
    save_file(params, part / PARAMS_FILE)
    tensors: dict[str, torch.Tensor] = {}
    for group in optimizer.param_groups:
        for p in group["params"]:
            for key, value in optimizer.state.get(p, {}).items():
                tensors[f"{names[id(p)]}::{key}"] = torch.as_tensor(value).detach().contiguous().cpu()
    save_file(tensors, part / OPTIMIZER_FILE)
    (part / STATE_FILE).write_text(json.dumps(state, indent=1))
    if folder.exists():
        shutil.rmtree(folder)
    part.rename(folder)
    return folder


def load_checkpoint(folder: Path, module: nn.Module, optimizer: torch.optim.Optimizer | None) -> dict:
    folder = Path(folder)
    params = load_file(folder / PARAMS_FILE)
    named = dict(module.named_parameters())
    missing = [n for n in params if n not in named]
    if missing:
        raise ValueError(f"{folder}: checkpoint parameters not in this model: {missing[:3]}")
    with torch.no_grad():
        for name, value in params.items():
            named[name].copy_(value.to(named[name].device))
    if optimizer is not None and (folder / OPTIMIZER_FILE).exists():
        tensors = load_file(folder / OPTIMIZER_FILE)
        for name, p in named.items():
            entries = {key.split("::", 1)[1]: v for key, v in tensors.items() if key.split("::", 1)[0] == name}
            if entries:
                optimizer.state[p] = {k: (v.to(p.device) if k != "step" else v) for k, v in entries.items()}
    return json.loads((folder / STATE_FILE).read_text())


def latest_checkpoint(out: Path) -> Path | None:
    folders = sorted((Path(out) / "checkpoints").glob("step-*[0-9]"))
    return folders[-1] if folders else None
