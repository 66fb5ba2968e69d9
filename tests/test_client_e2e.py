"""The Python client and worker end to end against a real server on a real Valkey."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from queue_manager import (
    InvalidArgumentError,
    Job,
    JobContext,
    JobPriority,
    JobState,
    NotFoundError,
    QueueManager,
    SyncQueueManager,
    UnrecoverableError,
)
from tests.conftest import RunningServer, ServerFactory
from tests.faults import Proxy

WAIT = 20.0  # generous bound for anything the test awaits


class Calls:
    """Records processor calls and lets a test await a number of them."""

    def __init__(self) -> None:
        self.items: list[Any] = []
        self.times: list[float] = []
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._loop = asyncio.get_running_loop()

    def add(self, item: Any) -> None:
        if threading.current_thread() is not threading.main_thread():
            self._loop.call_soon_threadsafe(self.add, item)
            return
        self.items.append(item)
        self.times.append(time.monotonic())
        for count, future in self._waiters:
            if len(self.items) >= count and not future.done():
                future.set_result(None)

    async def wait_for(self, count: int) -> None:
        if len(self.items) >= count:
            return
        future: asyncio.Future[None] = self._loop.create_future()
        self._waiters.append((count, future))
        async with asyncio.timeout(WAIT):
            await future


@pytest.fixture
async def qm(server: RunningServer) -> AsyncIterator[QueueManager]:
    client = QueueManager(address=server.address, concurrency=4, shutdown_grace=5.0)
    yield client
    await client.shutdown()


async def stop_workers(qm: QueueManager) -> None:
    """Shuts the workers down; once their stream has ended every outcome they reported is recorded."""
    for worker in qm.workers:
        await worker.shutdown()


async def eventually(check: Callable[[], Any], timeout: float = WAIT) -> Any:
    """Polls a server-side condition that no client event announces."""
    async with asyncio.timeout(timeout):
        while True:
            value = await check()
            if value:
                return value
            await asyncio.sleep(0.02)


async def test_issue_example_runs_line_by_line(qm: QueueManager) -> None:
    await qm.register_queue("email-notifications", rate_limit={"max": 100, "duration": 60_000})
    calls = Calls()

    @qm.processor("email-notifications")
    async def send(job: JobContext) -> dict[str, Any]:
        to, subject = job.data["to"], job.data["subject"]
        calls.add((to, subject, job.attempts_made, job.redelivery))
        return {"sent": True}

    await qm.start_workers()
    job = await qm.add_job(
        "email-notifications",
        "send-welcome-email",
        {"to": "u@example.com", "subject": "Hi"},
        {"priority": JobPriority.HIGH, "attempts": 3, "backoff": {"type": "exponential", "delay": 2000}},
    )
    assert job.state in (JobState.WAITING, JobState.ACTIVE)
    assert job.priority is JobPriority.HIGH
    assert job.max_attempts == 3
    await calls.wait_for(1)
    assert calls.items == [("u@example.com", "Hi", 0, False)]

    await qm.register_queue("user-processing")
    ids = await qm.add_bulk(
        "user-processing", [{"name": "process-user", "data": {"user_id": i}} for i in range(1000)]
    )
    assert len(ids) == len(set(ids)) == 1000
    await stop_workers(qm)

    stored = await qm.get_job("email-notifications", job.id)
    assert stored.state is JobState.COMPLETED
    assert stored.result == {"sent": True}
    assert stored.finished_at is not None and stored.created_at is not None
    metrics = await qm.get_queue_metrics("email-notifications")
    assert (metrics.completed, metrics.waiting, metrics.active, metrics.failed) == (1, 0, 0, 0)
    assert (await qm.get_queue_metrics("user-processing")).waiting == 1000

    paused = await qm.pause_queue("email-notifications")
    assert paused.paused
    assert not (await qm.resume_queue("email-notifications")).paused
    removed = await qm.clean_queue("email-notifications", 0, "completed")
    assert removed == 1


async def test_priority_order_and_fifo_within_a_level(qm: QueueManager) -> None:
    await qm.register_queue("prio")
    plan = [5, 3, 1, 3, 2, 5, 1, 4, 2, 3]
    added = [(await qm.add_job("prio", f"j{i}", {"i": i}, {"priority": p})).id for i, p in enumerate(plan)]
    calls = Calls()
    qm.register_processor("prio", lambda job: calls.add(job.data["i"]))
    await qm.start_workers(concurrency=1)
    await calls.wait_for(len(plan))
    expected = sorted(range(len(plan)), key=lambda i: (plan[i], i))
    assert calls.items == expected
    assert len(set(added)) == len(plan)


async def test_retries_follow_backoff_then_dead_letter(qm: QueueManager) -> None:
    await qm.register_queue("flaky")
    calls = Calls()

    @qm.processor("flaky")
    async def fail(job: JobContext) -> None:
        calls.add(job.attempts_made)
        raise RuntimeError(f"boom {job.attempts_made}")

    await qm.start_workers()
    job = await qm.add_job(
        "flaky", "x", {"k": 1}, {"attempts": 3, "backoff": {"type": "fixed", "delay": 300}}
    )
    await calls.wait_for(3)
    await stop_workers(qm)
    assert calls.items == [0, 1, 2]
    gaps = [b - a for a, b in zip(calls.times, calls.times[1:], strict=False)]
    assert all(gap >= 0.27 for gap in gaps), gaps

    failed = await qm.get_job("flaky", job.id)
    assert failed.state is JobState.FAILED
    assert failed.attempts_made == 3
    assert failed.failed_reason == "boom 2"
    assert "RuntimeError: boom 2" in failed.stacktrace
    dead, _ = await qm.list_jobs("dead-letter-queue", "waiting")
    [letter] = [d.data for d in dead if d.data.get("original_job_id") == job.id]
    assert (
        letter
        | {
            "original_queue": "flaky",
            "original_job_id": job.id,
            "original_data": {"k": 1},
            "failure_reason": "boom 2",
            "attempts_made": 3,
        }
        == letter
    )


async def test_unrecoverable_error_skips_remaining_attempts(qm: QueueManager) -> None:
    await qm.register_queue("fatal")
    calls = Calls()

    @qm.processor("fatal")
    async def fail(job: JobContext) -> None:
        calls.add(job.id)
        raise UnrecoverableError("bad input, do not retry")

    await qm.start_workers()
    job = await qm.add_job("fatal", "x", None, {"attempts": 5, "backoff": 10})
    await calls.wait_for(1)
    await stop_workers(qm)
    stored = await qm.get_job("fatal", job.id)
    assert stored.state is JobState.FAILED
    assert stored.failed_reason == "bad input, do not retry"
    assert calls.items == [job.id]


async def test_sync_processor_runs_in_a_thread(qm: QueueManager) -> None:
    await qm.register_queue("blocking")
    calls = Calls()

    def work(job: JobContext) -> dict[str, Any]:
        calls.add(threading.current_thread() is threading.main_thread())
        time.sleep(0.05)  # a blocking call must not stall the event loop
        job.report_progress(100)
        return {"double": job.data * 2}

    qm.register_processor("blocking", work)
    await qm.start_workers()
    jobs = [await qm.add_job("blocking", "x", n) for n in range(4)]
    await calls.wait_for(4)
    await stop_workers(qm)
    assert calls.items == [False] * 4
    for n, job in enumerate(jobs):
        stored = await qm.get_job("blocking", job.id)
        assert (stored.state, stored.result) == (JobState.COMPLETED, {"double": n * 2})


async def test_progress_is_visible_while_the_job_runs(qm: QueueManager) -> None:
    await qm.register_queue("progress")
    release = asyncio.Event()

    @qm.processor("progress")
    async def slow(job: JobContext) -> str:
        await job.update_progress({"percent": 50})
        await release.wait()
        return "done"

    await qm.start_workers()
    job = await qm.add_job("progress", "x")

    async def progress() -> Any:
        return (await qm.get_job("progress", job.id)).progress

    assert await eventually(progress) == {"percent": 50}
    running = await qm.get_job("progress", job.id)
    assert running.state is JobState.ACTIVE
    assert running.worker_id == qm.workers[0].worker_id
    release.set()
    await stop_workers(qm)
    assert (await qm.get_job("progress", job.id)).result == "done"


async def test_processor_timeout_fails_the_run(qm: QueueManager) -> None:
    await qm.register_queue("slow")
    started = Calls()

    @qm.processor("slow")
    async def hang(job: JobContext) -> None:
        started.add(job.id)
        await asyncio.sleep(60)

    await qm.start_workers()
    job = await qm.add_job("slow", "x", None, {"timeout": 200, "attempts": 1})

    async def failed() -> Any:
        stored = await qm.get_job("slow", job.id)
        return stored if stored.state is JobState.FAILED else None

    stored = await eventually(failed)
    assert stored.failed_reason == "job timed out after 0.2s"


async def test_shutdown_releases_jobs_still_running_after_grace(qm: QueueManager) -> None:
    await qm.register_queue("long")
    started = Calls()

    @qm.processor("long")
    async def hang(job: JobContext) -> None:
        started.add(job.id)
        await asyncio.sleep(60)

    worker = await qm.start_workers()
    job = await qm.add_job("long", "x")
    await started.wait_for(1)
    await worker.shutdown(grace=0.1)
    stored = await qm.get_job("long", job.id)
    assert stored.state is JobState.WAITING
    assert stored.attempts_made == 0


async def test_add_bulk_keeps_order_and_job_ids_are_idempotent(qm: QueueManager) -> None:
    await qm.register_queue("bulk")
    jobs = [
        {"name": "n", "data": {"i": i}, "options": {"job_id": f"k-{i}"} if i % 2 else None}
        for i in range(1201)
    ]
    ids = await qm.add_bulk("bulk", jobs)
    assert len(ids) == 1201
    assert ids[1] == "k-1" and ids[1199] == "k-1199"
    for index in (0, 2, 600, 1200):
        assert (await qm.get_job("bulk", ids[index])).data == {"i": index}
    again = await qm.add_bulk("bulk", [{"name": "n", "data": {"i": -1}, "options": {"job_id": "k-1"}}])
    assert again == ["k-1"]
    existing = await qm.add_job("bulk", "n", {"i": -2}, {"job_id": "k-3"})
    assert (existing.id, existing.data) == ("k-3", {"i": 3})
    assert (await qm.get_queue_metrics("bulk")).waiting == 1201
    assert await qm.add_bulk("bulk", []) == []

    page, token = await qm.list_jobs("bulk", "waiting", page_size=500)
    assert len(page) == 500 and token
    assert [job.id for job in page] == ids[:500]


async def test_errors_are_typed(qm: QueueManager) -> None:
    with pytest.raises(NotFoundError, match="nope"):
        await qm.add_job("nope", "x")
    await qm.register_queue("errs")
    with pytest.raises(NotFoundError):
        await qm.get_job("errs", "missing")
    with pytest.raises(ValueError, match="priority"):
        await qm.add_job("errs", "x", None, {"priority": 9})
    with pytest.raises(InvalidArgumentError):
        await qm.clean_queue("errs", 0, "active")
    # An id or name of the wrong type names the argument, before any call: protobuf's own words were
    # "bad argument type for built-in operation".
    for call in (qm.get_job, qm.remove_job, qm.cancel_job):
        with pytest.raises(TypeError, match=r"^job id must be a str, not int 42$"):
            await call("errs", 42)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match=r"^queue name must be a str, not int$"):
            await call(42, "x")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"^queue name must be a str, not int$"):
        await qm.get_queue(42)  # type: ignore[arg-type]
    with SyncQueueManager(qm.address) as client:  # refused before any call: no thread needed
        for sync_call in (client.get_job, client.remove_job, client.cancel_job):
            with pytest.raises(TypeError, match=r"^job id must be a str, not int 42$"):
                sync_call("errs", 42)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match=r"^queue name must be a str, not int$"):
            client.get_queue(42)  # type: ignore[arg-type]


async def test_wrong_types_name_the_argument_before_the_call(qm: QueueManager) -> None:
    # Each of these got protobuf's "bad argument type for built-in operation" (or a message naming a
    # field of the request, not the argument); both clients now name the argument before any call.
    cases: list[tuple[str, str, tuple[Any, ...], dict[str, Any]]] = [
        (r"^page_token must be a str, not int 5$", "list_jobs", ("q", "waiting", 10, 5), {}),
        (r"^queue must be a str, not int$", "list_workers", (5,), {}),
        (r"^queue name must be a str, not int$", "get_queue_metrics", (5,), {}),
        (r"^include_history must be True or False, not str 'yes'$", "get_queue_metrics", ("q", "yes"), {}),
        (r"^reason must be a str, not int 5$", "cancel_job", ("q", "j"), {"reason": 5}),
        (r"^include_delayed must be True or False, not str 'yes'$", "drain_queue", ("q", "yes"), {}),
        (r"^force must be True or False, not str 'yes'$", "obliterate_queue", ("q", "yes"), {}),
        (r"^queue name must be a str, not int$", "drain_queue", (5,), {}),
        # Every listing checks its page the same way (options.check_page).
        (r"^page_token must be a str, not int 5$", "get_job_logs", ("q", "j"), {"page_token": 5}),
        (r"^page_token must be a str, not int 5$", "list_groups", ("q",), {"page_token": 5}),
        (r"^page_token must be a str, not int 5$", "list_workflows", (), {"page_token": 5}),
    ]
    with SyncQueueManager(qm.address) as client:  # refused before any call: no thread needed
        for message, method, args, kwargs in cases:
            with pytest.raises(TypeError, match=message):
                await getattr(qm, method)(*args, **kwargs)
            with pytest.raises(TypeError, match=message):
                getattr(client, method)(*args, **kwargs)


async def test_worker_for_unknown_queue_backs_off_and_shuts_down(qm: QueueManager) -> None:
    qm.register_processor("not-registered", lambda job: None)
    worker = await qm.start_workers()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.5):
            await worker.wait_connected()
    async with asyncio.timeout(WAIT):
        await worker.shutdown()


async def test_sync_client(server: RunningServer) -> None:
    def produce() -> tuple[str, list[str], int, int]:
        with SyncQueueManager(server.address) as client:
            client.register_queue("sync-q", default_job_options={"attempts": 2})
            job = client.add_job("sync-q", "one", {"a": 1}, {"priority": "critical"})
            assert (job.created, job.replaced) == (True, False)
            dup = {"dedup": {"key": "k", "mode": "replace"}}
            first = client.add_job("sync-q", "d", 1, dup)
            again = client.add_job("sync-q", "d", 2, dup)
            assert (again.id, again.created, again.replaced, again.data) == (first.id, False, True, 2)
            client.remove_job("sync-q", first.id)
            ids = client.add_bulk("sync-q", ({"name": "many", "data": i} for i in range(50)))
            fetched = client.get_job("sync-q", job.id)
            assert fetched.data == {"a": 1} and fetched.priority is JobPriority.CRITICAL
            assert fetched.max_attempts == 2
            client.pause_queue("sync-q")
            waiting = client.get_queue_metrics("sync-q")
            client.resume_queue("sync-q")
            removed = client.clean_queue("sync-q", 0, "waiting", limit=10)
            try:
                client.get_job("sync-q", "missing")
            except NotFoundError:
                pass
            else:
                raise AssertionError("NotFoundError expected")
            return job.id, ids, waiting.paused, removed

    # The server runs on this event loop, so the blocking client runs in a thread.
    job_id, ids, paused, removed = await asyncio.to_thread(produce)
    assert job_id and len(ids) == 50
    assert paused == 51
    assert removed == 10


async def test_worker_reconnects_after_server_restart_and_cut(server_factory: ServerFactory) -> None:
    first = await server_factory()
    proxy = Proxy(f"tcp://{first.address}")
    await proxy.start()
    client = QueueManager(address=f"127.0.0.1:{proxy.port}", concurrency=2)
    try:
        await client.register_queue("restart")
        calls = Calls()
        release = asyncio.Event()

        @client.processor("restart")
        async def work(job: JobContext) -> int:
            calls.add((job.data, job.redelivery, job.stalled_count))
            if job.data == "hold":
                await release.wait()
            return int(job.stalled_count)

        worker = await client.start_workers()
        async with asyncio.timeout(WAIT):
            await worker.wait_connected()
        await client.add_job("restart", "x", 1)
        await calls.wait_for(1)

        # The server restarts: it drains the stream; the worker reconnects to the new process.
        await first.stop()
        second = await server_factory()
        proxy.target = ("127.0.0.1", int(second.address.rsplit(":", 1)[1]))
        async with asyncio.timeout(WAIT):
            while worker.server_id != second.settings.server_id:
                await worker.wait_connected()
                await asyncio.sleep(0.02)
        await client.add_job("restart", "x", 2)
        await calls.wait_for(2)

        # The connection is cut while a job runs: the job is recovered and redelivered after reconnecting.
        held = await client.add_job("restart", "x", "hold")
        await calls.wait_for(3)
        proxy.cut()
        proxy.restore()
        await calls.wait_for(4)
        release.set()
        await worker.shutdown()
        assert [c[0] for c in calls.items] == [1, 2, "hold", "hold"]
        assert calls.items[3][1:] == (True, 1)
        stored = await client.get_job("restart", held.id)
        assert (stored.state, stored.result, stored.stalled_count) == (JobState.COMPLETED, 1, 1)
    finally:
        await client.shutdown()
        await proxy.stop()


async def test_heartbeats_extend_leases_of_long_jobs(server_factory: ServerFactory) -> None:
    server = await server_factory(lease_ms=600)
    client = QueueManager(address=server.address, concurrency=2)
    try:
        await client.register_queue("long-lease")
        calls = Calls()

        @client.processor("long-lease")
        async def slow(job: JobContext) -> str:
            calls.add(job.redelivery)
            await asyncio.sleep(2.0)  # the job's own work: several lease lengths
            return "ok"

        worker = await client.start_workers()
        job = await client.add_job("long-lease", "x")
        await calls.wait_for(1)
        assert 0 < worker.heartbeat_interval < 0.6
        await worker.shutdown()
        stored = await client.get_job("long-lease", job.id)
        assert (stored.state, stored.result, stored.stalled_count) == (JobState.COMPLETED, "ok", 0)
        assert calls.items == [False]
    finally:
        await client.shutdown()


async def test_concurrency_bounds_jobs_in_flight(qm: QueueManager) -> None:
    await qm.register_queue("bounded")
    release = asyncio.Event()
    running = 0
    peak = 0
    calls = Calls()

    @qm.processor("bounded")
    async def hold(job: JobContext) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        calls.add(job.id)
        await release.wait()
        running -= 1

    await qm.add_bulk("bounded", [{"name": "n"} for _ in range(10)])
    await qm.start_workers(concurrency=3)
    await calls.wait_for(3)
    metrics = await qm.get_queue_metrics("bounded")
    assert (metrics.active, metrics.waiting) == (3, 7)
    release.set()
    await calls.wait_for(10)
    assert peak == 3


class _Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no text")


async def test_a_failure_whose_text_cannot_be_read_fails_its_run_like_any_other(qm: QueueManager) -> None:
    """An exception whose str() raises is reported as a failed run at once (its type for message), instead of
    breaking the report and leaving the job to its lease's expiry."""
    await qm.register_queue("unprintable")

    @qm.processor("unprintable")
    async def fail(job: JobContext) -> None:
        raise _Unprintable()

    await qm.start_workers()
    job = await qm.add_job("unprintable", "x")

    async def failed() -> Job | None:
        got = await qm.get_job("unprintable", job.id)
        return got if got.state is JobState.FAILED else None

    got = await eventually(failed, 10)  # its lease is 30 s: a broken report would leave it active so long
    await stop_workers(qm)
    assert got.failed_reason == "_Unprintable"
    assert got.stacktrace.endswith("_Unprintable: <exception str() failed>\n")


async def test_a_result_that_is_not_json_fails_the_run_naming_the_result(qm: QueueManager) -> None:
    """The failure says the processor's return value was refused: it read "data must be …", which sent the
    reader to the job's data, and NaN's read only "Out of range float values are not JSON compliant"."""
    await qm.register_queue("unjson")

    @qm.processor("unjson")
    async def odd(job: JobContext) -> object:
        return {1, 2} if job.name == "set" else {"ratio": float("nan")}

    await qm.start_workers()
    a_set = await qm.add_job("unjson", "set")
    a_nan = await qm.add_job("unjson", "nan")
    got_set = await qm.wait_for_job("unjson", a_set.id, timeout=10)
    got_nan = await qm.wait_for_job("unjson", a_nan.id, timeout=10)
    await stop_workers(qm)
    assert got_set.state is JobState.FAILED
    assert got_set.failed_reason.startswith("result must be JSON-serialisable or bytes: ")
    assert got_nan.failed_reason.startswith("result must be JSON (no NaN or infinity"), got_nan.failed_reason


async def test_a_processor_raising_cancelled_error_fails_its_run(qm: QueueManager) -> None:
    """CancelledError raised by the processor itself (nothing cancelled the run) is a failure of the attempt,
    retried per its attempts, not an abandoned run that stalls and comes back for ever."""
    await qm.register_queue("self-cancel")
    calls = Calls()

    @qm.processor("self-cancel")
    async def cancel_itself(job: JobContext) -> None:
        calls.add((job.attempts_made, job.redelivery))
        raise asyncio.CancelledError()

    await qm.start_workers()
    job = await qm.add_job("self-cancel", "x", None, {"attempts": 2})
    got = await qm.wait_for_job("self-cancel", job.id, timeout=WAIT)
    await stop_workers(qm)
    assert got.state is JobState.FAILED
    assert got.failed_reason == "CancelledError"
    assert got.attempts_made == 2 and got.stalled_count == 0
    assert calls.items == [(0, False), (1, False)]


async def test_a_sync_processor_raising_cancelled_error_fails_its_run(qm: QueueManager) -> None:
    await qm.register_queue("self-cancel-sync")

    @qm.processor("self-cancel-sync")
    def cancel_itself(job: JobContext) -> None:
        raise asyncio.CancelledError("gave up")

    await qm.start_workers()
    job = await qm.add_job("self-cancel-sync", "x", None, {"attempts": 1})
    got = await qm.wait_for_job("self-cancel-sync", job.id, timeout=WAIT)
    await stop_workers(qm)
    assert (got.state, got.failed_reason, got.stalled_count) == (JobState.FAILED, "gave up", 0)


async def test_start_workers_takes_one_queue_name_as_a_string(qm: QueueManager) -> None:
    """``start_workers("q1")`` runs queue q1's processor (it iterated the letters: queues "q" and "1")."""
    await qm.register_queue("q1")
    calls = Calls()
    qm.register_processor("q1", lambda job: calls.add(job.id))
    qm.register_processor("other", lambda job: None)
    worker = await qm.start_workers("q1")
    assert worker.queues == ["q1"]
    job = await qm.add_job("q1", "x")
    await calls.wait_for(1)
    assert calls.items == [job.id]
