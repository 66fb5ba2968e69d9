"""Pull workers (no stream): FetchJobs, CompleteJob, FailJob, ExtendJobLease and ReportJobProgress.

A second front door to the engine calls the worker stream makes (services/dispatcher.py, reports.py): a
fetch is one claim.lua call with the caller's lease, a completion complete.lua, a failure fail.lua (or
retry_later.lua with retry_after), each fenced by the lease token, so a pulled job lives exactly as a
streamed one does (pause, priorities, rate limits, group limits and caps apply to its claim; chains,
workflows and parents follow its completion; the reaper recovers it when its lease runs out).

A fetch with nothing ready waits up to `wait` without polling Redis: it claims once, then sleeps on the
wake-ups every server already receives on the engine's channel (``w <queue>`` and the other queue events,
components/notifier.py → `PullWaiters`), or until the time the claim said a delayed job falls due or the
rate limit gives tokens, and claims again only then. The claim that leases jobs is the call's last step:
a call its client cancels while it waits has leased nothing, and one cancelled during that claim hands the
jobs back unstarted as soon as the claim returns.

A pull worker has no labels, so jobs routed by worker labels are never fetched, and no tier, quiet or
concurrency of its own: max_jobs is its concurrency, call by call.

A run's outcome counts in the queue's figures as a stream worker's does (completed and failed totals, the
processing-time histogram). Its duration is the caller's when it reports one, else the scripts measure it
from the claim to the outcome (engine/stats.py MEASURE_RUN_US), so a caller without a clock of its own (curl,
``qm pull``) is counted too. A traced job (a ``traceparent`` in its metadata) fetched here is remembered as
the dispatcher's deliveries are, and its run becomes the histogram's exemplar (services/exemplars.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections import defaultdict
from collections.abc import Callable, Iterator

import grpc
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from queue_manager.v1 import pull_pb2 as pb
from queue_manager_server import convert, validate
from queue_manager_server.engine import Engine
from queue_manager_server.engine.control import Control
from queue_manager_server.engine.job_control import JobControl
from queue_manager_server.engine.records import ClaimedJob, ClaimResult, is_json_type
from queue_manager_server.engine.stats import MEASURE_RUN_US
from queue_manager_server.engine.workers import WorkerEntry, WorkerStore
from queue_manager_server.errors import InvalidArgument, JobNotFound, LeaseNotHeld
from queue_manager_server.services.errors import unary
from queue_manager_server.services.exemplars import Exemplars
from queue_manager_server.services.reports import MAX_RETRY_AFTER_MS

log = logging.getLogger("queue_manager_server.pull")

# Most jobs one fetch leases: one claim call, one answer (a stream's delivery is bounded alike).
MAX_FETCH = 1000
# Longest long poll: under the HTTP front door's call deadline and the idle timeouts of most proxies.
MAX_WAIT_MS = 30_000
# Bounds of a pulled job's lease: a shorter one would be lost to a round trip, a longer one delays the
# recovery of a worker that died holding it.
MIN_LEASE_MS = 1_000
MAX_LEASE_MS = 3_600_000
# The worker id a fetch without a worker name records on its jobs.
ANONYMOUS = "pull"
# A pending cancel, as extend.lua says it.
_CANCEL_PENDING = 1
# fail.lua's codes for a job that runs again (waiting at once, or delayed until run-at).
_RETRIED = (0, 1)


class PullWaiters:
    """The FetchJobs calls of this process waiting for a job, per queue; the notifier wakes them."""

    def __init__(self) -> None:
        self._waiting: dict[str, set[asyncio.Event]] = defaultdict(set)
        # Releases of what claims leased for fetches cancelled meanwhile (release_later).
        self._releasing: set[asyncio.Future[list[int]]] = set()
        self.closed = False

    @contextlib.contextmanager
    def watch(self, queue: str) -> Iterator[asyncio.Event]:
        """An event set by the queue's next wake-up (registered before the claim it follows, so a wake-up
        that comes while the claim runs is not lost)."""
        ev = asyncio.Event()
        if self.closed:
            ev.set()
        self._waiting[queue].add(ev)
        try:
            yield ev
        finally:
            waiting = self._waiting[queue]
            waiting.discard(ev)
            if not waiting:
                del self._waiting[queue]

    def waiting(self, queue: str) -> int:
        """How many fetches of the queue wait now."""
        return len(self._waiting.get(queue, ()))

    def wake(self, queue: str) -> None:
        """Something happened to the queue (jobs ready, resumed, a slot freed): its fetches claim again."""
        for ev in self._waiting.get(queue, ()):
            ev.set()

    def wake_all(self) -> None:
        """Events may have been missed (the subscription was renewed): every waiting fetch claims again."""
        for queue in list(self._waiting):
            self.wake(queue)

    def close(self) -> None:
        """The server is stopping: waiting fetches answer now with what they have (nothing)."""
        self.closed = True
        self.wake_all()

    def release_later(
        self, engine: Engine, queue: str, token: str, claim: asyncio.Future[ClaimResult]
    ) -> None:
        """Hands back, unstarted, the jobs a claim leased for a fetch that was cancelled meanwhile (the
        claim's done callback)."""
        if claim.cancelled() or claim.exception() is not None or not claim.result().jobs:
            return
        items = [(j.id, token) for j in claim.result().jobs]
        task = asyncio.ensure_future(engine.release(queue, items, stalled=False))
        self._releasing.add(task)
        task.add_done_callback(self._released)

    def _released(self, task: asyncio.Future[list[int]]) -> None:
        self._releasing.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.warning(
                "cannot release a cancelled fetch's jobs; their leases will expire", extra={"error": str(exc)}
            )

    async def wait_released(self) -> None:
        """Waits for the releases under way (a stopping server, before it closes Redis)."""
        if self._releasing:
            await asyncio.gather(*self._releasing, return_exceptions=True)


class PullHandlers:
    """FetchJobs, CompleteJob, FailJob, ExtendJobLease and ReportJobProgress (part of `QueueService`)."""

    engine: Engine
    control: JobControl
    max_payload: int
    pulls: PullWaiters
    # Set by app.py: the server's lease duration, its id and the worker registry (for named pull workers).
    lease_ms: int
    server_id: str
    registry: WorkerStore | None
    # Told (queue, ms from now) when a fetch leases jobs with a timeout, so the timeout check
    # (components/timeouts.py) fires on time, as for the dispatcher's claims; None: left to its scan.
    deadline_hook: Callable[[str, int], None] | None
    # Set by app.py: the dispatcher's traced runs in flight and exemplars, so that pulled runs feed them too.
    exemplars: Exemplars | None

    @unary
    async def FetchJobs(
        self, request: pb.FetchJobsRequest, context: grpc.aio.ServicerContext
    ) -> pb.FetchJobsResponse:
        queue = validate.queue_name(request.queue_name)
        if not 1 <= request.max_jobs <= MAX_FETCH:
            raise InvalidArgument("max_jobs", f"must be from 1 to {MAX_FETCH:,}, got {request.max_jobs}")
        wait_ms = validate.duration_ms(request.wait, "wait") if request.HasField("wait") else 0
        if wait_ms > MAX_WAIT_MS:
            raise InvalidArgument(
                "wait", f"{wait_ms} ms is longer than the {MAX_WAIT_MS // 1000}-second maximum"
            )
        lease_ms = self._lease(request.lease_duration if request.HasField("lease_duration") else None)
        worker = validate.text(request.worker_name, "worker_name", required=False) or ANONYMOUS
        jobs, token = await self._fetch(queue, request.max_jobs, worker, lease_ms, wait_ms / 1000)
        if self.exemplars is not None:
            fetched_at = time.monotonic()
            for j in jobs:
                if j.metadata:
                    self.exemplars.delivered(queue, j, fetched_at)
        timeouts = [j.timeout_ms for j in jobs if j.timeout_ms]
        if timeouts and self.deadline_hook is not None:
            self.deadline_hook(queue, min(timeouts))
        if request.worker_name and self.registry is not None:
            await self._list_worker(request.worker_name, queue, request.max_jobs, len(jobs), lease_ms)
        delivery = convert.job_delivery(queue, jobs, token).delivery
        for leased in delivery.jobs:
            # JSON data as JSON (readable to curl and grpcurl), unlike the stream's raw bytes: a pull worker
            # has no hot path that a parse per job would slow.
            data = leased.job.data
            if data.WhichOneof("body") == "raw" and is_json_type(data.content_type):
                data.CopyFrom(convert.payload_out(data.raw, data.content_type, json_view=True))
        return pb.FetchJobsResponse(jobs=delivery.jobs)

    async def _fetch(
        self, queue: str, n: int, worker: str, lease_ms: int, wait_s: float
    ) -> tuple[list[ClaimedJob], str]:
        """Claims up to n jobs, waiting up to wait_s for a first one. Returns them and their lease token."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        while True:
            with self.pulls.watch(queue) as woken:
                token = secrets.token_hex(8)
                res = await self._claim(queue, n, token, worker, lease_ms)
                left = deadline - loop.time()
                if res.jobs or left <= 0 or self.pulls.closed:
                    return res.jobs, token
                # Nothing ready: sleep until an event of the queue, or the time the claim named (a delayed
                # job due, the rate limit's next tokens), or the deadline. Paused or at its cap, only an
                # event (a resume, a run ending) makes jobs ready.
                timer = left
                if res.code == 2 or res.retry_after_ms > 0:
                    timer = min(timer, max(res.retry_after_ms, 1) / 1000)
                if res.next_delayed_ms >= 0:
                    timer = min(timer, max(res.next_delayed_ms - res.now_ms, 0) / 1000 + 0.001)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(timer):
                        await woken.wait()
                # The deadline passed with no event: nothing was made ready, no claim to make.
                if not woken.is_set() and timer == left:
                    return [], token

    async def _claim(self, queue: str, n: int, token: str, worker: str, lease_ms: int) -> ClaimResult:
        """The stream's claim (no labels: routed jobs are passed over). A call cancelled while the claim runs
        hands back, unstarted, whatever the claim leased once it returns."""
        claim = asyncio.ensure_future(self.engine.claim(queue, n, token, worker, lease_ms))
        try:
            return await asyncio.shield(claim)
        except asyncio.CancelledError:
            claim.add_done_callback(lambda done: self.pulls.release_later(self.engine, queue, token, done))
            raise

    def _lease(self, d: Duration | None) -> int:
        """The lease duration asked (within bounds), or the server's."""
        if d is None:
            return self.lease_ms
        # The hour's bound is checked first: past ten years duration_ms would name its own bound instead.
        too_long = d.seconds > MAX_LEASE_MS // 1000
        ms = d.seconds * 1000 if too_long else validate.duration_ms(d, "lease_duration")
        if not MIN_LEASE_MS <= ms <= MAX_LEASE_MS:
            raise InvalidArgument(
                "lease_duration", f"{ms} ms is out of range: use 1 second to {MAX_LEASE_MS // 60_000} minutes"
            )
        return ms

    async def _list_worker(self, name: str, queue: str, max_jobs: int, got: int, lease_ms: int) -> None:
        """Lists a named pull worker in the worker registry until a lease after its last fetch."""
        assert self.registry is not None
        entry = WorkerEntry(
            worker_id=name,
            session_id=ANONYMOUS,
            server_id=self.server_id,
            host="",
            language="pull",
            version="",
            queues=[queue],
            concurrency=max_jobs,
            in_flight=got,
            connected_ago_ms=0,
            reported_ago_ms=0,
        )
        await self.registry.workers_seen([entry], [], lease_ms)

    @unary
    async def CompleteJob(
        self, request: pb.CompleteJobRequest, context: grpc.aio.ServicerContext
    ) -> pb.CompleteJobResponse:
        queue, job_id, token = _lease_of(request)
        body, ct = convert.NO_PAYLOAD
        if request.HasField("result"):
            body, ct = convert.payload_in(request.result, "result", self.max_payload)
        us = _duration_us(request)
        self._ended(queue, job_id, us)
        codes, _ = await self.engine.complete(queue, [(job_id, token, body, ct)], [us])
        _check(queue, job_id, codes[0])
        return pb.CompleteJobResponse()

    @unary
    async def FailJob(
        self, request: pb.FailJobRequest, context: grpc.aio.ServicerContext
    ) -> pb.FailJobResponse:
        queue, job_id, token = _lease_of(request)
        if request.HasField("retry_after"):
            wait = min(validate.duration_ms(request.retry_after, "retry_after"), MAX_RETRY_AFTER_MS)
            [(code, run_at)] = await Control(self.engine).retry_later(queue, [(job_id, token, wait)])
            _check(queue, job_id, code)
            return pb.FailJobResponse(will_retry=code == 1, retry_time=_time(run_at) if code == 1 else None)
        item = (job_id, token, request.message[:10_000], request.stacktrace[:50_000], request.do_not_retry)
        us = _duration_us(request)
        self._ended(queue, job_id, us)
        [(code, run_at)] = await self.engine.fail(queue, [item], [us])
        _check(queue, job_id, code)
        if code in _RETRIED:
            log.info(
                "job failed; will retry", extra={"queue": queue, "job_id": job_id, "error": item[2][:500]}
            )
            return pb.FailJobResponse(will_retry=True, retry_time=_time(run_at))
        if code == 2:
            log.warning(
                "job failed for good", extra={"queue": queue, "job_id": job_id, "error": item[2][:500]}
            )
        return pb.FailJobResponse()

    def _ended(self, queue: str, job_id: str, us: int) -> None:
        """A pulled run's end, for the exemplars (before the script, as the stream's reports do: a stale
        token's end is no run of this lease, but its in-flight entry would only have waited to be dropped)."""
        if self.exemplars is not None and self.exemplars.in_flight:
            self.exemplars.ended(queue, [job_id], [us])

    @unary
    async def ExtendJobLease(
        self, request: pb.ExtendJobLeaseRequest, context: grpc.aio.ServicerContext
    ) -> pb.ExtendJobLeaseResponse:
        queue, job_id, token = _lease_of(request)
        lease_ms = self._lease(request.lease_duration if request.HasField("lease_duration") else None)
        [(code, expiry)] = await self.engine.extend(queue, [(job_id, token)], lease_ms)
        _check(queue, job_id, code)
        return pb.ExtendJobLeaseResponse(
            lease_expire_time=convert.ms_timestamp(expiry), cancel_requested=code == _CANCEL_PENDING
        )

    @unary
    async def ReportJobProgress(
        self, request: pb.ReportJobProgressRequest, context: grpc.aio.ServicerContext
    ) -> pb.ReportJobProgressResponse:
        queue, job_id, token = _lease_of(request)
        # Lines first, as a stream report stores them: a run's progress and its last lines arrive together.
        if request.logs:
            [code] = await self.control.add_logs(queue, [(job_id, token, convert.log_lines_in(request.logs))])
            _check(queue, job_id, code)
        if request.HasField("progress"):
            [code] = await self.engine.progress(
                queue, [(job_id, token, convert.value_json(request.progress))]
            )
            _check(queue, job_id, code)
        return pb.ReportJobProgressResponse()


def _lease_of(
    request: pb.CompleteJobRequest
    | pb.FailJobRequest
    | pb.ExtendJobLeaseRequest
    | pb.ReportJobProgressRequest,
) -> tuple[str, str, str]:
    queue = validate.queue_name(request.queue_name)
    job_id = validate.job_id(request.job_id)
    if not request.lease_token:
        raise InvalidArgument("lease_token", "is required: present the token FetchJobs gave with the job")
    return queue, job_id, request.lease_token


def _check(queue: str, job_id: str, code: int) -> None:
    """Raises for a script's refusal: -2 no such job (or no such queue), -3 the lease was lost."""
    if code == -3:
        raise LeaseNotHeld(queue, job_id)
    if code == -2:
        raise JobNotFound(queue, job_id)


def _duration_us(request: pb.CompleteJobRequest | pb.FailJobRequest) -> int:
    """The run's duration in µs as the worker measured it; MEASURE_RUN_US when none was given (the script
    measures it from the claim)."""
    if not request.HasField("duration"):
        return MEASURE_RUN_US
    d = request.duration
    if d.seconds < 0 or d.nanos < 0:
        raise InvalidArgument("duration", "must not be negative: how long the run took, or unset")
    return d.seconds * 1_000_000 + d.nanos // 1000


def _time(ms: int) -> Timestamp | None:
    return convert.ms_timestamp(ms) if ms > 0 else None
