"""QueueService handlers for adding, reading, listing and removing jobs."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Sequence
from typing import Any

import grpc
from google.protobuf.internal.containers import RepeatedCompositeFieldContainer

from queue_manager.v1 import jobs_pb2 as pb
from queue_manager.v1 import types_pb2
from queue_manager_server import convert, filter_convert, paging, validate
from queue_manager_server.access import add_item_denials
from queue_manager_server.engine import Engine
from queue_manager_server.engine.bulk import BulkStreams
from queue_manager_server.engine.children import Children
from queue_manager_server.engine.engine import ADD_CHUNK
from queue_manager_server.engine.job_control import JobControl
from queue_manager_server.engine.records import NewJob
from queue_manager_server.engine.search import JobSearch
from queue_manager_server.errors import InvalidArgument, PermissionDenied
from queue_manager_server.services.adds import AddCoalescer, AddOutcome
from queue_manager_server.services.errors import status_for, streaming, unary
from queue_manager_server.services.job_control import job_message

# AddOutcome.how as AddJobResponse.disposition.
_DISPOSITIONS = {
    "created": pb.ADD_DISPOSITION_CREATED,
    "existing": pb.ADD_DISPOSITION_EXISTING,
    "deduplicated": pb.ADD_DISPOSITION_DEDUPLICATED,
    "replaced": pb.ADD_DISPOSITION_REPLACED,
}


def _answer(request: pb.AddJobRequest, added: AddOutcome) -> dict[str, Any]:
    """An AddJobResponse's constructor fields (AddJobBatch gathers many answers in one constructor call)."""
    # The answer's data takes the request's form: raw bytes back for raw bytes sent (the Python client sends
    # JSON so), which spares both sides a conversion to and from google.protobuf.Value.
    # A job this call created holds the data it sent: a JSON value is answered as sent, not read back.
    kind = request.job.data.WhichOneof("body")
    sent = None
    if kind == "json" and added.created:
        sent = types_pb2.Payload(json=request.job.data.json, content_type=convert.JSON)
    job = convert.job_out_fields(added.record, added.queue_paused, kind != "raw", sent)
    return {"job": job, "created": added.created, "disposition": _DISPOSITIONS[added.how]}


def _error_outcome(code: grpc.StatusCode, message: str) -> dict[str, Any]:
    """An AddJobOutcome's constructor fields for an add that failed with this status."""
    return {"error": {"code": code.value[0], "message": message}}


# Per item of a batch: why it was refused before its add (None: it was handed to the coalescer).
_Checks = list[Exception | None]
# The outcomes field of an AddJobBatch or AddJobStream answer.
Outcomes = RepeatedCompositeFieldContainer[pb.AddJobOutcome]

# A stream is checked whole before anything is written, so it is held in memory: bound it.
MAX_STREAM_JOBS = 100_000
# Adds per AddJobBatch call or AddJobStream message (a client carries concurrent add_job calls in them).
MAX_BATCH_ITEMS = 1_000
# AddJobStream messages unanswered at once per stream: the server reads no further until one is answered.
MAX_STREAM_BATCHES = 64


class JobHandlers:
    """Adding, reading, listing and removing jobs (part of `QueueService`)."""

    engine: Engine
    control: JobControl
    children: Children
    bulk: BulkStreams
    adds: AddCoalescer
    search: JobSearch
    max_payload: int
    # Bytes one AddBulk stream may carry (QM_MAX_BULK_BYTES; app.py sets it from the settings).
    max_bulk_bytes: int = 128 * 1024 * 1024

    @unary
    async def AddJob(self, request: pb.AddJobRequest, context: grpc.aio.ServicerContext) -> pb.AddJobResponse:
        return await self._add(request)

    @unary
    async def AddJobBatch(
        self, request: pb.AddJobBatchRequest, context: grpc.aio.ServicerContext
    ) -> pb.AddJobBatchResponse:
        if len(request.items) > MAX_BATCH_ITEMS:
            raise InvalidArgument(
                "items", f"holds {len(request.items)} adds; at most {MAX_BATCH_ITEMS} per call (use AddBulk)"
            )
        checks, added = self._submitted(request.items)
        response = pb.AddJobBatchResponse()
        self._answered(response.outcomes, request.items, checks, await added)
        return response

    @streaming
    async def AddJobStream(
        self, requests: AsyncIterator[pb.AddJobStreamRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.AddJobStreamResponse]:
        # Each message is answered when its adds are written, in any order: a reader takes the messages (at
        # most MAX_STREAM_BATCHES unanswered), checks each and hands its adds to the coalescer in the same
        # turn (no task per message), and a callback on their outcomes queues the answer, which this
        # generator sends.
        # Headers at once: a client writes nothing before them (so an older server's refusal is clean).
        await context.send_initial_metadata(())
        answers: asyncio.Queue[pb.AddJobStreamResponse | BaseException | None] = asyncio.Queue()
        room = asyncio.Semaphore(MAX_STREAM_BATCHES)

        def refused(message: pb.AddJobStreamRequest, code: grpc.StatusCode, why: str) -> Any:
            # protobuf takes dicts for message fields; its type stubs do not say so.
            outcomes: Any = [_error_outcome(code, why)] * len(message.items)
            return pb.AddJobStreamResponse(batch_id=message.batch_id, outcomes=outcomes)

        def answer(message: pb.AddJobStreamRequest, checks: _Checks, added: asyncio.Future[Any]) -> None:
            # Called when the message's adds are written (a callback: no task per message).
            room.release()
            if added.cancelled():  # the call ended meanwhile: nobody to answer
                return
            try:
                response = pb.AddJobStreamResponse(batch_id=message.batch_id)
                self._answered(response.outcomes, message.items, checks, added.result(), message.brief)
            except Exception as exc:  # a fault in answering (a server bug): its adds get it, not silence
                response = refused(message, *status_for(exc))
            answers.put_nowait(response)

        async def read() -> None:
            pending: set[asyncio.Future[Any]] = set()
            try:
                async for message in requests:
                    await room.acquire()
                    try:
                        if len(message.items) > MAX_BATCH_ITEMS:
                            why = f"holds {len(message.items)} adds; at most {MAX_BATCH_ITEMS} per message"
                            raise InvalidArgument("items", why)
                        # Checked and handed to the coalescer at once, in this turn of the event loop.
                        checks, added = self._submitted(message.items)
                    except Exception as exc:
                        room.release()
                        answers.put_nowait(refused(message, *status_for(exc)))
                        continue
                    pending.add(added)
                    added.add_done_callback(pending.discard)
                    added.add_done_callback(functools.partial(answer, message, checks))
                    # A turn of the loop before gRPC is asked for the next message: the write the coalescer
                    # has just started goes out first (~15 µs sooner to Redis at a few hundred adds/s).
                    await asyncio.sleep(0)
                if pending:
                    await asyncio.gather(*pending)
                answers.put_nowait(None)
            except BaseException as exc:  # the call ended (cancelled) or its reading failed
                answers.put_nowait(exc)
                raise

        reader = asyncio.create_task(read(), name="add-stream-reader")
        try:
            while (item := await answers.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            reader.cancel()

    def _submitted(
        self, items: Sequence[pb.AddJobRequest]
    ) -> tuple[_Checks, asyncio.Future[list[AddOutcome | Exception]]]:
        """Checks each item alone and hands those that pass to the coalescer; returns each item's refusal
        (None: passed) and the future of the passed ones' outcomes, in order."""
        checks: _Checks = []
        jobs: list[tuple[str, NewJob]] = []
        denial = add_item_denials()  # None: the call checks no tokens
        checked = self._checked
        for i, item in enumerate(items):
            try:
                if denial is not None and (why := denial(item, i)):
                    raise PermissionDenied(why)
                jobs.append(checked(item))
                checks.append(None)
            except Exception as exc:
                checks.append(exc)
        return checks, self.adds.submit_all(jobs)

    def _answered(
        self,
        into: Outcomes,
        items: Sequence[pb.AddJobRequest],
        checks: _Checks,
        added: list[AddOutcome | Exception],
        brief: bool = False,
    ) -> None:
        """Appends each item's AddJobOutcome to `into`: its refusal, its add's error, or its job. brief: a job
        created as its request says is answered with `created` (AddJobStreamRequest.brief), as a copy of the
        last such answer with its id set (those of one write differ in their id alone: 0.77 → 0.42 µs each,
        where each was built from fields)."""
        last: pb.AddJobOutcome | None = None  # the last brief answer, and its time and pause
        shared: tuple[bytes | None, bool] | None = None
        passed = iter(added)
        add, plain = into.add, convert.PLAIN_FIELDS
        for item, why_not in zip(items, checks, strict=True):
            outcome = next(passed) if why_not is None else why_not
            if isinstance(outcome, Exception):
                add(**_error_outcome(*status_for(outcome)))
                continue
            try:
                record = outcome.record
                fields = record.fields
                if brief and outcome.created and fields.keys() <= plain:
                    same = (fields.get("ts"), outcome.queue_paused)
                    if last is None or same != shared:
                        created = convert.created_job_fields(record, outcome.queue_paused)
                        last, shared = add(created=created), same
                    else:
                        answer = add()
                        answer.CopyFrom(last)
                        answer.created.id = record.id
                else:
                    add(added=_answer(item, outcome))
            except Exception as exc:
                add(**_error_outcome(*status_for(exc)))

    async def _add(self, request: pb.AddJobRequest) -> pb.AddJobResponse:
        # Concurrent adds share one Redis round trip (services/adds.py); a lone one goes out at once.
        return pb.AddJobResponse(**_answer(request, await self.adds.add(*self._checked(request))))

    def _checked(self, request: pb.AddJobRequest) -> tuple[str, NewJob]:
        queue = validate.queue_name(request.queue_name)
        if not request.HasField("job"):
            raise InvalidArgument("job", "is required")
        return queue, convert.new_job(request.job, "job", self.max_payload)

    @unary
    async def AddBulk(
        self, request_iterator: AsyncIterator[pb.AddBulkRequest], context: grpc.aio.ServicerContext
    ) -> pb.AddBulkResponse:
        # Validate everything before writing anything: a bad job anywhere in the stream means no write.
        batches: list[tuple[str, list[NewJob]]] = []
        index = size = 0
        async for message in request_iterator:
            size += message.ByteSize()
            if size > self.max_bulk_bytes:
                raise InvalidArgument(
                    "jobs",
                    f"the stream is over {self.max_bulk_bytes} bytes (QM_MAX_BULK_BYTES); "
                    "send the jobs as several streams",
                )
            queue = validate.queue_name(message.queue_name)
            if index + len(message.jobs) > MAX_STREAM_JOBS:
                raise InvalidArgument(
                    "jobs",
                    f"a stream carries at most {MAX_STREAM_JOBS} jobs; send more as several streams",
                )
            jobs = [
                convert.new_job(j, f"jobs[{index + i}]", self.max_payload) for i, j in enumerate(message.jobs)
            ]
            index += len(jobs)
            if batches and batches[-1][0] == queue:
                batches[-1][1].extend(jobs)
            else:
                batches.append((queue, jobs))
        response = pb.AddBulkResponse()
        if len(batches) == 1 and len(batches[0][1]) <= ADD_CHUNK:
            # One script call adds it: atomic as it is, its size check (whole or not at all) included.
            result = await self.engine.add_jobs(*batches[0], whole=True)
            response.job_ids.extend(result.ids)
            response.created_count = sum(result.created)
            response.replaced_count = sum(1 for how in result.dedup.values() if how == "replaced")
        elif batches:
            # Larger streams are checked whole against each queue's size limits (adds at the same moment may
            # take a queue a little past them), then staged and committed whole (engine/bulk.py).
            per_queue: dict[str, list[NewJob]] = {}
            for queue, jobs in batches:
                per_queue.setdefault(queue, []).extend(jobs)
            for queue, jobs in per_queue.items():
                await self.engine.check_room(queue, jobs)
            written = await self.bulk.write(batches)
            response.job_ids.extend(written.ids)
            response.created_count = written.created
            response.replaced_count = written.replaced
        return response

    @unary
    async def GetJob(self, request: pb.GetJobRequest, context: grpc.aio.ServicerContext) -> pb.GetJobResponse:
        queue = validate.queue_name(request.queue_name)
        job = await job_message(self.control, queue, validate.job_id(request.job_id))  # with its log's tail
        if job.child_jobs:  # each child's state now, in one read (a client would need a GetJob per child)
            refs = [(c.job.queue_name, c.job.job_id) for c in job.child_jobs]
            states = await self.children.child_states(refs)
            for child, state in zip(job.child_jobs, states, strict=True):
                child.current_state = convert.STATE_VALUES.get(state, types_pb2.JOB_STATE_UNSPECIFIED)
        return pb.GetJobResponse(job=job)

    @unary
    async def ListJobs(
        self, request: pb.ListJobsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListJobsResponse:
        queue = validate.queue_name(request.queue_name)
        state = convert.state_name(request.state)
        page_size = 0 if request.count_only else request.page_size  # a count returns no page
        # Waiting and paused jobs are held in lists, the other states in sorted sets: cursors of two kinds.
        kind, member = paging.job_cursor(state)
        token = request.page_token
        size, after = paging.cursor_request(page_size, token, kind, "ListJobs", member, stale="o")
        flt = filter_convert.job_filter(request.filter)
        if request.count_only:  # the same bounded read as a filtered page, counted (engine/search.py)
            counted = await self.search.count_matching(queue, state, flt, after)
            response = pb.ListJobsResponse(match_count=counted.count, total_size=counted.total)
            if counted.cursor is not None:
                response.next_page_token = paging.next_cursor(kind, *counted.cursor)
            return response
        # A bounded read of the state (engine/search.py): with a filter, the page may come back short.
        found = await self.search.list_matching(queue, state, flt, after, size)
        paused = state == "paused"
        response = pb.ListJobsResponse(
            jobs=[convert.job_out(r, paused) for r in found.records], total_size=found.total
        )
        if found.cursor is not None:
            response.next_page_token = paging.next_cursor(kind, *found.cursor)
        return response

    @unary
    async def RemoveJob(
        self, request: pb.RemoveJobRequest, context: grpc.aio.ServicerContext
    ) -> pb.RemoveJobResponse:
        queue = validate.queue_name(request.queue_name)
        state = await self.engine.remove_job(queue, validate.job_id(request.job_id))
        return pb.RemoveJobResponse(previous_state=convert.STATE_VALUES[state])
