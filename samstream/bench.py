"""`samstream bench model`: where a frame's time goes, per model size, instruction count and frame kind.

Medians over `repeats` runs after one warm-up, measured in one process; random weights (speed does not depend
on training). Vision = backbone + necks; text = text encoder for N new instructions (cached afterwards);
detector = fusion encoder + DETR decoder + scoring; mask head = the mask decoder; propagation = SAM3 tracker
memory step for 4 objects on a non-keyframe.
"""

from __future__ import annotations

import platform
import resource
import statistics
import time
from collections.abc import Callable

import cv2
import numpy as np
import torch
from transformers import Sam3VideoConfig, Sam3VideoModel

from samstream.model.loader import autocast_dtype, load_segmenter, resolve_device
from samstream.model.sam3 import Sam3Segmenter
from samstream.model.segmenter import ModelInfo
from samstream.model.tiny import SMALL, build_tiny_model, tiny_video_config
from samstream.model.tokenizer import build_byte_tokenizer

INSTRUCTION_COUNTS = (1, 4, 16)
PROPAGATED_OBJECTS = 4


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time_ms(fn: Callable[[], object], device: torch.device) -> float:
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return (time.perf_counter() - start) * 1000


def _median_ms(fn: Callable[[], object], repeats: int, device: torch.device) -> float:
    fn()  # warm-up
    return round(statistics.median(_time_ms(fn, device) for _ in range(repeats)), 2)


def _segmenter(preset: str, device: torch.device, precision: str = "auto") -> Sam3Segmenter:
    if preset == "tiny":
        model, tokenizer = build_tiny_model()
    else:
        tokenizer = build_byte_tokenizer()
        torch.manual_seed(0)
        config = tiny_video_config(vocab_size=len(tokenizer), **SMALL) if preset == "small" else Sam3VideoConfig()
        if preset == "full":
            config.detector_config.text_config.vocab_size = max(config.detector_config.text_config.vocab_size,
                                                                 len(tokenizer))
        model = Sam3VideoModel(config).eval()
    model = model.to(device)
    image_size = model.config.detector_config.vision_config.backbone_config.image_size
    info = ModelInfo(name=preset, parameters=sum(p.numel() for p in model.parameters()), trained=False,
                     score_threshold=0.0, birth_threshold=0.0, image_size=image_size, device=str(device))
    return Sam3Segmenter(model, tokenizer, info, autocast_dtype=autocast_dtype(precision, device))


class _MaskHeadTimer:
    def __init__(self, module: torch.nn.Module, device: torch.device) -> None:
        self.total_ms = 0.0
        self._device = device
        module.register_forward_pre_hook(self._start)
        module.register_forward_hook(self._stop)

    def _start(self, *_: object) -> None:
        _sync(self._device)
        self._t = time.perf_counter()

    def _stop(self, *_: object) -> None:
        _sync(self._device)
        self.total_ms += (time.perf_counter() - self._t) * 1000


def _split_median_ms(fn: Callable[[], object], timer: _MaskHeadTimer, repeats: int,
                     device: torch.device) -> tuple[float, float, float]:
    """Medians over `repeats` timed calls (after a warm-up) of `fn`'s time, of its mask head's share and of the
    rest. Each call's share is taken from that call, so the rest is never negative (a mean that counts the
    warm-up against a median could be, on a busy machine)."""
    fn()  # warm-up
    totals, masks = [], []
    for _ in range(repeats):
        timer.total_ms = 0.0
        totals.append(_time_ms(fn, device))
        masks.append(timer.total_ms)
    rest = [total - mask for total, mask in zip(totals, masks)]
    return tuple(round(statistics.median(values), 2) for values in (totals, masks, rest))  # type: ignore[return-value]


def bench_preset(preset: str, device: torch.device, repeats: int, precision: str = "auto") -> dict:
    seg = _segmenter(preset, device, precision)
    frame = np.random.default_rng(0).integers(0, 255, (720, 1280, 3), dtype=np.uint8)
    report: dict = {"parameters_m": round(seg.info.parameters / 1e6, 2), "image_size": seg.info.image_size}
    with torch.inference_mode():
        report["vision_ms"] = _median_ms(lambda: seg.encode_frame(frame), repeats, device)
        features = seg.encode_frame(frame)
        timer = _MaskHeadTimer(seg.model.detector_model.mask_decoder, device)
        per_count = {}
        for n in INSTRUCTION_COUNTS:
            texts = [f"object number {i}" for i in range(n)]
            levels = ["simple"] * n

            def encode_text() -> None:
                seg._text_cache.clear()
                seg._text(list(zip(texts, levels)))

            text_ms = _median_ms(encode_text, repeats, device)
            detect_ms, mask_ms, rest_ms = _split_median_ms(lambda: seg.detect(features, texts, levels), timer,
                                                           repeats, device)
            per_count[str(n)] = {
                "text_ms_uncached": text_ms,
                "detector_ms": rest_ms,
                "mask_head_ms": mask_ms,
                "keyframe_ms": round(report["vision_ms"] + detect_ms, 2),
            }
        report["instructions"] = per_count
        memory = seg.new_memory()
        h, w = frame.shape[:2]
        masks = {}
        for i in range(PROPAGATED_OBJECTS):
            mask = np.zeros((h, w), dtype=bool)
            mask[100 + 100 * i: 180 + 100 * i, 200: 400] = True
            masks[i + 1] = mask
        memory.condition(features, masks)

        def propagate() -> None:
            memory.propagate(seg.encode_frame(frame))

        report["propagation_frame_ms"] = _median_ms(propagate, repeats, device)
        report["propagation_objects"] = PROPAGATED_OBJECTS
    if device.type == "cuda":
        report["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    return report


def bench_model(device: str = "auto", full: bool = False, repeats: int = 5, precision: str = "auto") -> dict:
    torch_device = resolve_device(device)
    presets = ["tiny", "small"] + (["full"] if full else [])
    results = {}
    for preset in presets:
        results[preset] = bench_preset(preset, torch_device, repeats, precision)
        results[preset]["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return {
        "benchmark": "model",
        "device": str(torch_device),
        "precision": precision,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": platform.processor() or platform.machine(),
        "repeats": repeats,
        "frame": "1280x720",
        "results": results,
    }


OBJECT_COUNTS = (1, 4, 16)


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * resource.getpagesize() / 2**20


def _object_scene(height: int = 720, width: int = 1280, count: int = 16) -> tuple[np.ndarray, list[np.ndarray]]:
    """A frame with `count` distinct coloured shapes on a textured background, and each shape's mask: what the
    tracker follows in the cost measurements (a trained model then propagates object-sized masks)."""
    rng = np.random.default_rng(0)
    frame = rng.integers(70, 110, (height, width, 3), dtype=np.uint8)
    masks = []
    for i in range(count):
        row, col = divmod(i, 4)
        cy, cx = 90 + row * (height - 180) // 3, 160 + col * (width - 320) // 3
        mask = np.zeros((height, width), np.uint8)
        if i % 2:
            cv2.ellipse(mask, (cx, cy), (70, 50), 0, 0, 360, 1, -1)
        else:
            cv2.rectangle(mask, (cx - 60, cy - 45), (cx + 60, cy + 45), 1, -1)
        colour = np.array([(255, 60, 60), (60, 200, 60), (60, 90, 255), (240, 220, 40)][i % 4], np.uint8)
        frame[mask > 0] = colour
        masks.append(mask > 0)
    return frame, masks


def _object_costs(seg: Sam3Segmenter, frame: np.ndarray, shapes: list[np.ndarray], repeats: int,
                  device: torch.device) -> tuple[dict[str, dict[str, float]], list[float]]:
    """Non-keyframe and keyframe cost with 1, 4, 16 objects tracked. The counts are measured in interleaved
    rounds (1, 4, 16, 1, 4, 16, ...), so a burst of load from another process on a shared machine lands on every
    count alike; the 16-vs-1 ratio is taken within each round, then its median."""
    memories = {}
    for n in OBJECT_COUNTS:
        memories[n] = seg.new_memory()
        memories[n].condition(seg.encode_frame(frame), {i + 1: shapes[i] for i in range(n)})

    def non_keyframe(n: int) -> None:
        memories[n].propagate(seg.encode_frame(frame))

    def keyframe(n: int) -> None:
        features = seg.encode_frame(frame)
        memories[n].propagate(features)
        seg.detect(features, ["object"], ["concept"])
        memories[n].condition(features, {1: shapes[0]})

    times: dict[tuple[str, int], list[float]] = {(kind, n): [] for kind in ("non_keyframe_ms", "keyframe_ms")
                                                 for n in OBJECT_COUNTS}
    for n in OBJECT_COUNTS:  # warm-up: the memories fill their window
        for _ in range(3):
            non_keyframe(n)
    for kind, fn in (("non_keyframe_ms", non_keyframe), ("keyframe_ms", keyframe)):  # keyframes re-condition
        for _ in range(repeats):
            for n in OBJECT_COUNTS:
                times[kind, n].append(_time_ms(lambda: fn(n), device))
    costs = {str(n): {kind: round(statistics.median(times[kind, n]), 2) for kind in ("non_keyframe_ms", "keyframe_ms")}
             for n in OBJECT_COUNTS}
    most, one = times["non_keyframe_ms", OBJECT_COUNTS[-1]], times["non_keyframe_ms", 1]
    return costs, [round(a / b, 2) for a, b in zip(most, one)]


def bench_tracker(device: str = "auto", frames: int = 10_000, repeats: int = 5, model: str | None = None,
                  precision: str = "auto") -> dict:
    """Per-frame tracker cost by object count, keyframe vs not, and resident memory over an endless stream
    (the default model: the shipped trained one, so propagated masks are object-sized as in use; 1280x720
    frames of drawn shapes for the costs, 64x48 frames for the long run)."""
    from samstream.tracker.session import TrackerConfig, TrackingSession

    torch_device = resolve_device(device)
    seg = load_segmenter(model, device=str(torch_device), precision=precision)
    frame, shapes = _object_scene()
    with torch.inference_mode():
        vision_ms = _median_ms(lambda: seg.encode_frame(frame), repeats, torch_device)
        costs, ratios = _object_costs(seg, frame, shapes, repeats, torch_device)

    session = TrackingSession(seg, ["square"], TrackerConfig(keyframe_every=5))
    rss, warmup = [], min(1000, frames // 5)
    for i in range(frames):
        small = np.full((48, 64, 3), 30, np.uint8)
        x = 5 + (i * 3) % 44
        small[10:30, x:x + 15] = (230, 60, 60)
        session.update(small)
        if i + 1 >= warmup and (i + 1) % max(1, frames // 20) == 0:
            rss.append(round(_rss_mb(), 1))
    growth = round(100 * (max(rss) - rss[0]) / rss[0], 2) if rss else None
    return {
        "benchmark": "tracker",
        "device": str(torch_device),
        "precision": precision,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "repeats": repeats,
        "model": seg.info.name,
        "frame": "1280x720",
        "vision_ms": vision_ms,
        "objects": costs,
        "ratio_16_vs_1_objects": round(statistics.median(ratios), 2),
        "ratio_16_vs_1_objects_by_round": ratios,
        "long_run": {"frames": frames, "warmup_frames": warmup, "rss_mb_samples": rss,
                     "rss_growth_after_warmup_pct": growth},
    }
