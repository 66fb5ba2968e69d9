"""ObliterateQueue whose server is lost midway, and the flow hand-offs a queue had pending when it was
obliterated: once the lost run's lease is over, the janitor, or a RegisterQueue of the name, finishes the
removal (the jobs left deleted, the hand-offs carried out, the name gone from the registry), a queue
registered again starts from nothing, and hand-offs pending before an obliterate are carried out by it.
Against a real server and Valkey."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from queue_manager import FailedPreconditionError, QueueManager
from queue_manager_server.components.maintenance import Janitor
from queue_manager_server.engine import Engine
from queue_manager_server.engine import engine as engine_module
from queue_manager_server.engine.records import NewJob
from queue_manager_server.services.flows import successor_id
from tests.conftest import RunningServer, ServerFactory
from tests.rawworker import eventually
from tests.test_chains import chained_job, completed

WAIT = 20.0


class _Lost(Exception):
    """The obliterating server lost at this point (no later write of the obliterate happens)."""


@pytest.fixture
async def server(server_factory: ServerFactory) -> RunningServer:
    return await server_factory(janitor_interval_ms=100)


@pytest.fixture
async def qm(server: RunningServer) -> AsyncIterator[QueueManager]:
    client = QueueManager(address=server.address)
    yield client
    await client.shutdown()


def _engine(server: RunningServer) -> Engine:
    assert server.app.engine is not None
    return server.app.engine


async def _gone(engine: Engine, queue: str) -> None:
    async def forgotten() -> bool:
        return queue not in await engine.queue_names()

    await eventually(forgotten, timeout=WAIT)


async def _lost_after_first_chunk(engine: Engine, monkeypatch: pytest.MonkeyPatch, queue: str) -> None:
    """Obliterates `queue` two jobs per script call and loses the server after the first call: the queue's
    meta hash is gone, its other jobs are left, its name stays registered."""
    monkeypatch.setattr(engine_module, "ADMIN_CHUNK", 2)
    run = engine.scripts.run

    async def lost(name: str, keys: list[str], args: list[Any]) -> Any:
        reply = await run(name, keys, args)
        if name == "obliterate":
            raise _Lost(queue)
        return reply

    monkeypatch.setattr(engine.scripts, "run", lost)
    with pytest.raises(_Lost):
        await engine.obliterate(queue, force=False)
    monkeypatch.undo()
    assert queue in await engine.queue_names()
    assert not await engine.redis.exists(engine.keys(queue).meta)


async def lease_ends(engine: Engine, queue: str) -> None:
    """The lease of the obliterate run holding `queue` is over now, as when its server was lost that long
    ago (keys.py obliterating)."""
    assert await engine.redis.hset(engine.keys(queue).obliterating, "until", 0) == 0  # the run held it


async def _left(engine: Engine, queue: str, ids: list[str]) -> int:
    """How many of the jobs `ids` of `queue` still exist."""
    return int(await engine.redis.exists(*(engine.keys(queue).job(job_id) for job_id in ids)))


async def _jobs(engine: Engine, queue: str, n: int) -> list[str]:
    await engine.add_jobs(queue, [NewJob(id=f"old-{i}", name="old", data=b"null") for i in range(n)])
    return [f"old-{i}" for i in range(n)]


async def test_the_janitor_finishes_an_obliterate_lost_between_its_chunks(
    server: RunningServer, qm: QueueManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three of five jobs are left behind the lost obliterate: once its lease is over, the janitor deletes
    them and forgets the name, and gives the name up."""
    engine = _engine(server)
    await qm.register_queue("lost-chunks")
    old = await _jobs(engine, "lost-chunks", 5)
    await _lost_after_first_chunk(engine, monkeypatch, "lost-chunks")
    assert await _left(engine, "lost-chunks", old) == 3
    await lease_ends(engine, "lost-chunks")
    await _gone(engine, "lost-chunks")
    assert await _left(engine, "lost-chunks", old) == 0
    assert not await engine.redis.exists(engine.keys("lost-chunks").waiting)
    assert not await engine.redis.exists(engine.keys("lost-chunks").obliterating)


async def test_registering_the_name_of_a_lost_obliterate_again_starts_a_fresh_queue(
    server: RunningServer, qm: QueueManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    """RegisterQueue of the name before the janitor came: refused while the lost run's lease holds; after,
    the jobs left are deleted first, so the queue holds only what is added to it after."""
    engine = _engine(server)
    # The janitor would finish the removal once the lease is over, holding the name meanwhile: the
    # RegisterQueue below is the one to finish it here.
    for c in server.app.components:
        if isinstance(c, Janitor):
            await c.stop()
    await qm.register_queue("lost-again")
    old = await _jobs(engine, "lost-again", 5)
    await _lost_after_first_chunk(engine, monkeypatch, "lost-again")
    with pytest.raises(FailedPreconditionError, match="'lost-again' is being obliterated"):
        await qm.register_queue("lost-again")
    assert await _left(engine, "lost-again", old) == 3
    await lease_ends(engine, "lost-again")
    await qm.register_queue("lost-again")
    job = await qm.add_job("lost-again", "new", 1)
    waiting, total = await engine.list_jobs("lost-again", "waiting", 0, 10)
    assert total == 1 and [j.id for j in waiting] == [job.id]
    assert await _left(engine, "lost-again", old) == 0
    assert "lost-again" in await engine.queue_names()
    metrics = await qm.get_queue_metrics("lost-again")
    assert (metrics.waiting, metrics.added_total) == (1, 1)


async def test_the_janitor_forgets_the_name_of_an_obliterate_lost_before_its_hand_off(
    server: RunningServer, qm: QueueManager
) -> None:
    """A chain's waiting second link is removed by the obliterate (its hand-off queued) and the server is
    lost before the hand-off: the janitor carries it out (the chain's first job says why it stopped) and the
    name leaves the registry; the name registered again is an empty queue."""
    engine = _engine(server)
    for name in ("lost-root", "lost-flows"):
        await qm.register_queue(name)
    await completed(engine, "lost-root", [chained_job("root", "lost-flows")])
    assert (await engine.list_jobs("lost-flows", "waiting", 0, 0))[1] == 1
    hand_off = engine.flow_hook

    async def lost(queue: str, wait: bool) -> None:
        raise _Lost(queue)

    engine.flow_hook = lost
    try:
        with pytest.raises(_Lost):
            await engine.obliterate("lost-flows", force=False)
    finally:
        engine.flow_hook = hand_off
    assert await engine.redis.llen(engine.keys("lost-flows").flow_outbox) == 1
    await lease_ends(engine, "lost-flows")
    await _gone(engine, "lost-flows")
    assert await engine.redis.llen(engine.keys("lost-flows").flow_outbox) == 0
    root = await qm.get_job("lost-root", "root")
    assert root.chain_failure is not None and "removed by ObliterateQueue" in str(root.chain_failure)
    await qm.register_queue("lost-flows")
    metrics = await qm.get_queue_metrics("lost-flows")
    assert (metrics.waiting, metrics.delayed, metrics.added_total) == (0, 0, 0)


async def test_an_obliterate_hands_off_what_its_finished_jobs_left_pending(
    server: RunningServer, qm: QueueManager
) -> None:
    """A chain's first job completed while no hand-off ran (its entry pending); the queue is obliterated,
    which removes no flow job: the obliterate still adds the chain's next link before the name goes."""
    engine = _engine(server)
    for name in ("pend-a", "pend-next"):
        await qm.register_queue(name)
    hand_off = engine.flow_hook
    engine.flow_hook = None
    try:
        codes, queued = await completed(engine, "pend-a", [chained_job("first", "pend-next")])
    finally:
        engine.flow_hook = hand_off
    assert codes == [0] and queued == 1
    assert await engine.redis.llen(engine.keys("pend-a").flow_outbox) == 1
    assert await qm.obliterate_queue("pend-a") == 1
    assert "pend-a" not in await engine.queue_names()
    assert await engine.redis.llen(engine.keys("pend-a").flow_outbox) == 0
    waiting, total = await engine.list_jobs("pend-next", "waiting", 0, 10)
    assert total == 1 and [j.id for j in waiting] == [successor_id("pend-a", "first")]
