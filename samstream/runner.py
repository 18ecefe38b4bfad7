"""`samstream run`: the whole system on one machine (embedded Redis, one worker, ingest, sinks)."""

from __future__ import annotations

import logging
import re
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from samstream.errors import ConfigError, SamstreamError, StreamFailed
from samstream.model.levels import resolve_level
from samstream.model.segmenter import ModelInfo, Segmenter
from samstream.settings import WorkerSettings
from samstream.streaming.connection import connect
from samstream.streaming.embedded_redis import EmbeddedRedis
from samstream.streaming.ingest import open_file_stream, publish_all
from samstream.streaming.messages import FrameResult, StreamEnded, check_instruction
from samstream.streaming.sinks import Mp4Writer, ResultsJsonlWriter, draw_result
from samstream.streaming.sources import VideoFileSource
from samstream.streaming.transport import read_results
from samstream.workers.worker import Worker

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunSummary:
    frames: int
    instances: int
    tracks: int
    seconds: float
    model: ModelInfo
    redis: str
    out_dir: Path
    error: str | None
    levels: tuple[str, ...] = ()

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    def render(self) -> str:
        trained = "trained" if self.model.trained else "UNTRAINED random weights: masks are not meaningful"
        lines = [
            f"samstream run: {self.frames} frames in {self.seconds:.1f}s ({self.fps:.1f} fps)",
            f"  instances  {self.instances} in all, {self.tracks} distinct track ids",
            f"  model      {self.model.name} ({self.model.parameters / 1e6:.2f}M params, {self.model.device}, "
            f"{self.model.image_size}px) - {trained}",
            f"  adapters   SAM3-I {self.model.adapters}; levels {', '.join(self.levels)}",
            f"  redis      embedded {self.redis}",
            f"  results    {self.out_dir / 'results.jsonl'}",
            f"  video      {self.out_dir / 'annotated.mp4'}",
        ]
        if self.error:
            lines.append(f"  stopped    {self.error}")
        return "\n".join(lines)


def stream_id_for(video: Path) -> str:
    stem = re.sub(r"[^A-Za-z0-9_.-]", "-", video.stem).strip("-.") or "video"
    return f"{stem[:80]}-{uuid.uuid4().hex[:8]}"


def run_file(
    video: str | Path,
    instructions: list[str],
    out_dir: str | Path,
    segmenter: Segmenter,
    max_frames: int | None = None,
    keyframe_every: int = 5,
    progress: bool = True,
    level: str = "auto",
) -> RunSummary:
    """Run one file through Redis and a worker; write results.jsonl and annotated.mp4 into out_dir.

    Raises `StreamFailed` (after writing everything produced so far) when the file breaks mid-way.
    """
    video, out_dir = Path(video), Path(out_dir)
    instructions = [check_instruction(text) for text in instructions]
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"--out {out_dir} exists and is not a folder")
    VideoFileSource(video, max_frames=max_frames).close()  # bad input fails before anything starts
    out_dir.mkdir(parents=True, exist_ok=True)

    with EmbeddedRedis() as server:
        client = connect(server.url)
        settings = WorkerSettings(redis_url=server.url, keyframe_every=keyframe_every)
        worker = Worker(settings, client, segmenter)
        worker_thread = threading.Thread(target=worker.run, name="worker", daemon=True)
        worker_thread.start()
        source, publisher = open_file_stream(client, video, stream_id_for(video), instructions, max_frames=max_frames,
                                             level=level)
        ingest_error: list[BaseException] = []

        def ingest() -> None:
            try:
                publish_all(source, publisher)
            except BaseException as e:  # reported through the stream's end message too
                ingest_error.append(e)

        ingest_thread = threading.Thread(target=ingest, name="ingest", daemon=True)
        started = time.monotonic()
        ingest_thread.start()
        try:
            frames, instances, track_ids, ended = _collect(
                client, publisher.spec.stream, video, out_dir, source.expected_frames, source.info.fps, max_frames,
                progress, worker,
            )
        finally:
            worker.stop_event.set()
            worker_thread.join(timeout=30)
        seconds = time.monotonic() - started
        ingest_thread.join(timeout=30)

    error = ended.error if ended else "the worker stopped before the stream ended"
    levels = tuple(f"{text!r}={resolve_level(text, level)}" for text in instructions)
    summary = RunSummary(frames, instances, len(track_ids), seconds, segmenter.info, server.kind, out_dir, error,
                         levels)
    if error:
        raise StreamFailed(error, summary)
    return summary


def _collect(
    client, stream: str, video: Path, out_dir: Path, expected: int | None, fps: float, max_frames: int | None,
    progress: bool, worker: Worker,
) -> tuple[int, int, set[int], StreamEnded | None]:
    """Read results in order into results.jsonl and annotated.mp4 (frames re-decoded from the file)."""
    frames, instances, track_ids, ended = 0, 0, set(), None
    pixels = iter(VideoFileSource(video, max_frames=max_frames))
    bar = tqdm(total=expected, unit="frame", desc="tracking", disable=not progress, dynamic_ncols=True)
    writer: Mp4Writer | None = None
    try:
        with ResultsJsonlWriter(out_dir / "results.jsonl") as jsonl:
            for message in read_results(client, stream, follow=True, block_ms=200, alive=lambda: _check(worker)):
                if isinstance(message, StreamEnded):
                    ended = message
                    break
                frame = _next_pixels(pixels, message)
                if writer is None:
                    h, w = frame.rgb.shape[:2]
                    writer = Mp4Writer(out_dir / "annotated.mp4", w, h, fps)
                jsonl.write(message)
                writer.write(draw_result(frame.rgb, message))
                frames += 1
                instances += len(message.instances)
                track_ids.update(inst.id for inst in message.instances)
                bar.update(1)
    finally:
        bar.close()
        if writer is not None:
            writer.close()
    return frames, instances, track_ids, ended


def _check(worker: Worker) -> None:
    if worker.crashed is not None:
        raise StreamFailed(f"the worker crashed: {type(worker.crashed).__name__}: {worker.crashed}") from worker.crashed


def _next_pixels(pixels, result: FrameResult):
    try:
        frame = next(pixels)
    except (StopIteration, SamstreamError) as e:
        raise StreamFailed(f"result for frame {result.frame} has no matching frame in the file") from e
    if frame.index != result.frame:
        raise StreamFailed(f"results out of order: got frame {result.frame}, expected {frame.index}")
    return frame
