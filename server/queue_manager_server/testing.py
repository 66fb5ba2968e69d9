"""A private, real Queue Manager for your own test suite, on a clock the test moves (docs/testing.md).

``TestServer`` starts the real server on a free loopback port with its own embedded Valkey (or the Redis you
give it) and the test clock on (Settings.test_clock): every script adds an offset to Redis's clock, and
``server.clock.advance(3600)`` adds an hour to it, then has the server do at once what fell due: delayed jobs
and retries whose backoff has passed become waiting (and go to connected workers), schedules fire and move
on, runs past their timeout fail, expiries end jobs, priority bounds move jobs ahead, rate-limit buckets
refill, age-based retention removes jobs. No real waiting, and the same outcome on every run.

What stays on real time: leases (stalled-job detection), worker heartbeats and the worker registry, stream
silence, and job-event watches; an advance keeps their deadlines where they were in real time
(advance_clock.lua), so moving an hour on never makes a running job stalled or a worker gone.

    async with TestServer() as server:
        qm = server.queue_manager()
        await qm.register_queue("emails")
        job = await qm.add_job("emails", "send", {"to": "a@example.com"}, {"delay": timedelta(hours=1)})
        await server.clock.advance(3600)
        assert (await qm.get_job("emails", job.id)).state is JobState.WAITING
"""

from __future__ import annotations

import math
import shutil
import tempfile
import uuid
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any, Self

from queue_manager import QueueManager
from queue_manager_server.app import App
from queue_manager_server.config import Settings
from queue_manager_server.engine.clock import TestClockStorage

__all__ = ["TestClock", "TestServer"]

NOT_STARTED = "the TestServer has not started: use it as `async with TestServer() as server`"


class TestClock:
    """The clock of a `TestServer`: Redis's clock as that server sees it, which only moves forward."""

    __test__ = False  # not a pytest test class

    def __init__(self, app: App) -> None:
        assert app.engine is not None, "the server has not started"
        self._app = app
        self._engine = app.engine
        self._storage = TestClockStorage(app.engine)

    async def advance(self, amount: float | timedelta) -> datetime:
        """Moves the clock forward and has the server do what fell due by then; returns once it has.

        When it returns, delayed jobs and retries that fell due are waiting (or already claimed: connected
        workers are woken at once and get them straight after), due schedules have fired, runs past their
        timeout have failed, and expired jobs have ended.

        Args:
            amount: Seconds (int or float; ms precision) or a timedelta, 0 or more.

        Returns:
            The clock's time after the move.

        Raises:
            ValueError: a negative, infinite or NaN amount (the clock never goes back).
            TypeError: neither a number nor a timedelta.
        """
        await self._app.advance_clock(_amount_ms(amount))
        return await self.now()

    async def now(self) -> datetime:
        """The clock's time now (UTC): real time plus every advance so far."""
        return datetime.fromtimestamp(await self._engine.redis_time_ms() / 1000, UTC)

    async def offset(self) -> timedelta:
        """How far the clock has been moved forward in all."""
        return timedelta(milliseconds=await self._storage.offset_ms())


def _amount_ms(amount: float | timedelta) -> int:
    """An advance as whole ms (rounded), or the error that refuses it."""
    if isinstance(amount, timedelta):
        seconds = amount.total_seconds()
    elif isinstance(amount, int | float) and not isinstance(amount, bool):
        seconds = float(amount)
    else:
        raise TypeError(f"advance takes seconds (int or float) or a timedelta, not {type(amount).__name__}")
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"the test clock only moves forward by a finite amount, not {amount!r}")
    return round(seconds * 1000)


class TestServer:
    """A real Queue Manager on a test clock, private to one test: an async context manager.

    Attributes (once entered):
        address: HOST:PORT of its gRPC port on the loopback interface.
        clock: Its `TestClock`.
        app: The server itself (queue_manager_server.app.App), for what the above does not reach.
    """

    __test__ = False  # not a pytest test class

    def __init__(self, **settings: Any) -> None:
        """Args:
        **settings: Server settings (queue_manager_server.config.Settings fields) other than the defaults
            here: any free loopback port, an embedded Valkey in a new temporary directory (removed on exit)
            unless ``redis_url`` names one Redis/Valkey server, no HTTP port,
            ``shutdown_grace_ms=2000``. A ``key_prefix`` of its own lets several servers share one Redis.
            ``test_clock`` is always on.
        """
        self._settings = settings
        self._data_dir: str | None = None
        self._app: App | None = None
        self._clock: TestClock | None = None
        self._clients: list[QueueManager] = []

    @property
    def app(self) -> App:
        if self._app is None:
            raise RuntimeError(NOT_STARTED)
        return self._app

    @property
    def address(self) -> str:
        return self.app.address

    @property
    def clock(self) -> TestClock:
        if self._clock is None:
            raise RuntimeError(NOT_STARTED)
        return self._clock

    def queue_manager(self, **options: Any) -> QueueManager:
        """A client of this server (queue_manager.QueueManager), shut down (its workers too) when the server
        stops.

        Args:
            **options: QueueManager's keyword arguments (concurrency, shutdown_grace…).
        """
        client = QueueManager(self.address, **{"shutdown_grace": 2.0, **options})
        self._clients.append(client)
        return client

    async def start(self) -> None:
        overrides = dict(self._settings)
        if overrides.get("redis_url") is None:
            self._data_dir = overrides["data_dir"] = tempfile.mkdtemp(prefix="qm-test-")
        settings = Settings(
            **{
                "listen": "127.0.0.1:0",
                "shutdown_grace_ms": 2_000,
                "server_id": f"test-{uuid.uuid4().hex[:8]}",
                **overrides,
                "test_clock": True,
            }
        )
        self._app = App(settings)
        try:
            await self._app.start()
            self._clock = TestClock(self._app)
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        """Shuts down the clients it handed out, then the server and its embedded Valkey."""
        clients, self._clients = self._clients, []
        for client in clients:
            await client.shutdown()
        if self._app is not None:
            await self._app.stop()
        if self._data_dir is not None:
            shutil.rmtree(self._data_dir, ignore_errors=True)
            self._data_dir = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()
