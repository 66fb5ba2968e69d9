"""Children added at run time (WaitForChildren): a running job adds child jobs and waits for them.

The call is fenced by the run's lease and goes in three steps, each safe to repeat: record the children on
the parent (their ids derived from the parent, its wait number and their place: children_add.lua), add them
to their queues (an add of an id that exists adds nothing), then end the run and park the parent
(children_wait.lua). A server or worker lost between two steps leaves the parent active under a lease that
runs out; the job is then run again (a redelivery), and the same call records and adds the same children,
so none is lost or added twice. Each child carries its parent in 'par' and a flow mark, so its end is handed
to the parent through the flow outbox of its own queue (services/flows.py, children_done.lua).
"""

from __future__ import annotations

from collections import defaultdict

import grpc

from queue_manager.v1 import jobs_pb2 as pb
from queue_manager.v1 import types_pb2
from queue_manager_server import convert, validate
from queue_manager_server.engine import Engine
from queue_manager_server.engine.children import Children
from queue_manager_server.engine.records import NewJob
from queue_manager_server.errors import InvalidArgument, QueueNotFound
from queue_manager_server.services.errors import unary

# Children per call, and over a job's life: a wider fan-out is a workflow, or children that add their own.
MAX_CHILDREN = 1000
# The most of a child's result its parent is delivered with (ChildJob.result); a larger one is left out
# (truncated) and read with GetJob on the child. A parent of 1,000 children then carries at most ~1 MB.
CHILD_RESULT_LIMIT = 1024


def child_outcome(queue: str, job_id: str, state: int, entry: dict[str, bytes]) -> bytes:
    """A finished child's outcome as its parent keeps it: an encoded Job holding one ChildJob."""
    child = types_pb2.ChildJob(
        job=types_pb2.JobRef(queue_name=queue, job_id=job_id),
        state=state,  # type: ignore[arg-type]
        failed_reason=entry.get("err", b"").decode(errors="replace"),
    )
    res = entry.get("res")
    if state == types_pb2.JOB_STATE_COMPLETED and res is not None:
        if len(res) <= CHILD_RESULT_LIMIT:
            child.result.CopyFrom(convert.payload_out(res, entry.get("rct", b"").decode(), json_view=False))
        else:
            child.truncated = True
    return types_pb2.Job(child_jobs=[child]).SerializeToString()


class ChildrenHandlers:
    """WaitForChildren (part of `QueueService`)."""

    engine: Engine
    children: Children
    max_payload: int

    @unary
    async def WaitForChildren(
        self, request: pb.WaitForChildrenRequest, context: grpc.aio.ServicerContext
    ) -> pb.WaitForChildrenResponse:
        queue = validate.queue_name(request.queue_name)
        job_id = validate.job_id(request.job_id)
        token = request.lease_token
        if not token:
            raise InvalidArgument("lease_token", "is required: only the job's own run adds its children")
        jobs = self._children_in(request)
        body, ct = b"", ""  # no new data: the job keeps its own
        if request.HasField("data"):
            body, ct = convert.payload_in(request.data, "data", self.max_payload)
        try:
            await self.engine.require_queues(list(dict.fromkeys(q for q, _ in jobs)))
        except QueueNotFound as exc:
            i = next(i for i, (q, _) in enumerate(jobs) if q == exc.queue)
            raise InvalidArgument(f"children[{i}].queue_name", str(exc)) from None
        ids = await self.children.children_add(queue, job_id, token, MAX_CHILDREN, [q for q, _ in jobs])
        parent = types_pb2.Job(
            parents=[
                types_pb2.ParentJob(
                    job=types_pb2.JobRef(queue_name=queue, job_id=job_id), state=types_pb2.JOB_STATE_ACTIVE
                )
            ]
        ).SerializeToString()
        by_queue: dict[str, list[NewJob]] = defaultdict(list)
        for (child_queue, job), child_id in zip(jobs, ids, strict=True):
            job.id = child_id
            job.extra["par"] = parent
            job.extra["flo"] = b"1"  # its end is handed to the parent (services/flows.py)
            by_queue[child_queue].append(job)
        for result in await self.engine.add_jobs_many(list(by_queue.items())):
            if isinstance(result, Exception):
                raise result  # the run stays active: repeated, the call adds what is missing
        parked = await self.children.children_wait(queue, job_id, token, ct, body)
        return pb.WaitForChildrenResponse(
            children=[
                types_pb2.JobRef(queue_name=q, job_id=child_id)
                for (q, _), child_id in zip(jobs, ids, strict=True)
            ],
            children_pending=parked.pending,
        )

    def _children_in(self, request: pb.WaitForChildrenRequest) -> list[tuple[str, NewJob]]:
        """The children to add, each checked as an add checks its job; a child may not choose its id."""
        if not request.children:
            raise InvalidArgument("children", "add at least one child")
        if len(request.children) > MAX_CHILDREN:
            raise InvalidArgument(
                "children", f"at most {MAX_CHILDREN} children per call, got {len(request.children)}"
            )
        out = []
        for i, spec in enumerate(request.children):
            where = f"children[{i}]"
            child_queue = validate.queue_name(spec.queue_name, f"{where}.queue_name")
            options = spec.options if spec.HasField("options") else None
            if options is not None and options.job_id:
                raise InvalidArgument(
                    f"{where}.options.job_id", "a child's id is derived from its parent's; leave it empty"
                )
            if options is not None and options.HasField("dedup"):
                raise InvalidArgument(
                    f"{where}.options.dedup", "a child cannot be deduplicated: its parent waits for this job"
                )
            job = convert.job_from(spec.name, spec.data, options, where, self.max_payload, name_part="name")
            out.append((child_queue, job))
        return out
