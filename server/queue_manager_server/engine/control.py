"""Control of running work: cancel, server-enforced timeouts, and retry-after (a processor told to slow down).

One method per Lua script, with the script's name and argument order (as in engine.py). The scripts tell
the server holding a run's lease to stop it by publishing ``c <queue> <id> <token> <reason>`` (a cancel)
or ``t …`` alike (a timeout) on the events channel (components/notifier.py hands it to the dispatcher,
which sends ``CANCEL_JOB`` down the worker's stream, with ``timed_out`` for a ``t``). Every way a run ends
(complete, fail, release, reap, cancel, timeout, retry-after) drops its deadline and, on a queue with a
concurrency cap, wakes the dispatchers of every server (common.lua ``run_ended``, ``slot_freed``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from queue_manager_server.engine.engine import Engine, only
from queue_manager_server.errors import JobNotFound, QueueNotFound, WrongState

# Runs failed as timed out per time_out call; a queue with more due runs is called again at once.
TIME_OUT_CHUNK = 500
NO_QUEUE, NOT_FOUND, FINISHED = -1, -2, -5


def _text(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


@dataclass(slots=True)
class TimedOut:
    """What one time_out call did.

    Attributes:
        now_ms: Redis time of the call.
        next_deadline_ms: The earliest deadline still ahead, -1 when no run with a timeout is active.
        outcomes: (job id, code, run-at ms) per run failed as timed out, codes as `fail_attempt`'s.
    """

    now_ms: int
    next_deadline_ms: int
    outcomes: list[tuple[str, int, int]]


class Control:
    """Cancel, timeouts and retry-after on the keys of one queue (the engine's scripts and events)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    async def cancel_job(self, queue: str, job_id: str, reason: str) -> bool:
        """Cancels a job: at once when it waits (or is paused or delayed); an active one is asked to stop.

        Returns:
            True when the job is active: its cancel is requested and its worker told; it ends cancelled
            once the worker stops it (or its lease runs out). False when it ended cancelled now.

        Raises:
            QueueNotFound: The queue is not registered.
            JobNotFound: No such job.
            WrongState: The job finished already (completed, failed or cancelled).
        """
        k = self.engine.keys(queue)
        code, state = await self.engine.scripts.run(
            "cancel_job",
            [k.meta, k.waiting, k.delayed],
            [k.job_prefix, job_id, reason, self.engine.channel, queue],
        )
        code = int(code)
        if code == NO_QUEUE:
            raise QueueNotFound(queue)
        if code == NOT_FOUND:
            raise JobNotFound(queue, job_id)
        if code == FINISHED:
            raise WrongState(
                f"job {job_id!r} in queue {queue!r} is already {_text(state)}; only waiting, paused, delayed "
                "and active jobs can be cancelled"
            )
        if code == 0:
            await self.engine.after_flow_finish(queue)
        return code == 1

    async def time_out(self, queue: str, limit: int = TIME_OUT_CHUNK) -> TimedOut:
        """Fails the queue's runs past their deadline as timed out (retried per attempts and backoff) and
        tells their workers to stop them."""
        return only(await self.time_out_all([queue], limit))

    async def time_out_all(
        self, queues: Sequence[str], limit: int = TIME_OUT_CHUNK
    ) -> list[TimedOut | Exception]:
        """`time_out` for each queue, in shared round trips (Engine.sweep: the periodic scan)."""
        channel = self.engine.channel
        return await self.engine.sweep(
            "time_out",
            queues,
            lambda k: (
                [k.meta, k.active, k.waiting, k.delayed, k.failed, k.outbox, k.deadlines],
                [k.job_prefix, limit, channel, k.queue],
            ),
            self._timed_out,
        )

    async def _timed_out(self, queue: str, r: Any) -> TimedOut:
        outcomes = [(_text(r[i]), int(r[i + 1]), int(r[i + 2])) for i in range(2, len(r), 3)]
        if outcomes:
            await self.engine.after_failures(queue, [code for _, code, _ in outcomes])
        return TimedOut(now_ms=int(r[0]), next_deadline_ms=int(r[1]), outcomes=outcomes)

    async def retry_later(
        self,
        queue: str,
        items: Sequence[tuple[str, str, int] | tuple[str, str, int, bytes, str]],
        hold: bool = True,
    ) -> list[tuple[int, int]]:
        """Puts running jobs back to delayed without using an attempt: those whose processor was told to slow
        down (hold: the queue is held for as long), or those that asked to run again later (hold=False).

        Args:
            queue: The queue.
            items: (job id, lease token, wait ms) or (job id, lease token, wait ms, new data, its content
                type): the data replaces the job's in the same step (a checkpoint).

        Returns:
            (code, run-at ms) per item: 1 delayed until run-at, 3 cancelled (a cancel was pending),
            -2 no such job, -3 lease not held.
        """
        k = self.engine.keys(queue)
        args: list[Any] = [k.job_prefix, self.engine.channel, queue, len(items)]
        flag = "1" if hold else "0"
        for job_id, token, wait, *data in items:
            args += (
                [job_id, token, wait, flag, data[1], data[0]] if data else [job_id, token, wait, flag, "", ""]
            )
        r = await self.engine.scripts.run("retry_later", [k.meta, k.active, k.delayed, k.limiter], args)
        out = [(int(r[i]), int(r[i + 1])) for i in range(1, len(r), 2)]
        await self.engine.after_failures(queue, [code for code, _ in out])
        return out
