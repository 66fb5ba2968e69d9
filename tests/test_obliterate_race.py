"""ObliterateQueue racing RegisterQueue of the same name: the run holds the name from its first script call
until it is done, so a RegisterQueue between its calls is refused FAILED_PRECONDITION, the janitor leaves a
live run alone, and a run whose lease ran out and was taken over stops before it deletes the queue
registered again or its jobs. The obliterate is driven at the engine level two jobs per call, and the
racing call runs between its first and second call every time. Against a real server and Valkey."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import pytest

from queue_manager import FailedPreconditionError, NotFoundError, QueueManager
from queue_manager_server.engine import Engine
from queue_manager_server.engine import engine as engine_module
from queue_manager_server.engine.records import NewJob
from queue_manager_server.errors import QueueObliterating
from tests.conftest import RunningServer, ServerFactory
from tests.test_obliterate_lost import _engine, _jobs, _left, lease_ends


@pytest.fixture
async def server(server_factory: ServerFactory) -> RunningServer:
    # The janitor stays out of the way (it would finish a removal whose lease a test ended, holding the name
    # the test registers); finishing is called by hand where a test needs it.
    return await server_factory(janitor_interval_ms=3_600_000)


@pytest.fixture
async def qm(server: RunningServer) -> AsyncIterator[QueueManager]:
    client = QueueManager(address=server.address)
    yield client
    await client.shutdown()


def between_chunks(
    engine: Engine, monkeypatch: pytest.MonkeyPatch, race: Callable[[], Awaitable[None]]
) -> None:
    """Makes the next obliterate delete two jobs per script call and run `race` once, after its first call
    and before its second (a call `race` makes itself runs as usual)."""
    monkeypatch.setattr(engine_module, "ADMIN_CHUNK", 2)
    run, raced = engine.scripts.run, False

    async def run_then_race(name: str, keys: list[str], args: list[Any]) -> Any:
        nonlocal raced
        reply = await run(name, keys, args)
        if name == "obliterate" and not raced:
            raced = True
            await race()
        return reply

    monkeypatch.setattr(engine.scripts, "run", run_then_race)


async def test_register_queue_during_an_obliterate_is_refused_and_the_queue_registered_after_it_stays(
    server: RunningServer, qm: QueueManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    """RegisterQueue through the API between two calls of the obliterate: FAILED_PRECONDITION naming the
    obliterate, also for another queue naming it as its dead-letter queue, which is not registered either
    (AddJob: NOT_FOUND); once ObliterateQueue returned, the name registers as a fresh queue whose jobs
    stay."""
    engine = _engine(server)
    await qm.register_queue("race-api")
    old = await _jobs(engine, "race-api", 5)
    refused: list[BaseException] = []

    async def register() -> None:
        with pytest.raises(FailedPreconditionError) as registering:
            await qm.register_queue("race-api")
        with pytest.raises(NotFoundError) as adding:
            await qm.add_job("race-api", "new", 1)
        with pytest.raises(FailedPreconditionError, match="'race-api' is being obliterated"):
            await qm.register_queue("race-other", dead_letter_queue="race-api")
        refused.extend((registering.value, adding.value))

    between_chunks(engine, monkeypatch, register)
    assert await engine.obliterate("race-api", force=False) == 5
    monkeypatch.undo()
    registering, adding = refused
    assert registering.code == grpc.StatusCode.FAILED_PRECONDITION  # type: ignore[attr-defined]
    assert "queue 'race-api' is being obliterated" in str(registering)
    assert "register it again when that call returns" in str(registering)
    assert adding.code == grpc.StatusCode.NOT_FOUND  # type: ignore[attr-defined]
    assert await _left(engine, "race-api", old) == 0
    assert not await engine.redis.exists(engine.keys("race-api").obliterating)
    assert "race-api" not in await engine.queue_names()
    with pytest.raises(NotFoundError):  # refused whole: its dead-letter queue was being obliterated
        await qm.get_queue("race-other")
    await qm.register_queue("race-api")
    job = await qm.add_job("race-api", "new", 1)
    waiting, total = await engine.list_jobs("race-api", "waiting", 0, 10)
    assert total == 1 and [j.id for j in waiting] == [job.id]
    metrics = await qm.get_queue_metrics("race-api")
    assert (metrics.waiting, metrics.added_total) == (1, 1)


async def test_a_run_whose_lease_was_taken_over_keeps_off_the_queue_registered_again(
    server: RunningServer, qm: QueueManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The obliterating server stalls past its lease between two calls: a RegisterQueue finishes the removal
    and registers the name, a job is added; the stalled run's next call deletes nothing of the new queue."""
    engine = _engine(server)
    await qm.register_queue("race-stall")
    old = await _jobs(engine, "race-stall", 5)
    added: list[str] = []

    async def stall_then_register() -> None:
        await lease_ends(engine, "race-stall")
        await qm.register_queue("race-stall")
        added.append((await qm.add_job("race-stall", "new", 1)).id)

    between_chunks(engine, monkeypatch, stall_then_register)
    # Its first call's two: the RegisterQueue deleted the other three.
    assert await engine.obliterate("race-stall", force=False) == 2
    monkeypatch.undo()
    assert await _left(engine, "race-stall", old) == 0
    waiting, total = await engine.list_jobs("race-stall", "waiting", 0, 10)
    assert total == 1 and [j.id for j in waiting] == added
    assert "race-stall" in await engine.queue_names()
    metrics = await qm.get_queue_metrics("race-stall")
    assert (metrics.waiting, metrics.added_total) == (1, 1)


async def test_finishing_leaves_a_live_obliterate_alone(
    server: RunningServer, qm: QueueManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The janitor's finish of the name between two calls of a live obliterate (its lease holding) deletes
    nothing and says why; the obliterate then deletes the rest and forgets the name itself."""
    engine = _engine(server)
    await qm.register_queue("race-janitor")
    old = await _jobs(engine, "race-janitor", 5)

    async def finish() -> None:
        with pytest.raises(QueueObliterating):
            await engine.finish_obliterate("race-janitor")
        assert await _left(engine, "race-janitor", old) == 3

    between_chunks(engine, monkeypatch, finish)
    assert await engine.obliterate("race-janitor", force=False) == 5
    monkeypatch.undo()
    assert await _left(engine, "race-janitor", old) == 0
    assert "race-janitor" not in await engine.queue_names()


async def test_a_dead_letter_copy_waits_for_the_obliterate_of_its_dead_letter_queue(
    server: RunningServer, qm: QueueManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A job failed for good while its dead-letter queue is being obliterated: its copy stays in the outbox
    (the dead-letter queue cannot be registered meanwhile, and a copy written into it would be deleted by the
    obliterate's next call); once the obliterate is done the hand-off writes it into the queue afresh."""
    engine = _engine(server)
    await qm.register_queue("race-src", dead_letter_queue="race-dlq")
    await _jobs(engine, "race-dlq", 5)
    await engine.add_jobs("race-src", [NewJob(id="doomed", name="doomed", data=b"1")])
    # Seeded as fail.lua leaves a job failed for good: its id on the outbox, its copy not yet written.
    await engine.redis.rpush(engine.keys("race-src").outbox, "doomed")

    async def hand_off() -> None:
        assert await engine.hand_off_dead_letters("race-src") == 0

    between_chunks(engine, monkeypatch, hand_off)
    assert await engine.obliterate("race-dlq", force=False) == 5
    monkeypatch.undo()
    assert await engine.redis.lrange(engine.keys("race-src").outbox, 0, -1) == [b"doomed"]
    assert await engine.hand_off_dead_letters("race-src") == 1
    waiting, total = await engine.list_jobs("race-dlq", "waiting", 0, 10)
    assert total == 1 and [j.id for j in waiting] == ["race-src:doomed"]


async def test_a_hold_on_a_name_no_longer_registered_refuses_registering_until_its_lease_is_over(
    server: RunningServer,
) -> None:
    """A run holds a name that is not registered (a stalled run came back and took the name over after it
    was forgotten): RegisterQueue, which finds nothing to finish, is still refused while the lease holds;
    once it is over, RegisterQueue finishes the removal itself and creates the queue."""
    engine = _engine(server)
    mark = engine.keys("race-held").obliterating
    now = await engine.redis_time_ms("race-held")
    await engine.redis.hset(mark, mapping={"tok": "another-run", "until": now + 60_000})
    with pytest.raises(QueueObliterating, match="'race-held' is being obliterated"):
        await engine.register_queue("race-held", {})
    assert not await engine.redis.exists(engine.keys("race-held").meta)
    await lease_ends(engine, "race-held")
    created, _ = await engine.register_queue("race-held", {})
    assert created and not await engine.redis.exists(mark)
    assert "race-held" in await engine.queue_names()
