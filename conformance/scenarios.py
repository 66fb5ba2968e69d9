"""The checks: each scenario starts a fresh worker under test on its own queue, drives it through the server,
and judges it from the outside: the jobs' states and results, and the worker stream the proxy recorded.

A scenario raises AssertionError saying what the worker did wrong. `SCENARIOS` lists them in the order
they run; `GOLDEN_SCENARIOS` are those whose stream must have the shape of a golden transcript.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Awaitable, Callable
from datetime import timedelta

from conformance import transcript
from conformance.harness import LEASE_MS, SHUTDOWN_GRACE_MS, WAIT_S, Kit, WorkerProcess
from conformance.proxy import StreamRecord
from queue_manager import Job, JobState

Scenario = Callable[[Kit, str], Awaitable[StreamRecord | None]]


async def _finished(kit: Kit, queue: str, job: Job, unfinished: str = "") -> Job:
    """The job once finished; a failure saying `unfinished` (what the worker failed to do) if it is not."""
    try:
        done = await kit.client.wait_for_job(queue, job.id, timeout=WAIT_S)
    except TimeoutError as exc:
        # A verdict, not a traceback that ends the kit's run: the worker kept the job (or never took it).
        raise AssertionError(f"{exc}{': ' + unfinished if unfinished else ''}") from None
    assert done.state in (JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED), (
        f"job {job.name} ({job.id}) not finished within {WAIT_S:.0f} s: {done.state}"
    )
    return done


async def _with_worker(kit: Kit, queue: str) -> tuple[WorkerProcess, StreamRecord]:
    """A fresh worker on `queue`, and the stream it opened."""
    first = len(kit.proxy.streams)
    await kit.client.register_queue(queue)
    worker = await kit.start_worker(queue)
    [stream] = [s for s in kit.streams_since(first) if s.messages and s.messages[0].direction == ">"][:1]
    return worker, stream


async def _stop(worker: WorkerProcess, *streams: StreamRecord) -> None:
    """Stops the worker (it must exit 0 after SIGTERM); returns once its streams have ended."""
    status = await worker.stop()
    assert status == 0, f"the worker exited with {status} after SIGTERM{worker.tail()}"
    for stream in streams:
        try:
            await asyncio.wait_for(stream.ended.wait(), WAIT_S)
        except TimeoutError:
            raise AssertionError(f"stream {stream.number} still open after the worker exited") from None


def _hello(stream: StreamRecord) -> object:
    first = stream.messages[0]
    assert first.direction == ">" and first.body is not None and first.body.WhichOneof("kind") == "hello", (
        f"the first message must be a hello: {transcript.lines(stream)[:3]}"
    )
    return first.body.hello  # type: ignore[union-attr]


async def hello_and_credits(kit: Kit, queue: str) -> StreamRecord:
    """The hello comes first and names the queue and the concurrency; the worker never has more jobs in
    flight than its concurrency (deliveries less outcomes), yet uses all of it."""
    worker, stream = await _with_worker(kit, queue)
    hello = _hello(stream)
    assert list(hello.queues) == [queue], f"hello.queues: {list(hello.queues)}"  # type: ignore[attr-defined]
    assert hello.concurrency == kit.concurrency, f"hello.concurrency: {hello.concurrency}"  # type: ignore[attr-defined]
    assert hello.worker_id, "hello.worker_id is empty"  # type: ignore[attr-defined]
    jobs = [await kit.client.add_job(queue, "sleep", {"ms": 300}) for _ in range(3 * kit.concurrency)]
    for job in jobs:
        assert (await _finished(kit, queue, job)).state == JobState.COMPLETED
    peak = _peak_in_flight(stream)
    assert peak <= kit.concurrency, f"{peak} jobs in flight at once; concurrency is {kit.concurrency}"
    assert peak == kit.concurrency, (
        f"at most {peak} jobs in flight: the credits never reached the concurrency"
    )
    await _stop(worker, stream)
    return stream


def _peak_in_flight(stream: StreamRecord) -> int:
    held = peak = 0
    for m in stream.messages:
        if m.body is None:
            continue
        if m.direction == "<" and m.body.WhichOneof("kind") == "delivery":
            held += len(m.body.delivery.jobs)  # type: ignore[union-attr]
            peak = max(peak, held)
        elif m.direction == ">" and m.body.WhichOneof("kind") == "report":
            r = m.body.report  # type: ignore[union-attr]
            # A parked run (ended by its WaitForEvent or WaitForChildren call) is no longer in flight either.
            held -= (
                len(r.completions)
                + len(r.failures)
                + len(r.releases)
                + len(r.abandoned)
                + len(r.cancelled)
                + len(r.parked)
            )
    return peak


async def completion(kit: Kit, queue: str) -> StreamRecord:
    """An echo job completes with its data as its result (golden: echo)."""
    worker, stream = await _with_worker(kit, queue)
    data = {"text": "héllo", "n": 3, "list": [1, 2.5, None]}
    done = await _finished(kit, queue, await kit.client.add_job(queue, "echo", data))
    assert done.state == JobState.COMPLETED and done.result == data, f"echo: {done.state} {done.result!r}"
    await _stop(worker, stream)
    return stream


async def failure(kit: Kit, queue: str) -> StreamRecord:
    """A fail job with one attempt fails for good with the processor's message."""
    worker, stream = await _with_worker(kit, queue)
    job = await kit.client.add_job(queue, "fail", {"message": "card declined: 4021"}, {"attempts": 1})
    done = await _finished(kit, queue, job)
    assert done.state == JobState.FAILED, f"fail: {done.state}"
    assert "card declined: 4021" in done.failed_reason, f"failed_reason: {done.failed_reason!r}"
    assert done.attempts_made == 1, f"attempts_made: {done.attempts_made}"
    await _stop(worker, stream)
    return stream


async def retry_backoff(kit: Kit, queue: str) -> StreamRecord:
    """A job that fails twice is run again after its backoff each time, and its third attempt completes."""
    worker, stream = await _with_worker(kit, queue)
    backoff = {"type": "fixed", "delay": timedelta(milliseconds=400)}
    job = await kit.client.add_job(
        queue, "fail", {"message": "flaky", "times": 2}, {"attempts": 3, "backoff": backoff}
    )
    done = await _finished(kit, queue, job)
    assert done.state == JobState.COMPLETED and done.result == {"attempts": 3}, (
        f"{done.state} {done.result!r}"
    )
    runs = [m.at for m in stream.messages if m.direction == "<" and _delivers(m.body, job.id)]
    assert len(runs) == 3, f"the job was delivered {len(runs)} times, not 3"
    gaps = [b - a for a, b in itertools.pairwise(runs)]
    assert all(g >= 0.35 for g in gaps), f"runs closer than the 400 ms backoff: {gaps}"
    await _stop(worker, stream)
    return stream


def _delivers(body: object, job_id: str) -> bool:
    return (
        body is not None
        and body.WhichOneof("kind") == "delivery"  # type: ignore[attr-defined]
        and any(j.job.id == job_id for j in body.delivery.jobs)  # type: ignore[attr-defined]
    )


async def progress(kit: Kit, queue: str) -> StreamRecord:
    """Progress reported during a run reaches the job (its last value) and its watchers, in order."""
    worker, stream = await _with_worker(kit, queue)
    steps = [10, 50, 100]
    async with kit.client.watch_job_events(queue, types=["progress", "completed"]) as events:
        job = await kit.client.add_job(queue, "progress", {"steps": steps})
        seen: list[float] = []
        try:
            async with asyncio.timeout(WAIT_S):
                async for ev in events:
                    if ev.type is not None and ev.type.value == "completed":
                        break
                    seen.append(json.loads(ev.progress))
        except TimeoutError:
            raise AssertionError(
                f"the progress job did not complete within {WAIT_S:.0f} s (progress seen: {seen})"
            ) from None
    done = await _finished(kit, queue, job)
    assert done.state == JobState.COMPLETED and done.progress == 100, (
        f"the progress job ended {done.state} with progress {done.progress!r}, not 100: report each "
        "step, in order, as report.progress (a JobProgress with the run's lease)"
    )
    assert seen and seen[-1] == 100 and seen == sorted(seen) and set(seen) <= set(steps), (
        f"progress seen: {seen}"
    )
    await _stop(worker, stream)
    return stream


async def checkpoint(kit: Kit, queue: str) -> StreamRecord:
    """Data saved during a failed run (a checkpoint) is what the next attempt gets."""
    worker, stream = await _with_worker(kit, queue)
    job = await kit.client.add_job(queue, "checkpoint", {"step": 0}, {"attempts": 2})
    done = await _finished(kit, queue, job)
    assert done.data == {"step": 1}, (
        f"the job's data is {done.data!r} after its first run, not the checkpoint {{'step': 1}}: the run "
        "must save it with UpdateJobData, giving its lease token, before it fails"
    )
    assert done.state == JobState.COMPLETED, f"checkpoint: {done.state} {done.failed_reason!r}"
    assert done.result == {"resumed_at": 1} and done.data == {"step": 1}, f"{done.result!r} {done.data!r}"
    await _stop(worker, stream)
    return stream


async def lease_fencing(kit: Kit, queue: str) -> StreamRecord:
    """A run whose lease ran out (its heartbeats dropped by the proxy) is fenced: the job is recovered, any
    completion the worker sends for the lost lease is rejected FAILED_PRECONDITION, and the worker goes on
    to run the job again under its new lease."""
    worker, stream = await _with_worker(kit, queue)
    job = await kit.client.add_job(queue, "sleep", {"ms": LEASE_MS * 2})
    await kit.proxy.wait_for(lambda: _token(stream, job.id) is not None, WAIT_S, "the job's delivery")
    first = _token(stream, job.id)
    assert first is not None
    kit.proxy.drop_extensions.add((job.id, first))
    # Paused, the recovered job waits: it is not handed back while the lost run is still going.
    await kit.client.pause_queue(queue)
    await kit.proxy.wait_for(
        lambda: _reported(stream, job.id) or _gone(stream),
        WAIT_S,
        "the lost run's end (a completion for its stale lease, or the worker dropping the run)",
    )
    # The proxy dropped this run's heartbeats: a worker that sent none would lose every lease longer than
    # the lease duration, and fail the rest of this check for a reason it would not say.
    assert _extended(stream, job.id, first), (
        f"the worker sent no heartbeat for a run of {LEASE_MS * 2} ms with a lease of {LEASE_MS} ms: send "
        "report.extensions for every running job each heartbeat_interval (the welcome's)"
    )
    recovered = await kit.client.get_job(queue, job.id)
    assert recovered.stalled_count == 1 and recovered.state != JobState.COMPLETED, (
        f"the lease ran out: the job must be recovered, not completed ({recovered.state}, "
        f"stalled {recovered.stalled_count})"
    )
    if _reported(stream, job.id):
        await kit.proxy.wait_for(
            lambda: _rejected(stream, job.id), WAIT_S, "the stale completion's FAILED_PRECONDITION"
        )
    await kit.client.resume_queue(queue)
    done = await _finished(kit, queue, job)
    assert done.state == JobState.COMPLETED, f"the job's second run: {done.state} {done.failed_reason!r}"
    assert _token(stream, job.id, last=True) != first, "the second run must come under a new lease"
    await _stop(worker, stream)
    return stream


def _token(stream: StreamRecord, job_id: str, last: bool = False) -> str | None:
    tokens = [
        leased.lease_token
        for m in stream.messages
        if m.direction == "<" and _delivers(m.body, job_id)
        for leased in m.body.delivery.jobs  # type: ignore[union-attr]
        if leased.job.id == job_id
    ]
    return (tokens[-1] if last else tokens[0]) if tokens else None


def _reported(stream: StreamRecord, job_id: str) -> bool:
    for m in stream.messages:
        if m.direction == ">" and m.body is not None and m.body.WhichOneof("kind") == "report":
            r = m.body.report  # type: ignore[union-attr]
            if any(x.job_id == job_id for x in [*r.completions, *r.failures, *r.abandoned, *r.cancelled]):
                return True
    return False


def _rejected(stream: StreamRecord, job_id: str) -> bool:
    return any(
        m.direction == "<"
        and m.body is not None
        and m.body.WhichOneof("kind") == "ack"
        and any(r.lease.job_id == job_id and r.code == 9 for r in m.body.ack.results)  # type: ignore[union-attr]
        for m in stream.messages
    )


def _reported_cancelled(stream: StreamRecord, job_id: str) -> bool:
    return any(
        m.direction == ">"
        and m.body is not None
        and m.body.WhichOneof("kind") == "report"
        and any(x.job_id == job_id for x in m.body.report.cancelled)  # type: ignore[union-attr]
        for m in stream.messages
    )


def _extended(stream: StreamRecord, job_id: str, token: str) -> bool:
    """Whether the worker sent a lease extension (a heartbeat) for the run of `job_id` under `token`."""
    return any(
        m.direction == ">"
        and m.body is not None
        and m.body.WhichOneof("kind") == "report"
        and any(e.job_id == job_id and e.lease_token == token for e in m.body.report.extensions)  # type: ignore[union-attr]
        for m in stream.messages
    )


def _gone(stream: StreamRecord) -> bool:
    return stream.ended.is_set()


async def cancel(kit: Kit, queue: str) -> StreamRecord:
    """CANCEL_JOB stops the run at once: the worker reports it cancelled and the job ends cancelled, long
    before its 60 s of sleep (golden: cancel)."""
    worker, stream = await _with_worker(kit, queue)
    job = await kit.client.add_job(queue, "sleep", {"ms": 60_000})
    await kit.proxy.wait_for(lambda: _token(stream, job.id) is not None, WAIT_S, "the job's delivery")
    await kit.client.cancel_job(queue, job.id, "conformance")
    done = await _finished(
        kit,
        queue,
        job,
        "the server sent CANCEL_JOB for its run; the worker must stop the run and report it in "
        "report.cancelled" + ("" if _reported_cancelled(stream, job.id) else " (it sent no such report)"),
    )
    assert done.state == JobState.CANCELLED, f"cancelled job: {done.state}"
    await _stop(worker, stream)
    return stream


async def drain_and_reconnect(kit: Kit, queue: str) -> StreamRecord:
    """The server stops (DRAIN) while jobs run and wait: the worker finishes or hands back what it holds and
    half-closes well within the grace, reconnects once a server is back on the address, and every job
    completes exactly once, none recovered as lost (golden: drain, the first stream)."""
    worker, stream = await _with_worker(kit, queue)
    jobs = [await kit.client.add_job(queue, "sleep", {"ms": 800}) for _ in range(kit.concurrency + 2)]
    await kit.proxy.wait_for(lambda: _token(stream, jobs[0].id) is not None, WAIT_S, "the first delivery")
    loop = asyncio.get_running_loop()
    started = loop.time()
    await kit.stop_server()
    took = loop.time() - started
    assert took < SHUTDOWN_GRACE_MS / 2000, (
        f"the server waited {took:.1f} s for the drained worker (it must half-close once its runs are done)"
    )
    streams = len(kit.proxy.streams)
    await kit.start_server()
    await kit.proxy.wait_for(
        lambda: any(transcript.shape(s)[:2] == ["> hello", "< welcome"] for s in kit.streams_since(streams)),
        WAIT_S,
        "the worker's new stream after the restart",
    )
    for job in jobs:
        done = await _finished(kit, queue, job)
        assert done.state == JobState.COMPLETED, f"job {job.id}: {done.state} {done.failed_reason!r}"
        assert done.stalled_count == 0, (
            f"job {job.id} was recovered as lost ({done.stalled_count}): drain lost it"
        )
    for s in [stream, *kit.streams_since(streams)]:
        shape = transcript.lines(s)
        if "< drain" in shape:
            after = shape[shape.index("< drain") :]
            assert not any(line.startswith("< delivery") for line in after), "a delivery after DRAIN"
    ran = [job.id for s in [stream, *kit.streams_since(streams)] for job in jobs if job.id in _completed(s)]
    assert sorted(ran) == sorted(j.id for j in jobs), f"completions reported: {ran} (each job once)"
    await _stop(worker, *kit.streams_since(streams))
    return stream


def _completed(stream: StreamRecord) -> list[str]:
    """Job ids whose completion the stream carried and the server did not reject."""
    rejected = {
        r.lease.job_id
        for m in stream.messages
        if m.direction == "<" and m.body is not None and m.body.WhichOneof("kind") == "ack"
        for r in m.body.ack.results  # type: ignore[union-attr]
        if r.code != 0
    }
    return [
        c.job_id
        for m in stream.messages
        if m.direction == ">" and m.body is not None and m.body.WhichOneof("kind") == "report"
        for c in m.body.report.completions  # type: ignore[union-attr]
        if c.job_id not in rejected
    ]


SCENARIOS: dict[str, Scenario] = {
    "hello_and_credits": hello_and_credits,
    "completion": completion,
    "failure": failure,
    "retry_backoff": retry_backoff,
    "progress": progress,
    "checkpoint": checkpoint,
    "lease_fencing": lease_fencing,
    "cancel": cancel,
    "drain_and_reconnect": drain_and_reconnect,
}
# Scenario -> the golden transcript its (first) stream must match.
GOLDEN_SCENARIOS = {"completion": "echo", "cancel": "cancel", "drain_and_reconnect": "drain"}
