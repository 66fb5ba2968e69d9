"""`FlowCalls`: the part of `QueueManager` that runs workflows and keeps repeatable schedules."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from queue_manager import tracing
from queue_manager.client_base import ClientBase
from queue_manager.codecs import refuse_result_conditions
from queue_manager.options import DurationLike, JobOptionsLike, validate_queue_name
from queue_manager.schedules import (
    Schedule,
    schedule_from_proto,
    upsert_schedule_request,
    validate_schedule_id,
)
from queue_manager.v1 import schedules_pb2, workflows_pb2
from queue_manager.workflows import (
    WorkflowLike,
    WorkflowRun,
    check_run_id,
    list_workflows_request,
    workflow_run_from_proto,
    workflow_to_proto,
)

__all__ = ["FlowCalls"]


class FlowCalls(ClientBase):
    """Workflows and repeatable schedules (QueueManager's)."""

    # ----------------------------------------------------------------- workflows

    async def execute_workflow(self, workflow: WorkflowLike, run_id: str | None = None) -> str:
        """Starts a workflow run and returns its id at once (see `queue_manager.workflows` for the shape).

        Args:
            workflow: ``{"id", "name", "steps": [...], "metadata": {...}}``; each step has ``queue_name``,
                ``job_name``, optional ``data``, ``options``, ``on_success``, ``on_failure``, ``key``,
                ``depends_on`` and ``run_if`` (conditions on its predecessors' results, `when`).
            run_id: Your own run id (1-100 letters, digits, "-", "_", "."): executing again with the same
                run id returns that run and starts nothing. None: a new random id.

        Returns:
            The run id.
        """
        request = workflows_pb2.ExecuteWorkflowRequest(
            workflow=workflow_to_proto(workflow), run_id=run_id or ""
        )
        if self._codecs is not None:
            refuse_result_conditions(request.workflow.steps)
        tracer = self._tracing()
        if tracer is None:
            response: workflows_pb2.ExecuteWorkflowResponse = await self._unary(
                self._queue_stub().ExecuteWorkflow, request
            )
            return response.run_id
        with tracing.publish_workflow(tracer, request.workflow) as span:
            tracing.carry(request.workflow.metadata, tracing.trace_context(span))
            response = await self._unary(self._queue_stub().ExecuteWorkflow, request)
            span.set_attribute("queue_manager.workflow.run_id", response.run_id)
        return response.run_id

    async def get_workflow(self, run_id: str) -> WorkflowRun:
        """Returns a run with every step's state, job, result or error; `NotFoundError` if unknown."""
        request = workflows_pb2.GetWorkflowRequest(run_id=check_run_id(run_id))
        response: workflows_pb2.GetWorkflowResponse = await self._unary(
            self._queue_stub().GetWorkflow, request
        )
        return workflow_run_from_proto(response.run)

    async def list_workflows(
        self, page_size: int = 100, page_token: str = ""
    ) -> tuple[list[WorkflowRun], str]:
        """Lists runs newest first (without their steps). Returns the runs and the next page's token."""
        request = list_workflows_request(page_size, page_token)
        response: workflows_pb2.ListWorkflowsResponse = await self._unary(
            self._queue_stub().ListWorkflows, request
        )
        return [workflow_run_from_proto(r) for r in response.runs], response.next_page_token

    async def cancel_workflow(self, run_id: str, reason: str = "") -> WorkflowRun:
        """Cancels a running run: no further step starts and its started steps' jobs are cancelled."""
        request = workflows_pb2.CancelWorkflowRequest(run_id=check_run_id(run_id), reason=reason)
        response: workflows_pb2.CancelWorkflowResponse = await self._unary(
            self._queue_stub().CancelWorkflow, request
        )
        return workflow_run_from_proto(response.run)

    async def retry_workflow(self, run_id: str) -> WorkflowRun:
        """Runs the job of every failed (or cancelled) step of a failed run again, in one call.

        The steps start again, the steps skipped because of them are pending again, and the run is running
        until they finish: when a retried step completes, what follows it runs as if it had never failed.

        Args:
            run_id: The run.

        Returns:
            The run after the retry (running, its retried steps started).

        Raises:
            NotFoundError: No such run.
            FailedPreconditionError: The run is running, completed or was cancelled with `cancel_workflow`,
                or a failed step's job no longer exists (the message names it; nothing is retried).
        """
        request = workflows_pb2.RetryWorkflowRequest(run_id=check_run_id(run_id))
        response: workflows_pb2.RetryWorkflowResponse = await self._unary(
            self._queue_stub().RetryWorkflow, request
        )
        return workflow_run_from_proto(response.run)

    # ----------------------------------------------------------------- schedules

    async def add_schedule(
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
        """Creates a repeatable schedule, or replaces the queue's schedule of that id (an upsert).

        Args:
            queue_name: A registered queue; each run adds a job to it.
            schedule_id: 1 to 100 letters, digits, "-", "_" or "."; unique within the queue.
            cron: Cron expression: 5 fields (minute hour day-of-month month day-of-week), or 6 with
                seconds first. Exclusive with every.
            every: Fixed interval (milliseconds or timedelta, at least 1 s): runs at ``start`` and every
                interval after it, or one interval after creation when there is no start.
            timezone: IANA time zone of the cron expression (default UTC).
            job_name: Name of each run's job.
            data: Data of each run's job (JSON-serialisable, or bytes).
            options: Job options as for `add_job`, without ``job_id`` (each run's job is named
                ``schedule:<schedule id>:<occurrence ms>``).
            start: No run before this time.
            end: No run after this time.
            limit: Most runs in all (a replaced schedule keeps its count); None for no limit.
            catch_up: Runs missed while no server ran: "skip" (only one at most a minute late still runs),
                "one" (one run for all of them) or "all" (each one, oldest first, at most 1,000).

        Returns:
            The schedule as stored, with its next run time; its ``created`` says whether this call created
            it (True) or replaced the queue's schedule of that id (False).
        """
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
        response: schedules_pb2.UpsertScheduleResponse = await self._unary(
            self._queue_stub().UpsertSchedule, request
        )
        schedule = schedule_from_proto(response.schedule)
        schedule.created = response.created
        return schedule

    async def get_schedule(self, queue_name: str, schedule_id: str) -> Schedule:
        """Returns one schedule; raises `NotFoundError` when it does not exist."""
        request = schedules_pb2.GetScheduleRequest(
            queue_name=validate_queue_name(queue_name), schedule_id=validate_schedule_id(schedule_id)
        )
        response: schedules_pb2.GetScheduleResponse = await self._unary(
            self._queue_stub().GetSchedule, request
        )
        return schedule_from_proto(response.schedule)

    async def list_schedules(self, queue_name: str | None = None) -> list[Schedule]:
        """Returns the schedules of one queue, or of every queue (None), by queue then id."""
        request = schedules_pb2.ListSchedulesRequest(queue_name=queue_name or "")
        response: schedules_pb2.ListSchedulesResponse = await self._unary(
            self._queue_stub().ListSchedules, request
        )
        return [schedule_from_proto(s) for s in response.schedules]

    async def delete_schedule(self, queue_name: str, schedule_id: str) -> Schedule:
        """Deletes a schedule (the jobs it added stay) and returns it as it was."""
        request = schedules_pb2.DeleteScheduleRequest(
            queue_name=validate_queue_name(queue_name), schedule_id=validate_schedule_id(schedule_id)
        )
        response: schedules_pb2.DeleteScheduleResponse = await self._unary(
            self._queue_stub().DeleteSchedule, request
        )
        return schedule_from_proto(response.schedule)
