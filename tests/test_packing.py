"""Commands packed by hiredis (engine/packing.py) are the very bytes redis-py's own packer makes."""

from __future__ import annotations

from typing import Any

import pytest
from redis.asyncio.connection import Connection, SSLConnection, UnixDomainSocketConnection

from queue_manager_server.engine.packing import hiredis_packing

COMMANDS: list[tuple[Any, ...]] = [
    ("EVALSHA", "abc123", 3, "k1", b"k2", "k3", "x\x00y", b"\xff\x00\r\n", 0, -5, 12_345_678_901_234, "é"),
    ("SET", "a", 1.5),
    ("SET", "a", 0.1 + 0.2),
    ("CONFIG GET", "maxmemory"),  # a command of two words, sent as two arguments
    (b"CLIENT SETNAME", b"qm"),
    ("SET", "big", b"v" * 100_000),
    ("SET", "view", memoryview(b"bytes")),  # hiredis does not pack it: redis-py's way
]


@pytest.mark.parametrize("base", [Connection, SSLConnection, UnixDomainSocketConnection])
def test_the_bytes_are_redis_pys(base: type[Connection]) -> None:
    ours, theirs = hiredis_packing(base)(), base()
    assert issubclass(type(ours), base) and hiredis_packing(base) is type(ours)  # one class per base
    for cmd in COMMANDS:
        assert b"".join(ours.pack_command(*cmd)) == b"".join(bytes(p) for p in theirs.pack_command(*cmd))
    pipeline = b"".join(bytes(p) for p in theirs.pack_commands(COMMANDS))
    assert b"".join(ours.pack_commands(COMMANDS)) == pipeline
