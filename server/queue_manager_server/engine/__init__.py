"""The storage engine: keys, Lua scripts and the Python methods that run them."""

from queue_manager_server.engine.engine import Engine

__all__ = ["Engine"]
