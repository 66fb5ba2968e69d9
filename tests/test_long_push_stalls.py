"""Long pushes of external events whose server is slow or stalls between batches: on a Cluster, a push whose
rounds go on past REPLAY_AFTER_MS in all is left to its server, while one whose server stopped is carried out
by the janitor; on one server, a push whose server stalled past the time its answer is kept answers DATA_LOSS
(which no client retries), not UNAVAILABLE. Against a real server and Valkey (services/event_pushes.py,
services/long_pushes.py)."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest

from queue_manager import QueueManager
from queue_manager.errors import QueueManagerError
from queue_manager_server.engine.keys import event_push, event_pushes
from queue_manager_server.services import event_pushes as pushes_module
from queue_manager_server.services import long_pushes as long_module
from tests.conftest import RunningServer, ServerFactory
from tests.rawworker import eventually
from tests.test_event_batches import all_waiting, between_batches, park, queues, service, small_batches

WAIT = 30.0
# The janitor's REPLAY_AFTER_MS in these tests, and the pause between two rounds of a slow push: a push of
# five rounds takes about twice REPLAY_AFTER_MS, and each pause is well below it.
REPLAY_AFTER_MS = 600
ROUND_PAUSE = 0.25


def rounds_spied(server: RunningServer, monkeypatch: pytest.MonkeyPatch, stop_at: int = 0) -> list[str]:
    """Slows each round of a Cluster push after the first by ROUND_PAUSE, or at round `stop_at` (when not 0)
    ends the push there, as a server stopped between two rounds. Notes in the list returned each push the
    janitor found to carry out."""
    pushes = service(server).cluster_pushes
    assert pushes is not None
    deliver, pending = pushes.pushes.deliver_event, pushes.pushes.pending_pushes
    joined: list[str] = []
    rounds = 0

    async def slow_deliver(*args: Any, **kwargs: Any) -> Any:
        nonlocal rounds
        rounds += 1
        if rounds == stop_at:
            raise ConnectionError("test: the server stopped between two rounds of the push")
        if rounds > 1:
            await asyncio.sleep(ROUND_PAUSE)
        return await deliver(*args, **kwargs)

    async def spied_pending(*args: Any) -> list[str]:
        found = await pending(*args)
        joined.extend(found)
        return found

    monkeypatch.setattr(pushes.pushes, "deliver_event", slow_deliver)
    monkeypatch.setattr(pushes.pushes, "pending_pushes", spied_pending)
    monkeypatch.setattr(pushes_module, "REPLAY_AFTER_MS", REPLAY_AFTER_MS)
    return joined


@pytest.mark.cluster
async def test_a_slow_push_on_a_cluster_is_left_to_its_server_past_replay_after_ms(
    on_cluster: ServerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Five rounds of one waiter each, ROUND_PAUSE apart: the push takes longer than REPLAY_AFTER_MS, but each
    round marks it alive, so the janitor (every 100 ms) never finds it to carry out."""
    server = await on_cluster(janitor_interval_ms=100)
    small_batches(monkeypatch, 1)
    (queue,) = queues("slow", 1, True)
    parked = [(queue, i) for i in await park(server, queue, 5, "slow:k")]
    joined = rounds_spied(server, monkeypatch)
    qm = QueueManager(address=server.address)
    started = asyncio.get_running_loop().time()
    pushed = await qm.push_event("slow:k", {"n": 1})
    assert asyncio.get_running_loop().time() - started > 1.5 * REPLAY_AFTER_MS / 1000
    assert sorted((r.queue_name, r.job_id) for r in pushed.woken) == sorted(parked)
    assert joined == []
    await all_waiting(qm, parked)
    await qm.shutdown()


@pytest.mark.cluster
async def test_a_push_whose_server_stopped_between_rounds_is_carried_out_by_the_janitor(
    on_cluster: ServerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The push stops at its third round (two rounds done, the second marked it alive): the janitor carries
    the rest out REPLAY_AFTER_MS after that mark, each waiter woken once."""
    server = await on_cluster(janitor_interval_ms=100)
    small_batches(monkeypatch, 1)
    (queue,) = queues("stop", 1, True)
    parked = [(queue, i) for i in await park(server, queue, 4, "stop:k")]
    joined = rounds_spied(server, monkeypatch, stop_at=3)
    engine = server.app.engine
    assert engine is not None
    qm = QueueManager(address=server.address)
    with pytest.raises(QueueManagerError):
        await qm.push_event("stop:k", {"n": 1})

    async def carried_out() -> bool:
        return int(await engine.redis.zcard(event_pushes(engine.prefix))) == 0

    await eventually(carried_out, timeout=WAIT)
    assert len(set(joined)) == 1
    await all_waiting(qm, parked)
    assert (await engine.list_jobs(queue, "waiting", 0, 0))[1] == 4
    await qm.shutdown()


async def test_a_push_whose_server_stalled_past_its_answers_keep_answers_data_loss_not_unavailable(
    server_factory: ServerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One server, a push in batches of 2: between its batches the janitor carries the rest out and the
    finished record expires (DONE_KEPT_MS made 1 ms, the stall injected), as after a stall of more than ten
    minutes. The stalled server answers DATA_LOSS saying not to push again; every waiter was woken once."""
    server = await server_factory()  # its janitor runs every 30 s: the hook plays it
    small_batches(monkeypatch, 2)
    monkeypatch.setattr(long_module, "DONE_KEPT_MS", 1)
    monkeypatch.setattr(long_module, "REPLAY_AFTER_MS", 0)
    (queue,) = queues("stall", 1, False)
    parked = [(queue, i) for i in await park(server, queue, 5, "stall:k")]
    engine = server.app.engine
    assert engine is not None
    long_pushes = service(server).long_pushes

    async def stall() -> None:
        (push_id,) = [i.decode() for i in await engine.redis.zrange(event_pushes(engine.prefix), 0, -1)]
        assert await long_pushes.replay() == 1

        async def expired() -> bool:
            return not await engine.redis.exists(event_push(engine.prefix, push_id))

        await eventually(expired, timeout=WAIT)

    ran = between_batches(server, monkeypatch, stall)
    qm = QueueManager(address=server.address)
    with pytest.raises(QueueManagerError) as lost:
        await qm.push_event("stall:k", {"n": 1})
    assert ran == [1]
    assert lost.value.code == grpc.StatusCode.DATA_LOSS
    message = str(lost.value)
    assert "every waiter of key 'stall:k' woken" in message and "do not push the event again" in message
    assert "stalled between two batches" in message
    await all_waiting(qm, parked)
    assert (await engine.list_jobs(queue, "waiting", 0, 0))[1] == 5
    await qm.shutdown()
