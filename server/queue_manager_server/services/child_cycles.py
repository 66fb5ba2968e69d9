"""Cycles among children added at run time: a job must not name as its child a job that waits for it.

A running job that names an existing job as its child (WaitForChildren with a child's own job_id or dedup
key) waits for that job. If that job already waits for the running one, directly or through further children
(a child of a child…), both would stay parked for ever: the call is refused with FAILED_PRECONDITION, naming
the child and the path, before anything is written. The walk reads what each job waits for
(children_waits.lua), one level at a time and one script call per queue of the level (each on its queue's
hash slot, so it works on a Redis Cluster), the queues of a level in parallel. It is bounded: at most
WALK_DEPTH levels and WALK_JOBS jobs read; past either bound it stops and the call is accepted (a cycle
longer than that is not seen, and both jobs wait until promoted, as before). It reads before the call
writes and takes no lock, so two jobs naming each other in calls that run at the same moment are not
refused.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Sequence
from typing import NoReturn

from queue_manager_server.engine.children import DEDUP, Children
from queue_manager_server.errors import WrongState

# How far the walk goes: levels of children below the named ones, and jobs read in all. A job has at most
# 1,000 children, so a fan-out tree of a few levels reaches the job bound first; each job read costs the
# store a few microseconds, so the bound keeps a call's walk to tens of milliseconds.
WALK_DEPTH = 32
WALK_JOBS = 10_000
# Jobs read per script call: a wide level is read in several short calls, none holding the store long.
WALK_CHUNK = 1_000

_Node = tuple[str, str]  # (queue, job id)


async def refuse_cycles(
    children: Children, queue: str, job_id: str, named: Sequence[tuple[int, str, str]]
) -> None:
    """Raises WrongState when a child the job names waits, through its own children, for the job itself.

    Args:
        children: The children scripts.
        queue: The job's queue.
        job_id: The job adding children.
        named: Per child named by its own id or a dedup key: its place in the call, its queue, and its id
            (or DEDUP and the key).
    """
    target: _Node = (queue, job_id)
    via: dict[_Node, _Node | None] = {}  # how the walk reached each job: the job that waits for it
    origin: dict[_Node, int] = {}  # the child of the call each job was reached from
    frontier: dict[str, list[str]] = defaultdict(list)
    starts: dict[tuple[str, str], int] = {}  # the first place in the call naming each job
    for i, child_queue, own in named:
        if (child_queue, own) not in starts:
            starts[(child_queue, own)] = i
            frontier[child_queue].append(own)
    queued, first = sum(len(items) for items in frontier.values()), True
    for _ in range(WALK_DEPTH + 1):
        if not frontier:
            return
        level = [
            (q, items[at : at + WALK_CHUNK])
            for q, items in frontier.items()
            for at in range(0, len(items), WALK_CHUNK)
        ]
        answers = await asyncio.gather(*(children.children_waits(q, items) for q, items in level))
        frontier = defaultdict(list)
        for (child_queue, items), rows in zip(level, answers, strict=True):
            for item, (found, waits_for) in zip(items, rows, strict=True):
                node = (child_queue, found)
                if not found or node == target:  # no such job, or the job itself (refused when recorded)
                    continue
                if first:
                    if node in via:
                        continue
                    via[node], origin[node] = None, starts[(child_queue, item)]
                for next_node in waits_for:
                    if next_node == target:
                        _refuse(named, origin[node], [*_path(via, node), target])
                    if next_node not in via and queued < WALK_JOBS:
                        via[next_node], origin[next_node] = node, origin[node]
                        frontier[next_node[0]].append(next_node[1])
                        queued += 1
        first = False


def _path(via: dict[_Node, _Node | None], node: _Node) -> list[_Node]:
    """The jobs from a named child down to `node`, each waiting for the next."""
    out = [node]
    while (up := via[out[-1]]) is not None:
        out.append(up)
    return out[::-1]


def _refuse(named: Sequence[tuple[int, str, str]], origin: int, path: list[_Node]) -> NoReturn:
    i, _, own = next(n for n in named if n[0] == origin)
    field = f"children[{i}].options.{'dedup' if own.startswith(DEDUP) else 'job_id'}"
    (child_queue, child), (queue, job_id) = path[0], path[-1]
    steps = " -> ".join(f"{q}/{j}" for q, j in path)
    raise WrongState(
        f"{field}: job {child!r} of queue {child_queue!r} waits for job {job_id!r} of queue {queue!r} "
        f"(the job adding it) through {steps}; naming it as a child would leave both waiting for ever"
    )
