"""The stream worker: one `WorkerService.Connect` stream runs the processors of several queues.

`Worker` is built in three layers, one module each: this one (construction, start, shutdown), the stream
(worker_stream.py: reconnecting, the session, the server's messages) and the runs of jobs (worker_runs.py:
calling processors, reporting outcomes, progress, log lines and data updates).

Protocol, as this side speaks it:

1. Send ``hello`` (worker id, queues, concurrency, labels, language, version); the server answers
   ``welcome`` (lease duration, heartbeat interval) or ends the call (NOT_FOUND for an unknown queue).
2. Credits: the first report grants ``concurrency - running`` credits; each delivered job uses one and each
   finished job gives one back, in the same report as its outcome. So at most ``concurrency`` jobs run.
3. Deliveries carry several leased jobs; each starts at once as its own task. A running job is known by
   its queue and job id (jobs claimed together share one lease token, so the token alone names no job);
   every report item carries all three, and the server fences on the token.
4. Outcomes, credits, progress, log lines, releases and extensions wait in one outbox; a single writer
   task sends everything ready as ONE report whenever it wakes, so a lone completion goes out at once and
   a burst shares a message. A run's log lines travel before its outcome (the server stores them first).
5. Every heartbeat interval the leases of running jobs are extended. The server acks each extension and
   every rejected item; a rejected lease marks its job lost: its run is stopped (as on CANCEL_JOB) and
   its result discarded. The first report and
   every heartbeat, busy or idle, carry ``stats``: this process's CPU and memory (with psutil installed,
   ``queue-manager[stats]``; without it none), which ``ListWorkers`` and the dashboard show.
6. DRAIN command (no delivery follows it): grant nothing more, let running jobs finish, send their
   outcomes, release jobs that had not started, half-close, read until the server ends the stream,
   reconnect with backoff.
   Operators' commands (ControlWorker; the hello lists them in ``commands``, so the server sends them):
   QUIET — the server delivers nothing until RESUME; jobs in hand run and report as usual, credits
   included, and a stream opened meanwhile says ``quiet`` in its hello. STOP — `shutdown` (stop, finish
   running jobs within the grace, flush, half-close) without reconnecting: `run` returns and
   ``stopped_by_server`` is set. SET_CONCURRENCY — a higher concurrency grants the extra credits; a lower
   one takes back what the server did not (``revoked_credits``) from credits not yet sent, then from the
   jobs that finish (their credits are kept back), so at most the new concurrency run once those end.
7. CANCEL_JOB command (the job was cancelled): an async processor's task is cancelled, a plain-``def``
   processor sees ``job.cancelled``; however the run then ends it is reported in ``cancelled``. A
   processor that raises `RateLimitedError` is reported as a failure with ``retry_after`` (no attempt
   used; the queue holds off that long). A processor that raises ``asyncio.CancelledError`` while nothing
   cancelled its run fails its attempt like any other error. A run that passes the job's ``timeout`` is
   stopped (its task cancelled, ``job.cancelled`` set) and reported as a failure with ``timed_out``
   (recorded as timed out, not raised), whichever side noticed first: this worker's timer, or the server's
   (a CANCEL_JOB with ``timed_out``; the server then has recorded the timeout already and rejects the
   report, expected and logged at INFO).
8. A broken stream is reopened with jittered exponential backoff (0.1 s doubling to 5 s). Running jobs
   keep running; the first report on the new stream extends their leases (a server that stopped left
   them held, and the new one takes them over), and outcomes not yet sent go out on it.
9. A processor's ``job.update_data`` is not a report: it is a unary ``QueueService.UpdateJobData`` call on
   this worker's channel, carrying the run's lease token (the server refuses it once the lease is lost), so
   the processor awaits the server's answer and sees a refusal as an exception. So are
   ``job.wait_for_children`` and ``job.wait_for_event`` (``WaitForChildren``, ``WaitForEvent``), which park
   the job and end the run: the run is no longer extended, and the next report (the one carrying its
   credit back) names it in ``parked``, so that the stream's server forgets the lease even when the call
   reached another server.
10. `Worker.shutdown`: send ``stop`` (the server confirms that no more jobs come), release jobs delivered
   meanwhile, wait up to a grace period for running jobs, abandon the rest (a stall), flush the outbox,
   half-close, wait (bounded) for the server to end the stream, close the channel.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import os
import secrets
import socket
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import grpc
import grpc.aio

from queue_manager import tracing
from queue_manager.channel import aio_channel, check_address
from queue_manager.checks import (
    MAX_CONCURRENCY,
    check_channel_options,
    check_concurrency,
    check_credentials,
    check_grace,
    check_labels,
    check_queue_shares,
    check_tier,
    check_token,
)
from queue_manager.codecs import PayloadCodec, make_chain
from queue_manager.context import JobContext
from queue_manager.lifecycle import RunsUntilShutdown
from queue_manager.logsampling import Sampler
from queue_manager.options import validate_queue_name
from queue_manager.stats import ProcessStats
from queue_manager.v1 import worker_service_pb2
from queue_manager.worker_runs import Processor, _log_left_out
from queue_manager.worker_stream import _CLOSE_TIMEOUT, _DEFAULT_HEARTBEAT, WorkerStream

if TYPE_CHECKING:
    from opentelemetry.trace import Tracer, TracerProvider

__all__ = ["JobContext", "Processor", "Worker", "check_processor", "default_concurrency", "make_worker_id"]

# The worker's one logger, whichever of its modules logs: what users configure and filter on.
logger = logging.getLogger("queue_manager.worker")


def default_concurrency() -> int:
    """``WORKER_CONCURRENCY`` from the environment, else 10."""
    text = os.environ.get("WORKER_CONCURRENCY", "").strip()
    if not text:
        return 10
    try:
        value = int(text)
    except ValueError:
        raise ValueError(
            f"WORKER_CONCURRENCY must be a whole number of at least 1, not {text[:50]!r}"
        ) from None
    if not 1 <= value <= MAX_CONCURRENCY:
        raise ValueError(f"WORKER_CONCURRENCY must be from 1 to {MAX_CONCURRENCY:,}, got {value}")
    return value


def make_worker_id() -> str:
    """A worker id unique per process: ``{hostname}-{pid}-{6 random hex digits}``."""
    return f"{socket.gethostname()[:150]}-{os.getpid()}-{secrets.token_hex(3)}"


def _is_async(fn: Callable[..., Any]) -> bool:
    call = getattr(fn, "__call__", None)  # noqa: B004 - an object whose __call__ is a coroutine function
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(call)


def check_processor(queue_name: str, processor: object) -> None:
    """Refuses a processor a worker could never run, when it is given (`Worker`, `register_processor`): a bad
    queue name was refused by the server in a retry loop, and a processor that is not callable failed every
    job it took."""
    validate_queue_name(queue_name)
    if not callable(processor):
        raise TypeError(f"processor for {queue_name!r} must be callable, not {type(processor).__name__}")


class Worker(WorkerStream, RunsUntilShutdown):
    """Runs processors for jobs pushed over one worker stream.

    Args:
        address: Server address, ``host:port``.
        processors: Processor per queue name.
        concurrency: Most jobs run at once, 1 to 100,000; default ``WORKER_CONCURRENCY`` or 10.
        labels: Free labels sent in the hello (host and pid are added).
        worker_id: Id sent in the hello; default ``{hostname}-{pid}-{random}``.
        credentials: TLS credentials; None: from ``QM_TLS_*``, else plaintext (docs/security.md).
        token: Bearer token of the stream; None: ``QM_TOKEN`` (or ``QM_TOKEN_FILE``), else none.
        channel_options: Extra gRPC channel options.
        shutdown_grace: Default seconds `shutdown` waits for running jobs (finite, at least 0).
        tracer_provider: OpenTelemetry tracer provider of the runs' spans; None: the global one, read at
            `start` (tracing is off when none is configured then, or without ``queue-manager[otel]``).
        queue_weights: When several of its queues have jobs ready, each queue gets at most its share of
            ``concurrency`` by weight (1 to 1,000; a queue not named weighs 1); a queue with nothing ready
            leaves its share to the others. None: no shares (each queue takes what is free).
        queue_order: Strict priority instead: every processor's queue, highest first; a queue gets slots only
            while none before it has a job ready. Not with ``queue_weights``.
        tier: Preference among the workers of its queues, 0 to 100: a queue's jobs go to workers of a lower
            tier first, and to this one only while those connected to the same server have no free slot
            (e.g. 0 for on-premises workers, 1 for cloud workers taking the bursts). Default 0, the first.
        codecs: Payload codecs (`QueueManager`'s): job data, parents' and children's results are decoded
            before the processor sees them, results and data updates encoded. A job whose payload cannot be
            decoded fails for good, with why (its key id), without running. None: from ``QM_CODEC_KEYS`` and
            the like (codecs.py), else none.

    Raises:
        TypeError, ValueError: An argument of the wrong type or out of its range (see `QueueManager`).
    """

    def __init__(
        self,
        address: str,
        processors: Mapping[str, Processor],
        *,
        concurrency: int | None = None,
        labels: Mapping[str, str] | None = None,
        worker_id: str | None = None,
        credentials: grpc.ChannelCredentials | None = None,
        token: str | None = None,
        channel_options: list[tuple[str, Any]] | None = None,
        shutdown_grace: float = 30.0,
        tracer_provider: TracerProvider | None = None,
        queue_weights: Mapping[str, int] | None = None,
        queue_order: Sequence[str] | None = None,
        tier: int = 0,
        codecs: Sequence[PayloadCodec] | None = None,
    ) -> None:
        if not processors:
            raise ValueError("a worker needs at least one processor")
        for queue_name, processor in processors.items():
            check_processor(queue_name, processor)
        self.address = check_address(address)
        self.concurrency = check_concurrency(concurrency) or default_concurrency()
        self.worker_id = worker_id or make_worker_id()
        self.queue_weights, order = check_queue_shares(queue_weights, queue_order, processors)
        self.queues = order if order is not None else sorted(processors)
        self.strict_order = order is not None
        self.tier = check_tier(tier)
        self.labels = {
            "host": socket.gethostname(),
            "pid": str(os.getpid()),
            **check_labels(labels, "labels"),
        }
        self.shutdown_grace = check_grace(shutdown_grace)
        self.server_id = ""
        self.lease_duration = 0.0
        self.heartbeat_interval = _DEFAULT_HEARTBEAT
        self._processors = {queue: (fn, _is_async(fn)) for queue, fn in processors.items()}
        self._credentials = check_credentials(credentials)
        self._token = check_token(token)
        self._channel_options = check_channel_options(channel_options)
        self._tracer_provider = tracer_provider
        self._codecs = make_chain(codecs)
        self._tracer: Tracer | None = None  # set at start when tracing is on
        self._channel: grpc.aio.Channel | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._main: asyncio.Task[None] | None = None
        self._shutdown_task: asyncio.Task[None] | None = None
        # (queue, job id) -> the run of that job on this worker.
        self._running: dict[tuple[str, str], JobContext] = {}
        # Leases (queue, job id, token) of runs reported stopped or timed out, not yet acked: their rejection
        # is expected when the server ended the run itself (its own timeout), so it is no warning. True for a
        # run parked by a call it made (WaitForEvent, WaitForChildren), from the call on: the server ended
        # the lease in that call, so a heartbeat that crossed it is refused as expected. Bounded.
        self._stopped: dict[tuple[str, str, str], bool] = {}
        self._outbox = worker_service_pb2.ConnectRequest()
        self._stats = ProcessStats()
        self._unsent = 0  # outcomes, progress and releases in the outbox (extensions and credits aside)
        self._credits = 0  # credits not yet granted on the current stream
        self._wake = asyncio.Event()
        self._connected = asyncio.Event()
        self._closing_event = asyncio.Event()
        self._closed = asyncio.Event()
        self._stopping = False  # no more credits: shutting down
        self._closing = False  # running jobs are done or released: flush, half-close, stop
        self._draining = False  # the server asked this stream to drain
        self._delivery_stopped = False  # the server confirmed no more jobs come on this stream
        self._quiet = False  # an operator quieted this worker (ControlWorker): the server delivers nothing
        self._debt = 0  # credits owed after a lower concurrency: finished jobs pay them instead of granting
        self.stopped_by_server = False  # an operator stopped this worker (ControlWorker STOP)
        # Failure lines: the first few of each kind (queue, error type) per second, then a count (a storm
        # of failures would bury the log and cost more CPU than the runs; logsampling.py).
        self._failure_log = Sampler(_log_left_out)

    # ----------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        """Opens the channel and starts the stream in the background (returns at once)."""
        if self._main is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._tracer = tracing.tracer(self._tracer_provider)
        self._channel = aio_channel(self.address, self._credentials, self._channel_options, self._token)
        if any(not is_async for _, is_async in self._processors.values()):
            self._executor = ThreadPoolExecutor(self.concurrency, thread_name_prefix="qm-processor")
        self._main = asyncio.create_task(self._main_loop(), name=f"qm-worker-{self.worker_id}")

    _log = logger

    def _description(self) -> str:
        return f"worker {self.worker_id}"

    async def wait_connected(self) -> None:
        """Waits until the server has welcomed the current stream (bound it with `asyncio.timeout`)."""
        await self._connected.wait()

    async def shutdown(self, grace: float | None = None) -> None:
        """Stops taking jobs, waits for running ones, abandons the rest, flushes outcomes and closes.

        Args:
            grace: Seconds to wait for running jobs before cancelling and releasing them; default
                ``shutdown_grace``.
        """
        if grace is not None:
            check_grace(grace, "grace")
        if self._stopping:
            await self._closed.wait()
            return
        self._stopping = True
        self._credits = 0
        # Ask the server to stop delivering; half-close waits for its confirmation.
        self._outbox.report.stop = True
        self._wake.set()
        if self._main is None:
            self._closed.set()
            return
        grace = self.shutdown_grace if grace is None else grace
        tasks = [ctx._task for ctx in self._running.values() if ctx._task is not None]
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=grace)
            if pending:
                logger.warning("%d job(s) still running after %.1fs; releasing them", len(pending), grace)
                for task in pending:
                    task.cancel()
                await asyncio.wait(pending, timeout=1.0)
        self._closing = True
        self._closing_event.set()
        self._wake.set()
        try:
            await asyncio.wait_for(asyncio.shield(self._main), timeout=_CLOSE_TIMEOUT + 5)
        except TimeoutError:
            logger.warning(
                "worker %s: stream did not close in %.0fs; cancelling it", self.worker_id, _CLOSE_TIMEOUT
            )
            self._main.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._main
        except Exception:
            logger.exception("worker %s stopped with an error", self.worker_id)
        self._failure_log.flush(final=True)
        if self._unsent:
            logger.warning("worker %s: %d report item(s) could not be sent", self.worker_id, self._unsent)
        if self._channel is not None:
            await self._channel.close()
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
        self._closed.set()
