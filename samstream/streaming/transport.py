"""The Redis transport: publishing frames, owning a stream as a worker, committing results, reading them.

Guarantees (see docs/architecture.md):
- A frame is acknowledged in the same atomic step (one Lua script) that writes its result, and only while the
  worker still holds the stream's lease: a worker killed at any point loses no frame and duplicates none.
- Processed frames are deleted from the frames stream, so its length is the backlog; `FramePublisher`
  waits while the backlog is full (the file policy: nothing dropped).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import redis

from samstream.errors import ConfigError, UnknownStream
from samstream.streaming.codec import DEFAULT_JPEG_QUALITY, decode_frame, encode_frame
from samstream.streaming.connection import RedisClient
from samstream.streaming.keys import REGISTRY_KEY, WORKER_GROUP, StreamKeys
from samstream.streaming.messages import (
    FrameHeader,
    FrameResult,
    IngestEnded,
    StreamEnded,
    StreamSpec,
    frames_entry_adapter,
    results_entry_adapter,
)
from samstream.streaming.sources import DecodedFrame

MESSAGE_FIELD = b"m"
PAYLOAD_FIELD = b"d"
DEFAULT_MAX_BACKLOG = 64  # frames waiting in Redis before a file publisher pauses
DEFAULT_RESULTS_MAXLEN = 10_000  # results kept per stream (approximate trim); readers must keep up

# KEYS: lease, frames, results, state (a hash). ARGV: worker id, group, entry id, result json, results maxlen,
# session blob ('' = keep the last one), frames seen ('' = no counters), next track id.
_COMMIT = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[5], '*', 'm', ARGV[4])
redis.call('XACK', KEYS[2], ARGV[2], ARGV[3])
redis.call('XDEL', KEYS[2], ARGV[3])
if ARGV[7] ~= '' then redis.call('HSET', KEYS[4], 'frames', ARGV[7], 'next_id', ARGV[8]) end
if ARGV[6] ~= '' then redis.call('HSET', KEYS[4], 'session', ARGV[6]) end
return 1
"""
# KEYS: lease. ARGV: worker id, ttl ms.
_REFRESH = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


@dataclass(frozen=True)
class Checkpoint:
    """What a worker saves with a frame's result: the tracking session every N frames (`session`, else None:
    the last one stands) and, every frame, the counters that must never go back (so a stream resumed from an
    older session never reuses a track id or a frame number)."""

    session: bytes | None
    frames_seen: int
    next_id: int


def load_spec(client: RedisClient, stream: str) -> StreamSpec:
    raw = client.get(StreamKeys(stream).spec)
    if raw is None:
        raise UnknownStream(f"unknown stream {stream!r}: nothing was ever ingested under that id")
    return StreamSpec.model_validate_json(raw)


def delete_stream(client: RedisClient, stream: str) -> None:
    keys = StreamKeys(stream)
    client.delete(keys.spec, keys.frames, keys.results, keys.state, keys.lease)
    client.srem(REGISTRY_KEY, stream)


class FramePublisher:
    """Publishes one stream's frames. `register()` first, then `publish()` per frame, then `end()`."""

    def __init__(
        self,
        client: RedisClient,
        spec: StreamSpec,
        max_backlog: int = DEFAULT_MAX_BACKLOG,
        jpeg_quality: int = DEFAULT_JPEG_QUALITY,
    ) -> None:
        self.client = client
        self.spec = spec
        self.keys = StreamKeys(spec.stream)
        self.max_backlog = max_backlog
        self.jpeg_quality = jpeg_quality
        self.published = 0

    def register(self, replace: bool = False) -> None:
        """Create the stream's keys and announce it to workers. Refuses an id that is already in use."""
        if replace:
            delete_stream(self.client, self.spec.stream)
        if not self.client.set(self.keys.spec, self.spec.model_dump_json(), nx=True):
            raise ConfigError(
                f"stream {self.spec.stream!r} already exists: pick another --stream id or pass --replace"
            )
        try:
            self.client.xgroup_create(self.keys.frames, WORKER_GROUP, id="0", mkstream=True)
        except redis.ResponseError as e:
            if "BUSYGROUP" not in str(e):
                raise
        self.client.sadd(REGISTRY_KEY, self.spec.stream)

    def publish(self, frame: DecodedFrame) -> None:
        height, width = frame.rgb.shape[:2]
        header = FrameHeader(frame=frame.index, pts=frame.pts, width=width, height=height, encoding=self.spec.encoding)
        payload = encode_frame(frame.rgb, self.spec.encoding, self.jpeg_quality)
        self._wait_for_room()
        self.client.xadd(self.keys.frames, {MESSAGE_FIELD: header.model_dump_json(), PAYLOAD_FIELD: payload})
        self.published += 1

    def end(self, error: str | None = None) -> None:
        message = IngestEnded(frames=self.published, error=error)
        self.client.xadd(self.keys.frames, {MESSAGE_FIELD: message.model_dump_json()})

    def _wait_for_room(self) -> None:
        delay = 0.002
        while self.client.xlen(self.keys.frames) >= self.max_backlog:
            time.sleep(delay)
            delay = min(delay * 2, 0.05)


@dataclass(frozen=True)
class FrameEntry:
    entry_id: bytes
    header: FrameHeader
    payload: bytes

    def rgb(self) -> np.ndarray:
        """The frame's pixels; raises ValueError on a corrupt payload."""
        return decode_frame(self.payload, self.header.encoding, self.header.height, self.header.width)


@dataclass(frozen=True)
class EndEntry:
    entry_id: bytes
    message: IngestEnded


class StreamLease:
    """One worker's exclusive, expiring claim on one stream."""

    def __init__(self, client: RedisClient, stream: str, worker_id: str, ttl_s: float) -> None:
        self.client = client
        self.keys = StreamKeys(stream)
        self.worker_id = worker_id
        self.ttl_ms = max(1, int(ttl_s * 1000))
        self._refresh = client.register_script(_REFRESH)
        self._release = client.register_script(_RELEASE)

    def acquire(self) -> bool:
        return bool(self.client.set(self.keys.lease, self.worker_id, nx=True, px=self.ttl_ms))

    def refresh(self) -> bool:
        return bool(self._refresh(keys=[self.keys.lease], args=[self.worker_id, self.ttl_ms]))

    def release(self) -> None:
        self._release(keys=[self.keys.lease], args=[self.worker_id])


class StreamConsumer:
    """A worker's side of one stream it holds the lease for: read in order, commit atomically."""

    def __init__(
        self, client: RedisClient, stream: str, worker_id: str, results_maxlen: int = DEFAULT_RESULTS_MAXLEN
    ) -> None:
        self.client = client
        self.keys = StreamKeys(stream)
        self.worker_id = worker_id
        self.results_maxlen = results_maxlen
        self._commit = client.register_script(_COMMIT)
        self._pending_first = True

    def adopt_orphans(self) -> int:
        """Move frames delivered to earlier (dead) owners to this worker, to be processed first, in order."""
        moved, start = 0, "0-0"
        while True:
            # Not JUSTID: redis-py then drops the cursor. The reply is [cursor, entries] on Redis 6.2 and
            # [cursor, entries, deleted ids] on 7.
            reply = self.client.xautoclaim(
                self.keys.frames, WORKER_GROUP, self.worker_id, min_idle_time=0, start_id=start, count=100
            )
            start, ids = reply[0], reply[1]
            moved += len(ids)
            if start in (b"0-0", "0-0"):
                break
        self._pending_first = True
        return moved

    def read(self, count: int = 4, block_ms: int | None = None) -> list[FrameEntry | EndEntry]:
        """The next entries: this worker's unacknowledged ones first (after a takeover), then new ones."""
        while True:
            start = "0" if self._pending_first else ">"
            reply = self.client.xreadgroup(
                WORKER_GROUP, self.worker_id, {self.keys.frames: start}, count=count,
                block=None if self._pending_first else block_ms,
            )
            entries = reply[0][1] if reply else []
            if self._pending_first and not entries:
                self._pending_first = False
                continue
            return [self._parse(entry_id, fields) for entry_id, fields in entries]

    @staticmethod
    def _parse(entry_id: bytes, fields: dict[bytes, bytes]) -> FrameEntry | EndEntry:
        message = frames_entry_adapter.validate_json(fields[MESSAGE_FIELD])
        if isinstance(message, IngestEnded):
            return EndEntry(entry_id, message)
        return FrameEntry(entry_id, message, fields[PAYLOAD_FIELD])

    def commit(self, entry_id: bytes, result: FrameResult | StreamEnded, checkpoint: Checkpoint | None = None) -> bool:
        """Write the result, acknowledge and delete the frame, save the checkpoint: all or nothing.

        Returns False (and writes nothing) when this worker no longer holds the lease.
        """
        keys = [self.keys.lease, self.keys.frames, self.keys.results, self.keys.state]
        args = [self.worker_id, WORKER_GROUP, entry_id, result.model_dump_json(), self.results_maxlen]
        if checkpoint is None:
            args += ["", "", ""]
        else:
            args += [checkpoint.session or "", checkpoint.frames_seen, checkpoint.next_id]
        return bool(self._commit(keys=keys, args=args))

    def load_state(self) -> Checkpoint | None:
        """The stream's last checkpoint: counters as of the last committed frame, the session as of the last
        full save (None before the first)."""
        state = self.client.hgetall(self.keys.state)
        if not state or b"frames" not in state:
            return None
        return Checkpoint(session=state.get(b"session"), frames_seen=int(state[b"frames"]),
                          next_id=int(state[b"next_id"]))

    def has_ended(self) -> bool:
        last = self.client.xrevrange(self.keys.results, count=1)
        return bool(last) and isinstance(results_entry_adapter.validate_json(last[0][1][MESSAGE_FIELD]), StreamEnded)

    def unregister(self) -> None:
        self.client.srem(REGISTRY_KEY, self.keys.stream)


def read_results(
    client: RedisClient, stream: str, follow: bool = False, block_ms: int = 1000, start_id: str = "0-0",
    alive: Callable[[], None] | None = None,
) -> Iterator[FrameResult | StreamEnded]:
    """A stream's results in order. With `follow`, waits for new ones until the stream's end message;
    `alive` is called between waits and may raise to stop following (e.g. when the producer died)."""
    load_spec(client, stream)  # raises UnknownStream
    key = StreamKeys(stream).results
    last = start_id
    while True:
        reply = client.xread({key: last}, count=256, block=block_ms if follow else None)
        entries = reply[0][1] if reply else []
        for entry_id, fields in entries:
            last = entry_id
            message = results_entry_adapter.validate_json(fields[MESSAGE_FIELD])
            yield message
            if isinstance(message, StreamEnded):
                return
        if not entries and not follow:
            return
        if alive is not None:
            alive()
