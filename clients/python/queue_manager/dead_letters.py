"""Dead-letter queues: redriving copies back to their original queues, reading a copy as what it says about
its original ("why dead"), and retrying a job with new data. Shared by `QueueManager` and
`SyncQueueManager`; validation happens here, before anything is sent."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from queue_manager.codecs import CodecChain
from queue_manager.convert import JSON_CONTENT_TYPE, Job, decode_payload, encode_payload
from queue_manager.enums import JobState
from queue_manager.job_control import job_key
from queue_manager.options import validate_queue_name
from queue_manager.payload_format import is_encoded
from queue_manager.v1 import jobs_pb2, queue_service_pb2, types_pb2

__all__ = [
    "DEAD_LETTER_QUEUE",
    "KEEP_DATA",
    "DeadLetter",
    "RedriveResult",
    "RedrivenQueue",
    "dead_letter_from_job",
    "redrive_request",
    "redrive_result_from_proto",
    "retry_job_request",
]

# The dead-letter queue of every queue registered without one of its own.
DEAD_LETTER_QUEUE = "dead-letter-queue"
# Copies one redrive may name (the server's limit too).
MAX_REDRIVE_IDS = 1000
# The default of every `data` that replaces a job's data (retry_job, redrive_dead_letters): no new data, the
# job keeps its own. None is new data there: JSON null.
KEEP_DATA: Any = object()


@dataclass(frozen=True, slots=True)
class RedrivenQueue:
    """The copies one redrive sent back to one original queue.

    Attributes:
        queue_name: The original queue.
        count: Copies sent back: retried + added + unchanged.
        retried: Originals that were failed and run again (attempts counted afresh).
        added: Originals that were gone (retention, a removal): added anew with their id, name and data.
        unchanged: Originals no longer failed (run again meanwhile): left as they are, the copy dropped.
    """

    queue_name: str
    count: int
    retried: int
    added: int
    unchanged: int


@dataclass(frozen=True, slots=True)
class RedriveResult:
    """What a redrive did.

    Attributes:
        count: Copies sent back in all.
        queues: Per original queue name, its copies sent back.
        skipped: Copies named by id that stay where they are: copy id -> why.
        missing_queues: Original queues no longer registered; their copies stay.
    """

    count: int
    queues: dict[str, RedrivenQueue] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    missing_queues: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A dead-letter copy, read as what it says about the job that failed.

    Attributes:
        id: The copy's id in the dead-letter queue (``<original queue>:<job id>``).
        state: The copy's state in the dead-letter queue (waiting until something consumes or redrives it).
        original_queue: The queue the job failed in.
        original_job_id: The job's id there.
        original_name: The job's name.
        original_data: The job's data (bytes for a job whose content type is not JSON; an `EncodedPayload`
            for one a client encoded, read without its codecs).
        original_content_type: The job's content type (the one before encoding, once decoded).
        failure_reason: The error of the job's last run: why it is dead.
        attempts_made: The runs it had.
        dead_at: When the copy was written (the job failed for good just before).
    """

    id: str
    state: JobState | None
    original_queue: str
    original_job_id: str
    original_name: str
    original_data: Any
    original_content_type: str
    failure_reason: str
    attempts_made: int
    dead_at: datetime | None


def dead_letter_from_job(job: Job, codecs: CodecChain | None = None) -> DeadLetter | None:
    """The copy `job` (a job of a dead-letter queue) as a DeadLetter; None for a job that is not a copy (added
    to the queue directly, or its data edited out of shape).

    The server copies an encoded original (codecs.py) as it is: with `codecs` its data is decoded (raising
    `PayloadCodecError` as any read), without them it is an `EncodedPayload`."""
    body = job.data
    if not isinstance(body, dict):
        return None
    try:
        ct = str(body["original_content_type"])
        data = body["original_data"]
        if ct.split(";", 1)[0].strip().lower() != JSON_CONTENT_TYPE:
            data = base64.b64decode(data, validate=True)
        if is_encoded(ct):
            payload = types_pb2.Payload(raw=data, content_type=ct)
            if codecs is not None:
                codecs.decode(payload)
            data, ct = decode_payload(payload), payload.content_type
        return DeadLetter(
            id=job.id,
            state=job.state,
            original_queue=str(body["original_queue"]),
            original_job_id=str(body["original_job_id"]),
            original_name=str(body["original_name"]),
            original_data=data,
            original_content_type=ct,
            failure_reason=str(body.get("failure_reason", "")),
            attempts_made=int(body.get("attempts_made", 0)),
            dead_at=job.created_at,
        )
    except (KeyError, TypeError, ValueError, binascii.Error):
        return None


def redrive_request(
    queue_name: str,
    original_queue: str | None,
    limit: int | None,
    job_ids: Iterable[str] | None,
    replace_data: bool,
    data: Any = KEEP_DATA,
) -> queue_service_pb2.RedriveDeadLettersRequest:
    """Builds and validates a RedriveDeadLettersRequest (see `QueueManager.redrive_dead_letters`)."""
    validate_queue_name(queue_name)
    if original_queue is not None:
        validate_queue_name(original_queue)
    if limit is not None and (
        isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit < 2**32
    ):
        raise ValueError(f"limit must be a positive int (None: every copy), got {limit!r}")
    if isinstance(job_ids, str):
        raise TypeError("job_ids must be a list of copy ids, not one str")
    ids = list(job_ids or ())
    if len(ids) > MAX_REDRIVE_IDS:
        raise ValueError(f"job_ids names {len(ids)} copies; at most {MAX_REDRIVE_IDS} per call")
    for copy_id in ids:
        if not isinstance(copy_id, str) or ":" not in copy_id:
            raise ValueError(f"{copy_id!r} is not a dead-letter copy's id ('<queue>:<job id>')")
    if ids and limit is not None:
        raise ValueError("give job_ids or limit, not both: limit applies to a scan of the queue")
    if data is not KEEP_DATA and len(ids) != 1:
        raise ValueError(f"data replaces one copy's data: give exactly one job_id ({len(ids)} given)")
    request = queue_service_pb2.RedriveDeadLettersRequest(
        queue_name=queue_name,
        original_queue=original_queue or "",
        limit=limit or 0,
        job_ids=ids,
        replace_data=bool(replace_data),
    )
    _replacing_data(data, request.data)
    return request


def redrive_result_from_proto(response: queue_service_pb2.RedriveDeadLettersResponse) -> RedriveResult:
    return RedriveResult(
        count=response.count,
        queues={
            q.queue_name: RedrivenQueue(q.queue_name, q.count, q.retried, q.added, q.unchanged)
            for q in response.queues
        },
        skipped={s.job_id: s.reason for s in response.skipped},
        missing_queues=list(response.missing_queues),
    )


def retry_job_request(queue_name: str, job_id: str, data: Any = KEEP_DATA) -> jobs_pb2.RetryJobRequest:
    """Builds a RetryJobRequest; `data` (not KEEP_DATA) replaces the job's data as it goes back to waiting:
    bytes go as octet-stream, anything else as JSON (None as JSON null)."""
    queue_name, job_id = job_key(queue_name, job_id)
    request = jobs_pb2.RetryJobRequest(queue_name=queue_name, job_id=job_id)
    _replacing_data(data, request.data)
    return request


def _replacing_data(data: Any, into: types_pb2.Payload) -> None:
    """Fills the payload that replaces a job's data, unless `data` is KEEP_DATA (the payload stays unset, so
    the job keeps its data). None is set, as JSON null: encode_payload leaves it unset."""
    if data is None:
        into.raw, into.content_type = b"null", JSON_CONTENT_TYPE
    elif data is not KEEP_DATA:
        encode_payload(data, into)
