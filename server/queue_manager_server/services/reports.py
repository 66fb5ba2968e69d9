"""Handles worker reports: completions, failures, delays, extensions, progress, releases, each batched per
queue.

Every item presents its lease token; the engine's scripts reject stale ones, and the rejections (plus every
extension's verdict) go back to the worker in one ack.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Callable, Hashable, Iterable
from operator import attrgetter
from typing import TypeVar, cast

import grpc

from queue_manager.logsampling import Sampler
from queue_manager.v1 import worker_service_pb2 as pb
from queue_manager_server import convert, validate
from queue_manager_server.engine import Engine
from queue_manager_server.engine.control import Control
from queue_manager_server.engine.job_control import JobControl
from queue_manager_server.errors import InvalidArgument
from queue_manager_server.services.dispatcher import WorkerSession, cancel_command
from queue_manager_server.services.exemplars import Exemplars

log = logging.getLogger("queue_manager_server.reports")

# Longest retry-after a worker may impose on a queue (a bad value must not stop a queue for good).
MAX_RETRY_AFTER_MS = 24 * 3600 * 1000

T = TypeVar("T", pb.JobCompletion, pb.JobFailure, pb.LeaseRef, pb.JobProgress, pb.JobLogs, pb.JobDelay)
# The queue an item is for: named on the item, or (progress, logs) on the run it names in ``lease``.
_QUEUE: Callable[[object], str] = attrgetter("queue_name")
_RUN_QUEUE: Callable[[object], str] = attrgetter("lease.queue_name")
_CODES = {
    -2: (grpc.StatusCode.NOT_FOUND, "job no longer exists"),
    -3: (grpc.StatusCode.FAILED_PRECONDITION, ""),
}


def _lease_ref(queue: str, job_id: str, token: str) -> pb.LeaseRef:
    return pb.LeaseRef(queue_name=queue, job_id=job_id, lease_token=token)


def _rejection(queue: str, job_id: str, token: str, code: int) -> pb.ReportItemResult:
    status, message = _CODES.get(code, (grpc.StatusCode.UNKNOWN, f"code {code}"))
    if code == -3:
        message = (
            f"lease of job {job_id!r} in queue {queue!r} is not held by this token (expired or recovered)"
        )
    # The status the worker is told, by name (the script's code means nothing to a reader of the log).
    log.info(
        "report item rejected",
        extra={"queue": queue, "job_id": job_id, "status": status.name, "reason": message},
    )
    return pb.ReportItemResult(lease=_lease_ref(queue, job_id, token), code=status.value[0], message=message)


class ReportHandler:
    """Applies one worker report to the engine and returns the verdicts to ack."""

    def __init__(self, engine: Engine, lease_ms: int, max_payload: int, exemplars: Exemplars) -> None:
        self.engine = engine
        self.control = JobControl(engine)
        self.lease_ms = lease_ms
        self.max_payload = max_payload
        # A line per failed run: the first few of each kind (queue, outcome) per second, then a count; a
        # storm of failures would bury the log and cost the server more than the runs (logsampling.py).
        self.failure_log = Sampler(_log_left_out)
        # Traced runs in flight and the histogram's exemplars: the dispatcher's, which records deliveries.
        self.exemplars = exemplars

    async def handle(self, s: WorkerSession, r: pb.WorkerReport) -> list[pb.ReportItemResult]:
        self.failure_log.flush()  # the count of a storm that has stopped, at the next report (a heartbeat)
        results: list[pb.ReportItemResult] = []
        # Progress and extensions first: a report may carry a job's last progress and its completion.
        for queue, progress in _by_queue(r.progress, _RUN_QUEUE):
            results += await self._progress(queue, progress)
        for queue, logs in _by_queue(
            r.logs, _RUN_QUEUE
        ):  # before completions too: a run's last lines are its own
            results += await self._logs(queue, logs)
        for queue, extensions in _by_queue(r.extensions):
            results += await self._extend(s, queue, extensions)
        # Outcomes of different runs are independent: each queue's completions and failures go to Redis at
        # once rather than one round trip after another (the next report of this stream waits for these).
        outcomes = [self._complete(s, queue, items) for queue, items in _by_queue(r.completions)]
        outcomes += [
            self._fail(s, queue, items)
            for queue, items in _by_queue(f for f in r.failures if not f.HasField("retry_after"))
        ]
        # A failure with retry_after (the processor was told to slow down) uses no attempt.
        outcomes += [
            self._retry_later(s, queue, items)
            for queue, items in _by_queue(f for f in r.failures if f.HasField("retry_after"))
        ]
        # A run that asked to run again later (a durable sleep) uses no attempt and holds nothing back.
        outcomes += [self._delay(s, queue, items) for queue, items in _by_queue(r.delays, _RUN_QUEUE)]
        if len(outcomes) == 1:
            results += await outcomes[0]
        elif outcomes:
            for verdicts in await asyncio.gather(*outcomes):
                results += verdicts
        # A run stopped on CANCEL_JOB is handed back like an abandoned one: the pending cancel ends the job
        # cancelled (common.lua recover_stalled), and a stop nobody asked for counts as a stall.
        for refs, stalled in ((r.releases, False), (r.abandoned, True), (r.cancelled, True)):
            for queue, items in _by_queue(refs):
                results += await self._release(s, queue, items, stalled)
        return results

    async def _complete(
        self, s: WorkerSession, queue: str, items: list[pb.JobCompletion]
    ) -> list[pb.ReportItemResult]:
        args, accepted, unstorable, durations = [], [], [], []
        forget = s.forget
        for c in items:
            job_id, token = c.job_id, c.lease_token
            forget(queue, job_id, token)
            if c.HasField("result"):
                try:
                    body, ct = convert.payload_in(c.result, "result", self.max_payload)
                except InvalidArgument as exc:
                    # An unstorable result fails the attempt instead of breaking the stream.
                    unstorable.append((job_id, token, f"result rejected: {exc}", "", False))
                    continue
            else:
                body, ct = convert.NO_PAYLOAD
            args.append((job_id, token, body, ct))
            durations.append(_duration_us(c))
            accepted.append(c)
        if self.exemplars.in_flight:
            self.exemplars.ended(queue, [a[0] for a in args], durations)
        codes = (await self.engine.complete(queue, args, durations))[0] if args else []
        if unstorable:
            await self.engine.fail(queue, unstorable)
        return [
            _rejection(queue, c.job_id, c.lease_token, code)
            for c, code in zip(accepted, codes, strict=True)
            if code
        ]

    async def _fail(
        self, s: WorkerSession, queue: str, items: list[pb.JobFailure]
    ) -> list[pb.ReportItemResult]:
        for f in items:
            s.forget(queue, f.job_id, f.lease_token)
        durations = [_duration_us(f) for f in items]
        if self.exemplars.in_flight:
            self.exemplars.ended(queue, [f.job_id for f in items], durations)
        outcomes = await self.engine.fail(
            queue,
            [
                (f.job_id, f.lease_token, f.message[:10_000], f.stacktrace[:50_000], f.do_not_retry)
                for f in items
            ],
            durations,
            [f.timed_out for f in items],
        )
        for f, (code, _) in zip(items, outcomes, strict=True):
            level = logging.WARNING if code == 2 else logging.INFO
            # Sampled only where the line is logged at all (at WARNING a retry's line is not even counted).
            if code >= 0 and log.isEnabledFor(level) and self.failure_log.admit((queue, code == 2)):
                log.log(
                    level,
                    "job failed for good" if code == 2 else "job failed; will retry",
                    extra={
                        "queue": queue,
                        "job_id": f.job_id,
                        "worker_id": s.worker_id,
                        "error": f.message[:500],
                    },
                )
        return [
            _rejection(queue, f.job_id, f.lease_token, code)
            for f, (code, _) in zip(items, outcomes, strict=True)
            if code < 0
        ]

    async def _retry_later(
        self, s: WorkerSession, queue: str, items: list[pb.JobFailure]
    ) -> list[pb.ReportItemResult]:
        for f in items:
            s.forget(queue, f.job_id, f.lease_token)
        waits = [min(max(f.retry_after.ToMilliseconds(), 0), MAX_RETRY_AFTER_MS) for f in items]
        outcomes = await Control(self.engine).retry_later(
            queue, [(f.job_id, f.lease_token, wait) for f, wait in zip(items, waits, strict=True)]
        )
        for f, wait, (code, _) in zip(items, waits, outcomes, strict=True):
            if code == 1:
                log.info(
                    "job told to slow down; the queue holds off",
                    extra={
                        "queue": queue,
                        "job_id": f.job_id,
                        "worker_id": s.worker_id,
                        "retry_after_ms": wait,
                    },
                )
        return [
            _rejection(queue, f.job_id, f.lease_token, code)
            for f, (code, _) in zip(items, outcomes, strict=True)
            if code < 0
        ]

    async def _delay(
        self, s: WorkerSession, queue: str, items: list[pb.JobDelay]
    ) -> list[pb.ReportItemResult]:
        delays: list[tuple[str, str, int] | tuple[str, str, int, bytes, str]] = []
        refused: list[tuple[str, str, str, str, bool]] = []
        for d in items:
            job_id, token = d.lease.job_id, d.lease.lease_token
            s.forget(queue, job_id, token)
            try:
                wait = validate.duration_ms(d.delay, "delay")
                if d.HasField("data"):
                    body, ct = convert.payload_in(d.data, "data", self.max_payload)
                    delays.append((job_id, token, wait, body, ct))
                else:
                    delays.append((job_id, token, wait))
            except InvalidArgument as exc:
                # A delay that cannot be applied fails the attempt with why, as an unstorable result does.
                refused.append((job_id, token, f"delay rejected: {exc}", "", False))
        outcomes = await Control(self.engine).retry_later(queue, delays, hold=False) if delays else []
        if refused:
            await self.engine.fail(queue, refused)
        return [
            _rejection(queue, d[0], d[1], code)
            for d, (code, _) in zip(delays, outcomes, strict=True)
            if code < 0
        ]

    async def _extend(
        self, s: WorkerSession, queue: str, items: list[pb.LeaseRef]
    ) -> list[pb.ReportItemResult]:
        verdicts = await self.engine.extend(queue, [(e.job_id, e.lease_token) for e in items], self.lease_ms)
        results = []
        for e, (code, expiry) in zip(items, verdicts, strict=True):
            if code < 0:
                results.append(_rejection(queue, e.job_id, e.lease_token, code))
                s.forget(queue, e.job_id, e.lease_token)
            else:
                # A lease this stream did not deliver (its worker held it on a stream that a server ended at
                # shutdown) is this stream's from now on: released if it ends, found by a cancel.
                s.leases.setdefault((queue, e.job_id), e.lease_token)
                results.append(pb.ReportItemResult(lease=e, lease_expire_time=convert.ms_timestamp(expiry)))
                if code == 1:  # a cancel is pending: tell the worker again (its first telling may be lost)
                    s.send(cancel_command(queue, e.job_id, e.lease_token, "cancel requested"))
        return results

    async def _logs(self, queue: str, items: list[pb.JobLogs]) -> list[pb.ReportItemResult]:
        codes = await self.control.add_logs(
            queue, [(x.lease.job_id, x.lease.lease_token, convert.log_lines_in(x.lines)) for x in items]
        )
        return [
            _rejection(queue, x.lease.job_id, x.lease.lease_token, c)
            for x, c in zip(items, codes, strict=True)
            if c
        ]

    async def _progress(self, queue: str, items: list[pb.JobProgress]) -> list[pb.ReportItemResult]:
        codes = await self.engine.progress(
            queue, [(p.lease.job_id, p.lease.lease_token, convert.value_json(p.progress)) for p in items]
        )
        return [
            _rejection(queue, p.lease.job_id, p.lease.lease_token, c)
            for p, c in zip(items, codes, strict=True)
            if c
        ]

    async def _release(
        self, s: WorkerSession, queue: str, items: list[pb.LeaseRef], stalled: bool
    ) -> list[pb.ReportItemResult]:
        for x in items:
            s.forget(queue, x.job_id, x.lease_token)
        codes = await self.engine.release(queue, [(x.job_id, x.lease_token) for x in items], stalled=stalled)
        return [
            _rejection(queue, x.job_id, x.lease_token, c) for x, c in zip(items, codes, strict=True) if c < 0
        ]


def _log_left_out(kind: Hashable, count: int, seconds: float) -> None:
    """The failed runs of one kind that a second's sampling left out of the log, in one line."""
    queue, for_good = cast("tuple[str, bool]", kind)
    log.log(
        logging.WARNING if for_good else logging.INFO,
        "more jobs failed for good" if for_good else "more jobs failed; will retry",
        extra={"queue": queue, "count": count, "seconds": round(seconds, 1)},
    )


def _by_queue(items: Iterable[T], queue: Callable[[object], str] = _QUEUE) -> list[tuple[str, list[T]]]:
    """Groups report items by queue (each script call covers one queue)."""
    groups: dict[str, list[T]] = defaultdict(list)
    for item in items:
        groups[queue(item)].append(item)
    return list(groups.items())


def _duration_us(outcome: pb.JobCompletion | pb.JobFailure) -> int:
    """The run's duration as the worker reported it, in µs; -1 when it reported none (not counted).

    Duration.ToMicroseconds is Python-level: this is its arithmetic, once. An unset duration reads as zero,
    so only a duration of zero or less asks whether it was set (each protobuf field access costs ~0.1 µs, a
    third of this function per outcome)."""
    d = outcome.duration
    us = d.seconds * 1_000_000 + d.nanos // 1000
    if us > 0:
        return us
    return 0 if outcome.HasField("duration") else -1
