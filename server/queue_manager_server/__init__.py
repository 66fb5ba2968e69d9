"""Queue Manager server: grpc.aio services over a Redis/Valkey engine of atomic Lua scripts."""

# First, before anything imports grpc: how its sockets are read (queue_manager/_grpc_io.py).
import queue_manager._grpc_io  # noqa: F401

__version__ = "0.1.0"
