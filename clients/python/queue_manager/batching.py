"""Batch processors: many jobs of a queue handed to one call (BullMQ Pro's batches, Celery's Batches, asynq's
task aggregation), for work that is cheaper in bulk: one INSERT of a thousand rows, one API call of fifty
messages, one model run over a batch.

A `batch` is an ordinary processor for the worker: every job still arrives on the stream as its own run,
with its own lease (extended by the heartbeat), credit, timeout, cancellation and outcome. The processor
only parks each run until its batch is full (``size`` jobs) or its first job has waited ``wait`` seconds,
then calls the handler once with the jobs in arrival order and gives each run its own result or error:

- the handler returns None: every job completes, with no result;
- it returns a sequence with one entry per job: each job completes with its entry, or fails with it when
  the entry is an exception instance (so a handler can fail some jobs of a batch and complete the others);
- it raises: every job of the batch fails with that error (retried as its own attempts allow).

An exception entry (or a raise) is what the job's run raised, so `DelayedError`, `UnrecoverableError` and
`RateLimitedError` act per job as they do from a processor.

A run that ends while it waits (cancelled, timed out, the worker shutting down past its grace) leaves the
batch; one that ends while the handler runs only stops waiting for it, and its entry of the answer is
dropped. When every run of a running batch has ended, the handler is cancelled (an async one; a
plain-``def`` one is run in a thread and sees ``job.cancelled`` on its jobs).

A batch never holds more jobs than the worker runs at once: give the worker a ``concurrency`` of at least
``size`` (twice it lets the next batch fill while one runs), else batches leave at ``wait`` with what came.
"""

from __future__ import annotations

import asyncio
import inspect
import math
from collections.abc import Awaitable, Callable, Hashable, Sequence
from typing import Any, TypeAlias

from queue_manager.context import JobContext

__all__ = ["BatchHandler", "BatchProcessor", "batch"]

BatchHandler: TypeAlias = (
    Callable[[list[JobContext]], Awaitable[Sequence[Any] | None]]
    | Callable[[list[JobContext]], Sequence[Any] | None]
)
"""``async def fn(jobs)`` or ``def fn(jobs)`` (in a thread): None, or one result (or exception) per job."""

# The largest batch: a batch lives in one worker, whose concurrency is at most 100,000.
MAX_SIZE = 100_000


def batch(
    handler: BatchHandler,
    *,
    size: int,
    wait: float = 1.0,
    key: Callable[[JobContext], Hashable] | None = None,
) -> BatchProcessor:
    """A processor that runs `handler` once per batch of up to `size` jobs.

    Args:
        handler: Called with the batch's jobs (a list of `JobContext`, arrival order); see the module
            docstring for what it returns.
        size: Most jobs per batch, 1 to 100,000; a batch is handed over as soon as it has them.
        wait: Seconds a batch waits for more jobs after its first one arrived (0 < wait ≤ 3600): the most a
            job's run is held back before its handler starts.
        key: Groups jobs into separate batches, e.g. ``lambda job: job.name`` or a tenant from the data
            (asynq's aggregation by group, Hatchet's batch key); None: one batch at a time per processor.

    Raises:
        TypeError, ValueError: An argument of the wrong type or out of its range.
    """
    return BatchProcessor(handler, size=size, wait=wait, key=key)


class _Batch:
    """Runs parked until their batch leaves, then the one call that serves them."""

    __slots__ = ("jobs", "left", "task", "timer", "waiters")

    def __init__(self) -> None:
        self.jobs: list[JobContext] = []
        self.waiters: list[asyncio.Future[Any]] = []
        self.timer: asyncio.TimerHandle | None = None
        self.task: asyncio.Task[None] | None = None
        self.left = 0  # runs still waiting for the handler's answer, once it runs


class BatchProcessor:
    """The processor `batch` makes (an async callable taking one job, as the worker calls processors)."""

    def __init__(
        self,
        handler: BatchHandler,
        *,
        size: int,
        wait: float = 1.0,
        key: Callable[[JobContext], Hashable] | None = None,
    ) -> None:
        if not callable(handler):
            raise TypeError(f"handler must be callable, not {type(handler).__name__}")
        if isinstance(size, bool) or not isinstance(size, int):
            raise TypeError(f"size must be an int, not {type(size).__name__}")
        if not 1 <= size <= MAX_SIZE:
            raise ValueError(f"size must be 1 to {MAX_SIZE:,}, not {size}")
        if isinstance(wait, bool) or not isinstance(wait, int | float):
            raise TypeError(f"wait must be a number of seconds, not {type(wait).__name__}")
        if not (math.isfinite(wait) and 0 < wait <= 3600):
            raise ValueError(f"wait must be more than 0 and at most 3600 seconds, not {wait}")
        if key is not None and not callable(key):
            raise TypeError(f"key must be callable or None, not {type(key).__name__}")
        self.handler = handler
        self.size = size
        self.wait = float(wait)
        self.key = key
        call = getattr(handler, "__call__", None)  # noqa: B004 - an object whose __call__ is a coroutine function
        self._async = inspect.iscoroutinefunction(handler) or inspect.iscoroutinefunction(call)
        self._open: dict[Hashable, _Batch] = {}  # key -> the batch filling now
        self.batches = 0  # batches handed to the handler so far

    async def __call__(self, job: JobContext) -> Any:
        loop = asyncio.get_running_loop()
        k = self.key(job) if self.key is not None else None
        b = self._open.get(k)
        if b is None:
            b = self._open[k] = _Batch()
            b.timer = loop.call_later(self.wait, self._leave, k, b)
        waiter: asyncio.Future[Any] = loop.create_future()
        b.jobs.append(job)
        b.waiters.append(waiter)
        if len(b.jobs) >= self.size:
            self._leave(k, b)
        try:
            return await waiter
        except asyncio.CancelledError:
            self._gone(k, b, job, waiter)
            raise

    def _leave(self, k: Hashable, b: _Batch) -> None:
        """The batch is full or waited long enough: it stops taking jobs and its handler runs."""
        if self._open.get(k) is b:
            del self._open[k]
        if b.timer is not None:
            b.timer.cancel()
            b.timer = None
        if b.task is not None or not b.jobs:
            return
        b.left = len(b.jobs)
        self.batches += 1
        b.task = asyncio.get_running_loop().create_task(self._run(b), name=f"batch:{b.jobs[0].queue_name}")

    def _gone(self, k: Hashable, b: _Batch, job: JobContext, waiter: asyncio.Future[Any]) -> None:
        """A run ended before its batch answered (cancelled, timed out, shutdown)."""
        if b.task is None:  # still filling: it leaves the batch
            i = b.waiters.index(waiter)
            del b.jobs[i], b.waiters[i]
            if not b.jobs:
                if self._open.get(k) is b:
                    del self._open[k]
                if b.timer is not None:
                    b.timer.cancel()
            return
        b.left -= 1
        if b.left == 0 and not b.task.done():  # nobody waits for the answer any more
            b.task.cancel()

    async def _run(self, b: _Batch) -> None:
        jobs = list(b.jobs)
        try:
            if self._async:
                answer = await self.handler(jobs)  # type: ignore[misc]
            else:
                answer = await asyncio.get_running_loop().run_in_executor(None, self.handler, jobs)
                if inspect.isawaitable(answer):
                    answer = await answer
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            for w in b.waiters:
                if not w.done():
                    w.set_exception(exc)
            return
        results = _per_job(answer, len(jobs))
        for w, r in zip(b.waiters, results, strict=True):
            if w.done():
                continue
            if isinstance(r, BaseException):
                w.set_exception(r)
            else:
                w.set_result(r)


def _per_job(answer: Any, n: int) -> list[Any]:
    """The handler's answer as one entry per job (an error for each when its shape is wrong)."""
    if answer is None:
        return [None] * n
    if isinstance(answer, Sequence) and not isinstance(answer, str | bytes | bytearray) and len(answer) == n:
        return list(answer)
    got = f"{len(answer)} entries" if isinstance(answer, Sequence) else type(answer).__name__
    error = TypeError(f"a batch handler must return None or one result per job: {n} jobs, got {got}")
    return [error] * n
