"""Redis key names. Every key of one stream shares the `{stream-id}` hash tag, so Redis Cluster keeps a
stream's frames, results, lease and state in one slot (and Lua scripts may touch them together)."""

from __future__ import annotations

from dataclasses import dataclass

from samstream.streaming.messages import check_stream_id

PREFIX = "samstream"
REGISTRY_KEY = f"{PREFIX}:streams"  # set of stream ids that workers should pick up
WORKER_GROUP = "workers"  # consumer group on every frames stream


def worker_heartbeat_key(worker_id: str) -> str:
    return f"{PREFIX}:worker:{worker_id}"


@dataclass(frozen=True)
class StreamKeys:
    stream: str

    def __post_init__(self) -> None:
        check_stream_id(self.stream)

    @property
    def _base(self) -> str:
        return f"{PREFIX}:{{{self.stream}}}"

    @property
    def spec(self) -> str:
        return f"{self._base}:spec"

    @property
    def frames(self) -> str:
        return f"{self._base}:frames"

    @property
    def results(self) -> str:
        return f"{self._base}:results"

    @property
    def lease(self) -> str:
        return f"{self._base}:lease"

    @property
    def state(self) -> str:
        return f"{self._base}:state"
