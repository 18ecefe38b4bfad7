"""One settings object, built once at process start (from CLI flags) and passed down."""

from __future__ import annotations

import os
import socket
import uuid
from dataclasses import dataclass, field

from samstream.streaming.connection import Backoff
from samstream.streaming.transport import DEFAULT_MAX_BACKLOG, DEFAULT_RESULTS_MAXLEN

DEFAULT_KEYFRAME_EVERY = 5  # detector pass every K frames; memory propagation in between
DEFAULT_LEASE_TTL_S = 10.0  # a dead worker's streams move to another worker after this long
DEFAULT_MAX_STREAMS = 4  # streams one worker holds at once
DEFAULT_CHECKPOINT_EVERY = 10  # frames between full tracking-session checkpoints (counters go every frame)


def new_worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


@dataclass(frozen=True)
class WorkerSettings:
    redis_url: str
    model: str | None = None  # local folder or hub id; None: the built-in default
    device: str = "auto"
    keyframe_every: int = DEFAULT_KEYFRAME_EVERY
    lease_ttl_s: float = DEFAULT_LEASE_TTL_S
    max_streams: int = DEFAULT_MAX_STREAMS
    checkpoint_every: int = DEFAULT_CHECKPOINT_EVERY
    results_maxlen: int = DEFAULT_RESULTS_MAXLEN
    backoff: Backoff = Backoff()
    worker_id: str = field(default_factory=new_worker_id)
    exit_when_idle_s: float | None = None  # for batch jobs and tests; None: run until stopped


@dataclass(frozen=True)
class IngestSettings:
    redis_url: str
    encoding: str = "jpeg"
    jpeg_quality: int = 90
    max_backlog: int = DEFAULT_MAX_BACKLOG
    backoff: Backoff = Backoff()
