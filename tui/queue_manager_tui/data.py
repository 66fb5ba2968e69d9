"""Data access for the dashboard: the `DataSource` seam and its implementation over `QueueManager`.

This module imports no Textual. The app reads everything through a `DataSource`: live metrics as one
async iterator of snapshots (`watch_metrics`, the server's ``WatchMetrics`` stream, pushed every interval,
no polling), and the admin calls behind the views and the controls. Tests give the app a fake source with
fixed data; `ClientSource` is the real one. Every failure surfaces as a `QueueManagerError` (an
`UnavailableError` while the server is away), which the app shows and recovers from.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any, Protocol

from queue_manager import (
    BulkResult,
    DeadLetter,
    GroupInfo,
    Job,
    JobLogLine,
    JobState,
    MetricsSnapshot,
    Queue,
    QueueManager,
    RedriveResult,
    Schedule,
    WorkerControlResult,
    WorkerInfo,
    WorkflowRun,
)

__all__ = ["ClientSource", "DataSource", "EditNotSent", "connect"]

# Seconds each unary admin call may take: a dashboard must show "unreachable" rather than hang on a
# half-open connection.
CALL_TIMEOUT = 10.0
# Bounds on gRPC's own reconnect backoff (default: up to 120 s), so that once the server is back the
# channel notices within a few seconds; the app's own backoff decides when to retry the stream.
_CHANNEL_OPTIONS: list[tuple[str, Any]] = [
    ("grpc.initial_reconnect_backoff_ms", 250),
    ("grpc.min_reconnect_backoff_ms", 250),
    ("grpc.max_reconnect_backoff_ms", 2_000),
]
# Kept with each job the dashboard cancels, so `qm jobs get` says where the cancel came from.
CANCEL_REASON = "cancelled from the dashboard"
# The log tail holds the newest lines; a job keeps its last 1,000, the most one page can return.
_LOG_PAGE = 1_000


class EditNotSent(Exception):
    """An edit-and-requeue the server did not carry out: it skipped the copy (gone, held by a worker, no
    longer a copy) and changed nothing."""


class DataSource(Protocol):
    """Everything the dashboard reads and does; `ClientSource` talks to a server, tests use fakes."""

    @property
    def address(self) -> str:
        """What to call the server in the status line (``host:port``)."""
        ...

    def watch_metrics(self, interval: float) -> AsyncIterator[MetricsSnapshot]:
        """Snapshots of every queue (with workers) every ``interval`` seconds, until the stream breaks."""
        ...

    async def list_queues(self) -> list[Queue]:
        """Every registered queue with its settings (for the rate limit's size)."""
        ...

    async def list_groups(self, queue: str) -> list[GroupInfo]:
        """The first page of a queue's fairness groups, by name (for the paused ones and why)."""
        ...

    async def list_jobs(
        self, queue: str, state: JobState, page_size: int, page_token: str, name: str | None = None
    ) -> tuple[list[Job], str]:
        """One page of a queue's jobs in one state, and the next page's token ("" on the last).

        With ``name`` (exact, or a prefix ending with "*") only the jobs of that name: the server reads a
        bounded part of the state per call, so such a page may be short, or empty, and still have a token.
        """
        ...

    async def get_job(self, queue: str, job_id: str) -> Job:
        """One job in full; `NotFoundError` if there is none."""
        ...

    async def get_log_tail(self, queue: str, job_id: str, lines: int) -> list[JobLogLine]:
        """The newest ``lines`` log lines of a job, oldest first."""
        ...

    async def list_workers(self) -> list[WorkerInfo]:
        """The connected workers."""
        ...

    async def list_workflows(self, page_size: int) -> list[WorkflowRun]:
        """The newest workflow runs (without steps)."""
        ...

    async def get_workflow(self, run_id: str) -> WorkflowRun:
        """One run with every step."""
        ...

    async def list_schedules(self) -> list[Schedule]:
        """Every queue's schedules, by queue then id."""
        ...

    async def delete_schedule(self, queue: str, schedule_id: str) -> None:
        """Deletes a schedule (the jobs it added stay)."""
        ...

    async def pause_queue(self, queue: str) -> None:
        """Pauses a queue."""
        ...

    async def resume_queue(self, queue: str) -> None:
        """Resumes a queue."""
        ...

    async def clean_queue(self, queue: str, state: JobState, grace: timedelta) -> int:
        """Removes a queue's jobs of one state older than ``grace``; returns how many."""
        ...

    async def retry_job(self, queue: str, job_id: str) -> None:
        """Runs a failed or cancelled job again."""
        ...

    async def retry_failed(self, queue: str) -> int:
        """Runs every failed job of a queue again; returns how many."""
        ...

    async def count_jobs(self, queue: str, state: JobState, name: str, page_token: str) -> tuple[int, str]:
        """Counts the jobs of that name in one state: one bounded call (no job sent back); the count and the
        token to go on from ("" once the state was read to its end)."""
        ...

    async def list_dead_letters(
        self, dead_letter_queue: str, page_size: int, page_token: str
    ) -> tuple[list[DeadLetter], str]:
        """One page of a dead-letter queue's waiting copies, and the next page's token ("" on the last)."""
        ...

    async def redrive(
        self, dead_letter_queue: str, original_queue: str | None, copy_ids: list[str] | None
    ) -> RedriveResult:
        """Sends copies back to their original queues: the copies named, else every waiting copy (of
        ``original_queue``'s jobs when given)."""
        ...

    async def redrive_with_data(self, dead_letter_queue: str, copy_id: str, data: Any) -> RedriveResult:
        """Sends one copy back with new data, in one call: a failed original runs again with it, a gone one is
        added anew with it. Raises `EditNotSent` when the server skipped the copy (gone, held by a worker, no
        longer a copy): nothing changed."""
        ...

    async def retry_jobs(self, queue: str, state: JobState, name: str, page_token: str) -> BulkResult:
        """Runs the failed (or cancelled) jobs of that name again: one bounded call, go on with its token."""
        ...

    async def cancel_jobs(self, queue: str, state: JobState, name: str, page_token: str) -> BulkResult:
        """Cancels the jobs of that name in one state: one bounded call, go on with its token."""
        ...

    async def remove_jobs(self, queue: str, state: JobState, name: str, page_token: str) -> BulkResult:
        """Removes the jobs of that name in one state (not active): one bounded call, go on with its token."""
        ...

    async def remove_job(self, queue: str, job_id: str) -> None:
        """Removes a job that is not active."""
        ...

    async def promote_job(self, queue: str, job_id: str) -> None:
        """Makes a delayed job waiting now."""
        ...

    async def cancel_job(self, queue: str, job_id: str) -> None:
        """Cancels a job (an active one once its worker stops it)."""
        ...

    async def control_worker(self, worker_id: str, action: str) -> WorkerControlResult:
        """Quiets (``quiet``), resumes (``resume``) or stops (``stop``) a connected worker."""
        ...

    async def close(self) -> None:
        """Releases the connection."""
        ...


class ClientSource:
    """A `DataSource` over a `QueueManager` (public client methods only).

    Args:
        client: The client; its channel opens on first use, so on the app's event loop.
    """

    def __init__(self, client: QueueManager) -> None:
        self._client = client

    @property
    def address(self) -> str:
        return self._client.address

    async def watch_metrics(self, interval: float) -> AsyncIterator[MetricsSnapshot]:
        async for snapshot in self._client.watch_metrics(interval=interval, include_workers=True):
            yield snapshot

    async def list_queues(self) -> list[Queue]:
        return await self._client.list_queues()

    async def list_groups(self, queue: str) -> list[GroupInfo]:
        return (await self._client.list_groups(queue))[0]

    async def list_jobs(
        self, queue: str, state: JobState, page_size: int, page_token: str, name: str | None = None
    ) -> tuple[list[Job], str]:
        return await self._client.list_jobs(
            queue, state, page_size=page_size, page_token=page_token, name=name
        )

    async def get_job(self, queue: str, job_id: str) -> Job:
        return await self._client.get_job(queue, job_id)

    async def get_log_tail(self, queue: str, job_id: str, lines: int) -> list[JobLogLine]:
        page, _ = await self._client.get_job_logs(queue, job_id, page_size=_LOG_PAGE)
        return page[-lines:] if lines > 0 else []

    async def list_workers(self) -> list[WorkerInfo]:
        return await self._client.list_workers()

    async def list_workflows(self, page_size: int) -> list[WorkflowRun]:
        runs, _ = await self._client.list_workflows(page_size=page_size)
        return runs

    async def get_workflow(self, run_id: str) -> WorkflowRun:
        return await self._client.get_workflow(run_id)

    async def list_schedules(self) -> list[Schedule]:
        return await self._client.list_schedules()

    async def delete_schedule(self, queue: str, schedule_id: str) -> None:
        await self._client.delete_schedule(queue, schedule_id)

    async def pause_queue(self, queue: str) -> None:
        await self._client.pause_queue(queue)

    async def resume_queue(self, queue: str) -> None:
        await self._client.resume_queue(queue)

    async def clean_queue(self, queue: str, state: JobState, grace: timedelta) -> int:
        return await self._client.clean_queue(queue, grace, state)

    async def retry_job(self, queue: str, job_id: str) -> None:
        await self._client.retry_job(queue, job_id)

    async def retry_failed(self, queue: str) -> int:
        return await self._client.retry_failed(queue)

    async def count_jobs(self, queue: str, state: JobState, name: str, page_token: str) -> tuple[int, str]:
        counted = await self._client.count_jobs(queue, state, name=name, page_token=page_token, max_calls=1)
        return counted.count, counted.next_page_token

    async def list_dead_letters(
        self, dead_letter_queue: str, page_size: int, page_token: str
    ) -> tuple[list[DeadLetter], str]:
        return await self._client.list_dead_letters(
            dead_letter_queue, JobState.WAITING, page_size=page_size, page_token=page_token
        )

    async def redrive(
        self, dead_letter_queue: str, original_queue: str | None, copy_ids: list[str] | None
    ) -> RedriveResult:
        return await self._client.redrive_dead_letters(
            dead_letter_queue, original_queue=original_queue, job_ids=copy_ids
        )

    async def redrive_with_data(self, dead_letter_queue: str, copy_id: str, data: Any) -> RedriveResult:
        # One call for "this copy, with this data" (RedriveDeadLettersRequest.data): the server takes the copy
        # and records the data in the same script call, so a failed original runs with it and a gone one is
        # added anew with it; a copy the server skips (gone, held by a worker, no longer a copy) or a refused
        # call leaves the copy as it was, and a copy put back (its original queue is gone) keeps its data.
        result = await self._client.redrive_dead_letters(dead_letter_queue, job_ids=[copy_id], data=data)
        reason = result.skipped.get(copy_id)
        if reason is not None:
            raise EditNotSent(
                f"copy {copy_id} is no longer in {dead_letter_queue} to be requeued: {reason}. "
                "Nothing changed."
            )
        return result

    async def retry_jobs(self, queue: str, state: JobState, name: str, page_token: str) -> BulkResult:
        return await self._client.retry_jobs(queue, state, name=name, page_token=page_token)

    async def cancel_jobs(self, queue: str, state: JobState, name: str, page_token: str) -> BulkResult:
        return await self._client.cancel_jobs(
            queue, state, name=name, page_token=page_token, reason=CANCEL_REASON
        )

    async def remove_jobs(self, queue: str, state: JobState, name: str, page_token: str) -> BulkResult:
        return await self._client.remove_jobs(queue, state, name=name, page_token=page_token)

    async def remove_job(self, queue: str, job_id: str) -> None:
        await self._client.remove_job(queue, job_id)

    async def promote_job(self, queue: str, job_id: str) -> None:
        await self._client.promote_job(queue, job_id)

    async def cancel_job(self, queue: str, job_id: str) -> None:
        await self._client.cancel_job(queue, job_id, reason=CANCEL_REASON)

    async def control_worker(self, worker_id: str, action: str) -> WorkerControlResult:
        calls = {
            "quiet": self._client.quiet_worker,
            "resume": self._client.resume_worker,
            "stop": self._client.stop_worker,
        }
        return await calls[action](worker_id)

    async def close(self) -> None:
        await self._client.close()


def connect(address: str | None = None) -> ClientSource:
    """A `ClientSource` for a server (default ``QM_SERVER`` or ``localhost:50051``); connects lazily.

    Args:
        address: ``host:port`` of the server.
    """
    client = QueueManager(address, timeout=CALL_TIMEOUT, channel_options=_CHANNEL_OPTIONS)
    return ClientSource(client)
