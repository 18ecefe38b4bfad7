"""One stream held by a worker: its lease, its consumer, its tracking session."""

from __future__ import annotations

import logging

from samstream.instances import Instances
from samstream.model.segmenter import Segmenter
from samstream.streaming.messages import StreamEnded, StreamSpec
from samstream.streaming.rle import to_frame_result
from samstream.streaming.transport import EndEntry, FrameEntry, StreamConsumer, StreamLease
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
    ) -> None:
        self.spec = spec
        self.lease = lease
        self.consumer = consumer
        self.session = TrackingSession(segmenter, spec.instructions, tracker_config, levels=spec.level)
        self.finished = False
        state = consumer.load_state()
        if state:
            self.session.restore(state)
            log.info("stream %s: resumed at frame %d", spec.stream, self.session.frames_seen)

    @property
    def stream(self) -> str:
        return self.spec.stream

    def step(self, block_ms: int | None) -> int:
        """Process the entries available now (waiting up to block_ms for some). Returns how many."""
        entries = self.consumer.read(count=4, block_ms=block_ms)
        for entry in entries:
            if isinstance(entry, EndEntry):
                self._finish(entry)
                break
            self._process(entry)
        return len(entries)

    def _process(self, entry: FrameEntry) -> None:
        header = entry.header
        try:
            rgb = entry.rgb()
        except ValueError as e:
            # A corrupt frame is skipped with an empty result so the stream keeps its frame numbering.
            log.error("stream %s frame %d: undecodable payload (%s)", self.stream, header.frame, e)
            rgb = None
        if rgb is None:
            instances = Instances.empty(header.height, header.width)
        else:
            instances = self.session.update(rgb)
        result = to_frame_result(self.stream, header.frame, header.pts, instances)
        if not self.consumer.commit(entry.entry_id, result, self.session.state_dict()):
            raise LeaseLost(self.stream)

    def _finish(self, entry: EndEntry) -> None:
        ended = StreamEnded(stream=self.stream, frames=entry.message.frames, error=entry.message.error)
        if not self.consumer.commit(entry.entry_id, ended):
            raise LeaseLost(self.stream)
        self.consumer.unregister()
        self.finished = True
        log.info("stream %s: ended after %d frames%s", self.stream, ended.frames,
                 f" ({ended.error})" if ended.error else "")
