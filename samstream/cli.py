"""The `samstream` command line. Errors a user can fix print one line and exit 1 (usage errors exit 2)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from samstream import __version__
from samstream.errors import ConfigError, SamstreamError, StreamFailed
from samstream.settings import (
    DEFAULT_CHECKPOINT_EVERY,
    DEFAULT_KEYFRAME_EVERY,
    DEFAULT_LEASE_TTL_S,
    DEFAULT_MAX_STREAMS,
)

EXIT_ERROR = 1
EXIT_INTERRUPTED = 130


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _add_level_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--level", choices=["auto", "concept", "simple", "complex"], default="auto",
                   help="SAM3-I instruction level of the instructions (default: auto, classified per instruction)")


def _add_model_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", help="local folder or hub id in transformers format, builtin:small (the default: the "
                   "shipped small model) or builtin:tiny-random")
    p.add_argument("--adapters", help="SAM3-I adapter file (default: the model folder's, else identity)")
    p.add_argument("--precision", choices=["auto", "fp32", "bf16", "fp16"], default="auto",
                   help="auto: bf16 autocast on CUDA, fp32 on CPU; bf16 also runs on a CPU with native bf16 "
                        "(AVX512-BF16 or AMX)")
    p.add_argument("--image-size", type=_positive_int, help="model input size override (e.g. 560 or 1008 for SAM3)")
    p.add_argument("--compile", action="store_true", help="torch.compile the vision backbone (CUDA)")
    p.add_argument("--spatial-rules", choices=["auto", "on", "off"], default="auto",
                   help="answer 'the leftmost / largest / X left of the Y' by geometry over the noun phrase's "
                        "instances (docs/model.md); auto: as the model folder says (the shipped model: its choice)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")
    p.add_argument("--keyframe-every", type=_positive_int, default=DEFAULT_KEYFRAME_EVERY, metavar="K",
                   help=f"run the detector every K frames, memory propagation between (default {DEFAULT_KEYFRAME_EVERY})")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="samstream",
        description="Segment and track, in live and recorded video, exactly what an instruction describes.",
        epilog="Errors print one line and exit 1; usage errors exit 2. Docs: README.md and docs/.",
    )
    parser.add_argument("--version", action="version", version=f"samstream {__version__}")
    parser.add_argument("--log-level", default="WARNING", help="DEBUG, INFO, WARNING (default), ERROR")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="track one video file end to end on this machine (embedded Redis + worker)")
    run.add_argument("video")
    run.add_argument("--instruction", action="append", required=True,
                     help="what to segment; repeat for several instructions")
    run.add_argument("--out", required=True, help="folder for results.jsonl and annotated.mp4")
    run.add_argument("--max-frames", type=_positive_int)
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_level_option(run)
    _add_model_options(run)

    worker = sub.add_parser("worker", help="a long-running worker serving streams from Redis")
    worker.add_argument("--redis", required=True, help="redis://, rediss://, unix:// or redis+cluster:// URL")
    worker.add_argument("--lease-ttl", type=float, default=DEFAULT_LEASE_TTL_S,
                        help="seconds before a dead worker's streams move elsewhere")
    worker.add_argument("--max-streams", type=_positive_int, default=DEFAULT_MAX_STREAMS,
                        help="streams held at once (their frames are batched through the tracker together)")
    worker.add_argument("--checkpoint-every", type=_positive_int, default=DEFAULT_CHECKPOINT_EVERY, metavar="N",
                        help="frames between tracking-session checkpoints in Redis (ids survive failover)")
    worker.add_argument("--exit-when-idle", type=float, metavar="SECONDS",
                        help="exit after this long with no stream (batch jobs)")
    _add_model_options(worker)

    ingest = sub.add_parser("ingest", help="publish a video file's frames to Redis as one stream")
    ingest.add_argument("video")
    ingest.add_argument("--stream", required=True, help="stream id (letters, digits, '_', '.', '-')")
    ingest.add_argument("--instruction", action="append", required=True)
    ingest.add_argument("--redis", required=True)
    ingest.add_argument("--max-frames", type=_positive_int)
    ingest.add_argument("--encoding", choices=["jpeg", "raw"], default="jpeg")
    ingest.add_argument("--keyframe-every", type=_positive_int, help="override the worker's default for this stream")
    ingest.add_argument("--replace", action="store_true", help="delete an existing stream of that id first")
    _add_level_option(ingest)

    results = sub.add_parser("results", help="print a stream's results as JSON lines")
    results.add_argument("--stream", required=True)
    results.add_argument("--redis", required=True)
    results.add_argument("--follow", action="store_true", help="wait for new results until the stream ends")

    convert = sub.add_parser("convert-checkpoint",
                             help="official SAM3-I checkpoint -> samstream adapter file (refuses partial matches)")
    convert.add_argument("src", help="official checkpoint (.pt/.pth or .safetensors)")
    convert.add_argument("dst", help="adapter file to write (e.g. MODEL_DIR/sam3i_adapters.safetensors)")
    convert.add_argument("--model", help="the base SAM3 model the adapters are for (default: builtin:small)")
    convert.add_argument("--text-heads", type=_positive_int, default=4,
                         help="attention heads of the text adapters in that checkpoint (SAM3-I paper: 4)")

    bench = sub.add_parser("bench", help="benchmarks (results as JSON; see docs/benchmarks.md)")
    bench.add_argument("what", choices=["model", "tracker", "train"])
    bench.add_argument("--full", action="store_true", help="also the full-size SAM3 configuration (random weights)")
    bench.add_argument("--device", default="auto")
    bench.add_argument("--repeats", type=_positive_int, default=5)
    bench.add_argument("--frames", type=_positive_int, default=10_000, help="tracker: length of the long run")
    bench.add_argument("--model", help="tracker: the model to track with (default: the shipped small model)")
    bench.add_argument("--precision", choices=["auto", "fp32", "bf16", "fp16"], default="auto",
                       help="model and tracker: autocast as in `samstream run --precision` (train: fp32 and, where "
                            "native, bf16)")
    bench.add_argument("--out", help="write the JSON here too")

    synth = sub.add_parser("synth", help="generate a synthetic dataset with exact ground truth (docs/data.md)")
    synth.add_argument("--videos", type=int, default=0, help="videos to make (YouTube-VIS style videos.json)")
    synth.add_argument("--frames", type=_positive_int, default=30, help="frames per video")
    synth.add_argument("--images", type=int, default=0, help="still images to make (COCO style images.json)")
    synth.add_argument("--out", required=True)
    synth.add_argument("--width", type=_positive_int, default=320)
    synth.add_argument("--height", type=_positive_int, default=240)
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--min-objects", type=_positive_int, default=2)
    synth.add_argument("--max-objects", type=_positive_int, default=6)
    synth.add_argument("--png-frames", action="store_true", help="videos as folders of PNG frames, not MP4")
    synth.add_argument("--preset", choices=["eval"],
                       help="eval: the fixed evaluation set (held-out scenes + instructions; other sizes ignored)")
    synth.add_argument("--quiet", action="store_true", help="no progress bar")

    track_eval = sub.add_parser("eval-tracking", help="HOTA / IDF1 / MOTA and J&F of results against ground truth")
    track_eval.add_argument("pred", help="results.jsonl from `samstream run`")
    track_eval.add_argument("gt", help="YouTube-VIS style ground truth (e.g. videos.json from `samstream synth`)")
    track_eval.add_argument("--video", help="video id or name in the ground truth (needed when it has several)")
    track_eval.add_argument("--category", help="only this category's ground-truth tracks")
    track_eval.add_argument("--objects", help="only these ground-truth object ids (comma-separated)")
    track_eval.add_argument("--instruction", help="only predictions for this instruction")

    train = sub.add_parser("train", help="train or fine-tune a model from a TOML config (docs/finetuning.md)")
    train.add_argument("config", help="TOML training config, e.g. configs/small.toml")
    train.add_argument("--out", help="override the config's output folder")
    train.add_argument("--steps", type=_positive_int, help="override: one stage of this many steps (smoke runs)")
    train.add_argument("--device", help="override the config's device")
    train.add_argument("--no-resume", action="store_true", help="start over even if the output folder has checkpoints")
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    train.add_argument("--export-only", action="store_true",
                       help="only write <out>/model from the newest checkpoint (a run stopped early, or still going)")
    train.add_argument("--checkpoint", type=_positive_int, metavar="STEP",
                       help="with --export-only: export this step's checkpoint instead, to <out>/model-step-STEP")

    calibrate = sub.add_parser("calibrate", help="re-choose a trained model folder's score threshold, presence gate "
                                                 "and birth threshold into a new folder (docs/finetuning.md)")
    calibrate.add_argument("model", help="a model folder `samstream train` wrote, or builtin:small")
    calibrate.add_argument("--out", required=True, help="new folder to write (the same weights, new samstream.json)")
    calibrate.add_argument("--samples", type=_positive_int,
                           help="held-out samples to choose the score threshold on (default: the training run's)")
    calibrate.add_argument("--quiet", action="store_true", help="no progress bar")

    evaluate = sub.add_parser("eval", help="evaluate a model on a dataset: gIoU/cIoU/P@0.5 per level, J&F, HOTA, IDF1")
    evaluate.add_argument("--data", required=True, help="folder with images.json and/or videos.json (samstream synth)")
    evaluate.add_argument("--out", help="write the JSON report here (and a markdown table beside it, .md)")
    evaluate.add_argument("--max-items", type=_positive_int, help="only the first N images and N videos")
    evaluate.add_argument("--quiet", action="store_true", help="no progress bar")
    evaluate.add_argument("--grounding", action="store_true",
                          help="also check which words the model grounds: shape and colour accuracy per object (images)")
    _add_model_options(evaluate)

    instructions = sub.add_parser("instructions",
                                  help="generate instruction records (3 levels + negatives) for a dataset (docs/data.md)")
    instructions.add_argument("dataset", help="videos.json / images.json from `samstream synth`, or any COCO file")
    instructions.add_argument("--out", required=True, help="instruction records JSON to write")
    instructions.add_argument("--split", choices=["train", "heldout", "all"], default="heldout",
                              help="templates to draw from (default heldout: for evaluation)")
    instructions.add_argument("--per-level", type=_positive_int, default=2, help="positives per level per item")
    instructions.add_argument("--negatives", type=int, default=1, help="negatives per item")
    instructions.add_argument("--seed", type=int, default=0)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "train" and args.checkpoint and not args.export_only:
        parser.error("train --checkpoint names the checkpoint that --export-only exports; add --export-only")
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        commands = {"run": cmd_run, "worker": cmd_worker, "ingest": cmd_ingest, "results": cmd_results,
                    "convert-checkpoint": cmd_convert, "bench": cmd_bench, "synth": cmd_synth,
                    "eval-tracking": cmd_eval_tracking, "train": cmd_train, "calibrate": cmd_calibrate,
                    "instructions": cmd_instructions, "eval": cmd_eval}
        return commands[args.command](args)
    except StreamFailed as e:
        if e.summary is not None:
            print(e.summary.render(), file=sys.stderr)
        print(f"samstream: error: {e}", file=sys.stderr)
        return EXIT_ERROR
    except (SamstreamError, ValueError, OSError) as e:
        print(f"samstream: error: {_one_line(e)}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("samstream: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return 0


def cmd_synth(args: argparse.Namespace) -> int:
    from samstream.data.synth import synthesize, synthesize_eval_set

    if args.preset == "eval":
        out = synthesize_eval_set(Path(args.out), progress=not args.quiet)
        print(f"evaluation set: {out} (images.json, videos.json and their .instructions.json)")
        return 0
    written = synthesize(Path(args.out), videos=args.videos, frames=args.frames, images=args.images,
                         width=args.width, height=args.height, seed=args.seed, as_images=args.png_frames,
                         min_objects=args.min_objects, max_objects=args.max_objects, progress=not args.quiet)
    for kind, path in written.items():
        print(f"{kind}: {path}")
    return 0


def cmd_eval_tracking(args: argparse.Namespace) -> int:
    from samstream.data.formats import load_dataset
    from samstream.eval.tracking import load_ground_truth, load_predictions, tracking_metrics

    objects = {int(v) for v in args.objects.split(",")} if args.objects else None
    gt = load_ground_truth(load_dataset(Path(args.gt)), args.video, args.category, objects)
    pred = load_predictions(Path(args.pred), args.instruction)
    if pred.frames < gt.frames:
        print(f"note: {pred.frames} predicted frames; evaluating the first {pred.frames} of {gt.frames}",
              file=sys.stderr)
        gt = gt.truncated(pred.frames)
    print(json.dumps(tracking_metrics(gt, pred), indent=2))
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from samstream.train.config import Stage, load_config
    from samstream.train.trainer import export_checkpoint, train

    overrides = {"out": args.out, "device": args.device}
    config = load_config(args.config, overrides)
    if args.steps:
        config = config.model_copy(update={"stages": [Stage(name="smoke", steps=args.steps,
                                                            levels=config.stages[-1].levels)],
                                           "warmup_steps": min(config.warmup_steps, args.steps)})
    if args.export_only:
        folder = export_checkpoint(config, args.checkpoint, progress=not args.quiet)
    else:
        folder = train(config, resume=not args.no_resume, progress=not args.quiet)
    print(f"samstream train: model written to {folder} (load it with --model {folder})")
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    from samstream.train.recalibrate import recalibrate

    folder = recalibrate(args.model, args.out, samples=args.samples, progress=not args.quiet)
    meta = json.loads((folder / "samstream.json").read_text())
    gate = meta.get("presence_threshold")
    print(f"samstream calibrate: {folder} written: score threshold {meta['score_threshold']}, presence gate "
          f"{'none' if gate is None else gate}, birth threshold {meta['birth_threshold']}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from samstream.eval.evaluator import evaluate, markdown

    data = Path(args.data)
    if not data.is_dir():
        raise ConfigError(f"--data {data}: no such folder")
    segmenter = _load(args)
    if args.grounding and not (data / "images.json").is_file():
        raise ConfigError(f"--grounding needs an image set: {data} has no images.json")
    report = evaluate(segmenter, data, keyframe_every=args.keyframe_every, max_items=args.max_items,
                      progress=not args.quiet)
    if args.grounding:
        from samstream.eval.grounding import word_grounding

        report["grounding"] = word_grounding(segmenter, data, args.max_items, progress=not args.quiet)
    table = markdown(report)
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        _write_whole(out, json.dumps(report, indent=2) + "\n")
        _write_whole(out.with_suffix(".md"), table)
    print(table, end="")
    return 0


def cmd_instructions(args: argparse.Namespace) -> int:
    from samstream.data.engine import instruction_set, write_instructions
    from samstream.data.formats import load_dataset

    path = Path(args.dataset)
    data = load_dataset(path, "images") if path.is_file() or (path / "images.json").exists() and not \
        (path / "videos.json").exists() else load_dataset(path, "videos")
    split = None if args.split == "all" else args.split
    records = instruction_set(data, split=split, per_level=args.per_level, negatives=args.negatives, seed=args.seed,
                              progress=True)
    write_instructions(Path(args.out), records, str(path), split, args.seed)
    print(f"samstream instructions: {len(records)} records written to {args.out}")
    return 0


def _write_whole(path: Path, text: str) -> None:
    """Write `path` in one step: a reader, or another writer, never sees it half-written."""
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        partial.write_text(text)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def _one_line(error: Exception) -> str:
    text = str(error)
    if hasattr(error, "errors") and callable(error.errors):  # pydantic ValidationError
        text = "; ".join(err["msg"].removeprefix("Value error, ") for err in error.errors())
    return " ".join(text.split())


def _load(args: argparse.Namespace):
    from samstream.model.loader import load_segmenter

    return load_segmenter(args.model, device=args.device, adapters=args.adapters, precision=args.precision,
                          image_size=args.image_size, compile=args.compile,
                          spatial_rules={"auto": None, "on": True, "off": False}[args.spatial_rules])


def cmd_run(args: argparse.Namespace) -> int:
    from samstream.runner import run_file
    from samstream.streaming.messages import check_instruction
    from samstream.streaming.sources import VideoFileSource

    instructions = [check_instruction(text) for text in args.instruction]
    VideoFileSource(args.video, max_frames=args.max_frames).close()  # fail fast, before loading a model
    segmenter = _load(args)
    summary = run_file(args.video, instructions, args.out, segmenter, max_frames=args.max_frames,
                       keyframe_every=args.keyframe_every, progress=not args.quiet, level=args.level)
    print(summary.render())
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from samstream.settings import WorkerSettings
    from samstream.streaming.connection import connect
    from samstream.workers.worker import serve

    if args.lease_ttl <= 0:
        raise ConfigError(f"--lease-ttl must be positive, got {args.lease_ttl}")
    settings = WorkerSettings(redis_url=args.redis, model=args.model, device=args.device,
                              keyframe_every=args.keyframe_every, lease_ttl_s=args.lease_ttl,
                              max_streams=args.max_streams, checkpoint_every=args.checkpoint_every,
                              exit_when_idle_s=args.exit_when_idle)
    client = connect(settings.redis_url, settings.backoff)  # fail fast, before loading a model
    worker = serve(settings, client, _load(args))
    logging.getLogger(__name__).info("worker stopped after %d frames", worker.frames_processed)
    return 0


def cmd_ingest(args: argparse.Namespace) -> int:
    from samstream.settings import IngestSettings
    from samstream.streaming.connection import connect
    from samstream.streaming.ingest import open_file_stream, publish_all
    from samstream.streaming.messages import check_instruction, check_stream_id

    check_stream_id(args.stream)
    instructions = [check_instruction(text) for text in args.instruction]
    settings = IngestSettings(redis_url=args.redis, encoding=args.encoding)
    client = connect(settings.redis_url, settings.backoff)
    source, publisher = open_file_stream(client, args.video, args.stream, instructions, max_frames=args.max_frames,
                                         encoding=settings.encoding, keyframe_every=args.keyframe_every,
                                         replace=args.replace, level=args.level, max_backlog=settings.max_backlog)
    publish_all(source, publisher)
    print(f"samstream ingest: {publisher.published} frames published to stream {args.stream}", file=sys.stderr)
    return 0


def cmd_results(args: argparse.Namespace) -> int:
    from samstream.streaming.connection import connect
    from samstream.streaming.messages import StreamEnded, check_stream_id
    from samstream.streaming.transport import read_results

    check_stream_id(args.stream)
    client = connect(args.redis)
    for message in read_results(client, args.stream, follow=args.follow):
        if isinstance(message, StreamEnded):
            if message.error:
                raise StreamFailed(f"stream {args.stream} ended with an error: {message.error}")
            break
        sys.stdout.write(message.to_jsonl() + "\n")
        sys.stdout.flush()
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    from samstream.model.adapter_io import convert_checkpoint
    from samstream.model.sam3i import AdapterConfig
    from samstream.model.loader import load_segmenter

    segmenter = load_segmenter(args.model, device="cpu")
    config = AdapterConfig(text_heads=args.text_heads)
    count = convert_checkpoint(args.src, args.dst, segmenter.model.detector_model, config)
    print(f"samstream convert-checkpoint: {count} adapter tensors written to {args.dst}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    import json

    from samstream.bench import bench_model, bench_tracker

    if args.what == "tracker":
        report = bench_tracker(device=args.device, frames=args.frames, repeats=args.repeats, model=args.model,
                               precision=args.precision)
    elif args.what == "train":
        from samstream.train.bench import bench_train

        report = bench_train(device=args.device, repeats=args.repeats)
    else:
        report = bench_model(device=args.device, full=args.full, repeats=args.repeats, precision=args.precision)
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
