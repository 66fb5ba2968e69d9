"""Children added at run time: a running job adds child jobs and waits for them (WaitForChildren).

One method per Lua script, with the script's name and argument order (as in engine.py);
lua/includes/children.lua describes the fields they keep on the parent's hash. services/children.py runs
them in their order: record the children on the parent (children_add), add them to their queues, park the
parent (children_wait). services/flows.py hands each child's end to its parent (children_done).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from queue_manager_server.engine.engine import Engine, _i, _s
from queue_manager_server.errors import InvalidArgument, JobNotFound, LeaseNotHeld, QueueNotFound

NO_QUEUE, NOT_FOUND, LEASE_LOST, TOO_MANY = -1, -2, -3, -4
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
        self, queue: str, job_id: str, lease_token: str, most: int, child_queues: Sequence[str]
    ) -> list[str]:
        """Records children on the running job; returns their ids, in order.

        Raises:
            QueueNotFound, JobNotFound, LeaseNotHeld: as the names say.
            InvalidArgument: The job would have more than `most` children.
        """
        k = self.engine.keys(queue)
        r = await self.engine.scripts.run(
            "children_add", [k.meta], [k.job_prefix, queue, job_id, lease_token, most, *child_queues]
        )
        self._check(queue, job_id, _i(r[0]))
        if _i(r[0]) == TOO_MANY:
            raise InvalidArgument(
                "children",
                f"a job adds at most {most} children in all; job {job_id!r} has {_i(r[1])} already and this "
                f"call adds {len(child_queues)}",
            )
        return [_s(x) for x in r[1:]]

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

    @staticmethod
    def _check(queue: str, job_id: str, code: int) -> None:
        if code == NO_QUEUE:
            raise QueueNotFound(queue)
        if code == NOT_FOUND:
            raise JobNotFound(queue, job_id)
        if code == LEASE_LOST:
            raise LeaseNotHeld.lost(queue, job_id, "no child was added")
