"""The Redis transport against a real Redis server."""

import numpy as np
import pytest

from samstream.errors import ConfigError, RedisUnavailable, UnknownStream
from samstream.streaming.connection import Backoff, connect
from samstream.streaming.keys import REGISTRY_KEY, WORKER_GROUP, StreamKeys
from samstream.streaming.messages import FrameResult, StreamSpec
from samstream.streaming.sources import DecodedFrame
from samstream.streaming.transport import (
    Checkpoint,
    EndEntry,
    FrameEntry,
    FramePublisher,
    StreamConsumer,
    StreamLease,
    load_spec,
    read_results,
)


def _publish(client, stream="s1", frames=3, encoding="raw"):
    spec = StreamSpec(stream=stream, instructions=["cat"], width=8, height=6, fps=10, encoding=encoding)
    publisher = FramePublisher(client, spec)
    publisher.register()
    for i in range(frames):
        rgb = np.full((6, 8, 3), i, dtype=np.uint8)
        publisher.publish(DecodedFrame(index=i, pts=i / 10, rgb=rgb))
    publisher.end()
    return publisher


def _result(stream, frame):
    return FrameResult(stream=stream, frame=frame, pts=frame / 10, instances=[])


def test_register_announces_and_refuses_a_duplicate_id(redis_client):
    _publish(redis_client, frames=0)
    assert redis_client.sismember(REGISTRY_KEY, "s1")
    assert load_spec(redis_client, "s1").instructions == ["cat"]
    with pytest.raises(ConfigError, match="already exists"):
        _publish(redis_client, frames=0)


def test_commit_writes_result_acks_and_deletes_frame_atomically(redis_client):
    _publish(redis_client, frames=2)
    lease = StreamLease(redis_client, "s1", "w1", ttl_s=5)
    assert lease.acquire()
    consumer = StreamConsumer(redis_client, "s1", "w1")
    entries = consumer.read(count=10)
    assert [type(e) for e in entries] == [FrameEntry, FrameEntry, EndEntry]
    assert entries[1].rgb()[0, 0, 0] == 1
    assert consumer.commit(entries[0].entry_id, _result("s1", 0), Checkpoint(b"state-0", frames_seen=1, next_id=3))
    keys = StreamKeys("s1")
    assert redis_client.xlen(keys.frames) == 2  # processed frame deleted: length = backlog
    assert redis_client.xpending(keys.frames, WORKER_GROUP)["pending"] == 2
    assert consumer.load_state() == Checkpoint(b"state-0", 1, 3)
    assert [m.frame for m in read_results(redis_client, "s1")] == [0]
    # counters only: the last full session stands, the counters move on
    assert consumer.commit(entries[1].entry_id, _result("s1", 1), Checkpoint(None, frames_seen=2, next_id=5))
    assert consumer.load_state() == Checkpoint(b"state-0", 2, 5)


def test_commit_is_refused_once_the_lease_is_lost(redis_client):
    _publish(redis_client, frames=1)
    lease = StreamLease(redis_client, "s1", "w1", ttl_s=5)
    assert lease.acquire()
    consumer = StreamConsumer(redis_client, "s1", "w1")
    entry = consumer.read(count=1)[0]
    redis_client.set(StreamKeys("s1").lease, "w2")  # another worker took over
    assert not lease.refresh()
    assert not consumer.commit(entry.entry_id, _result("s1", 0))
    assert list(read_results(redis_client, "s1")) == []
    assert redis_client.xpending(StreamKeys("s1").frames, WORKER_GROUP)["pending"] == 1


def test_new_owner_adopts_unacknowledged_frames_first_and_in_order(redis_client):
    _publish(redis_client, frames=4)
    dead = StreamConsumer(redis_client, "s1", "dead")
    delivered = dead.read(count=2)  # delivered to a worker that then died
    assert [e.header.frame for e in delivered] == [0, 1]
    heir = StreamConsumer(redis_client, "s1", "heir")
    assert heir.adopt_orphans() == 2
    first = heir.read(count=10)
    assert [e.header.frame for e in first] == [0, 1]
    for e in first:
        heir_lease = StreamLease(redis_client, "s1", "heir", 5)
        heir_lease.acquire()
        assert heir.commit(e.entry_id, _result("s1", e.header.frame))
    rest = heir.read(count=10)
    assert [getattr(e, "header", None) and e.header.frame for e in rest[:2]] == [2, 3]
    assert isinstance(rest[-1], EndEntry)


def test_lease_is_exclusive_and_released_only_by_its_owner(redis_client):
    a, b = StreamLease(redis_client, "s1", "a", 5), StreamLease(redis_client, "s1", "b", 5)
    assert a.acquire() and not b.acquire()
    b.release()
    assert not b.acquire()
    a.release()
    assert b.acquire()


def test_publisher_waits_while_the_backlog_is_full(redis_client):
    import threading

    spec = StreamSpec(stream="s1", instructions=["cat"], width=8, height=6, fps=10, encoding="raw")
    publisher = FramePublisher(redis_client, spec, max_backlog=2)
    publisher.register()
    frame = DecodedFrame(index=0, pts=0.0, rgb=np.zeros((6, 8, 3), np.uint8))
    publisher.publish(frame)
    publisher.publish(frame)
    third = threading.Thread(target=publisher.publish, args=(frame,))
    third.start()
    third.join(timeout=0.3)
    assert third.is_alive() and publisher.published == 2  # held back, nothing dropped
    consumer = StreamConsumer(redis_client, "s1", "w")
    StreamLease(redis_client, "s1", "w", 5).acquire()
    entry = consumer.read(count=1)[0]
    consumer.commit(entry.entry_id, _result("s1", 0))
    third.join(timeout=5)
    assert not third.is_alive() and publisher.published == 3


def test_unknown_stream(redis_client):
    with pytest.raises(UnknownStream, match="unknown stream 'ghost'"):
        list(read_results(redis_client, "ghost"))


def test_unreachable_redis_retries_then_names_the_url():
    with pytest.raises(RedisUnavailable, match=r"cannot reach Redis at redis://127\.0\.0\.1:1 after 3 attempts"):
        connect("redis://127.0.0.1:1", Backoff(attempts=3, base_s=0.01, cap_s=0.02))


def test_password_is_not_shown_in_errors():
    with pytest.raises(RedisUnavailable) as info:
        connect("redis://:hunter2@127.0.0.1:1", Backoff(attempts=1))
    assert "hunter2" not in str(info.value)
