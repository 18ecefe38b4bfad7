"""Draw a stage's next batch in a background thread while the current step computes.

A batch is rendered scenes (or decoded COCO images), instructions and tokenised text: Python, numpy and OpenCV
work that otherwise sits between two optimizer steps on the same cores (a third of an objects-stage step on a
2-core CPU). PyTorch releases the GIL inside its kernels, so the drawing overlaps the forward and backward passes.
One batch ahead is enough: the stream is drawn in the same order, by one thread, as without prefetching.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Protocol


class BatchStream(Protocol):
    def sample(self, pairs: int) -> Any: ...


class Prefetched:
    """Wraps a batch stream: `sample()` returns the batch drawn during the previous step and starts the next.

    The wrapped stream must not be used directly while this one is open (it is drawn from another thread).
    Errors raised while drawing a batch surface at the `sample()` call that returns it."""

    def __init__(self, batches: BatchStream, pairs: int) -> None:
        self.batches, self.pairs = batches, pairs
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="samstream-batches")
        self._next: Future = self._executor.submit(batches.sample, pairs)

    def sample(self) -> Any:
        batch = self._next.result()
        self._next = self._executor.submit(self.batches.sample, self.pairs)
        return batch

    def close(self) -> None:
        """Stop drawing: waits for the batch in progress (drawing cannot be interrupted) and drops it."""
        self._next.cancel()
        self._executor.shutdown(wait=True)

    def __enter__(self) -> Prefetched:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
