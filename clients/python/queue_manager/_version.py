"""This library's installed version, as workers report it in their hello and tracing names its tracer."""

from __future__ import annotations

from functools import cache
from importlib import metadata as importlib_metadata

__all__ = ["client_version"]


@cache
def client_version() -> str:
    """The installed ``queue-manager`` distribution's version; ``0.0.0`` when it is not installed."""
    try:
        return importlib_metadata.version("queue-manager")
    except importlib_metadata.PackageNotFoundError:
        return "0.0.0"
