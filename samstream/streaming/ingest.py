"""Publishing a video file's frames to Redis as one stream."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from samstream.errors import SourceError
from samstream.streaming.connection import RedisClient
from samstream.streaming.messages import StreamSpec
from samstream.streaming.sources import VideoFileSource
from samstream.streaming.transport import FramePublisher


def open_file_stream(
    client: RedisClient,
    path: str | os.PathLike[str],
    stream: str,
    instructions: list[str],
    max_frames: int | None = None,
    encoding: str = "jpeg",
    keyframe_every: int | None = None,
    replace: bool = False,
    level: str = "auto",
    **publisher_options: int,
) -> tuple[VideoFileSource, FramePublisher]:
    """Open the file (errors before anything is written to Redis), then register the stream."""
    source = VideoFileSource(path, max_frames=max_frames)
    spec = StreamSpec(
        stream=stream,
        instructions=instructions,
        width=source.info.width,
        height=source.info.height,
        fps=source.info.fps,
        source=Path(path).name,
        encoding=encoding,
        keyframe_every=keyframe_every,
        level=level,
    )
    publisher = FramePublisher(client, spec, **publisher_options)
    publisher.register(replace=replace)
    return source, publisher


def publish_all(
    source: VideoFileSource, publisher: FramePublisher, on_frame: Callable[[int], None] | None = None
) -> None:
    """Publish every frame, then the end marker. A decoding error ends the stream with that error (the
    frames before it stay published) and is re-raised."""
    try:
        for frame in source:
            publisher.publish(frame)
            if on_frame:
                on_frame(frame.index)
    except SourceError as e:
        publisher.end(error=str(e))
        raise
    except BaseException:
        publisher.end(error="ingest interrupted")
        raise
    publisher.end()
