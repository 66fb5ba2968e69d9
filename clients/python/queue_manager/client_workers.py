"""`WorkerCalls`: the part of `QueueManager` that controls connected workers (``ControlWorker``): quiet,
resume, stop, or change the concurrency of one worker, on whichever server its stream is."""

from __future__ import annotations

from dataclasses import dataclass

from queue_manager.checks import MAX_CONCURRENCY
from queue_manager.client_base import ClientBase
from queue_manager.enums import WORKER_STATE_BY_NUMBER, WorkerState
from queue_manager.v1 import queue_service_pb2

__all__ = ["WorkerCalls", "WorkerControlResult", "control_request", "result_from_proto"]

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
        return await self._control(control_request(worker_id, "quiet"))

    async def resume_worker(self, worker_id: str) -> WorkerControlResult:
        """Delivers to a quiet worker again."""
        return await self._control(control_request(worker_id, "resume"))

    async def stop_worker(self, worker_id: str) -> WorkerControlResult:
        """Stops the worker: it finishes (within its shutdown grace) or releases what it holds, then ends its
        run without reconnecting."""
        return await self._control(control_request(worker_id, "stop"))

    async def set_worker_concurrency(self, worker_id: str, concurrency: int) -> WorkerControlResult:
        """Makes the worker run at most `concurrency` jobs at once from now on (1 to 100,000); a lower value
        takes effect as its running jobs finish."""
        return await self._control(control_request(worker_id, "concurrency", concurrency))

    async def _control(self, request: _pb.ControlWorkerRequest) -> WorkerControlResult:
        response: _pb.ControlWorkerResponse = await self._unary(self._queue_stub().ControlWorker, request)
        return result_from_proto(response)


_ACTIONS = {
    "quiet": _pb.WORKER_CONTROL_ACTION_QUIET,
    "resume": _pb.WORKER_CONTROL_ACTION_RESUME,
    "stop": _pb.WORKER_CONTROL_ACTION_STOP,
    "concurrency": _pb.WORKER_CONTROL_ACTION_SET_CONCURRENCY,
}


def control_request(worker_id: str, action: str, concurrency: int = 0) -> _pb.ControlWorkerRequest:
    """A ControlWorkerRequest: action ``quiet``, ``resume``, ``stop`` or ``concurrency`` (with a value).

    Raises:
        TypeError, ValueError: A worker id, action or concurrency of the wrong type or out of range.
    """
    if not isinstance(worker_id, str) or not worker_id:
        raise ValueError("worker_id must be a non-empty string (`list_workers` gives the ids)")
    if action not in _ACTIONS:  # `SyncQueueManager.control_worker`'s: a bare KeyError('pause') said nothing
        raise ValueError(f"action must be quiet, resume, stop or concurrency, got {action!r}")
    if action == "concurrency":
        if isinstance(concurrency, bool) or not isinstance(concurrency, int):
            raise TypeError(f"concurrency must be an int, not {type(concurrency).__name__}")
        if not 1 <= concurrency <= MAX_CONCURRENCY:
            raise ValueError(f"concurrency must be from 1 to {MAX_CONCURRENCY:,}, got {concurrency}")
    return _pb.ControlWorkerRequest(worker_id=worker_id, action=_ACTIONS[action], concurrency=concurrency)


def result_from_proto(response: _pb.ControlWorkerResponse) -> WorkerControlResult:
    """Public `WorkerControlResult` from a `queue_manager.v1.ControlWorkerResponse`."""
    return WorkerControlResult(
        server_id=response.server_id,
        state=WORKER_STATE_BY_NUMBER.get(response.state, WorkerState.ACTIVE),
        concurrency=response.concurrency,
        changed=response.changed,
    )
