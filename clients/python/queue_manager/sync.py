"""`SyncQueueManager`: a blocking producer and admin client for code that does not run an event loop."""

from __future__ import annotations

from collections.abc import Generator, Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self, cast

import grpc

from queue_manager import tracing
from queue_manager.bounds import PriorityBoundsLike
from queue_manager.channel import resolve_address, sync_channel
from queue_manager.checks import check_channel_options, check_credentials, check_timeout, check_token
from queue_manager.client_workers import WorkerControlResult, control_request, result_from_proto
from queue_manager.codecs import PayloadCodec, make_chain, refuse_result_conditions
from queue_manager.convert import (
    Job,
    JobLogLine,
    Queue,
    QueueMetrics,
    job_from_proto,
    log_lines_from_proto,
    metrics_from_proto,
    queue_from_proto,
)
from queue_manager.dead_letters import (
    DEAD_LETTER_QUEUE,
    KEEP_DATA,
    DeadLetter,
    RedriveResult,
    dead_letter_from_job,
    redrive_request,
    redrive_result_from_proto,
    retry_job_request,
)
from queue_manager.enums import STATE_BY_NUMBER, JobPriority, JobState
from queue_manager.errors import error_from_rpc
from queue_manager.event_triggers import (
    EventTrigger,
    trigger_from_proto,
    upsert_event_trigger_request,
    validate_trigger_id,
)
from queue_manager.events import JobEvent, JobEventType, sync_events, watch_job_events_request
from queue_manager.external_events import PushedEvent, push_event_request, pushed_from_proto
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
from queue_manager.job_control import (
    change_priority_request,
    finished_job,
    get_job_logs_request,
    job_key,
    reschedule_job_request,
    retry_failed_request,
    update_job_data_request,
    wait_for_job_request,
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
from queue_manager.pull import SyncPulledJob, fetch_request, leases, taken_up
from queue_manager.requests import (
    BulkJobLike,
    RetentionLike,
    add_job_request,
    bulk_requests,
    cancel_job_request,
    clean_queue_request,
    drain_queue_request,
    list_jobs_request,
    list_workers_request,
    obliterate_queue_request,
    queue_metrics_request,
    register_queue_request,
    split_streams,
)
from queue_manager.schedules import (
    Schedule,
    schedule_from_proto,
    upsert_schedule_request,
    validate_schedule_id,
)
from queue_manager.search import (
    BulkResult,
    JobCount,
    cancel_jobs_request,
    count_jobs_request,
    job_filter,
    max_calls_checked,
    remove_jobs_request,
    retry_jobs_request,
)
from queue_manager.test_clock import advance_request, clock_time
from queue_manager.v1 import (
    external_events_pb2,
    jobs_pb2,
    metrics_pb2,
    pull_pb2,
    queue_service_pb2,
    queue_service_pb2_grpc,
    schedules_pb2,
    test_clock_service_pb2,
    test_clock_service_pb2_grpc,
    types_pb2,
    workflows_pb2,
)
from queue_manager.workflows import (
    WorkflowLike,
    WorkflowRun,
    check_run_id,
    list_workflows_request,
    workflow_run_from_proto,
    workflow_to_proto,
)

if TYPE_CHECKING:
    from opentelemetry.trace import Tracer, TracerProvider

__all__ = ["SyncQueueManager"]

_UNREAD = object()


class SyncQueueManager:
    """Blocking client with the producer and admin methods of `QueueManager` (no workers).

    Safe to share between threads (one gRPC channel, opened at construction). Use it as a context manager
    or call `close`.

    Args:
        address: Server ``host:port`` (port 1 to 65535), or another gRPC target (``dns:``, ``ipv4:``,
            ``unix:``…); default ``QM_SERVER`` or ``localhost:50051``.
        credentials: TLS channel credentials; None: from ``QM_TLS_*``, else plaintext (docs/security.md).
        token: Bearer token sent with every call; None: ``QM_TOKEN`` (or ``QM_TOKEN_FILE``), else none.
        channel_options: Extra gRPC channel options, ``(name, value)`` pairs.
        timeout: Deadline in seconds for each call, more than 0 and at most 365 days; None for no deadline.
        tracer_provider: OpenTelemetry tracer provider of the adds' spans; None: the global one, read at the
            first add (see `QueueManager`).
        codecs: Payload codecs (see `QueueManager`); None: from ``QM_CODEC_KEYS`` and the like, else none.

    Raises:
        TypeError: An argument of the wrong type.
        ValueError: An argument out of its range; the message names the parameter and what it accepts.
    """

    def __init__(
        self,
        address: str | None = None,
        *,
        credentials: grpc.ChannelCredentials | None = None,
        token: str | None = None,
        channel_options: list[tuple[str, Any]] | None = None,
        timeout: float | None = None,
        tracer_provider: TracerProvider | None = None,
        codecs: Sequence[PayloadCodec] | None = None,
    ) -> None:
        self.address = resolve_address(address)
        self._codecs = make_chain(codecs)
        self.timeout = check_timeout(timeout)
        self._tracer_provider = tracer_provider
        self._tracer: Tracer | object | None = _UNREAD  # read at the first add (QueueManager._tracer)
        self._channel = sync_channel(
            self.address,
            check_credentials(credentials),
            check_channel_options(channel_options),
            check_token(token),
        )
        self._queues = queue_service_pb2_grpc.QueueServiceStub(self._channel)
        self._clock = test_clock_service_pb2_grpc.TestClockServiceStub(self._channel)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Closes the channel."""
        self._channel.close()

    @property
    def channel(self) -> grpc.Channel:
        """The underlying gRPC channel (for calls this client does not wrap, such as health checks)."""
        return self._channel

    # ----------------------------------------------------------------- jobs

    def add_job(
        self, queue_name: str, name: str, data: Any = None, options: JobOptionsLike | None = None
    ) -> Job:
        """Adds one job; see `QueueManager.add_job`."""
        request = add_job_request(queue_name, name, data, options)
        tracer = self._tracing()
        if tracer is None:
            response: jobs_pb2.AddJobResponse = self._call(self._queues.AddJob, request)
        else:
            with tracing.publish(tracer, queue_name) as span:
                tracing.carry(request.job.options.metadata, tracing.trace_context(span))
                response = self._call(self._queues.AddJob, request)
                span.set_attribute("messaging.message.id", response.job.id)
        job = job_from_proto(response.job)
        job.created = response.created
        job.replaced = response.disposition == jobs_pb2.ADD_DISPOSITION_REPLACED
        return job

    def add_bulk(self, queue_name: str, jobs: Iterable[BulkJobLike]) -> list[str]:
        """Adds many jobs over client streams; returns their ids in order. See `QueueManager.add_bulk`."""
        requests = list(bulk_requests(queue_name, jobs))
        if self._codecs is not None:
            for request in requests:
                self._codecs.encode_message(request)
        tracer = self._tracing()
        if tracer is None:
            return self._add_bulk(requests)
        with tracing.publish(tracer, queue_name, sum(len(r.jobs) for r in requests)) as span:
            tracing.carry_bulk(requests, tracing.trace_context(span))
            return self._add_bulk(requests)

    def _add_bulk(self, requests: list[jobs_pb2.AddBulkRequest]) -> list[str]:
        ids: list[str] = []
        for stream in split_streams(requests):
            response: jobs_pb2.AddBulkResponse = self._call(self._queues.AddBulk, iter(stream))
            ids += response.job_ids
        return ids

    def get_job(self, queue_name: str, job_id: str) -> Job:
        """Returns one job; raises `NotFoundError` when it does not exist."""
        queue_name, job_id = job_key(queue_name, job_id)
        request = jobs_pb2.GetJobRequest(queue_name=queue_name, job_id=job_id)
        response: jobs_pb2.GetJobResponse = self._call(self._queues.GetJob, request)
        return job_from_proto(response.job)

    def list_jobs(
        self,
        queue_name: str,
        state: JobState | str,
        page_size: int = 100,
        page_token: str = "",
        *,
        name: str | None = None,
        group: str | None = None,
        tag: str | None = None,
        correlation_id: str | None = None,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
    ) -> tuple[list[Job], str]:
        """Lists one page of a queue's jobs in one state, those that match the filters given; returns the jobs
        and the next page's token. A filtered page may be short or empty with a token: follow it until it is
        "". See `QueueManager.list_jobs`."""
        request = list_jobs_request(queue_name, state, page_size, page_token)
        request.filter.CopyFrom(job_filter(name, group, tag, correlation_id, created_after, created_before))
        response: jobs_pb2.ListJobsResponse = self._call(self._queues.ListJobs, request)
        return [job_from_proto(job) for job in response.jobs], response.next_page_token

    def count_jobs(
        self,
        queue_name: str,
        state: JobState | str,
        *,
        name: str | None = None,
        group: str | None = None,
        tag: str | None = None,
        correlation_id: str | None = None,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
        page_token: str = "",
        max_calls: int | None = None,
    ) -> JobCount:
        """Counts the jobs of one state that match the filters given, following the tokens to the end (or for
        at most ``max_calls`` calls); no job is sent back. See `QueueManager.count_jobs`."""
        flt = job_filter(name, group, tag, correlation_id, created_after, created_before)
        most = max_calls_checked(max_calls)
        count, calls, token = 0, 0, page_token
        while most is None or calls < most:
            request = count_jobs_request(queue_name, state, flt, token)
            response: jobs_pb2.ListJobsResponse = self._call(self._queues.ListJobs, request)
            count, calls, token = count + response.match_count, calls + 1, response.next_page_token
            if not token:
                break
        return JobCount(count, token, calls)

    def remove_job(self, queue_name: str, job_id: str) -> JobState | None:
        """Removes a job that is not active; returns the state it was in."""
        queue_name, job_id = job_key(queue_name, job_id)
        request = jobs_pb2.RemoveJobRequest(queue_name=queue_name, job_id=job_id)
        response: jobs_pb2.RemoveJobResponse = self._call(self._queues.RemoveJob, request)
        return STATE_BY_NUMBER.get(response.previous_state)

    # ----------------------------------------------------------------- cancel

    def cancel_job(self, queue_name: str, job_id: str, reason: str = "") -> Job:
        """Cancels a job (at once unless active; an active job's worker is told to stop it); returns the job.
        See `QueueManager.cancel_job`."""
        request = cancel_job_request(queue_name, job_id, reason)
        response: jobs_pb2.CancelJobResponse = self._call(self._queues.CancelJob, request)
        return job_from_proto(response.job)

    # ----------------------------------------------------------------- queues

    def register_queue(
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
        """Registers a queue or updates its settings; see `QueueManager.register_queue`."""
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
        response: queue_service_pb2.RegisterQueueResponse = self._call(self._queues.RegisterQueue, request)
        return queue_from_proto(response.queue)

    def get_queue(self, name: str) -> Queue:
        """Returns one queue."""
        request = queue_service_pb2.GetQueueRequest(name=validate_queue_name(name))
        response: queue_service_pb2.GetQueueResponse = self._call(self._queues.GetQueue, request)
        return queue_from_proto(response.queue)

    def list_queues(self) -> list[Queue]:
        """Returns all registered queues, sorted by name."""
        request = queue_service_pb2.ListQueuesRequest()
        response: queue_service_pb2.ListQueuesResponse = self._call(self._queues.ListQueues, request)
        return [queue_from_proto(queue) for queue in response.queues]

    def pause_queue(
        self, name: str, resume_after: DurationLike | None = None, resume_at: datetime | None = None
    ) -> Queue:
        """Pauses a queue, optionally until a time; see `QueueManager.pause_queue`."""
        request = pause_queue_request(name, resume_after, resume_at)
        response: queue_service_pb2.PauseQueueResponse = self._call(self._queues.PauseQueue, request)
        return queue_from_proto(response.queue)

    def resume_queue(self, name: str) -> Queue:
        """Resumes a paused queue."""
        request = queue_service_pb2.ResumeQueueRequest(name=name)
        response: queue_service_pb2.ResumeQueueResponse = self._call(self._queues.ResumeQueue, request)
        return queue_from_proto(response.queue)

    def clean_queue(
        self, name: str, grace: int | float | timedelta, state: JobState | str, limit: int = 0
    ) -> int:
        """Removes jobs of one state older than ``grace``; returns how many (see the async client)."""
        request = clean_queue_request(name, grace, state, limit)
        response: queue_service_pb2.CleanQueueResponse = self._call(self._queues.CleanQueue, request)
        return response.removed

    def drain_queue(self, name: str, include_delayed: bool = False) -> int:
        """Removes all waiting jobs (and delayed ones if asked); returns how many."""
        request = drain_queue_request(name, include_delayed)
        response: queue_service_pb2.DrainQueueResponse = self._call(self._queues.DrainQueue, request)
        return response.removed

    def obliterate_queue(self, name: str, force: bool = False) -> int:
        """Deletes a queue and all its jobs; returns how many jobs."""
        request = obliterate_queue_request(name, force)
        response: queue_service_pb2.ObliterateQueueResponse = self._call(
            self._queues.ObliterateQueue, request
        )
        return response.removed

    def list_groups(
        self, queue_name: str, page_size: int = 100, page_token: str = ""
    ) -> tuple[list[GroupInfo], str]:
        """Lists one page of a queue's fairness groups by name; see `QueueManager.list_groups`."""
        request = list_groups_request(queue_name, page_size, page_token)
        response: queue_service_pb2.ListGroupsResponse = self._call(self._queues.ListGroups, request)
        return [group_info_from_proto(g) for g in response.groups], response.next_page_token

    def set_group_limits(
        self,
        queue_name: str,
        group: str,
        concurrency: int = 0,
        rate_limit: RateLimitLike | None = None,
        max_size: int = 0,
        maintenance_windows: Iterable[MaintenanceWindowLike] = (),
    ) -> GroupInfo:
        """Gives one fairness group limits and maintenance windows of its own; see
        `QueueManager.set_group_limits`."""
        request = set_group_limits_request(
            queue_name, group, concurrency, rate_limit, max_size, maintenance_windows
        )
        response: queue_service_pb2.SetGroupLimitsResponse = self._call(self._queues.SetGroupLimits, request)
        return group_info_from_proto(response.group)

    def clear_group_limits(self, queue_name: str, group: str) -> GroupInfo:
        """Removes a fairness group's own limits; see `QueueManager.clear_group_limits`."""
        request = set_group_limits_request(queue_name, group, clear=True)
        response: queue_service_pb2.SetGroupLimitsResponse = self._call(self._queues.SetGroupLimits, request)
        return group_info_from_proto(response.group)

    def pause_group(
        self,
        queue_name: str,
        group: str,
        resume_after: DurationLike | None = None,
        resume_at: datetime | None = None,
    ) -> GroupInfo:
        """Pauses one fairness group (none of its jobs starts), optionally until a time; see
        `QueueManager.pause_group`."""
        request = pause_group_request(queue_name, group, resume_after, resume_at)
        response: queue_service_pb2.PauseGroupResponse = self._call(self._queues.PauseGroup, request)
        return group_info_from_proto(response.group)

    def resume_group(self, queue_name: str, group: str) -> GroupInfo:
        """Resumes a paused fairness group; see `QueueManager.resume_group`."""
        request = resume_group_request(queue_name, group)
        response: queue_service_pb2.ResumeGroupResponse = self._call(self._queues.ResumeGroup, request)
        return group_info_from_proto(response.group)

    def get_queue_metrics(self, name: str, include_history: bool = False) -> QueueMetrics:
        """Returns a queue's metrics; see `QueueManager.get_queue_metrics`."""
        request = queue_metrics_request(name, include_history)
        response: queue_service_pb2.GetQueueMetricsResponse = self._call(
            self._queues.GetQueueMetrics, request
        )
        return metrics_from_proto(response.metrics)

    def get_all_metrics(self, include_history: bool = False) -> list[QueueMetrics]:
        """Returns the metrics of every queue, by name."""
        request = metrics_pb2.GetAllMetricsRequest(include_history=include_history)
        response: metrics_pb2.GetAllMetricsResponse = self._call(self._queues.GetAllMetrics, request)
        return [metrics_from_proto(m) for m in response.metrics]

    def watch_metrics(
        self,
        queues: Iterable[str] | str | None = None,
        *,
        interval: float | timedelta = 1.0,
        include_history: bool = False,
        include_workers: bool = False,
    ) -> Iterator[MetricsSnapshot]:
        """Yields a snapshot at once, then every interval, until the generator is closed; see
        `QueueManager.watch_metrics`."""
        request = watch_metrics_request(queues, interval, include_history, include_workers)
        call = self._queues.WatchMetrics(request)
        try:
            for response in call:
                yield snapshot_from_proto(response)
        except grpc.RpcError as exc:
            raise error_from_rpc(exc) from None
        finally:
            call.cancel()

    def watch_job_events(
        self,
        queue_name: str,
        *,
        types: Iterable[JobEventType | str] | JobEventType | str | None = None,
        job_names: Iterable[str] | str | None = None,
    ) -> Generator[JobEvent]:
        """Yields a queue's job events live until the generator is closed; see
        `QueueManager.watch_job_events`."""
        request = watch_job_events_request(queue_name, types, job_names)
        return sync_events(self._queues.WatchJobEvents(request))

    def fetch_jobs(
        self,
        queue_name: str,
        max_jobs: int = 1,
        *,
        wait: float | timedelta = 0,
        lease_duration: float | timedelta | None = None,
        worker_name: str | None = None,
    ) -> list[SyncPulledJob]:
        """Leases up to `max_jobs` ready jobs for a pull worker (no stream), each to `complete`, `fail` or
        `extend_lease`; see `QueueManager.fetch_jobs`."""
        request, wait_s = fetch_request(queue_name, max_jobs, wait, lease_duration, worker_name)
        timeout = None if self.timeout is None else self.timeout + wait_s
        try:
            response: pull_pb2.FetchJobsResponse = self._queues.FetchJobs(request, timeout=timeout)
        except grpc.RpcError as exc:
            raise error_from_rpc(exc) from None
        tracer = self._tracing()
        return [
            SyncPulledJob(
                job,
                leased.lease_token,
                leased.lease_expire_time.ToDatetime(tzinfo=UTC),
                leased.redelivery,
                _tracer=tracer,
                _call=self._pull_call,
            )
            for job, leased in leases(response)
        ]

    def pulled_job(self, queue_name: str, job_id: str, lease_token: str) -> SyncPulledJob:
        """A fetched job taken up by its lease (maybe fetched by another process); see
        `QueueManager.pulled_job`. Makes no call."""
        job = taken_up(queue_name, job_id, lease_token)
        return SyncPulledJob(
            job, lease_token, None, False, None, _tracer=self._tracing(), _call=self._pull_call
        )

    def _pull_call(self, rpc: str, request: Any) -> Any:
        return self._call(getattr(self._queues, rpc), request)

    def list_workers(self, queue: str | None = None) -> list[WorkerInfo]:
        """Returns the workers connected to any server (taking jobs of `queue`, if given), by id."""
        request = list_workers_request(queue)
        response: metrics_pb2.ListWorkersResponse = self._call(self._queues.ListWorkers, request)
        return [worker_from_proto(w) for w in response.workers]

    def control_worker(self, worker_id: str, action: str, concurrency: int = 0) -> WorkerControlResult:
        """Quiets, resumes, stops or resizes a worker: action ``quiet``, ``resume``, ``stop`` or
        ``concurrency`` (with `concurrency`); see `QueueManager.quiet_worker` and its kin."""
        request = control_request(worker_id, action, concurrency)
        response: queue_service_pb2.ControlWorkerResponse = self._call(self._queues.ControlWorker, request)
        return result_from_proto(response)

    # ----------------------------------------------------------------- external events

    def push_event(self, key: str, data: Any = None, *, event_id: str = "") -> PushedEvent:
        """Pushes an external event, waking the jobs waiting for its key (see `QueueManager.push_event`)."""
        request = push_event_request(key, data, event_id)
        response: external_events_pb2.PushEventResponse = self._call(self._queues.PushEvent, request)
        return pushed_from_proto(response)

    def upsert_event_trigger(
        self,
        trigger_id: str,
        key_pattern: str,
        queue_name: str,
        job_name: str,
        options: JobOptionsLike | None = None,
    ) -> EventTrigger:
        """Creates or replaces an event trigger (see `QueueManager.upsert_event_trigger`)."""
        request = upsert_event_trigger_request(trigger_id, key_pattern, queue_name, job_name, options)
        response: external_events_pb2.UpsertEventTriggerResponse = self._call(
            self._queues.UpsertEventTrigger, request
        )
        return trigger_from_proto(response.trigger)

    def list_event_triggers(self, queue_name: str | None = None) -> list[EventTrigger]:
        """The event triggers (of one queue, or all), by id; `NotFoundError` for a queue that is not
        registered and that no trigger names (a deleted queue's triggers stay listed)."""
        request = external_events_pb2.ListEventTriggersRequest(queue_name=queue_name or "")
        response: external_events_pb2.ListEventTriggersResponse = self._call(
            self._queues.ListEventTriggers, request
        )
        return [trigger_from_proto(t) for t in response.triggers]

    def delete_event_trigger(self, trigger_id: str) -> EventTrigger:
        """Deletes an event trigger and returns it as it was (see `QueueManager.delete_event_trigger`)."""
        request = external_events_pb2.DeleteEventTriggerRequest(trigger_id=validate_trigger_id(trigger_id))
        response: external_events_pb2.DeleteEventTriggerResponse = self._call(
            self._queues.DeleteEventTrigger, request
        )
        return trigger_from_proto(response.trigger)

    # ----------------------------------------------------------------- workflows

    def execute_workflow(self, workflow: WorkflowLike, run_id: str | None = None) -> str:
        """Starts a workflow run and returns its id (see `QueueManager.execute_workflow`)."""
        request = workflows_pb2.ExecuteWorkflowRequest(
            workflow=workflow_to_proto(workflow), run_id=run_id or ""
        )
        if self._codecs is not None:
            refuse_result_conditions(request.workflow.steps)
        tracer = self._tracing()
        response: workflows_pb2.ExecuteWorkflowResponse
        if tracer is None:
            response = self._call(self._queues.ExecuteWorkflow, request)
            return response.run_id
        with tracing.publish_workflow(tracer, request.workflow) as span:
            tracing.carry(request.workflow.metadata, tracing.trace_context(span))
            response = self._call(self._queues.ExecuteWorkflow, request)
            span.set_attribute("queue_manager.workflow.run_id", response.run_id)
        return response.run_id

    def _tracing(self) -> Tracer | None:
        """The adds' tracer (None: tracing is off), read once."""
        tracer = self._tracer
        if tracer is _UNREAD:
            tracer = self._tracer = tracing.tracer(self._tracer_provider)
        return cast("Tracer | None", tracer)

    def get_workflow(self, run_id: str) -> WorkflowRun:
        """Returns a run with every step (see `QueueManager.get_workflow`)."""
        request = workflows_pb2.GetWorkflowRequest(run_id=check_run_id(run_id))
        response: workflows_pb2.GetWorkflowResponse = self._call(self._queues.GetWorkflow, request)
        return workflow_run_from_proto(response.run)

    def list_workflows(self, page_size: int = 100, page_token: str = "") -> tuple[list[WorkflowRun], str]:
        """Lists runs newest first (see `QueueManager.list_workflows`)."""
        request = list_workflows_request(page_size, page_token)
        response: workflows_pb2.ListWorkflowsResponse = self._call(self._queues.ListWorkflows, request)
        return [workflow_run_from_proto(r) for r in response.runs], response.next_page_token

    def cancel_workflow(self, run_id: str, reason: str = "") -> WorkflowRun:
        """Cancels a running run (see `QueueManager.cancel_workflow`)."""
        request = workflows_pb2.CancelWorkflowRequest(run_id=check_run_id(run_id), reason=reason)
        response: workflows_pb2.CancelWorkflowResponse = self._call(self._queues.CancelWorkflow, request)
        return workflow_run_from_proto(response.run)

    def retry_workflow(self, run_id: str) -> WorkflowRun:
        """Runs the jobs of a failed run's failed steps again (see `QueueManager.retry_workflow`)."""
        request = workflows_pb2.RetryWorkflowRequest(run_id=check_run_id(run_id))
        response: workflows_pb2.RetryWorkflowResponse = self._call(self._queues.RetryWorkflow, request)
        return workflow_run_from_proto(response.run)

    # ----------------------------------------------------------------- schedules

    def add_schedule(
        self,
        queue_name: str,
        schedule_id: str,
        *,
        cron: str | None = None,
        every: DurationLike | None = None,
        timezone: str | None = None,
        job_name: str,
        data: Any = None,
        options: JobOptionsLike | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
        limit: int | None = None,
        catch_up: str = "skip",
    ) -> Schedule:
        """Creates or replaces a repeatable schedule; see `QueueManager.add_schedule`."""
        request = upsert_schedule_request(
            queue_name,
            schedule_id,
            cron=cron,
            every=every,
            timezone=timezone,
            job_name=job_name,
            data=data,
            options=options,
            start=start,
            end=end,
            limit=limit,
            catch_up=catch_up,
        )
        response: schedules_pb2.UpsertScheduleResponse = self._call(self._queues.UpsertSchedule, request)
        schedule = schedule_from_proto(response.schedule)
        schedule.created = response.created
        return schedule

    def get_schedule(self, queue_name: str, schedule_id: str) -> Schedule:
        """Returns one schedule; raises `NotFoundError` when it does not exist."""
        request = schedules_pb2.GetScheduleRequest(
            queue_name=validate_queue_name(queue_name), schedule_id=validate_schedule_id(schedule_id)
        )
        response: schedules_pb2.GetScheduleResponse = self._call(self._queues.GetSchedule, request)
        return schedule_from_proto(response.schedule)

    def list_schedules(self, queue_name: str | None = None) -> list[Schedule]:
        """Returns the schedules of one queue, or of every queue (None), by queue then id."""
        request = schedules_pb2.ListSchedulesRequest(queue_name=queue_name or "")
        response: schedules_pb2.ListSchedulesResponse = self._call(self._queues.ListSchedules, request)
        return [schedule_from_proto(s) for s in response.schedules]

    def delete_schedule(self, queue_name: str, schedule_id: str) -> Schedule:
        """Deletes a schedule (the jobs it added stay) and returns it as it was."""
        request = schedules_pb2.DeleteScheduleRequest(
            queue_name=validate_queue_name(queue_name), schedule_id=validate_schedule_id(schedule_id)
        )
        response: schedules_pb2.DeleteScheduleResponse = self._call(self._queues.DeleteSchedule, request)
        return schedule_from_proto(response.schedule)

    # ----------------------------------------------------------------- job control

    def get_job_logs(
        self, queue_name: str, job_id: str, page_size: int = 100, page_token: str = ""
    ) -> tuple[list[JobLogLine], str]:
        """Returns a page of a job's log lines and the next page's token; see `QueueManager.get_job_logs`."""
        request = get_job_logs_request(queue_name, job_id, page_size, page_token)
        response: jobs_pb2.GetJobLogsResponse = self._call(self._queues.GetJobLogs, request)
        return log_lines_from_proto(response.lines), response.next_page_token

    def watch_job(
        self, queue_name: str, job_id: str, timeout: float | timedelta | None = None
    ) -> Iterator[Job]:
        """Yields the job now and after every change of its state until it is finished or ``timeout``
        (seconds or a timedelta) passes; see `QueueManager.watch_job`."""
        for message in self._wait_stream(queue_name, job_id, timeout):
            yield job_from_proto(message)

    def wait_for_job(self, queue_name: str, job_id: str, timeout: float | timedelta | None = None) -> Job:
        """Blocks until the job is finished and returns it; raises `TimeoutError` if it is still unfinished
        after ``timeout`` (seconds or a timedelta; None waits as long as it takes)."""
        last: types_pb2.Job | None = None
        for message in self._wait_stream(queue_name, job_id, timeout):
            last = message
        return finished_job(queue_name, job_id, last, timeout)

    def _wait_stream(
        self, queue_name: str, job_id: str, timeout: float | timedelta | None
    ) -> Iterator[types_pb2.Job]:
        request, deadline = wait_for_job_request(queue_name, job_id, timeout)
        call = self._queues.WaitForJob(request, timeout=deadline)
        try:
            for response in call:
                if self._codecs is not None:
                    self._codecs.decode_message(response.job)
                yield response.job
        except grpc.RpcError as exc:
            raise error_from_rpc(exc) from None
        finally:
            call.cancel()

    def retry_job(self, queue_name: str, job_id: str, data: Any = KEEP_DATA) -> Job:
        """Runs a failed or cancelled job again, attempts counted afresh, with new `data` (None: JSON null)
        unless KEEP_DATA (the default); returns it, waiting again (see `QueueManager.retry_job`)."""
        request = retry_job_request(queue_name, job_id, data)
        response: jobs_pb2.RetryJobResponse = self._call(self._queues.RetryJob, request)
        return job_from_proto(response.job)

    def retry_failed(self, queue_name: str, state: JobState | str = JobState.FAILED) -> int:
        """Runs every failed (``state="cancelled"``: cancelled) job of a queue again; returns how many."""
        request = retry_failed_request(queue_name, state)
        response: jobs_pb2.RetryFailedJobsResponse = self._call(self._queues.RetryFailedJobs, request)
        return response.count

    def redrive_dead_letters(
        self,
        queue_name: str = DEAD_LETTER_QUEUE,
        *,
        original_queue: str | None = None,
        limit: int | None = None,
        job_ids: Iterable[str] | None = None,
        replace_data: bool = False,
        data: Any = KEEP_DATA,
    ) -> RedriveResult:
        """Sends dead-letter copies back to their original queues; see `QueueManager.redrive_dead_letters`."""
        request = redrive_request(queue_name, original_queue, limit, job_ids, replace_data, data)
        response: queue_service_pb2.RedriveDeadLettersResponse = self._call(
            self._queues.RedriveDeadLetters, request
        )
        return redrive_result_from_proto(response)

    def list_dead_letters(
        self,
        queue_name: str = DEAD_LETTER_QUEUE,
        state: JobState | str = JobState.WAITING,
        page_size: int = 100,
        page_token: str = "",
    ) -> tuple[list[DeadLetter], str]:
        """One page of a dead-letter queue's copies; see `QueueManager.list_dead_letters`."""
        jobs, token = self.list_jobs(queue_name, state, page_size, page_token)
        letters = (dead_letter_from_job(job, self._codecs) for job in jobs)
        return [d for d in letters if d is not None], token

    def retry_jobs(
        self,
        queue_name: str,
        state: JobState | str = JobState.FAILED,
        *,
        name: str | None = None,
        group: str | None = None,
        tag: str | None = None,
        correlation_id: str | None = None,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
        limit: int = 0,
        page_token: str = "",
    ) -> BulkResult:
        """Runs the failed (or cancelled) jobs that match again, one bounded call; see
        `QueueManager.retry_jobs`."""
        flt = job_filter(name, group, tag, correlation_id, created_after, created_before)
        request = retry_jobs_request(queue_name, state, flt, limit, page_token)
        response: jobs_pb2.RetryFailedJobsResponse = self._call(self._queues.RetryFailedJobs, request)
        return BulkResult(response.count, response.next_page_token)

    def cancel_jobs(
        self,
        queue_name: str,
        state: JobState | str,
        *,
        name: str | None = None,
        group: str | None = None,
        tag: str | None = None,
        correlation_id: str | None = None,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
        limit: int = 0,
        page_token: str = "",
        reason: str = "",
    ) -> BulkResult:
        """Cancels the jobs of one state that match, one bounded call; see `QueueManager.cancel_jobs`."""
        flt = job_filter(name, group, tag, correlation_id, created_after, created_before)
        request = cancel_jobs_request(queue_name, state, flt, limit, page_token, reason)
        response: jobs_pb2.CancelJobsResponse = self._call(self._queues.CancelJobs, request)
        return BulkResult(response.count, response.next_page_token, response.requested_count)

    def remove_jobs(
        self,
        queue_name: str,
        state: JobState | str,
        *,
        name: str | None = None,
        group: str | None = None,
        tag: str | None = None,
        correlation_id: str | None = None,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
        limit: int = 0,
        page_token: str = "",
    ) -> BulkResult:
        """Removes the jobs of one state (not active) that match, one bounded call; see
        `QueueManager.remove_jobs`."""
        flt = job_filter(name, group, tag, correlation_id, created_after, created_before)
        request = remove_jobs_request(queue_name, state, flt, limit, page_token)
        response: jobs_pb2.RemoveJobsResponse = self._call(self._queues.RemoveJobs, request)
        return BulkResult(response.count, response.next_page_token)

    def promote_job(self, queue_name: str, job_id: str) -> Job:
        """Makes a delayed job waiting now; returns it."""
        queue_name, job_id = job_key(queue_name, job_id)
        request = jobs_pb2.PromoteJobRequest(queue_name=queue_name, job_id=job_id)
        response: jobs_pb2.PromoteJobResponse = self._call(self._queues.PromoteJob, request)
        return job_from_proto(response.job)

    def change_priority(self, queue_name: str, job_id: str, priority: JobPriority | int | str) -> Job:
        """Changes a waiting or delayed job's priority; see `QueueManager.change_priority`."""
        request = change_priority_request(queue_name, job_id, priority)
        response: jobs_pb2.ChangeJobPriorityResponse = self._call(self._queues.ChangeJobPriority, request)
        return job_from_proto(response.job)

    def reschedule_job(
        self,
        queue_name: str,
        job_id: str,
        *,
        delay: DurationLike | None = None,
        run_at: datetime | None = None,
    ) -> Job:
        """Changes when a delayed or waiting job runs; see `QueueManager.reschedule_job`."""
        request = reschedule_job_request(queue_name, job_id, delay, run_at)
        response: jobs_pb2.RescheduleJobResponse = self._call(self._queues.RescheduleJob, request)
        return job_from_proto(response.job)

    def update_job_data(self, queue_name: str, job_id: str, data: Any) -> Job:
        """Replaces the data of a job that has not finished; see `QueueManager.update_job_data`."""
        request = update_job_data_request(queue_name, job_id, data)
        response: jobs_pb2.UpdateJobDataResponse = self._call(self._queues.UpdateJobData, request)
        return job_from_proto(response.job)

    # ----------------------------------------------------------------- test clock

    def advance_test_clock(self, amount: float | timedelta) -> datetime:
        """Moves the test clock of a server made for tests; see `QueueManager.advance_test_clock`."""
        response: test_clock_service_pb2.AdvanceClockResponse = self._call(
            self._clock.AdvanceClock, advance_request(amount)
        )
        return clock_time(response)

    def test_clock_now(self) -> datetime:
        """The test clock of a server made for tests; see `QueueManager.test_clock_now`."""
        response: test_clock_service_pb2.GetClockResponse = self._call(
            self._clock.GetClock, test_clock_service_pb2.GetClockRequest()
        )
        return clock_time(response)

    def _call(self, method: Any, request: Any) -> Any:
        # grpc is untyped for mypy here; each caller annotates the response type it receives.
        codecs = self._codecs
        if codecs is not None and not isinstance(request, Iterator):  # AddBulk's are encoded by add_bulk
            codecs.encode_message(request)
        try:
            response = method(request, timeout=self.timeout)
        except grpc.RpcError as exc:
            raise error_from_rpc(exc) from None
        if codecs is not None:
            codecs.decode_message(response)
        return response
