"""Starts the embedded Valkey again when it dies under a running server."""

from __future__ import annotations

from collections.abc import Callable

from queue_manager_server.components.base import Component
from queue_manager_server.embedded import EmbeddedValkey


class ValkeyKeeper(Component):
    """Checks every interval that the embedded Valkey still runs. One that exited on its own (killed, crashed,
    the OOM killer) is started again on the same port and data directory, from its append-only file, and the
    server's Redis connections reconnect to it at their next call. Without this the server stayed up
    answering UNAVAILABLE ("retry shortly") until someone restarted it. A start that fails is tried again at
    the next tick."""

    name = "valkey_keeper"

    def __init__(self, valkey: EmbeddedValkey, started: Callable[[int], None], interval: float = 0.5) -> None:
        super().__init__(interval)
        self.valkey = valkey
        # Told the new process's pid (the data directory's lock file names it).
        self.started = started

    async def tick(self) -> None:
        if self.valkey.running:
            return
        status = self.valkey.exit_status
        if status is not None:  # first seen dead: said once, not at every retry
            self.log.error(
                "embedded valkey exited; starting it again from its append-only file",
                extra={"status": status, "port": self.valkey.port, "log": str(self.valkey.log_path)},
            )
        await self.valkey.restart()
        self.started(self.valkey.pid)
