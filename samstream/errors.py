"""The one exception family samstream raises for problems a user can fix.

The CLI prints these as a single line and exits non-zero; anything else is a bug and keeps its traceback.
"""


class SamstreamError(Exception):
    """Base of every user-facing error."""


class ConfigError(SamstreamError):
    """A bad argument or setting (empty instruction, bad stream id, bad model path...)."""


class SourceError(SamstreamError):
    """A video source could not be opened or broke while decoding."""


class RedisUnavailable(SamstreamError):
    """Redis could not be reached after retrying with backoff."""


class UnknownStream(SamstreamError):
    """A stream id that Redis has never seen."""


class EmbeddedRedisError(SamstreamError):
    """No embedded Redis server could be started."""


class ModelLoadError(SamstreamError):
    """A model folder, hub id or checkpoint could not be loaded."""


class StreamFailed(SamstreamError):
    """A stream ended with an error reported by its ingest or worker; `summary` holds what was produced."""

    def __init__(self, message: str, summary: object = None) -> None:
        super().__init__(message)
        self.summary = summary
