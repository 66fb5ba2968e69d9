"""The dashboard's controls as plans: what each one affects (the confirmation's words) and how it runs.

No Textual here. A plan is built from what the dashboard shows (a queue's metrics, a job) before anything
is changed; the app asks for confirmation with the plan's prompt and runs it only on "yes". A control that
cannot apply (retrying a completed job, promoting one that is not delayed) raises `NotApplicable` with
the reason, so nothing is asked. The server checks again: a job that moved on in the meantime gets
``FAILED_PRECONDITION``, which the app shows.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta

from queue_manager import Job, JobState, QueueMetrics, Schedule, WorkerInfo, WorkerState
from queue_manager.requests import CLEANABLE_STATES
from queue_manager_tui.data import DataSource
from queue_manager_tui.format import fmt_count, fmt_duration, safe
from queue_manager_tui.search import BulkAction, Count, Search, act_on_matches

__all__ = [
    "CLEANABLE_STATES",
    "NotApplicable",
    "Plan",
    "cancel_plan",
    "clean_plan",
    "count_in_state",
    "delete_schedule_plan",
    "matches_plan",
    "parse_grace",
    "pause_plan",
    "promote_plan",
    "quiet_worker_plan",
    "remove_plan",
    "retry_all_plan",
    "retry_plan",
    "stop_worker_plan",
]


_FINISHED = (JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED)
_GRACE_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
# The longest grace the server takes (its limit on every duration): ten years of 365 days.
MAX_GRACE = timedelta(days=3650)


class NotApplicable(Exception):
    """The control does not apply to what is selected; the message says why."""


@dataclass(frozen=True, slots=True)
class Plan:
    """A control ready to confirm.

    Attributes:
        title: The control, e.g. "Retry all failed".
        prompt: The question naming what will be affected, e.g. "Retry all 37 failed jobs of emails?".
        detail: What else to know before saying yes ("" if nothing).
        run: Does it against a data source and returns the outcome to show.
        destructive: It deletes or stops something (the confirmation says so in red).
    """

    title: str
    prompt: str
    detail: str
    run: Callable[[DataSource], Awaitable[str]]
    destructive: bool = False


def count_in_state(metrics: QueueMetrics, state: JobState) -> int:
    """How many of a queue's jobs are in a state, from its metrics."""
    return {
        JobState.WAITING: metrics.waiting,
        JobState.ACTIVE: metrics.active,
        JobState.DELAYED: metrics.delayed,
        JobState.COMPLETED: metrics.completed,
        JobState.FAILED: metrics.failed,
        JobState.PAUSED: metrics.paused,
        JobState.CANCELLED: metrics.cancelled,
    }[state]


def _jobs(count: int, state: str = "") -> str:
    noun = "job" if count == 1 else "jobs"
    return f"{fmt_count(count)} {state + ' ' if state else ''}{noun}"


def _job_label(job: Job) -> str:
    return f"job {safe(job.id)} ({safe(job.name)}) of {job.queue_name}"


def pause_plan(metrics: QueueMetrics) -> Plan:
    """Pauses a running queue, or resumes a paused one."""
    name = metrics.queue_name
    if metrics.is_paused:

        async def resume(source: DataSource) -> str:
            await source.resume_queue(name)
            return f"Resumed {name}."

        held = metrics.paused
        return Plan(
            "Resume queue",
            f"Resume queue {name}?",
            f"Its {_jobs(held, 'held')} start again as workers take them.",
            resume,
        )

    async def pause(source: DataSource) -> str:
        await source.pause_queue(name)
        return f"Paused {name}."

    return Plan(
        "Pause queue",
        f"Pause queue {name}?",
        f"No new job starts ({_jobs(metrics.waiting, 'waiting')} wait); "
        f"its {_jobs(metrics.active, 'active')} run to the end, and jobs can still be added.",
        pause,
    )


def clean_plan(metrics: QueueMetrics, state: JobState, grace: timedelta) -> Plan:
    """Removes a queue's jobs of one state older than a grace period."""
    if state not in CLEANABLE_STATES:
        raise NotApplicable(f"Only {', '.join(s.value for s in CLEANABLE_STATES)} jobs can be cleaned.")
    name = metrics.queue_name
    count = count_in_state(metrics, state)
    if count == 0:
        raise NotApplicable(f"{name} has no {state.value} jobs to clean.")
    age = "finished" if state in _FINISHED else "added"
    older = f" {age} more than {fmt_duration(grace)} ago" if grace > timedelta(0) else ""

    async def clean(source: DataSource) -> str:
        removed = await source.clean_queue(name, state, grace)
        return f"Removed {_jobs(removed, state.value)} of {name}."

    return Plan(
        "Clean queue",
        f"Remove the {state.value} jobs of {name}{older}?",
        f"{name} holds {_jobs(count, state.value)} now. Removed jobs are gone for good.",
        clean,
        destructive=True,
    )


def retry_all_plan(metrics: QueueMetrics) -> Plan:
    """Runs every failed job of a queue again."""
    name = metrics.queue_name
    if metrics.failed == 0:
        raise NotApplicable(f"{name} has no failed jobs.")

    async def retry_all(source: DataSource) -> str:
        count = await source.retry_failed(name)
        return f"{_jobs(count)} of {name} waiting again."

    return Plan(
        "Retry all failed",
        f"Retry all {_jobs(metrics.failed, 'failed')} of {name}?",
        "Each goes back to waiting with its attempts counted afresh.",
        retry_all,
    )


def retry_plan(job: Job) -> Plan:
    """Runs one failed or cancelled job again."""
    if job.state not in (JobState.FAILED, JobState.CANCELLED):
        raise NotApplicable(
            f"Job {safe(job.id)} is {_state(job)}: only failed or cancelled jobs are retried."
        )
    queue, job_id = job.queue_name, job.id

    async def retry(source: DataSource) -> str:
        await source.retry_job(queue, job_id)
        return f"Job {safe(job_id)} of {queue} is waiting again."

    reason = safe(job.failed_reason or job.cancel_reason)
    return Plan(
        "Retry job",
        f"Retry {_job_label(job)}?",
        f"It is {_state(job)}" + (f": {reason}" if reason else "."),
        retry,
    )


def remove_plan(job: Job) -> Plan:
    """Removes one job that is not running."""
    if job.state is JobState.ACTIVE:
        raise NotApplicable(f"Job {safe(job.id)} is active: cancel it first, or wait until it finishes.")
    queue, job_id = job.queue_name, job.id

    async def remove(source: DataSource) -> str:
        await source.remove_job(queue, job_id)
        return f"Removed job {safe(job_id)} of {queue}."

    return Plan(
        "Remove job",
        f"Remove {_job_label(job)}?",
        f"It is {_state(job)}. Its data, result and logs are deleted for good.",
        remove,
        destructive=True,
    )


def delete_schedule_plan(schedule: Schedule) -> Plan:
    """Deletes a schedule; the jobs it added stay."""
    queue, schedule_id = schedule.queue_name, schedule.id

    async def delete(source: DataSource) -> str:
        await source.delete_schedule(queue, schedule_id)
        return f"Deleted schedule {safe(schedule_id)} of {queue}."

    runs = f"It added {_jobs(schedule.run_count)} so far; they stay." if schedule.run_count else ""
    return Plan(
        "Delete schedule",
        f"Delete schedule {safe(schedule_id)} of {queue}?",
        (runs + " No more jobs are added by it.").strip(),
        delete,
        destructive=True,
    )


def promote_plan(job: Job) -> Plan:
    """Makes a delayed job waiting now."""
    if job.state is not JobState.DELAYED:
        raise NotApplicable(f"Job {safe(job.id)} is {_state(job)}: only delayed jobs can be promoted.")
    queue, job_id = job.queue_name, job.id

    async def promote(source: DataSource) -> str:
        await source.promote_job(queue, job_id)
        return f"Job {safe(job_id)} of {queue} is waiting now."

    return Plan(
        "Promote job",
        f"Run delayed {_job_label(job)} now?",
        "It moves to waiting at once instead of at its run-at time.",
        promote,
    )


def cancel_plan(job: Job) -> Plan:
    """Cancels one job that has not finished."""
    if job.state in _FINISHED:
        raise NotApplicable(f"Job {safe(job.id)} is {_state(job)} already.")
    queue, job_id = job.queue_name, job.id
    if job.state is JobState.ACTIVE:
        detail = "It is running: its worker is told to stop it, and it ends cancelled."
    else:
        detail = f"It is {_state(job)} and will not run."

    async def cancel(source: DataSource) -> str:
        await source.cancel_job(queue, job_id)
        return f"Cancelled job {safe(job_id)} of {queue}."

    return Plan("Cancel job", f"Cancel {_job_label(job)}?", detail, cancel, destructive=True)


_MATCHES_TITLES = {
    BulkAction.RETRY: "Retry the matches",
    BulkAction.CANCEL: "Cancel the matches",
    BulkAction.REMOVE: "Remove the matches",
}


def matches_plan(action: BulkAction, search: Search, count: Count) -> Plan:
    """Retries, cancels or removes every job a search matches, asking with the server's count of them."""
    state = search.state.value
    if not action.applies_to(search.state):
        raise NotApplicable(f"{action.value.capitalize()} does not apply to {state} jobs.")
    if count.count == 0 and count.complete:
        raise NotApplicable(f"No {state} job of {search.queue} {search.label} now.")
    many = _jobs(count.count, state) if count.complete else f"more than {_jobs(count.count, state)}"
    what = f"{many} of {search.queue} {search.label}"
    detail = {
        BulkAction.RETRY: "Each goes back to waiting with its attempts counted afresh.",
        BulkAction.CANCEL: (
            "They are running: their workers are told to stop them, and they end cancelled."
            if search.state is JobState.ACTIVE
            else "They will not run."
        ),
        BulkAction.REMOVE: "Their data, results and logs are deleted for good.",
    }[action]
    if not count.complete:
        detail += " Counting stopped there; every match is acted on, to the end of the state."

    async def run(source: DataSource) -> str:
        done = await act_on_matches(source, action, search)
        if action is BulkAction.RETRY:
            return f"{_jobs(done.count)} of {search.queue} {search.label} waiting again."
        if action is BulkAction.REMOVE:
            return f"Removed {_jobs(done.count)} of {search.queue} {search.label}."
        if search.state is JobState.ACTIVE:
            return (
                f"Told the workers of {_jobs(done.requested)} of {search.queue} {search.label} to stop them."
            )
        return f"Cancelled {_jobs(done.count)} of {search.queue} {search.label}."

    verb = action.value.capitalize()
    destructive = action is not BulkAction.RETRY
    return Plan(_MATCHES_TITLES[action], f"{verb} {what}?", detail, run, destructive=destructive)


def parse_grace(text: str) -> timedelta:
    """A grace period typed by the user: ``0``, ``90s``, ``15m``, ``1h``, ``7d``, ``500ms`` (bare = seconds).

    Raises:
        ValueError: Not a number from 0 to `MAX_GRACE` with an optional unit (the message says which).
    """
    value = text.strip().lower()
    shown = repr(text.strip()[:40])
    if not value:
        raise ValueError("enter a grace period such as 0, 30s, 15m, 1h or 7d")
    unit = next((u for u in ("ms", "s", "m", "h", "d") if value.endswith(u)), "")
    number = value[: len(value) - len(unit)].strip() if unit else value
    try:
        amount = float(number)
    except ValueError:
        amount = math.nan
    if math.isnan(amount):  # not a number, or "nan" itself
        raise ValueError(f"{shown} is not a grace period such as 0, 30s, 15m, 1h or 7d")
    if amount < 0:
        raise ValueError(f"{shown} is negative: a grace period is zero or more")
    seconds = amount * _GRACE_UNITS[unit or "s"]  # inf for "inf" and numbers past a float ("1e400")
    if seconds > MAX_GRACE.total_seconds():
        raise ValueError(f"{shown} is too long a grace period: at most {MAX_GRACE.days}d (10 years)")
    return timedelta(seconds=seconds)


def _state(job: Job) -> str:
    return job.state.value if job.state is not None else "in an unknown state"


def quiet_worker_plan(worker: WorkerInfo) -> Plan:
    """Quiets an active worker, or resumes a quiet one. Run without asking: either is undone by the other,
    and nothing a worker holds is touched."""
    wid = worker.worker_id
    if worker.state is WorkerState.STOPPING:
        raise NotApplicable(f"{safe(wid)} is stopping: it takes no other command.")
    if worker.state is WorkerState.QUIET:

        async def resume(source: DataSource) -> str:
            await source.control_worker(wid, "resume")
            return f"Resumed {wid}: it takes jobs again."

        return Plan("Resume worker", f"Resume worker {safe(wid)}?", "", resume)

    async def quiet(source: DataSource) -> str:
        await source.control_worker(wid, "quiet")
        return f"Quieted {wid}: it takes nothing new (p resumes it)."

    return Plan("Quiet worker", f"Quiet worker {safe(wid)}?", "", quiet)


def stop_worker_plan(worker: WorkerInfo) -> Plan:
    """Stops a worker: it finishes or releases what it holds, then ends its run (it does not reconnect)."""
    wid = worker.worker_id
    if worker.state is WorkerState.STOPPING:
        raise NotApplicable(f"{safe(wid)} is stopping already.")

    async def stop(source: DataSource) -> str:
        await source.control_worker(wid, "stop")
        return f"Stopping {wid}."

    return Plan(
        "Stop worker",
        f"Stop worker {safe(wid)} on {safe(worker.host or worker.server_id)}?",
        f"It finishes (within its shutdown grace) or releases its {_jobs(worker.in_flight, 'running')} and "
        "exits; it does not reconnect. Only a restart of the process brings it back.",
        stop,
        destructive=True,
    )
