"""Fault scenarios on workers, each judged by the ledger (``make test-faults``).

A worker killed with ``kill -9`` holding many jobs; a worker frozen with SIGSTOP past its lease, then
resumed; a worker whose connection goes silent without closing; a busy worker stopped with SIGTERM while an
idle one waits; a worker stream that stops reading. Every scenario runs real server and worker processes,
short leases, and ends with the ledger check (lost, duplicated, unexpected, invariants), whose summary it
prints.
"""

from __future__ import annotations

import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from tests.ledger.checker import Expect
from tests.ledger.faultkit import SilentProxy, until
from tests.ledger.producer import numbered
from tests.ledger.scenario import LEASE_MS, RECOVERY_LEASE_MS, WAIT, Scenario, server_args
from tests.procs import Procs

pytestmark = pytest.mark.faults


@pytest.fixture
async def scenario(request: pytest.FixtureRequest, procs: Procs, tmp_path: Path) -> AsyncIterator[Scenario]:
    s = Scenario(request.node.name.removeprefix("test_"), procs, tmp_path)
    yield s
    await s.close()


def held_by(s: Scenario, worker: str) -> set[str]:
    """Job ids whose run the worker started and never finished (per its journal)."""
    runs = {(r["id"], r["tok"]) for r in s.records("start", worker)}
    ended = {(r["id"], r["tok"]) for ev in ("done", "fail", "abandon") for r in s.records(ev, worker)}
    return {job_id for job_id, _ in runs - ended}


async def test_worker_killed_holding_many_jobs(
    scenario: Scenario, procs: Procs, redis_url: str, prefix: str, redis: Redis
) -> None:
    """kill -9 of a worker running 100 jobs: each comes back at once, runs again elsewhere as a
    redelivery, and completes once; the other jobs run once."""
    s = scenario
    srv = await procs.server(redis_url, prefix, 0, *server_args(RECOVERY_LEASE_MS))
    admin = s.client(srv.address)
    await admin.register_queue("k9", default_job_options={"max_stalled": 3})
    producer = s.producer(srv.address)
    assert await producer.add_bulk("k9", numbered("k", 400)) == "ack"
    victim = s.worker(srv.address, ["k9"], "victim", concurrency=100, run_ms=600_000)
    await s.wait_records("the victim to start 100 runs", 100, "start", "victim")
    s.worker(srv.address, ["k9"], "rescuer", concurrency=50, run_ms=5)
    held = held_by(s, "victim")
    assert len(held) == 100
    killed_at = s.mark()
    victim.kill()
    await victim.wait()
    await s.wait_finished(admin, ["k9"], 400)
    reruns = [r for r in s.records("start", "rescuer") if r["id"] in held]
    assert {r["id"] for r in reruns} == held
    assert all(r["re"] and r["stc"] == 1 for r in reruns), "a recovered job must say it is a redelivery"
    s.figures["recovery_first_s"] = round(min(r["t"] for r in reruns) - killed_at, 3)
    s.figures["recovery_all_s"] = round(max(r["t"] for r in reruns) - killed_at, 3)
    report = await s.check(redis, prefix, Expect(["k9"], max_runs=lambda q, i: 2 if i in held else 1))
    assert report.ok, report.summary()
    assert report.counts["redelivered"] == 100 and report.counts["completed"] == 400


async def test_worker_frozen_past_its_lease_then_resumed(
    scenario: Scenario, procs: Procs, redis_url: str, prefix: str, redis: Redis
) -> None:
    """SIGSTOP a worker holding 20 jobs past its lease: the jobs are recovered and completed by another
    worker; resumed, the frozen worker learns its leases are gone (its extensions are refused) and stops
    its runs before they end: one result per job, the rescuer's, and no run left holding a slot."""
    s = scenario
    srv = await procs.server(redis_url, prefix, 0, *server_args(LEASE_MS))
    admin = s.client(srv.address)
    await admin.register_queue("frozen", default_job_options={"max_stalled": 3})
    producer = s.producer(srv.address)
    assert await producer.add_bulk("frozen", numbered("f", 40)) == "ack"
    sleeper = s.worker(srv.address, ["frozen"], "sleeper", concurrency=20, run_ms=3 * LEASE_MS)
    await s.wait_records("the sleeper to start 20 runs", 20, "start", "sleeper")
    held = held_by(s, "sleeper")
    os.kill(sleeper.popen.pid, signal.SIGSTOP)
    try:
        s.worker(srv.address, ["frozen"], "rescuer", concurrency=20, run_ms=5)
        await s.wait_finished(admin, ["frozen"], 40)
    finally:
        os.kill(sleeper.popen.pid, signal.SIGCONT)
    # Resumed, the sleeper's next extensions are refused (each run has a lease time still to sleep): it
    # stops the runs, each journaled as abandoned, and reports nothing for them.
    await s.wait_records("the sleeper to stop its 20 runs", 20, "abandon", "sleeper")
    sleeper.terminate()
    assert await sleeper.wait(WAIT) == 0
    metrics = await admin.get_queue_metrics("frozen")
    assert (metrics.completed, metrics.stalled_total) == (40, 20)
    report = await s.check(redis, prefix, Expect(["frozen"], max_runs=lambda q, i: 2 if i in held else 1))
    assert report.ok, report.summary()
    assert report.counts["rejected_runs"] == 0  # no lost run went on to a completion of its own


async def test_jobs_recovered_from_a_frozen_worker_are_not_sent_back_to_it(
    scenario: Scenario, procs: Procs, redis_url: str, prefix: str, redis: Redis
) -> None:
    """SIGSTOP a worker holding 20 jobs with 20 slots still free: when their leases run out, the recovered
    jobs wait for a live worker instead of going straight back to the frozen one (where they would stall a
    second time: failed for good with max_stalled 1). Resumed, the frozen worker takes jobs again."""
    s = scenario
    srv = await procs.server(redis_url, prefix, 0, *server_args(LEASE_MS))
    admin = s.client(srv.address)
    await admin.register_queue("thaw", default_job_options={"max_stalled": 1})
    producer = s.producer(srv.address)
    sleeper = s.worker(srv.address, ["thaw"], "sleeper", concurrency=40, run_ms=3 * LEASE_MS)
    await s.wait_connected(admin, ["sleeper"])
    assert await producer.add_bulk("thaw", numbered("t", 20)) == "ack"
    await s.wait_records("the sleeper to start 20 runs", 20, "start", "sleeper")
    held = held_by(s, "sleeper")
    os.kill(sleeper.popen.pid, signal.SIGSTOP)
    try:

        async def recovered() -> bool:
            m = await admin.get_queue_metrics("thaw")
            return (m.stalled_total, m.waiting, m.active) == (20, 20, 0)

        await until(
            recovered, "the reaper to recover the frozen worker's 20 jobs and leave them waiting", WAIT / 4
        )
        rescuer = s.worker(srv.address, ["thaw"], "rescuer", concurrency=20, run_ms=5)
        await s.wait_finished(admin, ["thaw"], 20)
    finally:
        os.kill(sleeper.popen.pid, signal.SIGCONT)
    metrics = await admin.get_queue_metrics("thaw")
    assert (metrics.completed, metrics.failed, metrics.stalled_total) == (20, 0, 20)
    # Resumed, the sleeper stops its lost runs and reports: it is sent jobs again.
    await s.wait_records("the sleeper to stop its 20 runs", 20, "abandon", "sleeper")
    rescuer.terminate()
    assert await rescuer.wait(WAIT) == 0
    assert await producer.add_bulk("thaw", numbered("u", 5)) == "ack"
    await s.wait_records("the resumed sleeper to start new runs", 25, "start", "sleeper")
    sleeper.terminate()
    assert await sleeper.wait(WAIT) == 0
    report = await s.check(redis, prefix, Expect(["thaw"], max_runs=lambda q, i: 2 if i in held else 1))
    assert report.ok, report.summary()


async def test_connection_goes_silent_without_closing(
    scenario: Scenario, procs: Procs, redis_url: str, prefix: str, redis: Redis
) -> None:
    """A worker's connection stops carrying bytes both ways and stays open (a NAT or load balancer lost
    it): the server takes its jobs back when their leases run out and another worker completes them; the
    silent worker's keepalive notices the dead connection, it reconnects and works again, and the
    completions it had sent into the void never count."""
    s = scenario
    srv = await procs.server(redis_url, prefix, 0, *server_args(RECOVERY_LEASE_MS))
    proxy = SilentProxy(srv.address)
    await proxy.start()
    # The worker pings every keepalive and gives up on an unanswered ping after as long again: it notices
    # after about twice this, once the server has taken its jobs back (so the lease path is the one tested).
    keepalive_ms = RECOVERY_LEASE_MS + 1_000
    try:
        admin = s.client(srv.address)
        await admin.register_queue("silent", default_job_options={"max_stalled": 3})
        producer = s.producer(srv.address)
        s.worker(proxy.address, ["silent"], "muted", concurrency=20, run_ms=1_000, keepalive_ms=keepalive_ms)
        await s.wait_connected(admin, ["muted"])
        assert await producer.add_bulk("silent", numbered("s", 20)) == "ack"
        await s.wait_records("the muted worker to start 20 runs", 20, "start", "muted")
        held = held_by(s, "muted")
        silenced_at = s.mark()
        assert proxy.silence() == 1
        s.worker(srv.address, ["silent"], "rescuer", concurrency=20, run_ms=5)
        await s.wait_records("the rescuer to rerun the 20 jobs", 20, "done", "rescuer")
        reruns = s.records("start", "rescuer")
        s.figures["recovery_all_s"] = round(max(r["t"] for r in reruns) - silenced_at, 3)
        # Back within two keepalive intervals, not after gRPC's default 60 s ping timeout.
        await s.wait_connected(admin, ["muted"], after=silenced_at, timeout=2 * keepalive_ms / 1000 + 5)
        s.figures["worker_reconnected_s"] = round(s.mark() - silenced_at, 3)
        assert await producer.add_bulk("silent", numbered("t", 200, run_ms=20)) == "ack"
        await s.wait_finished(admin, ["silent"], 220)
        later = {r["id"] for r in s.records("start", "muted")} - held
        assert later, "the muted worker never worked again after reconnecting"
    finally:
        await proxy.stop()
    report = await s.check(redis, prefix, Expect(["silent"], max_runs=lambda q, i: 2 if i in held else 1))
    assert report.ok, report.summary()


async def test_sigterm_of_a_busy_worker_leaves_its_jobs_to_it(
    scenario: Scenario, procs: Procs, redis_url: str, prefix: str, redis: Redis
) -> None:
    """Hatchet's no-premature-reassignment test: a worker running five jobs longer than the lease gets
    SIGTERM while an idle worker waits. It keeps extending their leases while it drains, finishes all five
    and exits 0; the idle worker takes none of them (one run each, first attempt, no stall)."""
    s = scenario
    srv = await procs.server(redis_url, prefix, 0, *server_args(LEASE_MS))
    admin = s.client(srv.address)
    await admin.register_queue("drain")
    producer = s.producer(srv.address)
    busy = s.worker(srv.address, ["drain"], "busy", concurrency=5, run_ms=3 * LEASE_MS)
    await s.wait_connected(admin, ["busy"])
    assert await producer.add_bulk("drain", numbered("d", 5)) == "ack"
    await s.wait_records("the busy worker to start its 5 runs", 5, "start", "busy")
    s.worker(srv.address, ["drain"], "idle", concurrency=5, run_ms=5)
    await s.wait_connected(admin, ["busy", "idle"])
    busy.terminate()
    assert await busy.wait(WAIT) == 0
    assert len(s.records("done", "busy")) == 5
    # The idle worker is alive: it takes jobs added now.
    assert await producer.add_bulk("drain", numbered("e", 5)) == "ack"
    await s.wait_finished(admin, ["drain"], 10)
    assert {r["id"] for r in s.records("start", "idle")} == {f"e-{i}" for i in range(5)}
    assert (await admin.get_queue_metrics("drain")).stalled_total == 0
    report = await s.check(redis, prefix, Expect(["drain"], max_runs=1))
    assert report.ok, report.summary()
    assert report.counts["redelivered"] == 0
