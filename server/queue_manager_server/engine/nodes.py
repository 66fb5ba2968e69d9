"""The held connections of one kind of hot call on a Redis/Valkey Cluster: one per node (engine/direct.py
`NodeConnection`), made when a batch first goes to that node.

A batch's commands are grouped by the node that serves each one's first key (one queue's keys share its
``{queue}`` hash tag, so the usual batch, one queue's calls, goes to one node). Each node's commands are sent
on that node's held connection, with none of the cluster pipeline's routing, pool and retry work on the way;
a batch for several nodes (the coalesced adds of queues on different nodes) sends each node's part at once,
as a cluster pipeline does. What cannot go so is sent as a cluster pipeline (ClusterBatch), which routes each
command by its slot and follows redirections:

- a whole batch with a keyless command or a key no node serves (by redis-py's map of the slots): None is
  answered, and the caller sends it;
- a node's part when that node's held connection is busy with another batch, or the node has no connection
  left to hold, or the held connection failed (it is handed back to the node: a failover may have moved the
  slot, and the pipeline path finds out and updates the map).

When the node answers some commands with a redirection (MOVED, ASK: the slot moved or is moving; TRYAGAIN;
CLUSTERDOWN) those commands did nothing there: they alone are sent again as a cluster pipeline and their
replies put in place, and the node's held connection is handed back (the next batch for the slot goes where
redis-py's updated map says). The other commands' replies stand.

The connections are held outside the client's gate (engine/clients.py): app.py makes the gate smaller by the
held connections, so a node's pool never runs out.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.crc import key_slot
from redis.exceptions import AskError, ClusterDownError, MaxConnectionsError, TryAgainError

from queue_manager_server.engine.clients import ClusterBatch
from queue_manager_server.engine.direct import NodeConnection

# Replies that mean the node did not run the command (MovedError is an AskError).
REDIRECTS = (AskError, TryAgainError, ClusterDownError)


@dataclass
class HeldStats:
    """What became of the hot calls' batches on a Cluster (one count per batch, for every kind together)."""

    # Per node a batch went to (a batch for several nodes counts once on each):
    held: int = 0  # answered on the node's held connection (redirected commands included)
    busy: int = 0  # sent as a pipeline: the node's held connection was busy with another batch
    failed: int = 0  # sent as a pipeline: the held connection failed, or its node had none left
    redirected: int = 0  # held, and some commands were redirected and sent again as a pipeline
    # Per batch:
    unrouted: int = 0  # sent as a pipeline: a command without a key, or a key no node is known to serve


class NodesHeld:
    """One kind of hot call's held connections on a Cluster (see the module docstring)."""

    def __init__(self, redis: RedisCluster, slots: dict[str, int], stats: HeldStats) -> None:
        """Args:
        redis: The Cluster's client.
        slots: The hash slot of each key seen, shared by the store's holders (keys are few: each queue's).
        stats: The counts to add to, shared likewise.
        """
        self._redis = redis
        self._slots = slots
        self.stats = stats
        self._held: dict[str, NodeConnection] = {}

    def _by_node(self, commands: Sequence[Sequence[Any]]) -> dict[ClusterNode, list[int]] | None:
        """The indexes of the commands each primary serves, by each command's first key (EVALSHA sha numkeys
        key…); None when a command has no key, or a key no node is known to serve."""
        cache = self._redis.nodes_manager.slots_cache
        groups: dict[ClusterNode, list[int]] = {}
        for i, command in enumerate(commands):
            if len(command) < 4 or not command[2]:
                return None
            key = command[3]
            slot = self._slots.get(key)
            if slot is None:
                slot = self._slots[key] = key_slot(key.encode() if isinstance(key, str) else key)
            serving = cache.get(slot)
            if not serving:
                return None
            group = groups.get(serving[0])
            if group is None:
                groups[serving[0]] = [i]
            else:
                group.append(i)
        return groups

    async def run(self, commands: Sequence[Sequence[Any]]) -> list[Any] | None:
        """The replies of `commands` (error replies in place), or None: send them as a pipeline."""
        groups = self._by_node(commands)
        if groups is None:
            self.stats.unrouted += 1
            return None
        if len(groups) == 1:
            (node,) = groups
            return await self._on(node, commands)
        return await self._on_each(groups, commands)

    async def _on_each(
        self, groups: dict[ClusterNode, list[int]], commands: Sequence[Sequence[Any]]
    ) -> list[Any] | None:
        """A batch for several nodes: each node's commands on its held connection, at once (as a cluster
        pipeline sends each node's part at once); the parts that could not go so go as one pipeline."""
        parts = await asyncio.gather(
            *(self._on(node, [commands[i] for i in indexes]) for node, indexes in groups.items())
        )
        replies: list[Any] = [None] * len(commands)
        left: list[int] = []
        for indexes, part in zip(groups.values(), parts, strict=True):
            if part is None:
                left += indexes
                continue
            for i, reply in zip(indexes, part, strict=True):
                replies[i] = reply
        if len(left) == len(commands):
            return None
        if left:
            await self._pipelined(commands, replies, sorted(left))
        return replies

    async def _on(self, node: ClusterNode, commands: Sequence[Sequence[Any]]) -> list[Any] | None:
        """The replies of commands that all go to `node`, sent on its held connection; None when they were not
        sent there (busy, failed)."""
        held = self._held.get(node.name)
        if held is None or held.node is not node:  # first use, or redis-py made the node anew
            if held is not None and not held.busy:
                held.drop()
            held = self._held[node.name] = NodeConnection(node)
        try:
            replies = await held.run(commands)
        except MaxConnectionsError:  # the node had no connection left to hold: the pipeline waits its turn
            replies = None
        if replies is None:
            if held.busy:  # with another batch (one held connection sends one batch at a time)
                self.stats.busy += 1
            else:
                self._forget(held)
                self.stats.failed += 1
            return None
        self.stats.held += 1
        redirected = [i for i, r in enumerate(replies) if isinstance(r, REDIRECTS)]
        if redirected:
            # The commands redirected did nothing on this node; the next batch for their slot goes where
            # redis-py's map, updated by the pipeline that follows the redirection, says.
            self.stats.redirected += 1
            self._forget(held)
            await self._pipelined(commands, replies, redirected)
        return replies

    def _forget(self, held: NodeConnection) -> None:
        held.drop()
        if self._held.get(held.node.name) is held:
            del self._held[held.node.name]

    async def _pipelined(
        self, commands: Sequence[Sequence[Any]], replies: list[Any], which: list[int]
    ) -> None:
        """Sends the commands at the indexes `which` as one cluster pipeline (which follows MOVED and ASK and
        updates redis-py's map of the slots), their replies put in place."""
        pipe = ClusterBatch(self._redis)  # type: ignore[abstract]
        for i in which:
            pipe.execute_command(*commands[i])
        for i, reply in zip(which, await pipe.execute(raise_on_error=False), strict=True):
            replies[i] = reply
