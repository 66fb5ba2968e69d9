"""The held connections of one kind of hot call on a Redis/Valkey Cluster: one per node (engine/direct.py
`NodeConnection`), made when a batch first goes to that node.

A batch whose commands all go to one node (the usual case: one queue's calls, every key under its ``{queue}``
hash tag, or several queues that live on the same node) is sent on that node's held connection, with none of
the cluster pipeline's routing, pool and retry work on the way. Anything else answers None, and the caller
sends the batch as a cluster pipeline (ClusterBatch), which routes each command by its slot and follows
redirections:

- commands for several nodes, a key no node serves (by redis-py's map of the slots), or a keyless command;
- the node's held connection busy with another batch, or the node out of connections;
- the held connection failed (it is handed back to the node: a failover may have moved the slot, and the
  pipeline path finds out and updates the map).

When the node answers some commands with a redirection (MOVED, ASK: the slot moved or is moving; TRYAGAIN;
CLUSTERDOWN) those commands did nothing there: they alone are sent again as a cluster pipeline and their
replies put in place, and the node's held connection is handed back (the next batch for the slot goes where
redis-py's updated map says). The other commands' replies stand.

The connections are held outside the client's gate (engine/clients.py): app.py makes the gate smaller by the
held connections, so a node's pool never runs out.
"""

from __future__ import annotations

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

    held: int = 0  # answered on a node's held connection (redirected commands included)
    busy: int = 0  # sent as a pipeline: that node's held connection was busy with another batch
    spread: int = 0  # sent as a pipeline: commands for several nodes, or no node known for a key
    failed: int = 0  # sent as a pipeline: the held connection failed, or its node had none left
    redirected: int = 0  # held batches some of whose commands were redirected and sent again as a pipeline


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

    def _node_of(self, commands: Sequence[Sequence[Any]]) -> ClusterNode | None:
        """The primary every command goes to, by its first key (EVALSHA sha numkeys key…); None when they go
        to several, or one has no key or a key no node is known to serve."""
        cache = self._redis.nodes_manager.slots_cache
        node: ClusterNode | None = None
        for command in commands:
            if len(command) < 4 or not command[2]:
                return None
            key = command[3]
            slot = self._slots.get(key)
            if slot is None:
                slot = self._slots[key] = key_slot(key.encode() if isinstance(key, str) else key)
            serving = cache.get(slot)
            if not serving or (node is not None and serving[0] is not node):
                return None
            node = serving[0]
        return node

    async def run(self, commands: Sequence[Sequence[Any]]) -> list[Any] | None:
        """The replies of `commands` (error replies in place), or None: send them as a pipeline."""
        node = self._node_of(commands)
        if node is None:
            self.stats.spread += 1
            return None
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
            await self._send_again(held, commands, replies, redirected)
        return replies

    def _forget(self, held: NodeConnection) -> None:
        held.drop()
        if self._held.get(held.node.name) is held:
            del self._held[held.node.name]

    async def _send_again(
        self,
        held: NodeConnection,
        commands: Sequence[Sequence[Any]],
        replies: list[Any],
        redirected: list[int],
    ) -> None:
        """Hands back the node's held connection, and sends the redirected commands again as a cluster
        pipeline (which follows MOVED and ASK and updates redis-py's map of the slots), their replies put in
        place."""
        self.stats.redirected += 1
        self._forget(held)
        pipe = ClusterBatch(self._redis)  # type: ignore[abstract]
        for i in redirected:
            pipe.execute_command(*commands[i])
        for i, reply in zip(redirected, await pipe.execute(raise_on_error=False), strict=True):
            replies[i] = reply
