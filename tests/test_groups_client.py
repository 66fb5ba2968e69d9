"""Fairness groups in the Python client: GroupLimits in a queue's config, list_groups, set_group_limits,
clear_group_limits, pause_group and resume_group (asyncio and blocking clients), QueueMetrics.groups, and the
checks made before a call; against a real server."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest

from queue_manager import (
    GroupInfo,
    GroupLimits,
    JobContext,
    JobState,
    NotFoundError,
    QueueManager,
    RateLimit,
    SyncQueueManager,
)
from tests.conftest import RunningServer

WAIT = 30.0
PER_SECOND_10 = RateLimit(max=10, duration=timedelta(seconds=1))


@pytest.fixture
async def qm(server: RunningServer) -> AsyncIterator[QueueManager]:
    client = QueueManager(address=server.address, concurrency=1, shutdown_grace=5.0)
    yield client
    await client.shutdown()


async def test_group_limits_are_stored_with_the_queue_and_read_back(qm: QueueManager) -> None:
    queue = await qm.register_queue("gl", group_limits=GroupLimits(concurrency=2, rate_limit=PER_SECOND_10))
    assert queue.config.group_limits == GroupLimits(2, PER_SECOND_10)
    assert (await qm.get_queue("gl")).config.group_limits == GroupLimits(2, PER_SECOND_10)
    # The loose form, as rate_limit takes it: a mapping, durations in milliseconds.
    loose = {"concurrency": 3, "rate_limit": {"max": 5, "duration": 250}}
    queue = await qm.register_queue("gl", group_limits=loose)
    assert queue.config.group_limits == GroupLimits(3, RateLimit(5, timedelta(milliseconds=250)))
    queue = await qm.register_queue("gl", group_limits={"concurrency": 4})
    assert queue.config.group_limits == GroupLimits(4)
    # Left out (the whole config is replaced) or given as no limit at all: none.
    assert (await qm.register_queue("gl")).config.group_limits is None
    assert (await qm.register_queue("gl", group_limits=GroupLimits())).config.group_limits is None


async def test_groups_are_listed_by_name_in_pages_with_their_jobs_and_limits(qm: QueueManager) -> None:
    await qm.register_queue("lg", group_limits={"concurrency": 2})
    await qm.add_bulk(
        "lg",
        [{"name": "j", "options": {"group": g}} for g in ("beta", "alpha", "gamma", "alpha", "tenant/é 1")]
        + [{"name": "plain"}],
    )
    first, token = await qm.list_groups("lg", page_size=2)
    assert [g.name for g in first] == ["alpha", "beta"] and token
    second, token2 = await qm.list_groups("lg", page_size=2, page_token=token)
    assert [g.name for g in second] == ["gamma", "tenant/é 1"] and token2 == ""
    assert first[0] == GroupInfo("alpha", waiting=2, active=0, limits=GroupLimits(2), custom_limits=False)
    metrics = await qm.get_queue_metrics("lg")
    assert (metrics.groups, metrics.waiting) == (4, 6)
    # A worker sees its job's group; a job it runs counts as its group's active job.
    runs: asyncio.Queue[tuple[str | None, asyncio.Event]] = asyncio.Queue()
    holding = True

    async def work(job: JobContext) -> None:
        if holding:
            done = asyncio.Event()
            runs.put_nowait((job.options.group, done))
            await done.wait()

    worker = QueueManager(address=qm.address, concurrency=1, shutdown_grace=5.0)
    worker.register_processor("lg", work)
    await worker.start_workers()
    try:
        group, done = await asyncio.wait_for(runs.get(), WAIT)
        assert group is None  # jobs without a group run first
        done.set()
        group, done = await asyncio.wait_for(runs.get(), WAIT)
        listed, _ = await qm.list_groups("lg")
        assert [(g.name, g.active) for g in listed if g.active] == [(group, 1)]
        holding = False
        done.set()
    finally:
        await worker.shutdown()


async def test_a_group_of_its_own_limits_and_clearing_them(qm: QueueManager) -> None:
    await qm.register_queue("own", group_limits=GroupLimits(concurrency=1))
    await qm.add_job("own", "j", None, {"group": "vip"})
    vip = await qm.set_group_limits("own", "vip", concurrency=5, rate_limit={"max": 10, "duration": 1000})
    assert vip == GroupInfo("vip", 1, 0, GroupLimits(5, PER_SECOND_10), custom_limits=True)
    # Nothing given: no limit for this group, whatever the queue's are.
    free = await qm.set_group_limits("own", "vip")
    assert (free.limits, free.custom_limits) == (GroupLimits(), True)
    # A group with limits of its own is known before it has jobs, and forgotten once cleared while idle.
    idle = await qm.set_group_limits("own", "later", rate_limit=RateLimit(10, timedelta(seconds=1)))
    # Its own limits replace the queue's whole: no concurrency limit, as none was given.
    assert (idle.waiting, idle.limits, idle.custom_limits) == (0, GroupLimits(0, PER_SECOND_10), True)
    assert [g.name for g in (await qm.list_groups("own"))[0]] == ["later", "vip"]
    cleared = await qm.clear_group_limits("own", "later")
    assert (cleared.limits, cleared.custom_limits) == (GroupLimits(1), False)
    assert [g.name for g in (await qm.list_groups("own"))[0]] == ["vip"]
    back = await qm.clear_group_limits("own", "vip")
    assert back == GroupInfo("vip", 1, 0, GroupLimits(1), custom_limits=False)


async def test_the_blocking_client_has_the_same_group_calls(server: RunningServer) -> None:
    def scenario() -> tuple[Any, ...]:
        with SyncQueueManager(server.address) as qm:
            queue = qm.register_queue("sync-g", group_limits=GroupLimits(concurrency=3))
            qm.add_job("sync-g", "j", None, {"group": "a"})
            set_ = qm.set_group_limits("sync-g", "b", concurrency=2)
            page, token = qm.list_groups("sync-g", page_size=1)
            rest, _ = qm.list_groups("sync-g", page_token=token)
            cleared = qm.clear_group_limits("sync-g", "b")
            return queue, set_, page + rest, cleared, qm.get_queue_metrics("sync-g").groups

    queue, set_, listed, cleared, groups = await asyncio.to_thread(scenario)
    assert queue.config.group_limits == GroupLimits(3)
    assert set_ == GroupInfo("b", 0, 0, GroupLimits(2), custom_limits=True)
    assert [(g.name, g.waiting, g.limits.concurrency) for g in listed] == [("a", 1, 3), ("b", 0, 2)]
    assert (cleared.custom_limits, groups) == (False, 1)


async def test_an_unknown_queue_is_not_found(qm: QueueManager, server: RunningServer) -> None:
    with pytest.raises(NotFoundError, match="nope"):
        await qm.list_groups("nope")
    with pytest.raises(NotFoundError, match="nope"):
        await qm.set_group_limits("nope", "g", concurrency=1)
    with pytest.raises(NotFoundError, match="nope"):
        await qm.clear_group_limits("nope", "g")
    with pytest.raises(NotFoundError, match="nope"):
        await qm.pause_group("nope", "g")
    with pytest.raises(NotFoundError, match="nope"):
        await qm.resume_group("nope", "g")


@pytest.mark.parametrize(
    ("kwargs", "error", "words"),
    [
        ({"group_limits": {"concurrency": -1}}, ValueError, "group_limits concurrency must be between 0 and"),
        ({"group_limits": {"concurrency": "2"}}, TypeError, "group_limits concurrency must be an int"),
        ({"group_limits": {"max": 2}}, ValueError, "unknown group_limits key 'max'; expected concurrency"),
        ({"group_limits": {"rate_limit": {"max": 5}}}, ValueError, "group_limits: rate_limit needs both"),
        (
            {"group_limits": GroupLimits(rate_limit=RateLimit(5, 0))},
            ValueError,
            "group_limits: rate_limit duration must be more than 0 ms",
        ),
        ({"group_limits": 3}, TypeError, "group_limits must be a GroupLimits or a mapping, not int"),
        ({"default_job_options": {"group": "a"}}, None, "default_job_options.group"),
    ],
)
async def test_bad_group_limits_are_refused_with_a_precise_message(
    qm: QueueManager, kwargs: dict[str, Any], error: type[Exception] | None, words: str
) -> None:
    from queue_manager import InvalidArgumentError

    with pytest.raises(error or InvalidArgumentError, match=words):  # None: the server's check
        await qm.register_queue("never", **kwargs)


@pytest.mark.parametrize(
    ("call", "error", "words"),
    [
        (lambda qm: qm.set_group_limits("q", ""), ValueError, "group must be 1 to 128 characters"),
        (lambda qm: qm.set_group_limits("q", "a\tb"), ValueError, "without control characters"),
        (lambda qm: qm.set_group_limits("q", "a\x9bb"), ValueError, "without control characters"),
        (lambda qm: qm.set_group_limits("q", "x" * 129), ValueError, "group must be 1 to 128"),
        (lambda qm: qm.clear_group_limits("q", 7), TypeError, "group must be a str, not int"),
        (lambda qm: qm.set_group_limits("q", "g", concurrency=2**32), ValueError, "concurrency must be"),
        (lambda qm: qm.set_group_limits("q", "g", concurrency=1.5), TypeError, "concurrency must be an int"),
        (
            lambda qm: qm.set_group_limits("q", "g", rate_limit={"max": 1, "window": 5}),
            ValueError,
            "unknown rate_limit key 'window'",
        ),
        (lambda qm: qm.set_group_limits("bad name", "g"), ValueError, "queue name 'bad name' must be"),
        (lambda qm: qm.list_groups("q", page_size=1001), ValueError, "page_size must be an int from 1"),
        (lambda qm: qm.pause_group("q", ""), ValueError, "group must be 1 to 128 characters"),
        (lambda qm: qm.resume_group("q", None), TypeError, "group must be a str, not NoneType"),
        (lambda qm: qm.pause_group("a:b", "g"), ValueError, "queue name 'a:b' must be"),
        (lambda qm: qm.add_job("q", "j", None, {"group": ""}), ValueError, "group must be 1 to 128"),
        # A lone surrogate was a UnicodeEncodeError from protobuf, naming neither the field nor the value.
        (
            lambda qm: qm.add_job("q", "j", None, {"group": "a\ud800"}),
            ValueError,
            re.escape("group 'a\\ud800' must be Unicode text: it holds a lone surrogate (U+D800;"),
        ),
        (lambda qm: qm.pause_group("q", "\udcff"), ValueError, "must be Unicode text: it holds a lone"),
    ],
)
async def test_bad_arguments_are_refused_before_the_call(
    qm: QueueManager, server: RunningServer, call: Any, error: type[Exception], words: str
) -> None:
    await qm.register_queue("q")
    with pytest.raises(error, match=words):
        await call(qm)

    def blocking() -> None:
        with SyncQueueManager(server.address) as sync, pytest.raises(error, match=words):
            call(sync)

    await asyncio.to_thread(blocking)  # the blocking client checks the same way


async def test_a_job_of_a_group_still_completes(qm: QueueManager) -> None:
    await qm.register_queue("done", group_limits={"concurrency": 1})
    job = await qm.add_job("done", "j", {"n": 1}, {"group": "g"})

    @qm.processor("done")
    async def work(ctx: JobContext) -> str:
        return ctx.options.group or ""

    await qm.start_workers("done")
    finished = await qm.wait_for_job("done", job.id, WAIT)
    assert (finished.state, finished.result, finished.options.group) == (JobState.COMPLETED, "g", "g")


async def test_a_paused_group_starts_nothing_until_resumed_while_the_others_run(qm: QueueManager) -> None:
    await qm.register_queue("pg")
    paused = await qm.pause_group("pg", "slow")  # before it has jobs: it is known, idle and paused
    assert paused == GroupInfo("slow", 0, 0, GroupLimits(), custom_limits=False, paused=True)
    assert (await qm.pause_group("pg", "slow")).paused  # pausing again changes nothing
    slow = await qm.add_bulk("pg", [{"name": "s", "options": {"group": "slow"}}] * 2)
    fast = await qm.add_bulk("pg", [{"name": "f", "options": {"group": "fast"}}] * 2)
    started: list[str | None] = []

    @qm.processor("pg")
    async def work(job: JobContext) -> None:
        started.append(job.options.group)

    await qm.start_workers("pg")
    # The groups take turns, so unpaused a "slow" job would have started before the second "fast" one.
    for job_id in fast:
        assert (await qm.wait_for_job("pg", job_id, WAIT)).state is JobState.COMPLETED
    assert started == ["fast", "fast"]
    assert {(await qm.get_job("pg", job_id)).state for job_id in slow} == {JobState.WAITING}
    listed, _ = await qm.list_groups("pg")
    assert [(g.name, g.waiting, g.paused) for g in listed] == [("slow", 2, True)]  # "fast" idle, forgotten
    resumed = await qm.resume_group("pg", "slow")
    assert (resumed.name, resumed.paused) == ("slow", False)
    for job_id in slow:
        assert (await qm.wait_for_job("pg", job_id, WAIT)).state is JobState.COMPLETED
    assert started == ["fast", "fast", "slow", "slow"]
    assert not (await qm.resume_group("pg", "slow")).paused  # resuming again changes nothing


async def test_the_blocking_client_pauses_and_resumes_a_group(server: RunningServer) -> None:
    def scenario() -> tuple[GroupInfo, list[GroupInfo], GroupInfo, list[GroupInfo]]:
        with SyncQueueManager(server.address) as qm:
            qm.register_queue("sync-p")
            qm.add_job("sync-p", "j", None, {"group": "a"})
            paused = qm.pause_group("sync-p", "a")
            listed, _ = qm.list_groups("sync-p")
            resumed = qm.resume_group("sync-p", "idle")
            return paused, listed, resumed, qm.list_groups("sync-p")[0]

    paused, listed, resumed, after = await asyncio.to_thread(scenario)
    assert paused == GroupInfo("a", 1, 0, GroupLimits(), paused=True)
    assert [(g.name, g.paused) for g in listed] == [("a", True)]
    assert resumed == GroupInfo("idle") and [g.name for g in after] == ["a"]
