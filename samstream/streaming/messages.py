"""Messages that cross a process or Redis boundary: pydantic v2 models, versioned, one per kind of thing.

A frames stream carries `FrameHeader` entries (plus the pixel payload beside them) and one `IngestEnded`;
a results stream carries `FrameResult` entries and one `StreamEnded`. Every message has `v` (the schema
version) and `kind` (the discriminator), so readers can reject what they do not understand.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, field_validator

SCHEMA_VERSION = 1

# No braces (they would break the Redis Cluster hash tag) and no colons (our key separator).
STREAM_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")


def check_stream_id(stream_id: str) -> str:
    if not STREAM_ID_PATTERN.match(stream_id):
        raise ValueError(
            f"invalid stream id {stream_id!r}: use 1-128 letters, digits, '_', '.', '-' (starting with a letter or digit)"
        )
    return stream_id


def check_instruction(text: str) -> str:
    text = " ".join(text.split())
    if not text:
        raise ValueError("the instruction is empty: say what to segment, e.g. --instruction 'the red car'")
    return text


class _Message(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    v: Literal[1] = SCHEMA_VERSION


class StreamSpec(_Message):
    """What a stream is: stored once per stream when it is registered."""

    kind: Literal["spec"] = "spec"
    stream: str
    instructions: list[str] = Field(min_length=1)
    width: int = Field(gt=0)
    height: int = Field(gt=0)
    fps: float = Field(gt=0)
    source: str = ""
    encoding: Literal["jpeg", "raw"] = "jpeg"
    keyframe_every: int | None = Field(default=None, gt=0)  # None: the worker's default
    level: Literal["auto", "concept", "simple", "complex"] = "auto"  # SAM3-I level of every instruction

    @field_validator("stream")
    @classmethod
    def _stream_ok(cls, value: str) -> str:
        return check_stream_id(value)

    @field_validator("instructions")
    @classmethod
    def _instructions_ok(cls, values: list[str]) -> list[str]:
        return [check_instruction(v) for v in values]


class FrameHeader(_Message):
    """One frame in a frames stream; the pixels travel in the entry's payload field."""

    kind: Literal["frame"] = "frame"
    frame: int = Field(ge=0)
    pts: float  # seconds from the start of the stream
    width: int = Field(gt=0)
    height: int = Field(gt=0)
    encoding: Literal["jpeg", "raw"]


class IngestEnded(_Message):
    """The last entry of a frames stream: no more frames will come. `error` says why it stopped early."""

    kind: Literal["ingest-end"] = "ingest-end"
    frames: int = Field(ge=0)
    error: str | None = None


FramesEntry = Annotated[FrameHeader | IngestEnded, Field(discriminator="kind")]
frames_entry_adapter: TypeAdapter[FrameHeader | IngestEnded] = TypeAdapter(FramesEntry)


class RleMask(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    size: tuple[int, int]  # [height, width]
    counts: str  # COCO compressed RLE


class InstanceResult(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    id: int
    instruction: str
    level: Literal["concept", "simple", "complex"] = "concept"  # the SAM3-I route that produced it
    score: float
    confirmed: bool = True  # matched at enough keyframes (TrackerConfig.min_hits_confirmed); new tracks: False
    bbox: tuple[float, float, float, float]  # [x, y, w, h] in pixels
    mask: RleMask


class FrameResult(_Message):
    kind: Literal["frame"] = "frame"
    stream: str
    frame: int = Field(ge=0)
    pts: float
    instances: list[InstanceResult]

    def to_jsonl(self) -> str:
        """The line format of results.jsonl (no envelope fields)."""
        return self.model_dump_json(exclude={"v", "kind"})


class StreamEnded(_Message):
    """The last entry of a results stream."""

    kind: Literal["end"] = "end"
    stream: str
    frames: int = Field(ge=0)
    error: str | None = None


ResultsEntry = Annotated[FrameResult | StreamEnded, Field(discriminator="kind")]
results_entry_adapter: TypeAdapter[FrameResult | StreamEnded] = TypeAdapter(ResultsEntry)
