"""`WorkerCalls`: the part of `QueueManager` that controls connected workers (``ControlWorker``): quiet,
resume, stop, or change the concurrency of one worker, on whichever server its stream is."""

from __future__ import annotations

from dataclasses import dataclass

from queue_manager.checks import MAX_CONCURRENCY
from queue_manager.client_base import ClientBase
from queue_manager.enums import WORKER_STATE_BY_NUMBER, WorkerState
from queue_manager.v1 import queue_service_pb2

__all__ = ["WorkerCalls", "WorkerControlResult"]

_pb = queue_service_pb2


@dataclass(frozen=True, slots=True)
class WorkerControlResult:
    """What a worker control call did.

    Attributes:
        server_id: The server holding the worker's stream, which told it.
        state: The worker's state after the call.
        concurrency: The worker's concurrency after the call.
        changed: False when the worker was already so (nothing was sent to it).
    """

    server_id: str
    state: WorkerState
    concurrency: int
    changed: bool


class WorkerCalls(ClientBase):
    """Controlling connected workers (QueueManager's). Each raises `NotFoundError` when no live server holds
    a stream of the worker, and `FailedPreconditionError` when the worker does not take the command (an
    older client) or is stopping."""

    async def quiet_worker(self, worker_id: str) -> WorkerControlResult:
        """Delivers nothing more to the worker until `resume_worker`; it runs what it holds and stays
        connected (Faktory's quiet, Celery's cancel_consumer)."""
        return await self._control(worker_id, _pb.WORKER_CONTROL_ACTION_QUIET)

    async def resume_worker(self, worker_id: str) -> WorkerControlResult:
        """Delivers to a quiet worker again."""
        return await self._control(worker_id, _pb.WORKER_CONTROL_ACTION_RESUME)

    async def stop_worker(self, worker_id: str) -> WorkerControlResult:
        """Stops the worker: it finishes (within its shutdown grace) or releases what it holds, then ends its
        run without reconnecting."""
        return await self._control(worker_id, _pb.WORKER_CONTROL_ACTION_STOP)

    async def set_worker_concurrency(self, worker_id: str, concurrency: int) -> WorkerControlResult:
        """Makes the worker run at most `concurrency` jobs at once from now on (1 to 100,000); a lower value
        takes effect as its running jobs finish."""
        if isinstance(concurrency, bool) or not isinstance(concurrency, int):
            raise TypeError(f"concurrency must be an int, not {type(concurrency).__name__}")
        if not 1 <= concurrency <= MAX_CONCURRENCY:
            raise ValueError(f"concurrency must be from 1 to {MAX_CONCURRENCY:,}, got {concurrency}")
        return await self._control(worker_id, _pb.WORKER_CONTROL_ACTION_SET_CONCURRENCY, concurrency)

    async def _control(
        self, worker_id: str, action: _pb.WorkerControlAction.ValueType, concurrency: int = 0
    ) -> WorkerControlResult:
        if not isinstance(worker_id, str) or not worker_id:
            raise ValueError("worker_id must be a non-empty string (`list_workers` gives the ids)")
        request = _pb.ControlWorkerRequest(worker_id=worker_id, action=action, concurrency=concurrency)
        response: _pb.ControlWorkerResponse = await self._unary(self._queue_stub().ControlWorker, request)
        return WorkerControlResult(
            server_id=response.server_id,
            state=WORKER_STATE_BY_NUMBER.get(response.state, WorkerState.ACTIVE),
            concurrency=response.concurrency,
            changed=response.changed,
        )
