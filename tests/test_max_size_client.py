"""Producer backpressure in the Python client: ``register_queue(max_size=…)``, ``GroupLimits.max_size``,
``set_group_limits(max_size=…)`` (asyncio and blocking clients), and a full queue or group raised as
`QueueFullError` (a `ResourceExhaustedError`) with the server's message, from add_job (alone or carried in a
batch), add_bulk and the blocking client; against a real server."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from typing import Any

import pytest

from queue_manager import (
    GroupInfo,
    GroupLimits,
    InvalidArgumentError,
    QueueConfig,
    QueueFullError,
    QueueManager,
    ResourceExhaustedError,
    SyncQueueManager,
)
from queue_manager.errors import error_from_status
from tests.conftest import RunningServer

RE = 8  # RESOURCE_EXHAUSTED


@pytest.fixture
async def qm(server: RunningServer) -> AsyncIterator[QueueManager]:
    client = QueueManager(address=server.address, concurrency=1, shutdown_grace=5.0)
    yield client
    await client.shutdown()


async def test_max_size_is_stored_with_the_queue_and_read_back(qm: QueueManager) -> None:
    queue = await qm.register_queue("ms", max_size=1_000, group_limits={"max_size": 50, "concurrency": 2})
    assert (queue.config.max_size, queue.config.group_limits) == (1_000, GroupLimits(2, max_size=50))
    stored = (await qm.get_queue("ms")).config
    assert (stored.max_size, stored.group_limits) == (1_000, GroupLimits(2, max_size=50))
    assert [q.config.max_size for q in await qm.list_queues() if q.name == "ms"] == [1_000]
    # A group max size alone is a group limit; the whole config is replaced, so left out is none.
    only = await qm.register_queue("ms", group_limits=GroupLimits(max_size=7))
    assert (only.config.max_size, only.config.group_limits) == (0, GroupLimits(max_size=7))
    assert (await qm.register_queue("ms")).config == QueueConfig(
        default_job_options=queue.config.default_job_options,
        dead_letter_queue=queue.config.dead_letter_queue,
        completed_retention=queue.config.completed_retention,
        failed_retention=queue.config.failed_retention,
    )


async def test_a_full_queue_raises_queue_full_with_the_servers_message(qm: QueueManager) -> None:
    await qm.register_queue("full", max_size=2)
    first = await qm.add_job("full", "j", None, {"job_id": "one"})
    await qm.add_job("full", "j", None, {"delay": 60_000})  # a delayed job counts too
    with pytest.raises(QueueFullError) as caught:
        await qm.add_job("full", "j")
    error = caught.value
    assert isinstance(error, ResourceExhaustedError) and error.code.name == "RESOURCE_EXHAUSTED"
    assert error.message.startswith("queue 'full' is full: ") and "QueueConfig.max_size" in error.message
    assert (error.queue, error.group) == ("full", "")
    # The job's id already there: answered with its job, full or not.
    assert (await qm.add_job("full", "j", None, {"job_id": "one"})).id == first.id
    with pytest.raises(QueueFullError, match="queue 'full' is full"):
        await qm.add_bulk("full", [{"name": "j"}])
    assert (await qm.get_queue_metrics("full")).waiting == 1


async def test_concurrent_adds_sharing_a_call_refuse_only_those_that_do_not_fit(qm: QueueManager) -> None:
    await qm.register_queue("burst", max_size=5)
    outcomes = await asyncio.gather(
        *(qm.add_job("burst", f"n{i}") for i in range(40)), return_exceptions=True
    )
    added = [o for o in outcomes if not isinstance(o, BaseException)]
    refused = [o for o in outcomes if isinstance(o, BaseException)]
    assert len(added) == 5 and len(refused) == 35
    assert all(isinstance(e, QueueFullError) and e.queue == "burst" for e in refused), refused[:1]
    assert (await qm.get_queue_metrics("burst")).waiting == 5


async def test_a_full_group_names_itself_and_its_own_limit_replaces_the_queues(qm: QueueManager) -> None:
    await qm.register_queue("gq", group_limits=GroupLimits(max_size=1))
    await qm.add_job("gq", "j", None, {"group": "it's é"})
    with pytest.raises(QueueFullError) as caught:
        await qm.add_job("gq", "j", None, {"group": "it's é"})
    assert (caught.value.queue, caught.value.group) == ("gq", "it's é")
    assert "GroupLimits.max_size" in caught.value.message
    await qm.add_job("gq", "j", None, {"group": "other"})  # another group has room
    own = await qm.set_group_limits("gq", "it's é", concurrency=1, max_size=3)
    assert own == GroupInfo("it's é", 1, 0, GroupLimits(1, max_size=3), custom_limits=True)
    await qm.add_job("gq", "j", None, {"group": "it's é"})
    await qm.add_job("gq", "j", None, {"group": "it's é"})
    with pytest.raises(QueueFullError, match="of queue 'gq' is full"):
        await qm.add_bulk("gq", [{"name": "j", "options": {"group": "it's é"}}])
    listed, _ = await qm.list_groups("gq")
    assert [(g.name, g.waiting, g.limits.max_size) for g in listed] == [("it's é", 3, 3), ("other", 1, 1)]


async def test_the_blocking_client_has_max_size_and_raises_queue_full(server: RunningServer) -> None:
    def scenario() -> tuple[Any, ...]:
        with SyncQueueManager(server.address) as qm:
            queue = qm.register_queue("sync-ms", max_size=1, group_limits={"max_size": 4})
            qm.add_job("sync-ms", "j")
            with pytest.raises(QueueFullError) as caught:
                qm.add_job("sync-ms", "j")
            with pytest.raises(QueueFullError):
                qm.add_bulk("sync-ms", [{"name": "j"}, {"name": "j"}])
            own = qm.set_group_limits("sync-ms", "g", max_size=2)
            return queue.config, caught.value, own

    config, error, own = await asyncio.to_thread(scenario)
    assert (config.max_size, config.group_limits) == (1, GroupLimits(max_size=4))
    assert (error.queue, error.group, error.code.name) == ("sync-ms", "", "RESOURCE_EXHAUSTED")
    assert own.limits == GroupLimits(max_size=2) and own.custom_limits


def test_other_resource_exhausted_errors_are_not_queue_full() -> None:
    oom = error_from_status(RE, "the job store (Redis) is out of memory (maxmemory reached) and refused …")
    assert type(oom) is ResourceExhaustedError
    # A queue named in other words (a job's data, say) is not a size limit's refusal.
    assert type(error_from_status(RE, "job data mentions queue 'q' is full: x")) is ResourceExhaustedError
    assert type(error_from_status(9, "queue 'q' is full: x")).__name__ == "FailedPreconditionError"


@pytest.mark.parametrize(
    ("call", "error", "words"),
    [
        (
            lambda qm: qm.register_queue("q", max_size=-1),
            ValueError,
            "max_size must be between 0 (no limit) and 281,474,976,710,656 (2**48, the server's maximum), "
            "got -1",
        ),
        (lambda qm: qm.register_queue("q", max_size=2**64), ValueError, "and 281,474,976,710,656 (2**48"),
        (
            lambda qm: qm.set_group_limits("q", "g", max_size=2**64),
            ValueError,
            "max_size must be between 0 (no limit) and 281,474,976,710,656 (2**48",
        ),
        (lambda qm: qm.register_queue("q", max_size="5"), TypeError, "max_size must be an int, not str"),
        (lambda qm: qm.register_queue("q", max_size=True), TypeError, "max_size must be an int, not bool"),
        (
            lambda qm: qm.register_queue("q", group_limits={"max_size": -2}),
            ValueError,
            "group_limits max_size must be between 0 (no limit) and 281,474,976,710,656 (2**48",
        ),
        (lambda qm: qm.set_group_limits("q", "g", max_size=1.5), TypeError, "max_size must be an int"),
        # Past the server's own maximum (2**48): refused by the server, naming the field.
        (lambda qm: qm.register_queue("q", max_size=2**60), InvalidArgumentError, "config.max_size"),
        (
            lambda qm: qm.set_group_limits("q", "g", max_size=2**49),
            InvalidArgumentError,
            "limits.max_size",
        ),
    ],
)
async def test_bad_sizes_are_refused_with_a_precise_message(
    qm: QueueManager, call: Any, error: type[Exception], words: str
) -> None:
    await qm.register_queue("q")
    with pytest.raises(error, match=re.escape(words)):
        await call(qm)
    assert (await qm.get_queue("q")).config.max_size == 0
