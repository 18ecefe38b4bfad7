"""samstream: segment and track, in live and recorded video, exactly what an instruction describes."""

from samstream.errors import SamstreamError
from samstream.instances import Instances

__version__ = "0.1.0"

__all__ = ["Instances", "SamstreamError", "TrackedFrame", "__version__", "track"]


def __getattr__(name: str):
    # The in-process API pulls in torch and transformers; import it only when asked for.
    if name in ("track", "TrackedFrame"):
        from samstream import api

        return getattr(api, name)
    raise AttributeError(f"module 'samstream' has no attribute {name!r}")
