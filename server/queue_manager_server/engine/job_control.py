"""Job control: per-job log lines, following a job's state, retry, promotion, priority and data changes,
rescheduling.

One method per Lua script, with the script's name and argument order (as in engine.py). Log lines are
numbered from the job's first line ever (its ``lgn`` field counts them), so a page token stays valid while
the oldest lines are dropped past the limit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from queue_manager_server.engine.engine import Engine, job_fields
from queue_manager_server.engine.records import JobRecord
from queue_manager_server.errors import JobNotFound, LeaseNotHeld, QueueNotFound, WrongState

# Lines kept per job (the oldest go first) and characters kept per line: a chatty processor cannot grow a
# job past about 2 MB of logs.
LOG_KEEP = 1000
LOG_LINE_CHARS = 2000
# Lines shown with the job itself (GetJob, WaitForJob); GetJobLogs pages through the rest.
LOG_TAIL = 20
# Jobs moved back to waiting per retry_jobs call: each call stays short, however many jobs failed.
RETRY_CHUNK = 1000

NO_QUEUE, NOT_FOUND, LEASE_LOST, WRONG_STATE = -1, -2, -3, -5


@dataclass(slots=True)
class LogLine:
    """One stored log line: when the worker logged it (ms) and its text."""

    time_ms: int
    text: str


@dataclass(slots=True)
class LogPage:
    """A page of a job's log lines.

    Attributes:
        lines: The lines, oldest first.
        first: Number of the first line returned (lines are numbered from the job's first line ever).
        end: Number of the line after the last one ever added.
        kept: How many lines the job keeps.
    """

    lines: list[LogLine]
    first: int
    end: int
    kept: int


@dataclass(slots=True)
class JobView:
    """A job as admin reads show it: its fields, its queue's paused flag and the tail of its log."""

    record: JobRecord
    queue_paused: bool
    logs: list[LogLine]
    log_count: int


def _i(v: Any) -> int:
    return int(v)


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def _line(raw: bytes) -> LogLine:
    ms, _, text = raw.partition(b" ")
    return LogLine(int(ms or b"0"), text.decode(errors="replace"))


class JobControl:
    """Logs, waiting and the job-control operations on top of an `Engine`."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.redis = engine.redis
        self.store = engine.store
        self.scripts = engine.scripts

    # ---- logs ---------------------------------------------------------------------------------

    async def add_logs(
        self, queue: str, items: Sequence[tuple[str, str, Sequence[tuple[int, str]]]]
    ) -> list[int]:
        """items: (job id, lease token, lines as (time ms or 0 for now, text)). Returns a code per item.

        Lines must already be cut to LOG_LINE_CHARS, and at most LOG_KEEP per item.
        """
        k = self.engine.keys(queue)
        args: list[Any] = [k.job_prefix, LOG_KEEP, len(items)]
        for job_id, token, lines in items:
            args += [job_id, token, len(lines)]
            for ms, text in lines:
                args += [ms, text]
        return [_i(c) for c in await self.scripts.run("add_logs", [k.meta], args)]

    async def job_logs(self, queue: str, job_id: str, start: int, count: int) -> LogPage:
        """Lines from number `start` (< 0: the last -start lines), at most `count`."""
        k = self.engine.keys(queue)
        r = await self.scripts.run("job_logs", [k.job(job_id)], [k.job_prefix, job_id, start, count])
        if _i(r[0]) == NOT_FOUND:
            await self.engine.get_queue(queue)
            raise JobNotFound(queue, job_id)
        return LogPage(lines=[_line(x) for x in r[3:]], first=_i(r[1]), end=_i(r[2]), kept=_i(r[0]))

    async def job_view(self, queue: str, job_id: str) -> JobView:
        """The job, its queue's paused flag and its last LOG_TAIL log lines, in one round trip."""
        k = self.engine.keys(queue)
        pipe = self.store.pipeline()
        pipe.hgetall(k.job(job_id))
        pipe.hget(k.meta, "paused")
        self.scripts.call_in(pipe, "job_logs", [k.job(job_id)], [k.job_prefix, job_id, -LOG_TAIL, LOG_TAIL])
        row, paused, logs = await self.store.execute(pipe)
        if paused is None:  # every registered queue has the field
            raise QueueNotFound(queue)
        if not row:
            raise JobNotFound(queue, job_id)
        record = JobRecord(queue, job_id, job_fields(row))
        count = 0 if _i(logs[0]) == NOT_FOUND else _i(logs[0])
        return JobView(record, paused == b"1", [_line(x) for x in logs[3:]], count)

    # ---- waiting for a job --------------------------------------------------------------------

    async def watch_job(self, queue: str, job_id: str) -> None:
        """Flags the job so its state changes are published (``j`` events); raises if it does not exist."""
        k = self.engine.keys(queue)
        code = _i(await self.scripts.run("watch_job", [k.meta, k.job(job_id)], []))
        if code == NO_QUEUE:
            raise QueueNotFound(queue)
        if code == NOT_FOUND:
            raise JobNotFound(queue, job_id)

    # ---- retry, promote, priority, data -------------------------------------------------------------

    async def retry_job(
        self, queue: str, job_id: str, data: bytes | None = None, content_type: str = ""
    ) -> None:
        """A failed or cancelled job back to waiting, attempts counted afresh (lua/includes/requeue.lua); with
        `data` (of `content_type`), its data replaced in the same script call."""
        k = self.engine.keys(queue)
        args: list[Any] = [k.job_prefix, job_id]
        if data is not None:
            args += ["1", data, content_type]
        r = await self.scripts.run("retry_job", [k.meta, k.waiting, k.failed, k.cancelled], args)
        self._check(queue, job_id, r, "only failed or cancelled jobs can be retried")
        await self.engine.notify_waiting(queue)
        if len(r) > 1 and _i(r[1]):  # a flow job: its workflow step reopens (services/flows.py)
            await self.engine.after_flow_finish(queue, wait=True)

    async def retry_each(self, jobs: Sequence[tuple[str, str]]) -> list[int]:
        """retry_job for each (queue, job id), in one round trip, raising nothing: a code per job (1 waiting
        again, NO_QUEUE, NOT_FOUND, WRONG_STATE). Then wakes the queues' workers and carries out their flow
        hand-offs (workflow steps reopen) before returning."""
        if not jobs:
            return []
        pipe = self.store.pipeline()
        for queue, job_id in jobs:
            k = self.engine.keys(queue)
            self.scripts.call_in(
                pipe, "retry_job", [k.meta, k.waiting, k.failed, k.cancelled], [k.job_prefix, job_id]
            )
        replies = await self.store.execute(pipe)
        codes = [_i(r[0]) for r in replies]
        for queue in dict.fromkeys(q for (q, _), code in zip(jobs, codes, strict=True) if code == 1):
            await self.engine.notify_waiting(queue)
            await self.engine.after_flow_finish(queue, wait=True)
        return codes

    async def retry_jobs(self, queue: str, state: str) -> int:
        """Every job of `state` ("failed" or "cancelled") that finished before the call back to waiting.

        Returns:
            How many jobs run again.
        """
        k = self.engine.keys(queue)
        keys = [k.meta, k.waiting, k.failed if state == "failed" else k.cancelled]
        cutoff = await self.engine.redis_time_ms(queue)
        moved = 0
        while True:
            r = await self.scripts.run("retry_jobs", keys, [k.job_prefix, RETRY_CHUNK, cutoff])
            if _i(r[0]) == NO_QUEUE:
                raise QueueNotFound(queue)
            moved += _i(r[0])
            if _i(r[0]):
                await self.engine.notify_waiting(queue)
            if len(r) > 2 and _i(r[2]):  # flow jobs: their workflow steps reopen (services/flows.py)
                await self.engine.after_flow_finish(queue, wait=True)
            if _i(r[1]) < RETRY_CHUNK:
                return moved

    async def promote_job(self, queue: str, job_id: str) -> None:
        """A delayed job waiting now (at the back of its priority level)."""
        k = self.engine.keys(queue)
        r = await self.scripts.run("promote_job", [k.meta, k.delayed, k.waiting], [k.job_prefix, job_id])
        self._check(queue, job_id, r, "only delayed jobs can be promoted")
        await self.engine.notify_waiting(queue)

    async def change_priority(self, queue: str, job_id: str, priority: int) -> None:
        """A waiting job moves to the new level keeping its age; a delayed one takes it when due."""
        k = self.engine.keys(queue)
        r = await self.scripts.run("change_priority", [k.meta, k.waiting], [k.job_prefix, job_id, priority])
        self._check(queue, job_id, r, "only a waiting or delayed job's priority can change")

    async def reschedule_job(self, queue: str, job_id: str, run_at_ms: int, delay_ms: int) -> bool:
        """A delayed job gets a new run-at; a waiting one is delayed until then (lua/reschedule_job.lua).

        Args:
            queue: The queue.
            job_id: The job.
            run_at_ms: The new run-at (Redis time, ms), or -1 to count `delay_ms` from now.
            delay_ms: How long from now (Redis time) when `run_at_ms` is -1.

        Returns:
            True when the job is delayed now; False when the time had come (it is waiting).
        """
        k = self.engine.keys(queue)
        r = await self.scripts.run(
            "reschedule_job",
            [k.meta, k.delayed, k.waiting],
            [k.job_prefix, job_id, run_at_ms, delay_ms, self.engine.channel, queue],
        )
        self._check(queue, job_id, r, "only a waiting or delayed job can be rescheduled")
        return _i(r[0]) == 2

    async def update_job_data(
        self, queue: str, job_id: str, data: bytes, content_type: str, lease_token: str = ""
    ) -> None:
        """Replaces the data of a job that has not finished; the next attempt gets it (a run under way keeps
        what it was delivered with). With `lease_token`, only while the job is active under that lease."""
        k = self.engine.keys(queue)
        r = await self.scripts.run(
            "update_job_data", [k.meta], [k.job_prefix, job_id, data, content_type, lease_token]
        )
        if _i(r[0]) == LEASE_LOST:
            lost = (
                f"the lease of job {job_id!r} in queue {queue!r} held by this token was lost (it expired or "
                f"the job was recovered, cancelled or removed; the job is {_s(r[1])} now); the data was not "
                "changed"
            )
            raise LeaseNotHeld(queue, job_id, lost)
        self._check(queue, job_id, r, "only the data of a job that has not finished can change")

    @staticmethod
    def _check(queue: str, job_id: str, r: list[Any], rule: str) -> None:
        code = _i(r[0])
        if code == NO_QUEUE:
            raise QueueNotFound(queue)
        if code == NOT_FOUND:
            raise JobNotFound(queue, job_id)
        if code == WRONG_STATE:
            raise WrongState(f"job {job_id!r} in queue {queue!r} is {_s(r[1])}; {rule}")
