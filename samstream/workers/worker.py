"""The worker: picks up streams from Redis, tracks them, writes results.

Loop: check the stop flag, pick up unowned streams (lease), process each held stream's next frames in turn,
refresh liveness; Redis errors back off (capped) and the loop goes on. First SIGTERM/SIGINT finishes the
frame in hand and releases leases (warm stop); a second one exits at once.
"""

from __future__ import annotations

import logging
import signal
import threading
import time

import numpy as np
import redis

from samstream.instances import Instances
from samstream.model.segmenter import Segmenter
from samstream.settings import WorkerSettings
from samstream.streaming.connection import RedisClient, redacted
from samstream.streaming.keys import REGISTRY_KEY, worker_heartbeat_key
from samstream.streaming.transport import EndEntry, FrameEntry, StreamConsumer, StreamLease, load_spec
from samstream.tracker.session import TrackerConfig, update_sessions
from samstream.workers.stream_task import LeaseLost, StreamTask

log = logging.getLogger(__name__)

DISCOVER_INTERVAL_S = 0.25
IDLE_SLEEP_S = 0.05


class Worker:
    def __init__(self, settings: WorkerSettings, client: RedisClient, segmenter: Segmenter) -> None:
        self.settings = settings
        self.client = client
        self.segmenter = segmenter
        self.tasks: dict[str, StreamTask] = {}
        self.stop_event = threading.Event()
        self.frames_processed = 0
        self.crashed: BaseException | None = None  # set when the loop died of an unexpected error
        self._tasks_lock = threading.Lock()
        self._last_discover = 0.0
        self._last_activity = time.monotonic()

    # -- lifecycle ---------------------------------------------------------------------------------------
    def run(self) -> None:
        log.info("worker %s serving %s", self.settings.worker_id, redacted(self.settings.redis_url))
        heartbeat = threading.Thread(target=self._heartbeat_loop, name="heartbeat", daemon=True)
        heartbeat.start()
        failures = 0
        try:
            while not self.stop_event.is_set():
                try:
                    self._iteration()
                    failures = 0
                except (redis.ConnectionError, redis.TimeoutError) as e:
                    delay = self.settings.backoff.delay(failures)
                    failures += 1
                    log.warning("Redis error (%s); retrying in %.2fs", e, delay)
                    self.stop_event.wait(delay)
                if self._idle_too_long():
                    log.info("idle for %.1fs; exiting", self.settings.exit_when_idle_s)
                    break
        except BaseException as e:
            self.crashed = e
            raise
        finally:
            self.stop_event.set()
            heartbeat.join(timeout=5)
            self._release_all()

    def install_signal_handlers(self) -> None:
        def handle(signum: int, _frame: object) -> None:
            if self.stop_event.is_set():
                raise SystemExit(128 + signum)  # second signal: stop now
            log.info("signal %d: finishing the frame in hand, then stopping", signum)
            self.stop_event.set()

        signal.signal(signal.SIGTERM, handle)
        signal.signal(signal.SIGINT, handle)

    # -- one pass ----------------------------------------------------------------------------------------
    def _iteration(self) -> None:
        now = time.monotonic()
        if now - self._last_discover >= DISCOVER_INTERVAL_S:
            self._last_discover = now
            self._discover()
        if not self.tasks:
            self.stop_event.wait(IDLE_SLEEP_S)
            return
        block_ms = 100 if len(self.tasks) == 1 else None
        pending: dict[str, list] = {}
        for stream, task in list(self.tasks.items()):
            entries = task.read(block_ms)
            if entries:
                pending[stream] = entries
        while pending and not self.stop_event.is_set():
            # One round: the oldest entry of every stream; their frames go through the model together.
            round_entries = {stream: entries.pop(0) for stream, entries in pending.items()}
            pending = {stream: entries for stream, entries in pending.items() if entries}
            frames: list[tuple[StreamTask, FrameEntry, np.ndarray | None]] = []
            for stream, entry in round_entries.items():
                task = self.tasks[stream]
                if isinstance(entry, EndEntry):
                    self._guarded(stream, lambda: task.finish(entry))
                    pending.pop(stream, None)  # nothing is read after a stream's end
                else:
                    frames.append((task, entry, task.decode(entry)))
            decoded = [(task.session, rgb) for task, _, rgb in frames if rgb is not None]
            outputs = iter(update_sessions(decoded))
            for task, entry, rgb in frames:
                instances = next(outputs) if rgb is not None else Instances.empty(entry.header.height,
                                                                                 entry.header.width)
                if self._guarded(task.stream, lambda: task.commit(entry, instances)):
                    self.frames_processed += 1
                else:
                    pending.pop(task.stream, None)
            self._last_activity = time.monotonic()

    def _guarded(self, stream: str, action) -> bool:
        """Run a task's commit; a lost lease drops the stream (another worker owns it), a finished one is
        released. Returns whether the stream is still held."""
        try:
            action()
        except LeaseLost:
            log.warning("stream %s: lease lost to another worker; dropping it", stream)
            self._drop(stream, release=False)
            return False
        task = self.tasks.get(stream)
        if task is not None and task.finished:
            self._drop(stream, release=True)
            return False
        return True

    def _discover(self) -> None:
        free = self.settings.max_streams - len(self.tasks)
        if free <= 0:
            return
        for raw in sorted(self.client.smembers(REGISTRY_KEY)):
            stream = raw.decode() if isinstance(raw, bytes) else raw
            if stream in self.tasks:
                continue
            lease = StreamLease(self.client, stream, self.settings.worker_id, self.settings.lease_ttl_s)
            if not lease.acquire():
                continue
            task = self._adopt(stream, lease)
            if task is None:
                continue
            with self._tasks_lock:
                self.tasks[stream] = task
            self._last_activity = time.monotonic()
            free -= 1
            if free == 0:
                return

    def _adopt(self, stream: str, lease: StreamLease) -> StreamTask | None:
        consumer = StreamConsumer(self.client, stream, self.settings.worker_id, self.settings.results_maxlen)
        if consumer.has_ended():  # a previous owner died between ending the stream and unregistering it
            consumer.unregister()
            lease.release()
            return None
        spec = load_spec(self.client, stream)
        moved = consumer.adopt_orphans()
        log.info("stream %s: picked up%s", stream, f" ({moved} unacknowledged frames adopted)" if moved else "")
        config = TrackerConfig(keyframe_every=spec.keyframe_every or self.settings.keyframe_every)
        return StreamTask(spec, lease, consumer, self.segmenter, config, self.settings.checkpoint_every)

    def _drop(self, stream: str, release: bool) -> None:
        with self._tasks_lock:
            task = self.tasks.pop(stream, None)
        if task is not None and release:
            task.lease.release()

    def _release_all(self) -> None:
        for stream in list(self.tasks):
            try:
                self._drop(stream, release=True)
            except redis.RedisError as e:
                log.warning("stream %s: could not release lease (%s); it expires by itself", stream, e)

    def _idle_too_long(self) -> bool:
        limit = self.settings.exit_when_idle_s
        return limit is not None and not self.tasks and time.monotonic() - self._last_activity > limit

    # -- liveness ----------------------------------------------------------------------------------------
    def _heartbeat_loop(self) -> None:
        """Refresh leases and the worker's liveness key every third of the lease TTL, beside the model work
        (a slow frame must not cost the lease)."""
        interval = self.settings.lease_ttl_s / 3
        ttl_ms = int(self.settings.lease_ttl_s * 1000)
        while not self.stop_event.wait(interval):
            try:
                self.client.set(worker_heartbeat_key(self.settings.worker_id), str(len(self.tasks)), px=ttl_ms)
                with self._tasks_lock:
                    tasks = list(self.tasks.values())
                for task in tasks:
                    if not task.lease.refresh():
                        log.warning("stream %s: lease could not be refreshed", task.stream)
            except redis.RedisError as e:
                log.warning("heartbeat failed (%s)", e)


def serve(
    settings: WorkerSettings, client: RedisClient, segmenter: Segmenter, install_signals: bool = True
) -> Worker:
    """Run a worker until stopped. Returns the stopped worker (for its counters)."""
    worker = Worker(settings, client, segmenter)
    if install_signals:
        worker.install_signal_handlers()
    worker.run()
    return worker
