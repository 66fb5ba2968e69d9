"""Children added at run time (WaitForChildren): a running job adds child jobs and waits for them.

The call is fenced by the run's lease and goes in steps, each safe to repeat (after a read that refuses a
child that waits for the job itself: services/child_cycles.py): record the children on the
parent (children_add.lua: a child without an id of its own, or with a dedup key, under an id derived from
the parent, its wait number and its place; one with its own job_id under that id), add them to their queues
(an add of an id that exists adds nothing; a held dedup key answers its holder), attach the parent to each
child named by an id that existed already (children_attach.lua: the child keeps the parent in 'kup'; one
that had finished is answered with its outcome), move the record of each dedup child whose key resolved to
its holder onto the holder (children_link.lua) and only then attach the parent to it (an end handed on
before the parent had the child recorded would count for nothing), count the ends of the children that had
finished (children_done.lua), then end the run and park the parent (children_wait.lua). A server or worker
lost between two steps leaves the parent active under a lease that runs out; the job is then run again (a
redelivery), and the same call records and adds the same children (a dedup child is answered the job its
key resolved to the first time), so none is lost, added twice or counted twice. Each child carries its
parent in 'par' (or 'kup') and a flow mark, so its end is handed to each of its parents through the flow
outbox of its own queue (services/flows.py, children_done.lua).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

import grpc

from queue_manager.v1 import jobs_pb2 as pb
from queue_manager.v1 import types_pb2
from queue_manager_server import convert, validate
from queue_manager_server.engine import Engine
from queue_manager_server.engine.children import ATTACHED, DEDUP, FINISHED, RESOLVED, Children
from queue_manager_server.engine.records import NewJob
from queue_manager_server.errors import InvalidArgument, QueueNotFound, Unavailable
from queue_manager_server.services.child_cycles import refuse_cycles
from queue_manager_server.services.errors import unary

# Children per call, and over a job's life: a wider fan-out is a workflow, or children that add their own.
MAX_CHILDREN = 1000
# The most of a child's result its parent is delivered with (ChildJob.result); a larger one is left out
# (truncated) and read with GetJob on the child. A parent of 1,000 children then carries at most ~1 MB.
CHILD_RESULT_LIMIT = 1024
# Adds of a child whose job existed but was removed before the parent could be attached to it, before the
# call gives up: each try adds it anew, so only a job removed again each time ends there.
ADD_TRIES = 3
# How child_outcome takes a child removed before it finished (its flow entry's state 'removed': common.lua
# on_removed); no JobState has this number.
REMOVED = -1
# A finished child's state as its flow entry (or children_attach.lua) names it.
_STATES = {
    b"completed": types_pb2.JOB_STATE_COMPLETED,
    b"failed": types_pb2.JOB_STATE_FAILED,
    b"cancelled": types_pb2.JOB_STATE_CANCELLED,
    b"removed": REMOVED,
}
# The reason a dedup child's holder is given when it was removed before its parent could be attached to it.
_GONE_BEFORE_ATTACHED = b"removed before its parent was attached to it"


@dataclass(slots=True)
class _Child:
    """A child of the call: its queue, its job, and "" (an id derived from its parent's), DEDUP and its dedup
    key, or its own id; then the id children_add derived or answered, the job it is, and whether it is still
    to add."""

    queue: str
    job: NewJob
    own: str
    derived: str = ""
    id: str = ""
    to_add: bool = True
    # Its job was gone when the parent was to be attached to it (removed since its add found it).
    lost: bool = False

    @property
    def dedup(self) -> bool:
        return self.own.startswith(DEDUP)


def child_outcome(queue: str, job_id: str, state: int, entry: dict[str, bytes]) -> bytes:
    """A finished child's outcome as its parent keeps it: an encoded Job holding one ChildJob. A child removed
    before it finished (state REMOVED) has no state, `removed` set and how it was removed as its reason."""
    child = types_pb2.ChildJob(
        job=types_pb2.JobRef(queue_name=queue, job_id=job_id),
        failed_reason=entry.get("err", b"").decode(errors="replace"),
    )
    if state == REMOVED:
        child.removed = True
    else:
        child.state = state  # type: ignore[assignment]
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
    lease_ended: Callable[[str, str, str], None] | None

    @unary
    async def WaitForChildren(
        self, request: pb.WaitForChildrenRequest, context: grpc.aio.ServicerContext
    ) -> pb.WaitForChildrenResponse:
        queue = validate.queue_name(request.queue_name)
        job_id = validate.job_id(request.job_id)
        token = request.lease_token
        if not token:
            raise InvalidArgument("lease_token", "is required: only the job's own run adds its children")
        jobs = self._children_in(request, queue, job_id)
        body, ct = b"", ""  # no new data: the job keeps its own
        if request.HasField("data"):
            body, ct = convert.payload_in(request.data, "data", self.max_payload)
        try:
            await self.engine.require_queues(list(dict.fromkeys(c.queue for c in jobs)))
        except QueueNotFound as exc:
            i = next(i for i, c in enumerate(jobs) if c.queue == exc.queue)
            raise InvalidArgument(f"children[{i}].queue_name", str(exc)) from None
        named = [(i, c.queue, c.own) for i, c in enumerate(jobs) if c.own]
        if named:  # a named job that waits for this one would leave both parked for ever
            await refuse_cycles(self.children, queue, job_id, named)
        recorded = await self.children.children_add(
            queue, job_id, token, MAX_CHILDREN, [(c.queue, c.own) for c in jobs]
        )
        parent = types_pb2.Job(
            parents=[
                types_pb2.ParentJob(
                    job=types_pb2.JobRef(queue_name=queue, job_id=job_id), state=types_pb2.JOB_STATE_ACTIVE
                )
            ]
        ).SerializeToString()
        for c, (child_id, how) in zip(jobs, recorded, strict=True):
            c.id = c.derived = child_id
            c.to_add = how != RESOLVED
            c.job.id = child_id
            c.job.extra["par"] = parent
            c.job.extra["flo"] = b"1"  # its end is handed to the parent (services/flows.py)
        finished = await self._add_children(parent, jobs)
        links = [(i, c.derived, c.queue, c.id) for i, c in enumerate(jobs) if c.to_add and c.dedup]
        if links:
            linked = await self.children.children_link(queue, job_id, token, links)
            for (i, *_), child_id in zip(links, linked, strict=True):
                jobs[i].id = child_id
        # A dedup child is attached only once the job has it recorded (an end handed on before would find no
        # child to count), those resolved by an earlier call too (it may have been lost before this step).
        dedup = [c for c in jobs if c.dedup]
        if dedup:
            finished += await self._attach(parent, dedup, lost_ok=True)
        if finished:  # the parent counts at once the end of a child that had ended before it was named
            await self.children.children_done(
                queue,
                [
                    (job_id, c.id, c.queue, child_outcome(c.queue, c.id, _STATES[entry["st"]], entry))
                    for c, entry in finished
                ],
            )
        parked = await self.children.children_wait(queue, job_id, token, ct, body)
        if self.lease_ended is not None:
            self.lease_ended(queue, job_id, token)
        return pb.WaitForChildrenResponse(
            children=[types_pb2.JobRef(queue_name=c.queue, job_id=c.id) for c in jobs],
            children_pending=parked.pending,
        )

    async def _add_children(self, parent: bytes, jobs: list[_Child]) -> list[tuple[_Child, dict[str, bytes]]]:
        """Adds the children to their queues and sets each child's id to the job it is. A child named by its
        own id that exists is that job, which gets the parent attached (children_attach); one with a dedup
        key is the key's holder, attached later. Returns the children that had finished already, with their
        outcomes."""
        finished: list[tuple[_Child, dict[str, bytes]]] = []
        todo = [c for c in jobs if c.to_add]
        for _ in range(ADD_TRIES):
            by_queue: dict[str, list[_Child]] = defaultdict(list)
            for c in todo:
                by_queue[c.queue].append(c)
            groups = list(by_queue.items())
            results = await self.engine.add_jobs_many([(q, [c.job for c in group]) for q, group in groups])
            existing: list[_Child] = []
            for (_, group), result in zip(groups, results, strict=True):
                if isinstance(result, Exception):
                    raise result  # the run stays active: repeated, the call adds what is missing
                for c, found, created in zip(group, result.ids, result.created, strict=True):
                    c.id = found
                    if not created and c.own != "" and not c.dedup:
                        existing.append(c)
            finished += await self._attach(parent, existing)
            todo = [c for c in existing if c.lost]
            for c in todo:  # removed since its add found it: add it again
                c.id, c.lost = c.job.id, False
            if not todo:
                return finished
        raise Unavailable("children were removed again each time they were added; call WaitForChildren again")

    async def _attach(
        self, parent: bytes, children: list[_Child], lost_ok: bool = False
    ) -> list[tuple[_Child, dict[str, bytes]]]:
        """Attaches the parent to existing jobs (children_attach), one script call per queue; returns those
        that had finished, with their outcomes. A job gone meanwhile is marked lost; with lost_ok it counts as
        removed (a dedup child's resolution is recorded already: its holder was removed since its add)."""
        by_queue: dict[str, list[_Child]] = defaultdict(list)
        for c in children:
            by_queue[c.queue].append(c)
        finished = []
        for child_queue, group in by_queue.items():
            answers = await self.children.children_attach(child_queue, [(c.id, parent) for c in group])
            for c, (code, entry) in zip(group, answers, strict=True):
                if code == FINISHED:
                    finished.append((c, entry))
                elif code != ATTACHED and lost_ok:
                    finished.append((c, {"st": b"removed", "err": _GONE_BEFORE_ATTACHED}))
                elif code != ATTACHED:
                    c.lost = True
        return finished

    def _children_in(self, request: pb.WaitForChildrenRequest, queue: str, job_id: str) -> list[_Child]:
        """The children to add, each checked as an add checks its job, with the id it names (if any)."""
        if not request.children:
            raise InvalidArgument("children", "add at least one child")
        if len(request.children) > MAX_CHILDREN:
            raise InvalidArgument(
                "children", f"at most {MAX_CHILDREN} children per call, got {len(request.children)}"
            )
        out = []
        named: dict[str, int] = {}
        for i, spec in enumerate(request.children):
            where = f"children[{i}]"
            child_queue = validate.queue_name(spec.queue_name, f"{where}.queue_name")
            options = spec.options if spec.HasField("options") else None
            job = convert.job_from(spec.name, spec.data, options, where, self.max_payload, name_part="name")
            own = job.id or (DEDUP + job.dedup_key if job.dedup_key else "")
            if job.id:
                if job.dedup_key:
                    raise InvalidArgument(
                        f"{where}.options.dedup",
                        "a child with its own job_id is that job; give it a job_id or a dedup key, not both",
                    )
                if job.id == job_id and child_queue == queue:
                    raise InvalidArgument(f"{where}.options.job_id", "a job cannot be its own child")
                if job.id in named:
                    raise InvalidArgument(
                        f"{where}.options.job_id",
                        f"{job.id!r} is named by children[{named[job.id]}] too; name each child once",
                    )
                named[job.id] = i
            out.append(_Child(child_queue, job, own))
        return out
