"""Job chaining (chain_to): links run one after another across queues, each seeing its predecessor."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from queue_manager import JobContext, JobState, QueueManager
from queue_manager.errors import InvalidArgumentError
from queue_manager.v1 import jobs_pb2, types_pb2
from queue_manager_server import convert
from queue_manager_server.components.maintenance import Janitor
from queue_manager_server.engine import Engine
from queue_manager_server.engine.engine import SWEEP_CHUNK
from queue_manager_server.engine.records import NewJob
from queue_manager_server.services.flows import Flows, successor_id
from queue_manager_server.services.workflows import Workflows
from tests.conftest import RunningServer
from tests.procs import Procs
from tests.rawworker import eventually

WAIT = 20.0


def chained_job(job_id: str, link_queue: str) -> NewJob:
    """A job named and identified `job_id` whose chain has one link, a job "next" in `link_queue`."""
    link = types_pb2.ChainLink(queue_name=link_queue, job_name="next")
    job = convert.new_job(
        jobs_pb2.NewJob(name=job_id, options=types_pb2.JobOptions(chain_to=[link])), "job", 1 << 20
    )
    job.id = job_id
    return job


async def completed(engine: Engine, queue: str, jobs: list[NewJob]) -> tuple[list[int], int]:
    """Adds the jobs, leases and completes them all (result {"r": 1}); returns complete's codes and the
    flow hand-offs it queued."""
    await engine.add_jobs(queue, jobs)
    claimed = (await engine.claim(queue, len(jobs), "t", "w", 30_000)).jobs
    return await engine.complete(queue, [(j.id, "t", b'{"r": 1}', "application/json") for j in claimed])


@pytest.fixture
async def qm(server: RunningServer) -> AsyncIterator[QueueManager]:
    client = QueueManager(address=server.address, concurrency=4)
    for name in ("ingest", "data-processing", "notifications"):
        await client.register_queue(name)
    yield client
    await client.shutdown()


async def test_three_links_across_queues_pass_results_on(qm: QueueManager) -> None:
    seen: list[tuple[str, Any]] = []
    done = asyncio.Event()

    @qm.processor("ingest")
    async def ingest(job: JobContext) -> dict[str, int]:
        seen.append((job.name, None))
        return {"rows": job.data["rows"]}

    @qm.processor("data-processing")
    async def process(job: JobContext) -> dict[str, int]:
        assert job.parent is not None
        seen.append((job.name, job.parent.result))
        return {"processed": job.parent.result["rows"] * job.data["factor"]}

    @qm.processor("notifications")
    async def notify(job: JobContext) -> str:
        assert job.parent is not None
        seen.append((job.name, job.parent.result))
        done.set()
        return f"sent {job.parent.result['processed']}"

    await qm.start_workers()
    first = await qm.add_job(
        "ingest",
        "load",
        {"rows": 21},
        {
            "chain_to": [
                {"queue_name": "data-processing", "job_name": "process-data", "data": {"factor": 2}},
                {"queue_name": "notifications", "job_name": "notify", "options": {"priority": "high"}},
            ]
        },
    )
    assert [link.job_name for link in first.options.chain_to or []] == ["process-data", "notify"]
    async with asyncio.timeout(WAIT):
        await done.wait()
    assert seen == [("load", None), ("process-data", {"rows": 21}), ("notify", {"processed": 42})]

    async def linked() -> bool:
        return bool((await qm.get_job("ingest", first.id)).children)

    await eventually(linked)
    root = await qm.get_job("ingest", first.id)
    second = await qm.get_job("data-processing", root.children[0].job_id)
    assert second.parents[0].job_id == first.id and second.chain_root is not None
    assert second.chain_root.job_id == first.id
    assert [link.job_name for link in second.options.chain_to or []] == ["notify"]

    async def third_done() -> bool:
        refreshed = await qm.get_job("data-processing", second.id)
        if not refreshed.children:
            return False
        last = await qm.get_job("notifications", refreshed.children[0].job_id)
        return last.state == JobState.COMPLETED and last.result == "sent 42"

    await eventually(third_done)


async def test_a_link_failing_for_good_stops_the_chain(qm: QueueManager) -> None:
    ran: list[str] = []

    @qm.processor("ingest")
    async def ingest(job: JobContext) -> int:
        ran.append(job.name)
        return 1

    @qm.processor("data-processing")
    async def fails(job: JobContext) -> None:
        ran.append(job.name)
        raise RuntimeError("disk full")

    @qm.processor("notifications")
    async def never(job: JobContext) -> None:
        ran.append(job.name)

    await qm.start_workers()
    first = await qm.add_job(
        "ingest",
        "load",
        None,
        {
            "chain_to": [
                {"queue_name": "data-processing", "job_name": "process", "options": {"attempts": 2}},
                {"queue_name": "notifications", "job_name": "notify"},
            ]
        },
    )

    async def stopped() -> str:
        return (await qm.get_job("ingest", first.id)).chain_failure

    await eventually(stopped)
    reason = await stopped()
    assert "process" in reason and "failed" in reason and "disk full" in reason
    assert ran == ["load", "process", "process"]
    assert (await qm.get_queue_metrics("notifications")).waiting == 0


async def test_map_reduce_with_add_bulk(qm: QueueManager) -> None:
    """The seed's pattern: a bulk of map jobs, each chaining to a reduce job of its own."""
    reduced: list[int] = []
    finished = asyncio.Event()

    @qm.processor("ingest")
    async def mapper(job: JobContext) -> int:
        return int(job.data["n"]) ** 2

    @qm.processor("data-processing")
    async def reducer(job: JobContext) -> None:
        assert job.parent is not None
        reduced.append(job.parent.result)
        if len(reduced) == 600:
            finished.set()

    await qm.start_workers()
    ids = await qm.add_bulk(
        "ingest",
        [
            {
                "name": "map",
                "data": {"n": n},
                "options": {"chain_to": [{"queue_name": "data-processing", "job_name": "reduce"}]},
            }
            for n in range(600)
        ],
    )
    assert len(ids) == 600
    async with asyncio.timeout(WAIT):
        await finished.wait()
    assert sorted(reduced) == sorted(n * n for n in range(600))


async def test_bad_chains_are_refused(qm: QueueManager) -> None:
    with pytest.raises(ValueError, match="chain_to"):
        await qm.add_job("ingest", "x", None, {"chain_to": [{"queue_name": "bad name", "job_name": "j"}]})
    nested = {
        "queue_name": "notifications",
        "job_name": "n",
        "options": {"chain_to": [{"queue_name": "a", "job_name": "b"}]},
    }
    with pytest.raises(ValueError, match="no chain_to of its own"):
        await qm.add_job("ingest", "x", None, {"chain_to": [nested]})
    links = [{"queue_name": "notifications", "job_name": "n"}] * 101
    with pytest.raises(InvalidArgumentError, match="chain_to"):
        await qm.add_job("ingest", "x", None, {"chain_to": links})


@pytest.mark.parametrize("point", ["before-hand-off", "after-successor"])
async def test_server_killed_between_completion_and_successor(
    procs: Procs, redis_url: str, prefix: str, engine: Engine, point: str
) -> None:
    """kill -9 right after the parent's completion (successor not added yet, or added but not recorded):
    after a restart the successor exists exactly once."""
    fast = ("--janitor-interval-ms", "200")
    doomed = await procs.server(redis_url, prefix, 0, "--test-crash-point", point, *fast)
    client = QueueManager(address=doomed.address)
    for name in ("ingest", "notifications"):
        await client.register_queue(name)

    @client.processor("ingest")
    async def work(job: JobContext) -> str:
        return "parent result"

    root = await client.add_job(
        "ingest", "load", None, {"chain_to": [{"queue_name": "notifications", "job_name": "notify"}]}
    )
    await client.start_workers()
    assert await doomed.wait(timeout=WAIT) == -9  # it killed itself at the crash point
    await client.shutdown(grace=0)
    assert (await engine.get_job("ingest", root.id)).state == "completed"
    await procs.server(redis_url, prefix, 0, *fast)

    async def successor_added() -> bool:
        return await engine.redis.llen(engine.keys("ingest").flow_outbox) == 0

    await eventually(successor_added, timeout=WAIT)
    waiting, total = await engine.list_jobs("notifications", "waiting", 0, 10)
    assert total == 1 and [j.id for j in waiting] == [successor_id("ingest", root.id)]
    assert (await engine.get_job("ingest", root.id)).raw("chd")


async def test_a_batch_of_hand_offs_adds_its_links_and_clears_in_one_round_trip_each(engine: Engine) -> None:
    """Chain jobs completed together are handed off together: every next link added (one add_jobs call per
    queue for the batch), every entry cleared by one flow_done call, and a link to a queue that is gone
    stops only its own chain."""
    for name in ("ingest", "notifications"):
        await engine.register_queue(name, {})
    engine.flow_hook = None  # the hand-off is run below, by hand
    flows = Flows(engine, Workflows(engine, 1 << 20), 1 << 20)
    jobs = [chained_job(f"p{i}", "gone" if i % 10 == 0 else "notifications") for i in range(60)]
    codes, queued = await completed(engine, "ingest", jobs)
    assert set(codes) == {0} and queued == 60

    async def script_calls() -> int:
        stats = await engine.redis.info("commandstats")
        return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))

    before = await script_calls()
    assert await flows.hand_off("ingest") == 60
    # The entries' read, the links' add (one call per queue: notifications, gone), the entries' clearing, and
    # for each of the 6 chains whose link's queue is gone, the record of why it stopped (rare: one call each).
    assert await script_calls() - before == 4 + 6
    assert await engine.redis.llen(engine.keys("ingest").flow_outbox) == 0
    waiting, total = await engine.list_jobs("notifications", "waiting", 0, 100)
    assert total == 54
    assert {j.id for j in waiting} == {successor_id("ingest", f"p{i}") for i in range(60) if i % 10}
    for i in range(60):
        parent = await engine.get_job("ingest", f"p{i}")
        if i % 10:
            assert types_pb2.Job.FromString(parent.raw("chd") or b"").children == [
                types_pb2.JobRef(queue_name="notifications", job_id=successor_id("ingest", f"p{i}"))
            ]
            assert not parent.raw("cfl")
        else:
            assert not parent.raw("chd")
            assert "chain stopped after ingest/p" in (parent.text("cfl") or "")


async def test_pending_flows_answer_each_entry_as_written_and_an_empty_one_when_cleared(
    engine: Engine,
) -> None:
    """pending_flows reads the outbox and every entry in one script call: the fields on_finished wrote, and
    {} for an entry another server cleared meanwhile (its hand-off then does nothing)."""
    await engine.register_queue("ingest", {})
    engine.flow_hook = None
    await completed(engine, "ingest", [chained_job(f"p{i}", "ingest") for i in range(3)])
    k = engine.keys("ingest")
    await engine.redis.delete(k.flow("p1"))
    entries = await engine.pending_flows("ingest", 10)
    assert [job_id for job_id, _ in entries] == ["p0", "p1", "p2"]
    first, cleared = entries[0][1], entries[1][1]
    assert cleared == {}
    assert first["st"] == b"completed" and first["res"] == b'{"r": 1}' and first["name"] == b"p0"
    link = types_pb2.ChainLink(queue_name="ingest", job_name="next")
    assert types_pb2.JobOptions.FromString(first["chn"]).chain_to == [link]
    assert set(first) == {"st", "res", "rct", "err", "name", "chn", "par", "md"}
    assert await engine.pending_flows("ingest", 2) == entries[:2]


async def test_a_links_result_reaches_its_entry_whole_though_the_job_stores_less(engine: Engine) -> None:
    """A completed job stores a JSON result without its content type and no result (JSON null) not at all
    (complete.lua); the flow entry its successor is built from still holds both."""
    await engine.register_queue("ingest", {})
    engine.flow_hook = None
    jobs = [chained_job(f"p{i}", "ingest") for i in range(3)]
    await engine.add_jobs("ingest", jobs)
    await engine.claim("ingest", 3, "t", "w", 30_000)
    results = [(b'{"r": 1}', "application/json"), convert.NO_PAYLOAD, (b"\x00", "application/octet-stream")]
    await engine.complete("ingest", [(j.id, "t", *r) for j, r in zip(jobs, results, strict=True)])
    entries = dict(await engine.pending_flows("ingest", 10))
    assert [(entries[j.id]["res"], entries[j.id]["rct"].decode()) for j in jobs] == results
    link = convert.payload_out(entries["p1"]["res"], entries["p1"]["rct"].decode(), json_view=True)
    assert link.json.HasField("null_value")


async def test_a_chains_last_link_hands_nothing_on_when_it_completes_but_stops_the_chain_when_it_fails(
    engine: Engine,
) -> None:
    """The last link of a chain has no next link: its completion queues no hand-off (no entry written, read
    and cleared for nothing: half the hand-offs of two-job chains), while its failure still records on the
    first job why the chain stopped."""
    for name in ("ingest", "notifications"):
        await engine.register_queue(name, {})
    engine.flow_hook = None  # hand-offs run below, by hand
    flows = Flows(engine, Workflows(engine, 1 << 20), 1 << 20)
    await completed(engine, "ingest", [chained_job(f"p{i}", "notifications") for i in range(2)])
    assert await flows.hand_off("ingest") == 2
    done, failing = (await engine.claim("notifications", 10, "t", "w", 30_000)).jobs
    assert (await engine.get_job("notifications", done.id)).raw("flo") == b"e"
    codes, queued = await engine.complete("notifications", [(done.id, "t", b"2", "application/json")])
    assert (codes, queued) == ([0], 0)
    outbox = engine.keys("notifications").flow_outbox
    assert await engine.redis.llen(outbox) == 0
    assert not await engine.redis.exists(engine.keys("notifications").flow(done.id))
    assert await engine.fail("notifications", [(failing.id, "t", "smtp down", "", True)]) == [(2, -1)]
    assert await engine.redis.llen(outbox) == 1
    assert await flows.hand_off("notifications") == 1
    root = "p1" if failing.id == successor_id("ingest", "p1") else "p0"
    reason = (await engine.get_job("ingest", root)).text("cfl")
    assert "failed: smtp down" in reason


async def test_the_janitor_finds_the_queues_with_work_in_shared_round_trips_and_skips_a_broken_one(
    engine: Engine,
) -> None:
    """The janitor reads what every queue has waiting (bulk streams, retention, dead letters, flow
    hand-offs) in shared round trips, visits only those with work, and a queue whose keys are broken fails
    alone: a hand-off a server left behind in a queue after it is still carried out."""
    names = [f"house-{i:03d}" for i in range(SWEEP_CHUNK + 20)]
    for name in names:
        await engine.register_queue(name, {})
    engine.flow_hook = None  # the entry stays queued, as if its server died before the hand-off
    chained = names[-1]
    await completed(engine, chained, [chained_job("p", names[0])])
    assert await engine.redis.llen(engine.keys(chained).flow_outbox) == 1
    broken = names[5]
    await engine.redis.set(engine.keys(broken).flow_outbox, "not a list")
    # A queue keeping completed jobs 50 ms, one of them older, another queue's within its age.
    aged, young = names[7], names[8]
    await engine.register_queue(aged, {"kc_age": 50})
    await engine.register_queue(young, {"kc_age": 60_000})
    for name in (aged, young):
        await engine.add_jobs(name, [NewJob(id="old", name="x", data=b"1")])
        await engine.claim(name, 1, "t", "w", 30_000)
        await engine.complete(name, [("old", "t", b"1", "application/json")])
    await asyncio.sleep(0.1)
    due = await engine.housekeeping_due(names)
    assert [i for i, d in enumerate(due) if d.flows] == [5, len(names) - 1]
    assert [i for i, d in enumerate(due) if d.retention] == [5, 7]
    assert not any(d.bulk or d.dead_letters for i, d in enumerate(due) if i != 5)

    workflows = Workflows(engine, 1 << 20)
    janitor = Janitor(engine, Flows(engine, workflows, 1 << 20), workflows, 30.0, 60_000)
    await janitor.tick()
    assert await engine.redis.llen(engine.keys(chained).flow_outbox) == 0
    (successor,) = (await engine.list_jobs(names[0], "waiting", 0, 10))[0]
    assert successor.id == successor_id(chained, "p")
    assert (await engine.metrics(aged)).completed == 0
    assert (await engine.metrics(young)).completed == 1
