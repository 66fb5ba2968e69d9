"""Flows: what follows a finished job in another queue — the next link of a chain, the next workflow steps.

A job in a flow carries ``flo`` (see engine/records.py). When it finishes, the finishing script copies its
outcome into a flow entry and queues the job's id on its queue's flow outbox (common.lua ``on_finished``),
atomically with the finish. A retry of such a job (RetryJob, RetryFailedJobs) replaces its entry with a
"retried" one (requeue.lua ``flow_retried``): a failure not carried out yet is never recorded, and a
workflow step reopens. `Flows.hand_off` then carries the entries out, a batch at a time (the chains' next
links added in one round trip), and clears them in one script call (``flow_done.lua``), unless a retry
rewrote one meanwhile.
The job ids of what it adds are derived from the finished job, so carrying an entry out twice (a server
killed between the add and the clear, the janitor replaying it meanwhile) adds nothing twice: the
successor exists exactly once. Nothing here needs two queues in one script, so it runs unchanged on a
Redis Cluster. A child a running job added (services/children.py) hands its outcome to that parent the same
way (children_done.lua, which records it once however often it is carried out), and to every other parent
that named it by its id or dedup key while it ran ('kup'); so does such a child removed before it finished
(an entry in the state REMOVED: common.lua on_removed), and a chain link or workflow step removed before it
finished ends its chain, or fails its step, with how it was removed as the reason.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import signal
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from queue_manager.v1 import types_pb2
from queue_manager_server import convert
from queue_manager_server.engine import Engine
from queue_manager_server.engine.children import Children
from queue_manager_server.engine.records import NewJob
from queue_manager_server.errors import QueueManagerError
from queue_manager_server.services.children import REMOVED as CHILD_REMOVED
from queue_manager_server.services.children import child_outcome
from queue_manager_server.services.workflows import Workflows

log = logging.getLogger("queue_manager_server.flows")

# The 'flo' of a chain's last link (engine/records.py).
LAST_LINK = b"e"
# The state of the entry of a flow job retried by hand (lua/includes/requeue.lua flow_retried): a workflow
# step reopens (services/workflows.py); a chain link's failure, if not carried out yet, is never recorded.
RETRIED = "retried"
# The state of the entry of a job removed before it finished (lua/includes/common.lua on_removed): it ends
# for the parents that waited for it (WaitForChildren); a workflow step ends failed, with how it was removed
# as its error (its on_failure branch runs, the run ends failed), and a chain link stops its chain, as a
# cancelled link does (nothing after it runs; the chain's first job says why).
REMOVED = "removed"
# The outcome a workflow step removed before it finished is recorded with: its job will never finish, and
# "failed" is the outcome whose branch and run state a user of BullMQ or Hatchet expects for it.
REMOVED_STEP = "failed"
# Entries carried out per outbox read.
HAND_OFF_BATCH = 100
# Testing knob (qm serve --test-crash-point): the process kills itself with SIGKILL at this point of a
# hand-off, exactly as `kill -9` would, so crash tests hit the window between two writes every time.
CRASH_POINTS = ("before-hand-off", "after-successor")
_STATES = {
    "completed": types_pb2.JOB_STATE_COMPLETED,
    "failed": types_pb2.JOB_STATE_FAILED,
    "cancelled": types_pb2.JOB_STATE_CANCELLED,
}


@dataclass(slots=True)
class _Link:
    """A chain's next link, to add: for the entry at `index` of a batch, of the job `after` that completed."""

    index: int
    after: str
    queue: str
    job: NewJob
    root: types_pb2.JobRef


def _waiting_parents(view: types_pb2.Job, entry: dict[str, bytes]) -> list[types_pb2.ParentJob]:
    """The parents that wait for a finished job (WaitForChildren): the one that added it ('par', unless the
    job is a chain link or a workflow step, whose 'par' names what came before) and those that named it
    when it existed already ('kup': lua/children_attach.lua)."""
    out = []
    if view.parents and not view.HasField("chain_root") and not view.HasField("workflow"):
        out.append(view.parents[0])
    kup = entry.get("kup")
    if kup:
        out += types_pb2.Job.FromString(kup).parents
    return out


def successor_id(queue: str, job_id: str) -> str:
    """The id of the chain link that follows a job: derived, so adding it twice is a no-op."""
    return hashlib.blake2b(f"{queue}\0{job_id}".encode(), digest_size=12).hexdigest()


class Flows:
    """Carries out flow hand-offs for the jobs of any queue."""

    def __init__(
        self, engine: Engine, workflows: Workflows, payload_limit: int, crash_point: str = ""
    ) -> None:
        self.engine = engine
        self.workflows = workflows
        self.payload_limit = payload_limit
        self.crash_point = crash_point
        self.children = Children(engine)
        # Queues with a hand-off running in this process, and whether more finished jobs came meanwhile:
        # one pass at a time per queue (two would carry the same entries out twice, harmless but wasted).
        self._busy: dict[str, bool] = {}
        # Set when the queue's pass in this process ends (for callers that wait for it).
        self._ended: dict[str, asyncio.Event] = {}

    async def hand_off(self, queue: str, wait: bool = False) -> int:
        """Carries out the queue's pending hand-offs; returns how many (0 when another call is at it:
        that one also takes what this caller saw). wait: when another call is at it, return once it has
        ended (a retry's caller then reads its reopened workflow step)."""
        if queue in self._busy:
            self._busy[queue] = True
            if wait:
                await self._ended[queue].wait()
            return 0
        self._busy[queue] = False
        ended = self._ended[queue] = asyncio.Event()
        done = 0
        try:
            while True:
                entries = await self.engine.pending_flows(queue, HAND_OFF_BATCH)
                if entries:
                    self._maybe_crash("before-hand-off")
                    children = await self._carry_out(queue, entries)
                    self._maybe_crash("after-successor")
                    await self.engine.flows_done(
                        queue,
                        [
                            (
                                job_id,
                                types_pb2.Job(children=started).SerializeToString() if started else b"",
                                entry.get("st", b"").decode(),
                            )
                            for (job_id, entry), started in zip(entries, children, strict=True)
                        ],
                    )
                done += len(entries)
                if len(entries) < HAND_OFF_BATCH and not self._busy[queue]:
                    return done
                self._busy[queue] = False
        finally:
            del self._busy[queue]
            del self._ended[queue]
            ended.set()

    def _maybe_crash(self, point: str) -> None:
        if self.crash_point == point:
            log.critical("test crash point reached: killing this process", extra={"point": point})
            os.kill(os.getpid(), signal.SIGKILL)

    async def _carry_out(
        self, queue: str, entries: Sequence[tuple[str, dict[str, bytes]]]
    ) -> list[list[types_pb2.JobRef]]:
        """Carries out a batch of the queue's entries; returns the children each started. The chains' next
        links are added together, in one round trip (one per entry made chains a tenth as fast as plain
        jobs)."""
        children: list[list[types_pb2.JobRef]] = [[] for _ in entries]
        links: list[_Link] = []
        steps: dict[str, list[tuple[int, str, str, dict[str, bytes]]]] = defaultdict(list)
        stopped: list[tuple[types_pb2.JobRef, str]] = []
        ended: dict[str, list[tuple[str, str, str, bytes]]] = defaultdict(list)
        for i, (job_id, entry) in enumerate(entries):
            if not entry:  # cleared by another server meanwhile
                continue
            state = entry.get("st", b"").decode()
            view = types_pb2.Job.FromString(entry.get("par", b""))
            chain = types_pb2.JobOptions.FromString(entry.get("chn", b"")).chain_to
            root = (
                view.chain_root
                if view.HasField("chain_root")
                else types_pb2.JobRef(queue_name=queue, job_id=job_id)
            )
            if view.HasField("workflow"):
                outcome_state = REMOVED_STEP if state == REMOVED else state
                steps[view.workflow.run_id].append((i, view.workflow.step_key, outcome_state, entry))
            if state == RETRIED:  # back to waiting: a chain goes on when it completes
                continue
            ups = {(p.job.queue_name, p.job.job_id) for p in _waiting_parents(view, entry)}
            if ups:  # a child added at run time (services/children.py): its end goes to each parent
                ended_as = CHILD_REMOVED if state == REMOVED else _STATES[state]
                outcome = child_outcome(queue, job_id, ended_as, entry)
                for up_queue, up_id in sorted(ups):
                    ended[up_queue].append((up_id, job_id, queue, outcome))
            if state == REMOVED and not view.HasField("chain_root"):
                continue
            if state == "completed" and chain:
                job = self._next_link(queue, job_id, entry, root, chain)
                links.append(_Link(i, job_id, chain[0].queue_name, job, root))
            elif state != "completed" and view.HasField("chain_root"):
                name = entry.get("name", b"").decode()
                reason = entry.get("err", b"").decode() or state
                stopped.append((root, f"link {queue}/{job_id} ({name}) {state}: {reason}"))
        if steps:
            await self._finish_steps(steps, children)
        for root, reason in stopped:
            await self.engine.chain_failed(root.queue_name, root.job_id, reason)
        if links:
            await self._add_links(queue, links, children)
        for parent_queue, items in ended.items():
            await self.children.children_done(parent_queue, items)
        return children

    async def _finish_steps(
        self,
        steps: dict[str, list[tuple[int, str, str, dict[str, bytes]]]],
        children: list[list[types_pb2.JobRef]],
    ) -> None:
        """Records finished workflow steps and starts what follows them, the steps of all runs together
        (Workflows.steps_finished: shared round trips), one run's steps in the order they finished: the
        first of each run, then the second of those with more, and so on. steps: per run id, (index in the
        batch, step key, state, entry)."""
        rounds = max(len(items) for items in steps.values())
        for r in range(rounds):
            batch = [(run_id, items[r]) for run_id, items in steps.items() if len(items) > r]
            started = await self.workflows.steps_finished(
                [(run_id, key, state, entry) for run_id, (_, key, state, entry) in batch]
            )
            for (_, (i, _, _, _)), refs in zip(batch, started, strict=True):
                children[i] += refs

    def _next_link(
        self,
        queue: str,
        job_id: str,
        entry: dict[str, bytes],
        root: types_pb2.JobRef,
        chain: Sequence[types_pb2.ChainLink],
    ) -> NewJob:
        """The job of the chain's next link, which follows the job `job_id` that completed."""
        link, rest = chain[0], chain[1:]
        job = convert.job_from(link.job_name, link.data, link.options, "chain_to[0]", self.payload_limit)
        job.id = job.id or successor_id(queue, job_id)
        # The predecessor's attributes, its trace context among them: the whole chain is one trace.
        inherited = types_pb2.JobMetadata.FromString(entry.get("md", b""))
        job.metadata = convert.inherit_metadata(job.metadata, inherited.attributes)
        parent = types_pb2.ParentJob(
            job=types_pb2.JobRef(queue_name=queue, job_id=job_id),
            state=_STATES["completed"],
            result=convert.payload_out(entry.get("res"), entry.get("rct", b"").decode(), json_view=False),
        )
        job.extra["par"] = types_pb2.Job(parents=[parent], chain_root=root).SerializeToString()
        if rest:
            job.extra["flo"] = b"1"
            job.extra["chn"] = types_pb2.JobOptions(chain_to=rest).SerializeToString()
        else:
            # The last link: its completion has nothing to hand on (no hand-off, no entry to clear); its
            # failure or cancel still stops the chain on the first job.
            job.extra["flo"] = LAST_LINK
        return job

    async def _add_links(
        self, queue: str, links: list[_Link], children: list[list[types_pb2.JobRef]]
    ) -> None:
        """Adds the next links of chains (one add_jobs call per queue they go to, all in one round trip); a
        link whose queue refuses it (gone since the chain was added) stops its chain."""
        by_queue: dict[str, list[_Link]] = defaultdict(list)
        for link in links:
            by_queue[link.queue].append(link)
        groups = list(by_queue.items())
        results = await self.engine.add_jobs_many([(q, [link.job for link in group]) for q, group in groups])
        for (link_queue, group), result in zip(groups, results, strict=True):
            if isinstance(result, QueueManagerError):
                for link in group:
                    log.warning(
                        "chain stopped", extra={"queue": queue, "job_id": link.after, "error": str(result)}
                    )
                    await self.engine.chain_failed(
                        link.root.queue_name,
                        link.root.job_id,
                        f"chain stopped after {queue}/{link.after}: {result}",
                    )
            elif isinstance(result, Exception):
                raise result  # Redis failed: the entries stay queued for the next pass
            else:
                for link in group:
                    children[link.index].append(types_pb2.JobRef(queue_name=link_queue, job_id=link.job.id))
