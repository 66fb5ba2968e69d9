"""Children added at run time: a running job adds child jobs and waits for them (WaitForChildren).

One method per Lua script, with the script's name and argument order (as in engine.py);
lua/includes/children.lua describes the fields they keep on the parent's hash. services/children.py runs
them in their order: record the children on the parent (children_add), add them to their queues and attach
the parent to those that existed (children_attach), record the dedup children as resolved (children_link),
park the parent (children_wait). services/flows.py hands each child's end to its parents (children_done).
Before any of them, children_waits reads what the jobs it names wait for (a cycle is refused unwritten).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from queue_manager_server.engine.engine import Engine, _b, _i, _s
from queue_manager_server.engine.records import job_state
from queue_manager_server.errors import InvalidArgument, JobNotFound, LeaseNotHeld, QueueNotFound

NO_QUEUE, NOT_FOUND, LEASE_LOST, TOO_MANY, OTHER_QUEUE, HELD_BY_ITSELF = -1, -2, -3, -4, -5, -6
# How children_add.lua answers each child: recorded; a dedup key to add under the derived id, then record
# (children_link); a dedup key resolved by an earlier call (nothing to add).
RECORDED, TO_RESOLVE, RESOLVED = 0, 1, 2
# What children_add takes for a child with a dedup key: this, then the key (no job id has a '#').
DEDUP = "#"
# How children_attach.lua answers each job.
ATTACHED, FINISHED = 1, 2
# What children_wait.lua answers besides a refusal.
PARKED, WAITING, CANCELLED = 1, 2, 3


@dataclass(slots=True)
class Parked:
    """What ending a run to wait for its children did: a code (PARKED, WAITING, CANCELLED) and the
    children not finished yet."""

    code: int
    pending: int


class Children:
    """The scripts of children added at run time."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    async def children_add(
        self, queue: str, job_id: str, lease_token: str, most: int, children: Sequence[tuple[str, str]]
    ) -> list[tuple[str, int]]:
        """Records children on the running job: per child (its queue, and "" for an id derived here, DEDUP
        and its dedup key, or its own job id). Returns per child, in order, its id and RECORDED, TO_RESOLVE (a
        dedup key to add under this derived id) or RESOLVED (the job its key resolved to in an earlier call).

        Raises:
            QueueNotFound, JobNotFound, LeaseNotHeld: as the names say.
            InvalidArgument: The job would have more than `most` children, an own id names one of its
                children in another queue, or a dedup key is the job's own.
        """
        k = self.engine.keys(queue)
        args: list[str | int] = [k.job_prefix, queue, job_id, lease_token, most]
        for child_queue, own in children:
            args += [child_queue, own]
        r = await self.engine.scripts.run("children_add", [k.meta], args)
        self._check(queue, job_id, _i(r[0]))
        if _i(r[0]) == TOO_MANY:
            raise InvalidArgument(
                "children",
                f"a job adds at most {most} children in all; job {job_id!r} has {_i(r[1])} already and this "
                f"call adds {len(children)}",
            )
        if _i(r[0]) == OTHER_QUEUE:
            i = _i(r[1]) - 1
            raise InvalidArgument(
                f"children[{i}].options.job_id",
                f"job {job_id!r} has a child {children[i][1]!r} in queue {_s(r[2])!r} already; its children "
                "need ids of their own across queues",
            )
        if _i(r[0]) == HELD_BY_ITSELF:
            raise InvalidArgument(
                f"children[{_i(r[1]) - 1}].options.dedup",
                f"the key is held by job {job_id!r} itself, which cannot wait for itself",
            )
        return [(_s(r[i]), _i(r[i + 1])) for i in range(1, len(r), 2)]

    async def children_link(
        self, queue: str, job_id: str, lease_token: str, links: Sequence[tuple[int, str, str, str]]
    ) -> list[str]:
        """Records the children added with a dedup key under the jobs their keys resolved to: per child (its
        place in the call, the id children_add derived for it, its queue, the id it resolved to). Returns the
        id of the job each child is: the one it resolved to, or the derived one when that job has finished
        already (added by an earlier call), or what an earlier call recorded.

        Raises:
            QueueNotFound, JobNotFound, LeaseNotHeld: as the names say.
            InvalidArgument: A resolved id is that of one of the job's children in another queue.
        """
        k = self.engine.keys(queue)
        args: list[str] = [k.job_prefix, job_id, lease_token]
        for _, derived, child_queue, resolved in links:
            args += [derived, child_queue, resolved]
        r = await self.engine.scripts.run("children_link", [k.meta], args)
        self._check(queue, job_id, _i(r[0]))
        if _i(r[0]) == OTHER_QUEUE:
            i, _, child_queue, resolved = links[_i(r[1]) - 1]
            raise InvalidArgument(
                f"children[{i}].options.dedup",
                f"the key resolved to job {resolved!r} of queue {child_queue!r}, and job {job_id!r} has a "
                f"child of that id in queue {_s(r[2])!r} already",
            )
        return [_s(x) for x in r[1:]]

    async def children_attach(
        self, queue: str, items: Sequence[tuple[str, bytes]]
    ) -> list[tuple[int, dict[str, bytes]]]:
        """Makes existing jobs of `queue` children of a running job in another call: items are (job id, the
        parent as an encoded Job holding one ParentJob). Returns per job ATTACHED, FINISHED (with its flow
        entry's st, res, rct and err) or NOT_FOUND.

        Raises:
            QueueNotFound: The queue is not registered.
        """
        k = self.engine.keys(queue)
        args: list[str | bytes] = [k.job_prefix]
        for child_id, parent in items:
            args += [child_id, parent]
        r = await self.engine.scripts.run("children_attach", [k.meta], args)
        if _i(r[0]) == NO_QUEUE:
            raise QueueNotFound(queue)
        out = []
        for i in range(1, len(r), 5):
            entry = {"st": _b(r[i + 1]), "res": _b(r[i + 2]), "rct": _b(r[i + 3]), "err": _b(r[i + 4])}
            out.append((_i(r[i]), entry))
        return out

    async def children_wait(
        self, queue: str, job_id: str, lease_token: str, content_type: str = "", data: bytes = b""
    ) -> Parked:
        """Ends the run and parks the job until its children have finished (or makes it waiting when they
        have); with `content_type`, its data is replaced in the same step."""
        k = self.engine.keys(queue)
        r = await self.engine.scripts.run(
            "children_wait",
            [k.meta, k.active, k.delayed, k.waiting],
            [k.job_prefix, self.engine.channel, queue, job_id, lease_token, content_type, data],
        )
        self._check(queue, job_id, _i(r[0]))
        return Parked(_i(r[0]), _i(r[1]))

    async def children_done(self, queue: str, items: Sequence[tuple[str, str, str, bytes]]) -> int:
        """Records finished children on their parents in `queue`: (parent id, child id, child queue, outcome
        as an encoded Job holding one ChildJob). Returns how many parents it made waiting."""
        k = self.engine.keys(queue)
        args: list[str | bytes] = [k.job_prefix, self.engine.channel, queue]
        for parent_id, child_id, child_queue, outcome in items:
            args += [parent_id, child_id, child_queue, outcome]
        return _i(await self.engine.scripts.run("children_done", [k.meta, k.delayed, k.waiting], args))

    async def children_waits(
        self, queue: str, jobs: Sequence[str]
    ) -> list[tuple[str, list[tuple[str, str]]]]:
        """What jobs of `queue` wait for (read only): per job (its id, or DEDUP and a dedup key, for the job
        holding it), its id ("" when there is none) and the (queue, id) of each child it waits for."""
        r = await self.engine.scripts.run(
            "children_waits", [self.engine.keys(queue).meta], [self.engine.keys(queue).job_prefix, *jobs]
        )
        out: list[tuple[str, list[tuple[str, str]]]] = []
        i = 0
        while i < len(r):
            n = _i(r[i + 1])
            out.append((_s(r[i]), [(_s(r[j]), _s(r[j + 1])) for j in range(i + 2, i + 2 + 2 * n, 2)]))
            i += 2 + 2 * n
        return out

    async def child_states(self, children: Sequence[tuple[str, str]]) -> list[str]:
        """The current states of jobs (queue, id), "" for one that is gone: one pipelined read (on a Cluster
        split by node, engine/store.py), for GetJob only, never on the claim or completion path."""
        pipe = self.engine.store.pipeline()
        for queue, job_id in children:
            pipe.hmget(self.engine.keys(queue).job(job_id), "st", "ts")
        rows = await self.engine.store.execute(pipe)
        return [job_state(st, ts is not None) for st, ts in rows]

    @staticmethod
    def _check(queue: str, job_id: str, code: int) -> None:
        if code == NO_QUEUE:
            raise QueueNotFound(queue)
        if code == NOT_FOUND:
            raise JobNotFound(queue, job_id)
        if code == LEASE_LOST:
            raise LeaseNotHeld.lost(queue, job_id, "no child was added")
