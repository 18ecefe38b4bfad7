"""A worker killed mid-stream: a restarted worker finishes the stream with no frame missing or duplicated."""

import signal
import subprocess
import sys
import time


from samstream.streaming.keys import StreamKeys
from samstream.streaming.messages import FrameResult


def _cli(*args):
    return [sys.executable, "-m", "samstream.cli", *map(str, args)]


def _wait(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_killed_worker_loses_and_duplicates_nothing(realshort, redis_url, redis_client, tmp_path):
    ingest = subprocess.run(_cli("ingest", realshort, "--stream", "cam1", "--instruction", "person",
                                 "--redis", redis_url), capture_output=True, text=True, timeout=120)
    assert ingest.returncode == 0, ingest.stderr
    results_key = StreamKeys("cam1").results
    log1 = open(tmp_path / "worker1.log", "w")
    # the random tiny model finds many (meaningless) tracks: the id bookkeeping across failover is what is tested
    first = subprocess.Popen(_cli("--log-level", "INFO", "worker", "--redis", redis_url, "--lease-ttl", 1,
                                  "--model", "builtin:tiny-random"),
                             stdout=log1, stderr=subprocess.STDOUT)
    try:
        _wait(lambda: redis_client.xlen(results_key) >= 5, 120, "the first worker's results")
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
    finally:
        first.kill()
        log1.close()
    done_before = redis_client.xlen(results_key)
    assert 5 <= done_before < 37, "the worker must die mid-stream"
    next_id = int(redis_client.hget(StreamKeys("cam1").state, "next_id"))  # saved with every frame

    second = subprocess.run(_cli("--log-level", "INFO", "worker", "--redis", redis_url, "--lease-ttl", 1,
                                 "--exit-when-idle", 2, "--model", "builtin:tiny-random"),
                            capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr

    printed = subprocess.run(_cli("results", "--stream", "cam1", "--redis", redis_url), capture_output=True,
                             text=True, timeout=60)
    assert printed.returncode == 0, printed.stderr
    results = [FrameResult.model_validate_json(line) for line in printed.stdout.splitlines()]
    frames = [r.frame for r in results]
    assert frames == list(range(36))  # each frame once, in order
    ids_before = {i.id for r in results[:done_before] for i in r.instances}
    ids_after = {i.id for r in results[done_before:] for i in r.instances}
    # the successor continues the old tracks or starts new ids; it never hands out an id twice
    assert ids_before and ids_after
    assert all(i in ids_before or i >= next_id for i in ids_after), (ids_before, ids_after, next_id)
    assert redis_client.xlen(StreamKeys("cam1").frames) == 0
    assert not redis_client.smembers("samstream:streams")


def test_worker_gives_a_clear_error_when_redis_is_unreachable():
    done = subprocess.run(_cli("worker", "--redis", "redis://127.0.0.1:1"), capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1].startswith("samstream: error: cannot reach Redis at redis://127.0.0.1:1")


def test_sigterm_finishes_the_frame_and_releases_the_lease(realshort, redis_url, redis_client):
    subprocess.run(_cli("ingest", realshort, "--stream", "cam2", "--instruction", "person", "--redis", redis_url),
                   check=True, capture_output=True, timeout=120)
    worker = subprocess.Popen(_cli("worker", "--redis", redis_url, "--lease-ttl", 30), stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE)
    _wait(lambda: redis_client.xlen(StreamKeys("cam2").results) >= 2, 120, "results")
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=30) == 0
    assert redis_client.get(StreamKeys("cam2").lease) is None  # released at once, not after 30 s
