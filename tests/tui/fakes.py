"""A fake `DataSource` with fixed data (no clock, no random ids) for the dashboard's snapshot and unit tests.

The snapshots it streams are fixed; after the last one the stream stays open and streams only what a test
`push`es (a live server with nothing new to say), unless `fail_after` is set, in which case it raises
`UnavailableError` as a lost server would. Controls are recorded in `calls` and change nothing.

A listing by name, and each bulk call, reads at most `scan` jobs of the state from its token, as the server
reads a bounded part of the state per call: so such a page comes back short, or empty, with a token.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from queue_manager import (
    BulkResult,
    DeadLetter,
    GroupInfo,
    GroupLimits,
    Job,
    JobLogLine,
    JobPriority,
    JobRef,
    JobState,
    LevelMetrics,
    MetricsSnapshot,
    NotFoundError,
    ParentJob,
    Queue,
    QueueConfig,
    QueueMetrics,
    RateLimit,
    RedriveResult,
    Schedule,
    UnavailableError,
    WorkerControlResult,
    WorkerInfo,
    WorkerState,
    WorkflowRun,
    WorkflowState,
    WorkflowStepRef,
    WorkflowStepRun,
    WorkflowStepState,
)

T0 = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)
"""The fixed "now" of the fake data."""

MARKUP_NAME = "[red]x[/red] [bold]boom"
ANSI_ERROR = "\x1b[31mred alert\x1b[0m and [link=http://evil]click[/link]"


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def levels(**ready: tuple[int, float]) -> list[LevelMetrics]:
    """All five levels, CRITICAL first, as a server sends them: ``normal=(30, 75.0)`` is 30 ready jobs of
    NORMAL priority, the oldest waiting 75 s; levels not named have none."""
    out = []
    for priority in JobPriority:
        waiting, oldest = ready.get(priority.name.lower(), (0, 0.0))
        out.append(LevelMetrics(priority, waiting, timedelta(seconds=oldest) if waiting else None))
    return out


def queue_metrics(name: str, step: int) -> QueueMetrics:
    """The metrics of one of the three fake queues at snapshot ``step`` (totals grow with it)."""
    if name == "emails":
        completed = 1_000 + [0, 12, 30, 41, 70, 95][step]
        return QueueMetrics(
            queue_name="emails",
            waiting=37,
            active=4,
            delayed=2,
            completed=completed,
            failed=3,
            stalled_total=1,
            timed_out_total=5,
            raised_total=9,
            memory_bytes=3_565_158,
            expired_total=2,
            added_total=completed + 46,
            completed_total=completed,
            failed_total=3,
            completed_per_second=12.5,
            failed_per_second=0.05,
            completed_last_minute=750,
            failed_last_minute=3,
            average_processing_time=timedelta(milliseconds=420),
            p95_processing_time=timedelta(milliseconds=1_250),
            error_rate=0.004,
            oldest_waiting_age=timedelta(seconds=75),
            levels=levels(high=(5, 12.0), normal=(30, 75.0), background=(2, 50.0)),
            groups=4,
            workers=2,
            free_capacity=12,
            rate_limit_tokens=40.0,
            is_paused=False,
            sample_time=at(step),
        )
    if name == "reports":
        return QueueMetrics(
            queue_name="reports",
            paused=12,
            failed=9,
            completed=210,
            added_total=231,
            completed_total=210,
            failed_total=9,
            average_processing_time=timedelta(seconds=95),
            p95_processing_time=timedelta(minutes=4),
            error_rate=0.09,
            oldest_waiting_age=timedelta(hours=2, minutes=5),
            levels=levels(normal=(12, 7500.0)),
            is_paused=True,
            sample_time=at(step),
        )
    return QueueMetrics(
        queue_name="thumbnails",
        waiting=1_204,
        active=8,
        completed=88_000 + step * 30,
        added_total=89_212 + step * 30,
        completed_total=88_000 + step * 30,
        completed_per_second=30.0,
        completed_last_minute=1_800,
        average_processing_time=timedelta(milliseconds=85),
        p95_processing_time=timedelta(milliseconds=240),
        oldest_waiting_age=timedelta(seconds=40),
        levels=levels(normal=(1_204, 40.0)),
        workers=1,
        rate_limit_tokens=0.0,
        held_until=at(30),
        sample_time=at(step),
    )


def workers() -> list[WorkerInfo]:
    return [
        WorkerInfo(
            worker_id="w-mail-1",
            server_id="server-a",
            host="mail-1",
            language="python",
            version="0.1.0",
            queues=["emails"],
            concurrency=8,
            in_flight=3,
            connect_time=at(-3_600),
            last_heartbeat_time=at(4),
            cpu_percent=37.5,
            memory_bytes=182 * 1024 * 1024,
            labels={"host": "mail-1"},
            uptime=timedelta(hours=1),
        ),
        WorkerInfo(
            worker_id="w-mail-2",
            server_id="server-b",
            host="mail-2",
            language="python",
            version="0.1.0",
            queues=["emails", "reports"],
            concurrency=8,
            in_flight=1,
            connect_time=at(-600),
            last_heartbeat_time=at(5),
            cpu_percent=4.0,
            memory_bytes=96 * 1024 * 1024,
            uptime=timedelta(minutes=10),
        ),
        WorkerInfo(
            worker_id="w-thumb-1",
            server_id="server-a",
            host="gpu-7",
            language="go",
            version="1.3.0",
            queues=["thumbnails"],
            concurrency=8,
            in_flight=8,
            connect_time=at(-86_400 * 2),
            last_heartbeat_time=at(-25),
            cpu_percent=398.0,
            memory_bytes=3 * 1024**3,
            uptime=timedelta(days=2),
        ),
    ]


def snapshots(count: int = 6) -> list[MetricsSnapshot]:
    """``count`` snapshots a second apart; the last one holds the figures the views show."""
    return [
        MetricsSnapshot(
            time=at(step),
            metrics=[queue_metrics(name, step) for name in ("emails", "reports", "thumbnails")],
            workers=workers(),
        )
        for step in range(count)
    ]


def job(job_id: str, state: JobState, name: str = "send-welcome", **fields: object) -> Job:
    base: dict[str, object] = {
        "id": job_id,
        "name": name,
        "data": {"to": f"user{job_id}@example.com", "template": "welcome"},
        "queue_name": "emails",
        "state": state,
        "priority": JobPriority.NORMAL,
        "attempts_made": 0,
        "max_attempts": 3,
        "created_at": at(-120),
    }
    base.update(fields)
    return Job(**base)  # type: ignore[arg-type]


def email_jobs() -> dict[JobState, list[Job]]:
    failed = [
        job(
            "41",
            JobState.FAILED,
            attempts_made=3,
            processed_at=at(-30),
            finished_at=at(-29),
            failed_reason="SMTP 550: mailbox unavailable",
            stacktrace='Traceback (most recent call last):\n  File "send.py", line 12, in send\n'
            "    smtp.send(msg)\nSMTPRecipientsRefused: 550 mailbox unavailable",
        ),
        job(
            "42",
            JobState.FAILED,
            name=MARKUP_NAME,
            attempts_made=1,
            finished_at=at(-20),
            failed_reason=ANSI_ERROR,
            data={"note": "[blink]not markup[/blink]"},
        ),
        job(
            "43",
            JobState.FAILED,
            name="digest",
            attempts_made=2,
            finished_at=at(-10),
            failed_reason="timeout after 30s",
            workflow=WorkflowStepRef(run_id="run-7", step_key="notify"),
            parents=[
                ParentJob(
                    queue_name="reports",
                    job_id="r-9",
                    step_key="build",
                    state=JobState.COMPLETED,
                    result={"rows": 12},
                )
            ],
            chain_root=JobRef("reports", "r-1"),
        ),
    ]
    waiting = [job(str(i), JobState.WAITING, created_at=at(-75 + i)) for i in range(1, 8)]
    delayed = [job("90", JobState.DELAYED, run_at=at(600), attempts_made=1, failed_reason="SMTP 421")]
    return {JobState.FAILED: failed, JobState.WAITING: waiting, JobState.DELAYED: delayed}


def workflow_runs() -> list[WorkflowRun]:
    steps = [
        WorkflowStepRun(
            key="profile",
            queue_name="users",
            job_name="create-profile",
            job_id="u-1",
            state=WorkflowStepState.COMPLETED,
            result={"user_id": 42},
        ),
        WorkflowStepRun(
            key="welcome",
            queue_name="emails",
            job_name="send-welcome",
            job_id="e-5",
            state=WorkflowStepState.STARTED,
            job_state=JobState.ACTIVE,
            parent_key="profile",
            branch="on_success",
        ),
        WorkflowStepRun(
            key="alert",
            queue_name="alerts",
            job_name="alert-admin",
            state=WorkflowStepState.SKIPPED,
            parent_key="profile",
            branch="on_failure",
        ),
        WorkflowStepRun(
            key="billing",
            queue_name="billing",
            job_name="open-account",
            job_id="b-3",
            state=WorkflowStepState.COMPLETED,
        ),
        WorkflowStepRun(
            key="notify",
            queue_name="emails",
            job_name="digest",
            job_id="43",
            state=WorkflowStepState.FAILED,
            error="timeout after 30s\nTraceback (most recent call last): ...",
            depends_on=["profile", "billing"],
        ),
    ]
    return [
        WorkflowRun(
            run_id="run-7",
            workflow_id="onboarding",
            name="User onboarding",
            state=WorkflowState.RUNNING,
            steps=steps,
            created_at=at(-300),
            step_count=5,
            finished_step_count=4,
        ),
        WorkflowRun(
            run_id="run-6",
            workflow_id="onboarding",
            name="User onboarding",
            state=WorkflowState.COMPLETED,
            created_at=at(-900),
            finished_at=at(-880),
            step_count=3,
            finished_step_count=3,
        ),
    ]


def schedules() -> list[Schedule]:
    """A cron schedule that ran, an interval one that has not yet, and one that is over."""
    return [
        Schedule(
            id="nightly-report",
            queue_name="emails",
            job_name="send-report",
            data={"to": "ops"},
            cron="0 2 * * *",
            timezone="Europe/Paris",
            next_run_at=at(3600),
            last_run_at=at(-82800),
            run_count=12,
            last_job_id="43",
            created_at=at(-86400 * 12),
        ),
        Schedule(
            id="heartbeat",
            queue_name="emails",
            job_name="ping",
            every=timedelta(minutes=5),
            next_run_at=at(120),
            created_at=at(-60),
        ),
        Schedule(
            id="launch-[b]week[/b]",
            queue_name="reports",
            job_name="announce",
            every=timedelta(hours=1),
            limit=3,
            run_count=3,
            last_job_id="j-announce-3",
            last_run_at=at(-3600),
            created_at=at(-4 * 3600),
        ),
    ]


@dataclass
class FakeSource:
    """A `DataSource` over the fixed data above.

    Attributes:
        stream: Snapshots to stream on each connection.
        fail_after: Raise `UnavailableError` after the stream's snapshots (a server that goes away);
            None keeps the stream open and silent.
        calls: Every control called, as (method, arguments).
        scan: Jobs of the state a call with a name reads at most (the server's bound, made small).
        listed: Every list_jobs call, as (queue, state, page_size, page_token, name).
        counted: Every count_jobs call, as (queue, state, page_token, name).
    """

    stream: list[MetricsSnapshot] = field(default_factory=snapshots)
    fail_after: str | None = None
    jobs: dict[str, dict[JobState, list[Job]]] = field(default_factory=lambda: {"emails": email_jobs()})
    runs: list[WorkflowRun] = field(default_factory=workflow_runs)
    schedules: list[Schedule] = field(default_factory=schedules)
    calls: list[tuple[str, tuple[object, ...]]] = field(default_factory=list)
    connections: int = 0
    address: str = "fake:50051"
    pushed: asyncio.Queue[MetricsSnapshot] | None = None
    scan: int = 2
    listed: list[tuple[str, JobState, int, str, str | None]] = field(default_factory=list)
    counted: list[tuple[str, JobState, str, str]] = field(default_factory=list)

    async def watch_metrics(self, interval: float) -> AsyncIterator[MetricsSnapshot]:
        self.connections += 1
        for snapshot in self.stream:
            yield snapshot
        if self.fail_after is not None:
            raise UnavailableError(self.fail_after)
        while True:
            yield await self._later().get()

    def push(self, snapshot: MetricsSnapshot) -> None:
        """Streams one more snapshot (after the fixed ones) to the connected app."""
        self._later().put_nowait(snapshot)

    def _later(self) -> asyncio.Queue[MetricsSnapshot]:
        if self.pushed is None:
            self.pushed = asyncio.Queue()
        return self.pushed

    async def list_queues(self) -> list[Queue]:
        limited = QueueConfig(
            rate_limit=RateLimit(max=50, duration=timedelta(seconds=1)),
            priority_bounds={JobPriority.BACKGROUND: timedelta(minutes=5)},
            group_limits=GroupLimits(
                concurrency=2, rate_limit=RateLimit(max=10, duration=timedelta(seconds=1))
            ),
        )
        return [
            Queue(name="emails", config=limited),
            Queue(name="reports", config=QueueConfig(), paused=True),
            Queue(name="thumbnails", config=QueueConfig(rate_limit=RateLimit(max=30, duration=1000))),
        ]

    async def list_groups(self, queue: str) -> list[GroupInfo]:
        return []

    async def list_jobs(
        self, queue: str, state: JobState, page_size: int, page_token: str, name: str | None = None
    ) -> tuple[list[Job], str]:
        self.listed.append((queue, state, page_size, page_token, name))
        every = self.jobs.get(queue, {}).get(state, [])
        start = int(page_token or 0)
        if name is not None:
            return self._scan(every, start, name, page_size)
        page = every[start : start + page_size]
        more = start + page_size < len(every)
        return page, str(start + page_size) if more else ""

    def _scan(self, every: list[Job], start: int, name: str, most: int) -> tuple[list[Job], str]:
        """The jobs of that name among the next `scan` jobs from ``start`` (at most ``most``), and where the
        next call goes on ("" at the end of the state)."""
        found: list[Job] = []
        position = start
        while position < len(every) and position < start + self.scan and len(found) < most:
            if _named(every[position], name):
                found.append(every[position])
            position += 1
        return found, str(position) if position < len(every) else ""

    async def count_jobs(self, queue: str, state: JobState, name: str, page_token: str) -> tuple[int, str]:
        self.counted.append((queue, state, page_token, name))
        every = self.jobs.get(queue, {}).get(state, [])
        found, token = self._scan(every, int(page_token or 0), name, self.scan)
        return len(found), token

    async def list_dead_letters(
        self, dead_letter_queue: str, page_size: int, page_token: str
    ) -> tuple[list[DeadLetter], str]:
        return [], ""

    async def redrive(
        self, dead_letter_queue: str, original_queue: str | None, copy_ids: list[str] | None
    ) -> RedriveResult:
        await self._record("redrive", dead_letter_queue, original_queue, copy_ids)
        return RedriveResult(0)

    async def redrive_with_data(self, dead_letter_queue: str, copy_id: str, data: Any) -> RedriveResult:
        await self._record("redrive_with_data", dead_letter_queue, copy_id, data)
        return RedriveResult(0)

    async def _bulk(self, method: str, queue: str, state: JobState, name: str, page_token: str) -> BulkResult:
        await self._record(method, queue, state, name, page_token)
        every = self.jobs.get(queue, {}).get(state, [])
        found, token = self._scan(every, int(page_token or 0), name, self.scan)
        if method == "cancel_jobs" and state is JobState.ACTIVE:
            return BulkResult(0, token, requested=len(found))
        return BulkResult(len(found), token)

    async def retry_jobs(self, queue: str, state: JobState, name: str, page_token: str) -> BulkResult:
        return await self._bulk("retry_jobs", queue, state, name, page_token)

    async def cancel_jobs(self, queue: str, state: JobState, name: str, page_token: str) -> BulkResult:
        return await self._bulk("cancel_jobs", queue, state, name, page_token)

    async def remove_jobs(self, queue: str, state: JobState, name: str, page_token: str) -> BulkResult:
        return await self._bulk("remove_jobs", queue, state, name, page_token)

    async def get_job(self, queue: str, job_id: str) -> Job:
        for jobs in self.jobs.get(queue, {}).values():
            for found in jobs:
                if found.id == job_id:
                    return found
        raise NotFoundError(f"job {job_id!r} of queue {queue!r} not found")

    async def get_log_tail(self, queue: str, job_id: str, lines: int) -> list[JobLogLine]:
        await self.get_job(queue, job_id)
        return [
            JobLogLine(time=at(-29), message="connecting to smtp.example.com"),
            JobLogLine(time=at(-29), message="\x1b[2Jcleared? no: [red]literal[/red]"),
        ][-lines:]

    async def list_workers(self) -> list[WorkerInfo]:
        return workers()

    async def list_workflows(self, page_size: int) -> list[WorkflowRun]:
        return [
            WorkflowRun(
                run_id=r.run_id,
                workflow_id=r.workflow_id,
                name=r.name,
                state=r.state,
                created_at=r.created_at,
                finished_at=r.finished_at,
                step_count=r.step_count,
                finished_step_count=r.finished_step_count,
            )
            for r in self.runs[:page_size]
        ]

    async def get_workflow(self, run_id: str) -> WorkflowRun:
        for run in self.runs:
            if run.run_id == run_id:
                return run
        raise NotFoundError(f"workflow run {run_id!r} not found")

    async def list_schedules(self) -> list[Schedule]:
        return sorted(self.schedules, key=lambda s: (s.queue_name, s.id))

    async def delete_schedule(self, queue: str, schedule_id: str) -> None:
        await self._record("delete_schedule", queue, schedule_id)
        self.schedules = [s for s in self.schedules if (s.queue_name, s.id) != (queue, schedule_id)]

    async def _record(self, name: str, *args: object) -> None:
        self.calls.append((name, args))

    async def control_worker(self, worker_id: str, action: str) -> WorkerControlResult:
        await self._record("control_worker", worker_id, action)
        state = {"quiet": WorkerState.QUIET, "resume": WorkerState.ACTIVE, "stop": WorkerState.STOPPING}
        return WorkerControlResult("server-a", state[action], 8, True)

    async def pause_queue(self, queue: str) -> None:
        await self._record("pause_queue", queue)

    async def resume_queue(self, queue: str) -> None:
        await self._record("resume_queue", queue)

    async def clean_queue(self, queue: str, state: JobState, grace: timedelta) -> int:
        await self._record("clean_queue", queue, state, grace)
        return 3

    async def retry_job(self, queue: str, job_id: str) -> None:
        await self._record("retry_job", queue, job_id)

    async def retry_failed(self, queue: str) -> int:
        await self._record("retry_failed", queue)
        return 3

    async def remove_job(self, queue: str, job_id: str) -> None:
        await self._record("remove_job", queue, job_id)

    async def promote_job(self, queue: str, job_id: str) -> None:
        await self._record("promote_job", queue, job_id)

    async def cancel_job(self, queue: str, job_id: str) -> None:
        await self._record("cancel_job", queue, job_id)

    async def close(self) -> None:
        return None


def _named(job: Job, name: str) -> bool:
    """The server's name filter: exact, or a prefix when it ends with "*"."""
    return job.name.startswith(name[:-1]) if name.endswith("*") else job.name == name
