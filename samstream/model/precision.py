"""Which reduced precisions a device runs natively, for autocast in inference (`--precision`) and training
(`precision = "bf16"`).

A CPU with AVX512-BF16 or AMX runs bf16 convolutions and matrix products natively through oneDNN (the small model
trains ~1.3x faster per step on this project's build machines, docs/benchmarks.md); on other CPUs bf16 is emulated
and slower than fp32, so it is refused there rather than silently slowing a run down.
"""

from __future__ import annotations

import torch


def cpu_has_native_bf16() -> bool:
    """True when this CPU computes bf16 natively (oneDNN's check: AVX512-BF16 or AMX)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a torch build without oneDNN
        return False


def bf16_unsupported_reason(device: torch.device) -> str | None:
    """Why bf16 autocast should not run on `device`, or None when it runs natively there."""
    if device.type == "cuda":
        return None
    if device.type == "cpu":
        if cpu_has_native_bf16():
            return None
        return "this CPU has no native bf16 (AVX512-BF16 or AMX); use fp32"
    return f"bf16 is supported on CUDA and on CPUs with native bf16, not on {device.type}; use fp32"
