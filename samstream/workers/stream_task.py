"""One stream held by a worker: its lease, its consumer, its tracking session."""

from __future__ import annotations

import logging

from samstream.instances import Instances
from samstream.model.segmenter import Segmenter
from samstream.settings import DEFAULT_CHECKPOINT_EVERY
from samstream.streaming.messages import StreamEnded, StreamSpec
from samstream.streaming.rle import to_frame_result
from samstream.streaming.transport import Checkpoint, EndEntry, FrameEntry, StreamConsumer, StreamLease
from samstream.tracker.session import TrackerConfig, TrackingSession

log = logging.getLogger(__name__)


class LeaseLost(Exception):
    """Another worker owns the stream now; drop it without writing anything more."""


class StreamTask:
    def __init__(
        self,
        spec: StreamSpec,
        lease: StreamLease,
        consumer: StreamConsumer,
        segmenter: Segmenter,
        tracker_config: TrackerConfig,
        checkpoint_every: int = DEFAULT_CHECKPOINT_EVERY,
    ) -> None:
        self.spec = spec
        self.lease = lease
        self.consumer = consumer
        self.session = TrackingSession(segmenter, spec.instructions, tracker_config, levels=spec.level)
        self.finished = False
        self.checkpoint_every = checkpoint_every
        checkpoint = consumer.load_state()
        if checkpoint is not None:
            self.session.restore(checkpoint.session, checkpoint.frames_seen, checkpoint.next_id)
            log.info("stream %s: resumed at frame %d", spec.stream, self.session.frames_seen)

    @property
    def stream(self) -> str:
        return self.spec.stream

    def read(self, block_ms: int | None, count: int = 4) -> list[FrameEntry | EndEntry]:
        """The entries available now (waiting up to block_ms for some), oldest first."""
        return self.consumer.read(count=count, block_ms=block_ms)

    def decode(self, entry: FrameEntry):
        """The frame's RGB pixels, or None for an undecodable payload (it gets an empty result)."""
        try:
            return entry.rgb()
        except ValueError as e:
            # A corrupt frame is skipped with an empty result so the stream keeps its frame numbering.
            log.error("stream %s frame %d: undecodable payload (%s)", self.stream, entry.header.frame, e)
            return None

    def commit(self, entry: FrameEntry, instances: Instances) -> None:
        """Write the frame's result, acknowledge the frame and checkpoint the session, atomically."""
        header = entry.header
        result = to_frame_result(self.stream, header.frame, header.pts, instances)
        session = self.session
        full = session.frames_seen % self.checkpoint_every == 0 or session.frames_seen == 1
        checkpoint = Checkpoint(session.state_dict() if full else None, session.frames_seen, session.next_id)
        if not self.consumer.commit(entry.entry_id, result, checkpoint):
            raise LeaseLost(self.stream)

    def finish(self, entry: EndEntry) -> None:
        """Write the end marker and leave the registry: the stream is done."""
        ended = StreamEnded(stream=self.stream, frames=entry.message.frames, error=entry.message.error)
        if not self.consumer.commit(entry.entry_id, ended):
            raise LeaseLost(self.stream)
        self.consumer.unregister()
        self.finished = True
        log.info("stream %s: ended after %d frames%s", self.stream, ended.frames,
                 f" ({ended.error})" if ended.error else "")
