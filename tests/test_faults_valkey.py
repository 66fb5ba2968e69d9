"""Fault scenarios on Valkey itself, judged by the ledger (``make test-faults``).

Valkey killed with ``kill -9`` under load and restarted from its append-only file (``appendfsync always``:
nothing acknowledged is lost); Valkey gone for 20 s (killed, restarted on the same port and data directory
later: clients get UNAVAILABLE meanwhile, the service is back within seconds, delayed jobs that fell due
meanwhile start at once, the scripts Valkey forgot are loaded again); Valkey at ``maxmemory`` with
``noeviction`` (adds get RESOURCE_EXHAUSTED and write nothing, completions of running jobs still count).
Each scenario runs its own Valkey (`faultkit.Valkey`), a server process and ledger worker processes with
short leases, and ends with the ledger check, whose summary it prints.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from queue_manager import JobState
from queue_manager.errors import QueueManagerError
from queue_manager_server.engine.scripts import Scripts
from tests.ledger.checker import Expect
from tests.ledger.faultkit import Valkey, until
from tests.ledger.producer import Job, Producer, endless, numbered
from tests.ledger.scenario import LEASE_MS, WAIT, Scenario, server_args
from tests.procs import Procs

pytestmark = pytest.mark.faults

# Valkey's appendfsync in these scenarios; the promise (lost = 0) is for "always".
APPENDFSYNC = os.environ.get("QM_FAULTS_APPENDFSYNC", "always")
# How long Valkey stays away in the outage scenario (the figure).
OUTAGE_S = 20.0
# After Valkey is back, a producer's add succeeds and waiting jobs start within this long. Workers whose
# stream broke reconnect with a backoff capped at 5 s (queue_manager/worker.py), hence the margin.
BACK_WITHIN_S = 7.0


@pytest.fixture
async def scenario(request: pytest.FixtureRequest, procs: Procs, tmp_path: Path) -> AsyncIterator[Scenario]:
    s = Scenario(request.node.name.removeprefix("test_"), procs, tmp_path)
    yield s
    await s.close()


@pytest.fixture
async def valkey(tmp_path: Path) -> AsyncIterator[Valkey]:
    """A Valkey of the scenario's own: appendfsync always (QM_FAULTS_APPENDFSYNC overrides it, to measure
    what a weaker setting loses), noeviction, DEBUG enabled."""
    v = Valkey(tmp_path / "valkey", appendfsync=APPENDFSYNC)
    await v.start()
    yield v
    await v.stop()


@pytest.fixture
async def raw(valkey: Valkey) -> AsyncIterator[Redis]:
    """A plain client of that Valkey (reconnects by itself after a restart)."""
    client = Redis.from_url(valkey.url, socket_timeout=WAIT)
    yield client
    await client.aclose()


async def bulk_loop(producer: Producer, queue: str, name: str, size: int, stop: asyncio.Event) -> None:
    """Adds bulk streams of `size` jobs (``<name>-<stream>-<i>``), each retried with the same ids while
    its outcome is unknown, until `stop` is set."""
    deadline = asyncio.get_running_loop().time() + WAIT
    stream = 0
    while not stop.is_set():
        jobs = numbered(f"{name}-{stream}", size)
        await producer.add_until_known(queue, jobs, deadline, bulk=True)
        stream += 1
        await asyncio.sleep(0.02)


async def test_valkey_killed_and_restarted_from_its_append_only_file(
    scenario: Scenario, procs: Procs, prefix: str, valkey: Valkey, raw: Redis
) -> None:
    """kill -9 of Valkey while producers add (single and bulk) and two workers run jobs; restarted on the
    same port from its append-only file (appendfsync always). Every acknowledged add is there and runs
    to completion; only jobs whose outcome the kill interrupted run again (bounded by the workers'
    concurrency)."""
    s = scenario
    srv = await procs.server(valkey.url, prefix, 0, *server_args(LEASE_MS))
    admin = s.client(srv.address)
    await admin.register_queue("vk", default_job_options={"max_stalled": 5})
    s.worker(srv.address, ["vk"], "w1", concurrency=10, run_ms=20)
    s.worker(srv.address, ["vk"], "w2", concurrency=10, run_ms=20)
    await s.wait_connected(admin, ["w1", "w2"])
    single, bulk = s.producer(srv.address, "single"), s.producer(srv.address, "bulk")
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    load = [
        asyncio.create_task(
            single.pump("vk", endless("a"), concurrency=4, deadline=loop.time() + WAIT, stop=stop)
        ),
        asyncio.create_task(bulk_loop(bulk, "vk", "b", 50, stop)),
    ]
    await s.wait_records("jobs to flow", 300, "done")
    killed_at = s.mark()
    await valkey.kill()
    await until(lambda: _failed(single), "an add to fail while Valkey is gone", WAIT)
    await valkey.start()
    restarted_at = s.mark()
    await s.wait_records("jobs to flow again", 300, "done", after=restarted_at)
    s.figures["valkey_down_s"] = round(restarted_at - killed_at, 3)
    s.figures["first_ack_after_restart_s"] = round(_first_ack_after(s, restarted_at), 3)
    stop.set()
    await asyncio.gather(*load)
    acked = single.tally.outcomes["ack"] + bulk.tally.outcomes["ack"]
    await s.wait_finished(admin, ["vk"], acked)
    report = await s.check(raw, prefix, Expect(["vk"], max_runs=2))
    assert report.ok, report.summary()
    assert report.counts["unknown"] == 0, "every add whose outcome the kill hid was retried to an answer"
    # A job runs twice only if it was leased at the kill. A worker holds at most its concurrency in runs
    # and as many finished runs whose completions are in flight (their credits are claimed against
    # first): 2 x 10 per worker.
    assert report.counts["rerun_jobs"] <= 40, "more jobs ran twice than the workers can hold"


async def test_valkey_unavailable_for_twenty_seconds(
    scenario: Scenario, procs: Procs, prefix: str, valkey: Valkey, raw: Redis
) -> None:
    """Valkey killed and restarted 20 s later on the same port and data directory. Meanwhile every call
    gets UNAVAILABLE (no other status, no hang); once it is back, adds succeed and jobs run again within
    seconds, the delayed jobs that fell due during the outage start at once, and the scripts the new
    Valkey process did not know are loaded again."""
    s = scenario
    srv = await procs.server(valkey.url, prefix, 0, *server_args(LEASE_MS))
    admin = s.client(srv.address, timeout=5.0)
    await admin.register_queue("out", default_job_options={"max_stalled": 5})
    s.worker(srv.address, ["out"], "w1", concurrency=10, run_ms=20)
    s.worker(srv.address, ["out"], "w2", concurrency=10, run_ms=20)
    await s.wait_connected(admin, ["w1", "w2"])
    producer = s.producer(srv.address, "main", timeout=5.0)
    assert await producer.add_bulk("out", numbered("warm", 50)) == "ack"
    # Delayed jobs falling due during the outage (they are in the append-only file before the kill).
    delayed = [Job(id=f"dl-{i}", data={"i": i}, options={"delay": 4_000 + i * 1_000}) for i in range(15)]
    added_at = s.mark()
    assert await producer.add_bulk("out", delayed) == "ack"
    due = {j.id: added_at + j.options["delay"] / 1000 for j in delayed}
    await s.wait_records("the warm-up jobs to run", 50, "done")
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    pump = asyncio.create_task(
        producer.pump(
            "out", endless("p"), concurrency=2, deadline=loop.time() + WAIT + OUTAGE_S, stop=stop, pace_s=0.05
        )
    )
    await s.wait_records("the pumped jobs to run", 50 + 20, "done")
    killed_at = s.mark()
    await valkey.kill()
    try:
        await admin.get_queue_metrics("out")
    except QueueManagerError as exc:
        assert exc.code.name == "UNAVAILABLE", exc
    else:
        raise AssertionError("a call answered while Valkey was gone")
    await asyncio.sleep(OUTAGE_S)  # the outage itself: the producer keeps trying meanwhile
    down_codes = dict(producer.tally.codes)
    await valkey.start()
    restarted_at = s.mark()
    # The new Valkey process starts without scripts (they are not in the append-only file).
    scripts = Scripts(raw)
    await until(lambda: _acked_after(s, restarted_at), "an add to succeed after the outage", WAIT)
    back = _first_ack_after(s, restarted_at)
    ran = await s.wait_records("a job to start after the outage", 1, "start", after=restarted_at)
    stop.set()
    await pump
    total = producer.tally.outcomes["ack"]
    await s.wait_finished(admin, ["out"], total)
    starts = {r["id"]: r["t"] for r in reversed(s.records("start")) if r["id"].startswith("dl-")}
    late = max(starts[i] - max(due[i], restarted_at) for i in due)
    s.figures.update(
        valkey_down_s=round(restarted_at - killed_at, 3),
        first_ack_after_restart_s=round(back, 3),
        first_run_after_restart_s=round(min(r["t"] for r in ran) - restarted_at, 3),
        due_jobs_started_within_s=round(late, 3),
        unavailable_answers=down_codes.get("UNAVAILABLE", 0),
    )
    for name in ("add_jobs", "claim", "complete"):
        assert await raw.script_exists(scripts.get(name).sha) == [True], f"{name}.lua was not loaded again"
    report = await s.check(raw, prefix, Expect(["out"], max_runs=2))
    assert report.ok, report.summary()
    assert set(down_codes) == {"UNAVAILABLE"}, f"statuses while Valkey was gone: {down_codes}"
    assert back < BACK_WITHIN_S, f"the first add succeeded {back:.1f} s after Valkey was back"
    assert all(due[i] < restarted_at for i in due), "a delayed job fell due after the outage"
    assert late < BACK_WITHIN_S, f"a delayed job that fell due during the outage started {late:.1f} s late"
    assert report.counts["rerun_jobs"] <= 20


async def test_valkey_full_refuses_adds_and_keeps_completions(
    scenario: Scenario, procs: Procs, prefix: str, valkey: Valkey, raw: Redis
) -> None:
    """Valkey at maxmemory with noeviction: adds get RESOURCE_EXHAUSTED and write nothing, while the 20
    jobs a worker is running complete (their completions are recorded, nothing runs twice). Once memory is
    raised, every acknowledged job runs to completion."""
    s = scenario
    srv = await procs.server(valkey.url, prefix, 0, *server_args(LEASE_MS))
    admin = s.client(srv.address)
    await admin.register_queue("full")
    producer = s.producer(srv.address)
    holder = "holder"
    s.worker(srv.address, ["full"], holder, concurrency=20, run_ms=1)
    await s.wait_connected(admin, [holder])
    # The held jobs run long enough for Valkey to fill up meanwhile; the extensions cross the full Valkey.
    held = [Job(id=f"h-{i}", data={"i": i, "run_ms": 2 * LEASE_MS}) for i in range(20)]
    assert await producer.add_bulk("full", held) == "ack"
    await s.wait_records("the holder to start its 20 runs", 20, "start", holder)
    used = int((await raw.info("memory"))["used_memory"])
    await raw.config_set("maxmemory", used + 2 * 1024 * 1024)
    stop = asyncio.Event()

    async def exhausted() -> bool:
        if producer.tally.codes["RESOURCE_EXHAUSTED"] >= 20:
            stop.set()
        return stop.is_set()

    loop = asyncio.get_running_loop()
    pump = asyncio.create_task(
        producer.pump(
            "full", endless("fill", pad="x" * 8192), concurrency=4, deadline=loop.time() + WAIT, stop=stop
        )
    )
    await until(exhausted, "adds to be refused with RESOURCE_EXHAUSTED", WAIT)
    await pump
    # Keep it full whatever Valkey frees meanwhile (client buffers): every ordinary write is refused.
    await raw.config_set("maxmemory", 1)
    full_at = s.mark()
    # The holder had no free slot so far (no claim could slip in before Valkey was this full) …
    assert not s.records("done", holder), "the held runs ended before Valkey was full: lengthen them"
    # … and still full, the held runs finish and their completions must count.
    await s.wait_records("the held runs to finish", 20, "done", holder)

    async def held_completed() -> bool:
        jobs = [await admin.get_job("full", j.id) for j in held]
        return all(j.state == JobState.COMPLETED for j in jobs)

    await until(held_completed, "the held jobs to be completed in the full Valkey", WAIT)
    assert await producer.add("full", Job(id="while-full")) == "refused"
    refused_while_full = producer.tally.outcomes["refused"]
    s.figures["held_completed_after_full_s"] = round(s.mark() - full_at, 3)
    # A claim's first write only removes (ZPOPMIN), which Valkey allows when full: acknowledged jobs keep
    # starting (and, with their outcomes allowed, finishing) while adds are refused.
    s.figures["jobs_started_while_full"] = len(
        [r for r in s.records("start", after=full_at) if r["id"].startswith("fill")]
    )
    await raw.config_set("maxmemory", 0)
    assert await producer.add("full", Job(id="after")) == "ack"
    total = producer.tally.outcomes["ack"]
    await s.wait_finished(admin, ["full"], total)
    report = await s.check(raw, prefix, Expect(["full"], max_runs=1))
    assert report.ok, report.summary()
    assert set(producer.tally.codes) == {"RESOURCE_EXHAUSTED"}, dict(producer.tally.codes)
    assert refused_while_full >= 21 and report.counts["rerun_jobs"] == 0


async def _failed(producer: Producer) -> bool:
    return producer.tally.first_failure is not None


async def _acked_after(s: Scenario, after: float) -> bool:
    return bool(s.records("ack", after=after))


def _first_ack_after(s: Scenario, after: float) -> float:
    """Seconds from `after` (wall clock) to the first acknowledged add journalled since."""
    times = [r["t"] for r in s.records("ack", after=after)]
    assert times, "no add was acknowledged after the restart"
    return float(min(times)) - after
