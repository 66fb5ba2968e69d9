"""Routing jobs by worker labels (JobOptions.worker_labels): a routed job goes only to a worker whose hello
labels hold every one of its pairs, waits while none is connected, and reaches one at once when it comes or is
idle (folded claims, other servers), without the dispatcher claiming in a loop meanwhile. Real servers, Valkey
and Python workers; the claim script's passing over is checked on the engine."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

import grpc
import pytest

from queue_manager import JobContext, QueueManager, Worker
from queue_manager.v1 import jobs_pb2, queue_service_pb2, queue_service_pb2_grpc, types_pb2
from queue_manager_server.engine import Engine
from queue_manager_server.engine.records import NewJob
from tests.conftest import RunningServer, ServerFactory, count_claims
from tests.test_cli import qm_json
from tests.test_engine import register

WAIT = 20.0
# Well under the dispatcher's idle re-check (IDLE_RECHECK_S, 5 s): a job that arrives within it was not
# left to a timer.
PROMPT = 2.5
GPU = {"gpu": "a100", "region": "eu"}
GROUP = "labels:gpu=a100,region=eu"


@pytest.fixture
async def qm(server: RunningServer) -> AsyncIterator[QueueManager]:
    client = QueueManager(address=server.address, shutdown_grace=5.0)
    await client.register_queue("t")
    yield client
    await client.shutdown()


class Runs:
    """Processors that record on which worker each job (by name) starts, hold each run until released, and
    fail the first run of the jobs named in `fail_first`."""

    def __init__(self, fail_first: frozenset[str] = frozenset()) -> None:
        self.on: dict[str, list[str]] = {}
        self.release = asyncio.Event()
        self.fail_first = fail_first
        self._changed = asyncio.Condition()

    def processor(self, worker: str, hold: bool = True) -> Callable[[JobContext], object]:
        async def run(job: JobContext) -> None:
            self.on.setdefault(job.name, []).append(worker)
            async with self._changed:
                self._changed.notify_all()
            if job.name in self.fail_first and len(self.on[job.name]) == 1:
                raise RuntimeError("first run fails")
            if hold:
                await self.release.wait()

        return run

    async def started(self, name: str, runs: int = 1, within: float = WAIT) -> list[str]:
        async with asyncio.timeout(within), self._changed:
            await self._changed.wait_for(lambda: len(self.on.get(name, [])) >= runs)
        return self.on[name]


async def start(server: RunningServer, runs: Runs, name: str, labels: dict[str, str], **kw: object) -> Worker:
    """A connected worker of queue t whose credits the server holds (an add before they arrive would find
    its slots taken)."""
    hold = bool(kw.pop("hold", True))
    w = Worker(server.address, {"t": runs.processor(name, hold)}, worker_id=name, labels=labels, **kw)  # type: ignore[arg-type]
    await w.start()
    async with asyncio.timeout(WAIT):
        await w.wait_connected()
    claims = server.app.dispatcher
    assert claims is not None
    async with asyncio.timeout(WAIT):
        while not any(s.worker_id == name and s.credits for s in claims.all_sessions()):  # noqa: ASYNC110
            await asyncio.sleep(0.01)
    return w


async def stop(runs: Runs, *workers: Worker) -> None:
    runs.release.set()
    for w in workers:
        await w.shutdown(grace=5)


async def test_a_routed_job_goes_only_to_the_worker_with_its_labels(
    qm: QueueManager, server: RunningServer
) -> None:
    """The worker without the labels connects first and has free slots: it takes the plain jobs, the
    routed one goes to the worker that has them (and more), one needing other labels waits."""
    runs = Runs()
    cpu = await start(server, runs, "cpu", {"gpu": "none"}, concurrency=4)
    gpu = await start(server, runs, "gpu", {**GPU, "zone": "b"}, concurrency=1)
    try:
        routed = await qm.add_job("t", "render", options={"worker_labels": GPU})
        assert routed.options.worker_labels == GPU and routed.options.group is None
        assert await runs.started("render") == ["gpu"]
        other = await qm.add_job("t", "elsewhere", options={"worker_labels": {"gpu": "a100", "region": "us"}})
        for i in range(4):
            await qm.add_job("t", f"plain{i}")
        for i in range(4):
            assert await runs.started(f"plain{i}") == ["cpu"]
        assert (await qm.get_job("t", other.id)).state == "waiting"
        assert "elsewhere" not in runs.on
    finally:
        await stop(runs, cpu, gpu)


async def test_a_routed_job_waits_quietly_until_a_matching_worker_connects(
    qm: QueueManager, server: RunningServer
) -> None:
    """With only a worker that lacks the labels, the routed job waits and the dispatcher makes no claim
    over a quiet second (no loop of claims passing it over); a matching worker that connects then takes it
    at once."""
    dispatcher = server.app.dispatcher
    assert dispatcher is not None
    runs = Runs()
    cpu = await start(server, runs, "cpu", {"gpu": "none"}, concurrency=4, hold=False)
    claims = count_claims(dispatcher)
    gpu: Worker | None = None
    try:
        routed = await qm.add_job("t", "render", options={"worker_labels": GPU})
        # A plain job after it: once it has run, the claims the routed job set off have come back.
        plain = await qm.add_job("t", "plain")
        assert (await qm.wait_for_job("t", plain.id, timeout=WAIT)).state == "completed"
        settled = time.monotonic()
        before = len(claims)
        await asyncio.sleep(1.0)
        assert len(claims) == before, f"{len(claims) - before} claims in a quiet second"
        assert time.monotonic() - settled < 4.0  # the quiet second ended before the idle re-check
        assert (await qm.get_job("t", routed.id)).state == "waiting"
        assert runs.on.keys() == {"plain"}
        # Plain jobs still flow to it, and the credits their runs return do not send it back to pass the
        # routed job over again: per add, the add's claim and the one its event wakes.
        before = len(claims)
        for i in range(5):
            job = await qm.add_job("t", f"plain{i}")
            assert (await qm.wait_for_job("t", job.id, timeout=WAIT)).state == "completed"
        assert len(claims) - before <= 2 * 5

        began = time.monotonic()
        gpu = await start(server, runs, "gpu", GPU, concurrency=2)
        assert await runs.started("render", within=PROMPT) == ["gpu"]
        assert time.monotonic() - began < PROMPT + 1
    finally:
        await stop(runs, cpu, *([gpu] if gpu is not None else []))


async def test_the_adds_claim_for_another_worker_does_not_hold_the_routed_job(
    qm: QueueManager, server: RunningServer
) -> None:
    """Both workers idle; the one without the labels is of the first tier, so the add's folded claim is
    its: it takes nothing, and the routed job still reaches the matching worker at once, from the claim's
    outcome alone: the add's `w` event, which would wake the queue a round trip later, is lost here (as a
    pub/sub message can be), and the dispatcher's idle re-check is seconds away."""
    dispatcher = server.app.dispatcher
    assert dispatcher is not None
    runs = Runs()
    cpu = await start(server, runs, "cpu", {"gpu": "none"}, concurrency=4, tier=0)
    gpu = await start(server, runs, "gpu", GPU, concurrency=4, tier=1)
    folded: list[int] = []
    count_claims(dispatcher, folded)
    dispatcher.event = lambda queue: None  # type: ignore[method-assign]
    try:
        began = time.monotonic()
        await qm.add_job("t", "render", options={"worker_labels": GPU})
        assert await runs.started("render", within=PROMPT) == ["gpu"]
        assert time.monotonic() - began < PROMPT
        assert folded == [0]  # the add's claim was the other worker's, and took nothing
    finally:
        await stop(runs, cpu, gpu)


async def test_a_matching_worker_on_another_server_gets_the_routed_job_at_once(
    server_factory: ServerFactory,
) -> None:
    """The add goes through the server of the worker without the labels, whose folded claim takes nothing:
    the add still wakes the other server, whose worker matches."""
    here, there = await server_factory(), await server_factory()
    runs = Runs()
    async with QueueManager(address=here.address) as qm:
        await qm.register_queue("t")
        cpu = await start(here, runs, "cpu", {"gpu": "none"}, concurrency=4)
        gpu = await start(there, runs, "gpu", GPU, concurrency=4)
        try:
            began = time.monotonic()
            await qm.add_job("t", "render", options={"worker_labels": GPU})
            assert await runs.started("render", within=PROMPT) == ["gpu"]
            assert time.monotonic() - began < PROMPT
        finally:
            await stop(runs, cpu, gpu)


async def test_a_routed_job_keeps_its_labels_through_retry_delay_and_stall(
    qm: QueueManager, server: RunningServer
) -> None:
    """A retry after a failure, a delayed job falling due and a run recovered from a lost worker all go
    back to waiting in the routing group: each runs on the matching worker only."""
    assert server.app.engine is not None
    runs = Runs(fail_first=frozenset({"flaky"}))
    # A run leased to a worker that then vanished (the engine claims it as a worker matching it would).
    lost = await qm.add_job("t", "lost", options={"worker_labels": GPU})
    taken = await server.app.engine.claim("t", 1, "tok", "ghost", 300, labels=("gpu", "a100", "region", "eu"))
    assert [j.id for j in taken.jobs] == [lost.id]
    cpu = await start(server, runs, "cpu", {"gpu": "none"}, concurrency=4, hold=False)
    gpu = await start(server, runs, "gpu", GPU, concurrency=4, hold=False)
    try:
        flaky = await qm.add_job("t", "flaky", options={"worker_labels": GPU, "attempts": 2})
        later = await qm.add_job("t", "later", options={"worker_labels": GPU, "delay": 0.3})
        for job in (flaky, later, lost):
            assert (await qm.wait_for_job("t", job.id, timeout=WAIT)).state == "completed"
        assert runs.on == {"flaky": ["gpu", "gpu"], "later": ["gpu"], "lost": ["gpu"]}
        recovered = await qm.get_job("t", lost.id)
        assert recovered.stalled_count == 1 and recovered.options.worker_labels == GPU
    finally:
        await stop(runs, cpu, gpu)


async def test_routed_jobs_are_counted_listed_limited_and_cleaned_as_a_group(qm: QueueManager) -> None:
    """The routing group is a group like any: counted in the queue's metrics and its waiting jobs, listed
    by ListGroups under its readable name, given limits and paused by that name, and drained."""
    for _ in range(2):
        await qm.add_job("t", "render", options={"worker_labels": {"region": "eu", "gpu": "a100"}})
    await qm.add_job("t", "tpu", options={"worker_labels": {"tpu": "v5"}})
    await qm.add_job("t", "plain")
    metrics = await qm.get_queue_metrics("t")
    assert (metrics.waiting, metrics.groups) == (4, 2)
    assert (await qm.count_jobs("t", "waiting")).count == 4
    groups, _ = await qm.list_groups("t")
    assert [(g.name, g.waiting) for g in groups] == [(GROUP, 2), ("labels:tpu=v5", 1)]
    limited = await qm.set_group_limits("t", GROUP, concurrency=1)
    assert limited.custom_limits and limited.limits.concurrency == 1
    assert (await qm.pause_group("t", "labels:tpu=v5")).paused
    listed, _ = await qm.list_jobs("t", "waiting", group=GROUP)
    assert [j.options.worker_labels for j in listed] == [GPU, GPU]

    assert await qm.drain_queue("t") == 4
    assert (await qm.get_queue_metrics("t")).waiting == 0
    groups, _ = await qm.list_groups("t")
    assert [(g.name, g.waiting) for g in groups] == [(GROUP, 0), ("labels:tpu=v5", 0)]  # own limits, paused


async def test_bad_worker_labels_are_refused_with_the_field(qm: QueueManager, server: RunningServer) -> None:
    """The server refuses bad labels with INVALID_ARGUMENT and a message naming the option and the fix;
    the Python client refuses them before the call."""
    too_many = {f"k{i}": "v" for i in range(17)}
    cases: list[tuple[types_pb2.JobOptions, str]] = [
        (types_pb2.JobOptions(worker_labels=too_many), "has 17 pairs; the limit is 16"),
        (types_pb2.JobOptions(worker_labels={"a=b": "x"}), "must not contain '=' or ','"),
        (types_pb2.JobOptions(worker_labels={"": "x"}), "key: must not be empty"),
        (types_pb2.JobOptions(worker_labels={"k" * 65: "x"}), "is 65 characters long; the limit is 64"),
        (types_pb2.JobOptions(worker_labels={"a": "x,y"}), "must not contain ','"),
        (types_pb2.JobOptions(worker_labels={"a": "v" * 129}), "is 129 characters long; the limit is 128"),
        (
            types_pb2.JobOptions(worker_labels={"a": "x\ny"}),
            "must not contain control characters (found U+000A)",
        ),
        (types_pb2.JobOptions(worker_labels={"a": "x"}, group="tenant"), "cannot be given with a group yet"),
        (types_pb2.JobOptions(group="labels:a=x"), "must not start with 'labels:'"),
    ]
    async with grpc.aio.insecure_channel(server.address) as channel:
        stub = queue_service_pb2_grpc.QueueServiceStub(channel)
        for options, message in cases:
            job = jobs_pb2.NewJob(name="j", options=options)
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.AddJob(jobs_pb2.AddJobRequest(queue_name="t", job=job))
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, options
            assert "job.options." in (err.value.details() or "") and message in (err.value.details() or "")
        defaults = types_pb2.QueueConfig(default_job_options=types_pb2.JobOptions(worker_labels={"a": "x"}))
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.RegisterQueue(queue_service_pb2.RegisterQueueRequest(name="u", config=defaults))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "default_job_options.worker_labels" in (err.value.details() or "")
    with pytest.raises(ValueError, match="worker_labels key 'a=b'"):
        await qm.add_job("t", "j", options={"worker_labels": {"a=b": "x"}})
    with pytest.raises(ValueError, match="cannot be given together"):
        await qm.add_job("t", "j", options={"worker_labels": GPU, "group": "tenant"})
    with pytest.raises(ValueError, match="must not start with 'labels:'"):
        await qm.add_job("t", "j", options={"group": "labels:a=x"})


async def test_qm_add_takes_worker_labels(server: RunningServer, capsys: pytest.CaptureFixture[str]) -> None:
    await qm_json(capsys, server, "queues", "register", "c")
    job = await qm_json(
        capsys, server, "add", "c", "render", "--worker-label", "gpu=a100", "--worker-label", "region=eu"
    )
    assert job["options"]["worker_labels"] == GPU


async def test_a_claim_passes_over_routing_groups_it_does_not_match_and_leaves_their_turns(
    engine: Engine,
) -> None:
    """claim.lua: a routing group goes only to a claim whose labels hold every pair (a value may hold '=');
    the entries it passes over, of any level, keep their scores in the rotation, and the claim counts them."""
    await register(engine, "q")
    groups = ["labels:gpu=h100", GROUP, "labels:k=a=b", "tenant"]
    await engine.add_jobs(
        "q", [NewJob(id="", name=g, data=b"null", group=g, priority=1 if "h100" in g else 3) for g in groups]
    )
    ring = engine.keys("q").waiting[: -len("waiting")] + "gring"
    before = await engine.redis.zrange(ring, 0, -1, withscores=True)

    unlabelled = await engine.claim("q", 10, "t0", "w0", 30_000)
    assert [j.name for j in unlabelled.jobs] == ["tenant"] and unlabelled.unmatched == 3
    assert await engine.redis.zrange(ring, 0, -1, withscores=True) == before[:3]

    labels = ("gpu", "a100", "region", "eu", "k", "a=b", "zone", "b")
    matched = await engine.claim("q", 10, "t1", "w1", 30_000, labels=labels)
    assert sorted(j.name for j in matched.jobs) == sorted([GROUP, "labels:k=a=b"])
    assert matched.unmatched == 1
    assert await engine.redis.zrange(ring, 0, -1, withscores=True) == before[:1]
