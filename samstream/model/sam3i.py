"""SAM3-I: instruction-aware cascaded adapters on a frozen transformers `Sam3Model`.

Where the adapters sit (see ../shared facts in docs/model.md):
- text encoder, every block: `adapter1` (S-adapter, simple) and `adapter12` -> `adapter2` (C-adapter chain,
  complex). Each is a pre-norm multi-head self-attention plus a pre-norm d->64->d GELU bottleneck, both
  residual. It acts on the residual stream after the block's attention; the block's MLP reads the stream
  from before the adapter (as in SAM3-I), so the block output is `adapter(x) + mlp(ln2(x))`.
- fusion (DETR) encoder and DETR decoder layers: on the FFN residual, a bottleneck g: d->64 (LayerNorm, GELU)->d
  of the stream entering the FFN block, added beside the FFN: `x + g(x) + ffn(x)` (simple: g1; complex:
  g2(g12(x)), the chain feeding one bottleneck's output into the next, as SAM3-I does).
- mask head: `adapter1` / `adapter2` copies of the mask embedder (SAM3's mask predictor), one per route,
  initialised from the original.
Routing per prompt: concept -> bypass (output identical to SAM3), simple -> adapter1,
complex -> adapter12 then adapter2. Output projections start at zero, so fresh adapters are the identity.

The adapters attach to the detector with forward hooks: the transformers classes stay untouched and
`Sam3Model` weights load as they are. A batch may mix levels; `routing()` sets one route per prompt.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn
from transformers import Sam3Model

from samstream.model.levels import LEVELS, Level

ROUTE_OF: dict[Level, int] = {"concept": 0, "simple": 1, "complex": 2}


@dataclass(frozen=True)
class AdapterConfig:
    bottleneck: int = 64  # SAM3-I: 64
    text_heads: int = 4  # heads of the text adapters' self-attention (SAM3-I: 4)


class TextAdapter(nn.Module):
    """x -> x + MHSA(norm1(x)) -> + up(gelu(down(norm2(.)))). Key names follow SAM3-I's checkpoints."""

    def __init__(self, width: int, config: AdapterConfig) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(width)
        self.mha_adapter = nn.MultiheadAttention(width, config.text_heads, batch_first=True)
        self.norm2 = nn.LayerNorm(width)
        self.down_proj = nn.Linear(width, config.bottleneck)
        self.up_proj = nn.Linear(config.bottleneck, width)
        # Only the output projections start at zero: the adapter is the identity yet still trainable.
        nn.init.zeros_(self.mha_adapter.out_proj.weight)
        nn.init.zeros_(self.mha_adapter.out_proj.bias)
        nn.init.zeros_(self.up_proj.weight)
        nn.init.zeros_(self.up_proj.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Like SAM3-I, the adapter attends over all context tokens (padding included; prompts are always
        # padded to the same 32-token context).
        h = self.norm1(x)
        x = x + self.mha_adapter(h, h, h, need_weights=False)[0]  # (B, T, D)
        return x + self.up_proj(nn.functional.gelu(self.down_proj(self.norm2(x))))


class FfnAdapter(nn.Module):
    """g(x) = up(gelu(norm(down(x)))), added to the FFN's residual (no skip of its own)."""

    def __init__(self, width: int, config: AdapterConfig) -> None:
        super().__init__()
        self.down_proj = nn.Linear(width, config.bottleneck)
        self.norm = nn.LayerNorm(config.bottleneck)
        self.up_proj = nn.Linear(config.bottleneck, width)
        nn.init.zeros_(self.up_proj.weight)
        nn.init.zeros_(self.up_proj.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up_proj(nn.functional.gelu(self.norm(self.down_proj(x))))


def _three_routes(make) -> nn.ModuleDict:
    return nn.ModuleDict({"adapter1": make(), "adapter12": make(), "adapter2": make()})


class Sam3IAdapters(nn.Module):
    """Every SAM3-I adapter for one detector. Its `state_dict` is what `adapters.safetensors` holds."""

    def __init__(self, detector: Sam3Model, config: AdapterConfig = AdapterConfig()) -> None:
        super().__init__()
        self.config = config
        text_width = detector.config.text_config.hidden_size
        width = detector.config.detr_encoder_config.hidden_size
        text_layers = detector.text_encoder.text_model.encoder.layers
        self.text = nn.ModuleList(_three_routes(lambda: TextAdapter(text_width, config)) for _ in text_layers)
        self.encoder = nn.ModuleList(_three_routes(lambda: FfnAdapter(width, config)) for _ in detector.detr_encoder.layers)
        self.decoder = nn.ModuleList(_three_routes(lambda: FfnAdapter(width, config)) for _ in detector.detr_decoder.layers)
        embedder = detector.mask_decoder.mask_embedder
        self.mask_embedder = nn.ModuleDict({"adapter1": copy.deepcopy(embedder), "adapter2": copy.deepcopy(embedder)})

    @classmethod
    def fresh(cls, detector: Sam3Model, config: AdapterConfig = AdapterConfig()) -> Sam3IAdapters:
        """Identity adapters; mask-embedder copies equal to the detector's own."""
        adapters = cls(detector, config)
        device = next(detector.parameters()).device
        dtype = next(detector.parameters()).dtype
        return adapters.to(device=device, dtype=dtype)


class Sam3I:
    """A `Sam3Model` with SAM3-I adapters attached. Use `routing(levels)` around any detector call."""

    def __init__(self, detector: Sam3Model, adapters: Sam3IAdapters) -> None:
        self.detector = detector
        self.adapters = adapters
        self._routes: torch.Tensor | None = None  # (B,) route per prompt in the current call
        self._text_stream: dict[int, torch.Tensor] = {}
        self._ffn_stream: dict[int, torch.Tensor] = {}  # encoder layers: the stream before their pre-norm
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self._attach()

    # -- routing -------------------------------------------------------------------------------------
    @contextmanager
    def routing(self, levels: Sequence[Level]) -> Iterator[None]:
        """Route each prompt of the batch by its level (text encoder and detector calls inside)."""
        unknown = [level for level in levels if level not in LEVELS]
        if unknown:
            raise ValueError(f"unknown instruction level(s) {unknown}: use {', '.join(LEVELS)}")
        device = next(self.adapters.parameters()).device
        self._routes = torch.tensor([ROUTE_OF[level] for level in levels], device=device)
        try:
            yield
        finally:
            self._routes = None
            self._text_stream.clear()
            self._ffn_stream.clear()

    def detach(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    # -- hooks -----------------------------------------------------------------------------------------
    def _attach(self) -> None:
        d = self.detector
        for i, layer in enumerate(d.text_encoder.text_model.encoder.layers):
            self._handles.append(layer.layer_norm2.register_forward_pre_hook(self._remember_text_stream(i)))
            self._handles.append(layer.register_forward_hook(self._text_hook(i)))
        # The adapters read the residual stream entering the FFN block: in the (pre-norm) encoder that is the
        # input of layer_norm3, in the (post-norm) decoder the FFN's own input.
        for i, layer in enumerate(d.detr_encoder.layers):
            self._handles.append(layer.layer_norm3.register_forward_pre_hook(self._remember_ffn_stream(i)))
            self._handles.append(layer.mlp.register_forward_hook(self._ffn_hook(self.adapters.encoder[i], i)))
        for i, layer in enumerate(d.detr_decoder.layers):
            self._handles.append(layer.mlp.register_forward_hook(self._ffn_hook(self.adapters.decoder[i], None)))
        self._handles.append(d.mask_decoder.mask_embedder.register_forward_hook(self._mask_hook))

    def _active(self, batch: int) -> torch.Tensor | None:
        routes = self._routes
        if routes is None or not bool((routes > 0).any()):
            return None  # no routing set, or all concept: SAM3 exactly
        if routes.shape[0] != batch:
            raise RuntimeError(f"SAM3-I routing has {routes.shape[0]} levels for a batch of {batch} prompts")
        return routes

    def _remember_text_stream(self, index: int):
        def hook(_module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
            self._text_stream[index] = args[0]  # the residual stream after the block's attention

        return hook

    def _text_hook(self, index: int):
        adapters = self.adapters.text[index]

        def hook(_module: nn.Module, _args: tuple, output: torch.Tensor) -> torch.Tensor | None:
            routes = self._active(output.shape[0])
            if routes is None:
                return None
            stream = self._text_stream.pop(index)
            out = output.clone()
            for route, rows in _route_rows(routes):
                x = stream[rows]
                if route == 1:
                    adapted = adapters["adapter1"](x)
                else:
                    adapted = adapters["adapter2"](adapters["adapter12"](x))
                out[rows] = output[rows] + (adapted - x)
            return out

        return hook

    def _remember_ffn_stream(self, index: int):
        def hook(_module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
            if self._routes is not None:
                self._ffn_stream[index] = args[0]

        return hook

    def _ffn_hook(self, adapters: nn.ModuleDict, stream_index: int | None):
        def hook(_module: nn.Module, args: tuple[torch.Tensor, ...], output: torch.Tensor) -> torch.Tensor | None:
            routes = self._active(output.shape[0])
            if routes is None:
                return None
            x = args[0] if stream_index is None else self._ffn_stream.pop(stream_index)
            out = output.clone()
            for route, rows in _route_rows(routes):
                if route == 1:
                    delta = adapters["adapter1"](x[rows])
                else:
                    delta = adapters["adapter2"](adapters["adapter12"](x[rows]))
                out[rows] = output[rows] + delta
            return out

        return hook

    def _mask_hook(self, _module: nn.Module, args: tuple[torch.Tensor, ...], output: torch.Tensor):
        routes = self._active(output.shape[0])
        if routes is None:
            return None
        out = output.clone()
        for route, rows in _route_rows(routes):
            out[rows] = self.adapters.mask_embedder["adapter1" if route == 1 else "adapter2"](args[0][rows])
        return out


def _route_rows(routes: torch.Tensor) -> Iterator[tuple[int, torch.Tensor]]:
    """(route, row indices) for each adapted route present in the batch."""
    for route in (1, 2):
        rows = torch.nonzero(routes == route).squeeze(1)
        if rows.numel():
            yield route, rows
