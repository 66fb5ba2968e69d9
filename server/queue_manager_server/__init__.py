"""Queue Manager server: grpc.aio services over a Redis/Valkey engine of atomic Lua scripts."""

__version__ = "0.1.0"
