"""What a `Worker` and a `WorkerManager` share about running until shut down: waiting for the end, and
a graceful shutdown on SIGTERM or SIGINT."""

from __future__ import annotations

import asyncio
import logging
import signal
from abc import ABC, abstractmethod


class RunsUntilShutdown(ABC):
    """Mixed into a class with ``start()`` and ``shutdown(grace)`` that sets ``_closed`` once shut down.

    Subclasses set ``_closed`` (an `asyncio.Event`) and ``_shutdown_task`` (None) in their constructor and
    ``_log`` in their class.
    """

    _closed: asyncio.Event
    _shutdown_task: asyncio.Task[None] | None
    _log: logging.Logger

    @abstractmethod
    async def start(self) -> None: ...

    @abstractmethod
    async def shutdown(self, grace: float | None = None) -> None: ...

    @abstractmethod
    def _description(self) -> str:
        """What a log line calls it (``worker <id>``, ``the pool``)."""

    async def wait_closed(self) -> None:
        """Waits until `shutdown` has finished."""
        await self._closed.wait()

    async def run(self) -> None:
        """Starts and returns once shut down (by `shutdown` or a signal)."""
        await self.start()
        await self.wait_closed()

    def install_signal_handlers(self, grace: float | None = None) -> None:
        """Makes SIGTERM and SIGINT shut down gracefully; a second signal acts as usual."""
        loop = asyncio.get_running_loop()

        def on_signal(signum: int) -> None:
            self._log.info("signal %s: shutting down %s", signal.Signals(signum).name, self._description())
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
            self._shutdown_task = loop.create_task(self.shutdown(grace))

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, on_signal, sig)
