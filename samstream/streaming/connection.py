"""Connecting to Redis (single node or Cluster) with capped exponential backoff."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import redis
from redis.cluster import RedisCluster

from samstream.errors import ConfigError, RedisUnavailable

log = logging.getLogger(__name__)

RedisClient = redis.Redis | RedisCluster


@dataclass(frozen=True)
class Backoff:
    """Retry policy: delays of base, 2*base, 4*base... capped at `cap`, for at most `attempts` tries."""

    attempts: int = 6
    base_s: float = 0.25
    cap_s: float = 4.0

    def delay(self, attempt: int) -> float:
        return min(self.cap_s, self.base_s * (2**attempt))


def redacted(url: str) -> str:
    """The URL with any password replaced by '***' (for messages and logs)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit(parts._replace(netloc=netloc))


def connect(url: str, backoff: Backoff = Backoff(), cluster: bool = False) -> RedisClient:
    """A client that answered PING. `redis+cluster://` (or cluster=True) selects Redis Cluster.

    Raises `RedisUnavailable` naming the URL once every attempt has failed.
    """
    if cluster or url.startswith("redis+cluster://"):
        url = url.replace("redis+cluster://", "redis://", 1)
        make = lambda: RedisCluster.from_url(url, socket_connect_timeout=2)  # noqa: E731
    else:
        try:
            pool = redis.ConnectionPool.from_url(url, socket_connect_timeout=2, health_check_interval=30)
        except ValueError as e:
            raise ConfigError(f"bad Redis URL {redacted(url)!r}: {e}") from e
        make = lambda: redis.Redis(connection_pool=pool)  # noqa: E731
    last: Exception | None = None
    for attempt in range(backoff.attempts):
        try:
            client = make()
            client.ping()
            return client
        except (redis.ConnectionError, redis.TimeoutError, OSError) as e:
            last = e
            if attempt + 1 < backoff.attempts:
                delay = backoff.delay(attempt)
                log.warning("Redis at %s not reachable (%s); retrying in %.2fs", redacted(url), e, delay)
                time.sleep(delay)
    raise RedisUnavailable(
        f"cannot reach Redis at {redacted(url)} after {backoff.attempts} attempts ({last})"
    ) from last
