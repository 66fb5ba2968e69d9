"""`QueueCalls`: the part of `QueueManager` that administers queues: register, read, pause, clean, drain,
obliterate; fairness groups; metrics, job events and workers."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any

import grpc
import grpc.aio

from queue_manager.bounds import PriorityBoundsLike
from queue_manager.client_base import ClientBase
from queue_manager.convert import Queue, QueueMetrics, metrics_from_proto, queue_from_proto
from queue_manager.enums import JobState
from queue_manager.errors import error_from_rpc
from queue_manager.events import JobEventStream, JobEventType, watch_job_events_request
from queue_manager.groups import (
    GroupInfo,
    GroupLimitsLike,
    RateLimitLike,
    group_info_from_proto,
    list_groups_request,
    pause_group_request,
    resume_group_request,
    set_group_limits_request,
)
from queue_manager.maintenance import MaintenanceWindowLike
from queue_manager.metrics import (
    MetricsSnapshot,
    WorkerInfo,
    snapshot_from_proto,
    watch_metrics_request,
    worker_from_proto,
)
from queue_manager.options import DurationLike, JobOptionsLike, RateLimit, validate_queue_name
from queue_manager.pauses import pause_queue_request
from queue_manager.requests import (
    RetentionLike,
    clean_queue_request,
    drain_queue_request,
    list_workers_request,
    obliterate_queue_request,
    queue_metrics_request,
    register_queue_request,
)
from queue_manager.v1 import metrics_pb2, queue_service_pb2

__all__ = ["QueueCalls"]


class QueueCalls(ClientBase):
    """Administering queues and fairness groups, reading metrics and events (QueueManager's)."""

    # ----------------------------------------------------------------- queues

    async def register_queue(
        self,
        name: str,
        *,
        rate_limit: RateLimit | Mapping[str, Any] | None = None,
        default_job_options: JobOptionsLike | None = None,
        dead_letter_queue: str | None = None,
        completed_retention: RetentionLike | None = None,
        failed_retention: RetentionLike | None = None,
        disable_dead_letter: bool = False,
        concurrency: int = 0,
        priority_bounds: PriorityBoundsLike | None = None,
        group_limits: GroupLimitsLike | None = None,
        max_size: int = 0,
        maintenance_windows: Iterable[MaintenanceWindowLike] = (),
    ) -> Queue:
        """Registers a queue, or updates an existing one's settings.

        Args:
            name: 1 to 100 letters, digits, "-", "_" or ".".
            rate_limit: ``{"max": n, "duration": ms}`` or a `RateLimit`: at most n job starts per duration.
            default_job_options: Options for jobs added without their own.
            dead_letter_queue: Queue receiving jobs that fail for good; default "dead-letter-queue".
            completed_retention: Which completed jobs to keep (True, a count, ``{"age", "count"}`` or
                `KeepJobs`).
            failed_retention: Which failed jobs to keep (same forms).
            disable_dead_letter: Keep failed jobs only in failed.
            concurrency: At most this many jobs of the queue active at once across all workers and
                servers; 0 (the default) for no cap.
            priority_bounds: Anti-starvation aging: levels (HIGH to BACKGROUND) to the longest a job of
                that level waits behind the levels above before it runs next, in milliseconds or a
                timedelta, 1 s to 30 days (``{JobPriority.BACKGROUND: timedelta(minutes=1)}``). A bound
                holds to within the server's priority sweep (1 s by default). None or empty: strict
                priority. The whole config is replaced, so pass the bounds again when changing others.
            group_limits: Limits of each fairness group (`JobOptions.group`) on its own: a `GroupLimits` or
                ``{"concurrency": n, "rate_limit": {"max": n, "duration": ms}, "max_size": n}``; a group
                given limits of its own (`set_group_limits`) has those instead. None: no per-group limit.
            max_size: Producer backpressure: the most jobs the queue holds waiting (or paused) and delayed,
                up to 2**48; an add beyond it raises `QueueFullError` and writes nothing. Jobs the server
                adds itself (chain links, workflow steps, schedules, retries) are never refused. 0 (the
                default): no limit.
            maintenance_windows: Recurring windows in which the queue starts no job (as if paused; running
                jobs finish): each a `MaintenanceWindow` or ``{"cron": "0 2 * * SUN", "duration":
                timedelta(hours=2), "timezone": "Europe/Paris"}``, at most 16. The queue is held at once
                when registered inside one. A window never lifts a pause given by hand, and
                `resume_queue` inside one ends only that pause. Empty: none.

        Returns:
            The queue as stored (``maintenance_until``, ``next_maintenance_time``).
        """
        request = register_queue_request(
            name,
            rate_limit=rate_limit,
            default_job_options=default_job_options,
            dead_letter_queue=dead_letter_queue,
            completed_retention=completed_retention,
            failed_retention=failed_retention,
            disable_dead_letter=disable_dead_letter,
            concurrency=concurrency,
            priority_bounds=priority_bounds,
            group_limits=group_limits,
            max_size=max_size,
            maintenance_windows=maintenance_windows,
        )
        response: queue_service_pb2.RegisterQueueResponse = await self._unary(
            self._queue_stub().RegisterQueue, request
        )
        return queue_from_proto(response.queue)

    async def get_queue(self, name: str) -> Queue:
        """Returns one queue; raises `NotFoundError` when it is not registered."""
        response: queue_service_pb2.GetQueueResponse = await self._unary(
            self._queue_stub().GetQueue, queue_service_pb2.GetQueueRequest(name=validate_queue_name(name))
        )
        return queue_from_proto(response.queue)

    async def list_queues(self) -> list[Queue]:
        """Returns all registered queues, sorted by name."""
        response: queue_service_pb2.ListQueuesResponse = await self._unary(
            self._queue_stub().ListQueues, queue_service_pb2.ListQueuesRequest()
        )
        return [queue_from_proto(queue) for queue in response.queues]

    async def pause_queue(
        self, name: str, resume_after: DurationLike | None = None, resume_at: datetime | None = None
    ) -> Queue:
        """Pauses a queue: jobs are still added, none start until resumed; running jobs finish.

        A timed pause lifts by itself at its time, once, whichever server gets there first, and the queue's
        workers get its waiting jobs at once. Pausing again replaces the time (a pause without one clears
        it); `resume_queue` before then resumes at once and clears it.

        Args:
            name: The queue.
            resume_after: Resume by itself this long from now: milliseconds or a timedelta, more than 0 and
                at most 366 days.
            resume_at: Resume by itself at this time (a naive datetime is local time): in the future by the
                server's clock, at most 366 days ahead. At most one of resume_after and resume_at.

        Returns:
            The queue after the change (``paused_until`` set for a timed pause).
        """
        response: queue_service_pb2.PauseQueueResponse = await self._unary(
            self._queue_stub().PauseQueue, pause_queue_request(name, resume_after, resume_at)
        )
        return queue_from_proto(response.queue)

    async def resume_queue(self, name: str) -> Queue:
        """Resumes a paused queue."""
        request = queue_service_pb2.ResumeQueueRequest(name=name)
        response: queue_service_pb2.ResumeQueueResponse = await self._unary(
            self._queue_stub().ResumeQueue, request
        )
        return queue_from_proto(response.queue)

    async def clean_queue(
        self, name: str, grace: int | float | timedelta, state: JobState | str, limit: int = 0
    ) -> int:
        """Removes jobs of one state older than a grace period.

        Args:
            name: The queue.
            grace: Only jobs older than this (milliseconds or timedelta) are removed.
            state: "completed", "failed", "waiting", "paused" or "delayed".
            limit: At most this many jobs; 0 for no limit.

        Returns:
            The number of jobs removed.
        """
        request = clean_queue_request(name, grace, state, limit)
        response: queue_service_pb2.CleanQueueResponse = await self._unary(
            self._queue_stub().CleanQueue, request
        )
        return response.removed

    async def drain_queue(self, name: str, include_delayed: bool = False) -> int:
        """Removes all waiting jobs (and delayed ones if asked); returns how many."""
        request = drain_queue_request(name, include_delayed)
        response: queue_service_pb2.DrainQueueResponse = await self._unary(
            self._queue_stub().DrainQueue, request
        )
        return response.removed

    async def obliterate_queue(self, name: str, force: bool = False) -> int:
        """Deletes a queue and all its jobs (``force`` even with active jobs); returns how many jobs."""
        request = obliterate_queue_request(name, force)
        response: queue_service_pb2.ObliterateQueueResponse = await self._unary(
            self._queue_stub().ObliterateQueue, request
        )
        return response.removed

    async def list_groups(
        self, queue_name: str, page_size: int = 100, page_token: str = ""
    ) -> tuple[list[GroupInfo], str]:
        """Lists one page of a queue's fairness groups (`JobOptions.group`), by name.

        A queue knows a group while it has jobs waiting or active, or limits of its own
        (`QueueMetrics.groups` counts them).

        Args:
            queue_name: The queue.
            page_size: Groups per page, 1 to 1000; 0 means 100.
            page_token: The token a previous page returned; "" for the first page.

        Returns:
            The groups, each with its waiting and active jobs and the limits that apply to it, and the token
            of the next page ("" on the last page).
        """
        request = list_groups_request(queue_name, page_size, page_token)
        response: queue_service_pb2.ListGroupsResponse = await self._unary(
            self._queue_stub().ListGroups, request
        )
        return [group_info_from_proto(g) for g in response.groups], response.next_page_token

    async def set_group_limits(
        self,
        queue_name: str,
        group: str,
        concurrency: int = 0,
        rate_limit: RateLimitLike | None = None,
        max_size: int = 0,
        maintenance_windows: Iterable[MaintenanceWindowLike] = (),
    ) -> GroupInfo:
        """Gives one fairness group limits of its own: they replace the queue's ``group_limits`` for it.

        The limits are set together: one left out is none for this group (``set_group_limits(q, "vip")``
        lifts every per-group limit and window off "vip"). A group with limits of its own is listed while idle
        too.

        Args:
            queue_name: The queue.
            group: The group (`JobOptions.group`), 1 to 128 characters; it need not have jobs yet.
            concurrency: Most jobs of the group active at once across all workers; 0 for no limit.
            rate_limit: ``{"max": n, "duration": ms}`` or a `RateLimit` on the group's job starts; None for
                none.
            max_size: Most jobs of the group waiting; an add beyond it raises `QueueFullError`. 0 for no
                limit.
            maintenance_windows: The group's own recurring windows in which none of its jobs starts (as if
                paused; its running jobs finish, the queue's other groups run), as `register_queue` takes
                the queue's. A window never lifts `pause_group`, and `resume_group` inside a window ends
                only that pause.

        Returns:
            The group after the change (``maintenance_until`` set when a window holds it now).
        """
        request = set_group_limits_request(
            queue_name, group, concurrency, rate_limit, max_size, maintenance_windows
        )
        response: queue_service_pb2.SetGroupLimitsResponse = await self._unary(
            self._queue_stub().SetGroupLimits, request
        )
        return group_info_from_proto(response.group)

    async def clear_group_limits(self, queue_name: str, group: str) -> GroupInfo:
        """Removes a fairness group's own limits: the queue's ``group_limits`` apply to it again.

        Returns:
            The group after the change (an idle group without jobs is no longer listed).
        """
        request = set_group_limits_request(queue_name, group, clear=True)
        response: queue_service_pb2.SetGroupLimitsResponse = await self._unary(
            self._queue_stub().SetGroupLimits, request
        )
        return group_info_from_proto(response.group)

    async def pause_group(
        self,
        queue_name: str,
        group: str,
        resume_after: DurationLike | None = None,
        resume_at: datetime | None = None,
    ) -> GroupInfo:
        """Pauses one fairness group: its jobs are still added, but none starts until `resume_group`.

        The group's active jobs run on; the queue's other groups keep taking their turns. A paused group is
        listed while idle too. Pausing a paused group changes nothing.

        Args:
            queue_name: The queue.
            group: The group (`JobOptions.group`), 1 to 128 characters; it need not have jobs yet.
            resume_after: Resume it by itself this long from now, as for `pause_queue`.
            resume_at: Resume it by itself at this time, as for `pause_queue`.

        Returns:
            The group after the change (``paused`` True; ``paused_until`` set for a timed pause).
        """
        request = pause_group_request(queue_name, group, resume_after, resume_at)
        response: queue_service_pb2.PauseGroupResponse = await self._unary(
            self._queue_stub().PauseGroup, request
        )
        return group_info_from_proto(response.group)

    async def resume_group(self, queue_name: str, group: str) -> GroupInfo:
        """Resumes a paused fairness group: its waiting jobs take their turns again at once.

        Resuming a group that is not paused changes nothing.

        Returns:
            The group after the change (``paused`` False; an idle group without jobs or limits of its own
            is no longer listed).
        """
        request = resume_group_request(queue_name, group)
        response: queue_service_pb2.ResumeGroupResponse = await self._unary(
            self._queue_stub().ResumeGroup, request
        )
        return group_info_from_proto(response.group)

    async def get_queue_metrics(self, name: str, include_history: bool = False) -> QueueMetrics:
        """Returns a queue's metrics: counts by state, throughput, processing times, error rate, oldest
        waiting job, workers and rate-limit level (see `QueueMetrics`).

        Args:
            name: The queue.
            include_history: Also return the last hour in one-minute buckets (``history``).
        """
        request = queue_metrics_request(name, include_history)
        response: queue_service_pb2.GetQueueMetricsResponse = await self._unary(
            self._queue_stub().GetQueueMetrics, request
        )
        return metrics_from_proto(response.metrics)

    async def get_all_metrics(self, include_history: bool = False) -> list[QueueMetrics]:
        """Returns the metrics of every queue, by name (one round trip to Redis on the server)."""
        request = metrics_pb2.GetAllMetricsRequest(include_history=include_history)
        response: metrics_pb2.GetAllMetricsResponse = await self._unary(
            self._queue_stub().GetAllMetrics, request
        )
        return [metrics_from_proto(m) for m in response.metrics]

    async def watch_metrics(
        self,
        queues: Iterable[str] | str | None = None,
        *,
        interval: float | timedelta = 1.0,
        include_history: bool = False,
        include_workers: bool = False,
    ) -> AsyncIterator[MetricsSnapshot]:
        """Yields a snapshot of the queues' metrics at once, then every interval, until you stop iterating
        (the server pushes them: no polling).

        Args:
            queues: Queue names; None for every queue (those registered later included).
            interval: Seconds (or a timedelta) between snapshots, 0.1 to 60.
            include_history: Fill each queue's ``history`` (the last hour, by minute).
            include_workers: Fill each snapshot's ``workers``.
        """
        request = watch_metrics_request(queues, interval, include_history, include_workers)
        call = self._queue_stub().WatchMetrics(request)
        try:
            async for response in call:
                yield snapshot_from_proto(response)
        except grpc.aio.AioRpcError as exc:
            raise error_from_rpc(exc) from None
        finally:
            call.cancel()

    def watch_job_events(
        self,
        queue_name: str,
        *,
        types: Iterable[JobEventType | str] | JobEventType | str | None = None,
        job_names: Iterable[str] | str | None = None,
    ) -> JobEventStream:
        """Follows a queue's job events live (BullMQ's QueueEvents): ``async for ev in
        qm.watch_job_events("emails", types=["completed", "failed"])``.

        The feed is live and at most once: it holds what happens once the server watches (``async with
        qm.watch_job_events(...) as events`` enters then; so does ``await events.ready()``), never a
        replay; `get_job` and `wait_for_job` give a job's durable state. A watcher that falls behind the
        server's buffer ends with `ResourceExhaustedError` ("events dropped…"). docs/events.md.

        Args:
            queue_name: The queue.
            types: Only these event types (`JobEventType` or their names); None: all.
            job_names: Only events of jobs with these names; None: all.
        """
        request = watch_job_events_request(queue_name, types, job_names)
        return JobEventStream(self._queue_stub().WatchJobEvents(request))

    async def list_workers(self, queue: str | None = None) -> list[WorkerInfo]:
        """Returns the workers connected to any server (taking jobs of `queue`, if given), by id."""
        request = list_workers_request(queue)
        response: metrics_pb2.ListWorkersResponse = await self._unary(self._queue_stub().ListWorkers, request)
        return [worker_from_proto(w) for w in response.workers]
