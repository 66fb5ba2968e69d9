"""QueueService handlers for dead-letter queues: redriving copies back to their original queues
(engine/redrive.py does the work and says how it stays exactly-once across hash slots)."""

from __future__ import annotations

from collections.abc import Iterable

import grpc

from queue_manager.v1 import queue_service_pb2 as pb
from queue_manager_server import convert, validate
from queue_manager_server.engine.redrive import DeadLetters, RedriveResult
from queue_manager_server.errors import InvalidArgument
from queue_manager_server.services.errors import unary

# Copies one RedriveDeadLetters call may name (job_ids): one script call takes them all.
MAX_REDRIVE_IDS = 1000


class DeadLetterHandlers:
    """Dead-letter queue operations (part of `QueueService`)."""

    dead_letters: DeadLetters
    max_payload: int

    @unary
    async def RedriveDeadLetters(
        self, request: pb.RedriveDeadLettersRequest, context: grpc.aio.ServicerContext
    ) -> pb.RedriveDeadLettersResponse:
        dlq = validate.queue_name(request.queue_name)
        original = ""
        if request.original_queue:
            original = validate.queue_name(request.original_queue, "original_queue")
            if original == dlq:
                raise InvalidArgument("original_queue", "names the dead-letter queue itself")
        ids = _copy_ids(request.job_ids, original)
        if ids and request.limit:
            raise InvalidArgument("limit", "applies to a scan of the queue; give job_ids or limit, not both")
        data: tuple[bytes, str] | None = None
        if request.HasField("data"):  # checked as an add's; the engine refuses it with other than one copy
            data = convert.payload_given(request.data, "data", self.max_payload)
        result = await self.dead_letters.redrive(
            dlq, original, request.limit, ids, request.replace_data, data
        )
        return _response(result)


def _copy_ids(job_ids: Iterable[str], original: str) -> list[str]:
    """The copy ids named, checked: each is ``<queue>:<job id>``, of `original` when one is given."""
    ids = list(job_ids)
    if len(ids) > MAX_REDRIVE_IDS:
        raise InvalidArgument("job_ids", f"names {len(ids)} copies; at most {MAX_REDRIVE_IDS} per call")
    for i, copy_id in enumerate(ids):
        field = f"job_ids[{i}]"
        validate.job_id(copy_id, field)
        queue, sep, _ = copy_id.partition(":")
        if not sep:
            raise InvalidArgument(field, f"{copy_id!r} is not a dead-letter copy's id ('<queue>:<job id>')")
        if original and queue != original:
            raise InvalidArgument(field, f"{copy_id!r} is not a copy of a job of {original!r}")
    return ids


def _response(result: RedriveResult) -> pb.RedriveDeadLettersResponse:
    out = pb.RedriveDeadLettersResponse(count=result.count, missing_queues=sorted(result.missing_queues))
    for name in sorted(result.queues):
        c = result.queues[name]
        out.queues.add(
            queue_name=name, count=c.count, retried=c.retried, added=c.added, unchanged=c.unchanged
        )
    for job_id, reason in result.skipped:
        out.skipped.add(job_id=job_id, reason=reason)
    return out
