"""The Redis clients the engine runs on: one server's (redis.asyncio.Redis) or a Redis/Valkey Cluster's.

For a Cluster, redis-py's RedisCluster keeps a pool per node that raises MaxConnectionsError once it is full,
where the one-server client's BlockingConnectionPool waits for a free connection (app.py). `GatedCluster`
puts a gate in front instead: a command or a pipeline waits (up to the Redis timeout) for one of `permits`
turns, and each turn uses at most one connection of each node; the permits leave out the connections held
outside the gate (engine/nodes.py, and the event subscription: app.py), so a node's pool never runs out. Its
pipelines (`ClusterBatch`) keep the commands they were given, so what a node refuses NOSCRIPT (a restart or
failover emptied its script cache) can be sent again (engine/store.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, TypeAlias

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.asyncio.cluster import ClusterPipeline, RedisCluster
from redis.exceptions import MaxConnectionsError

Client: TypeAlias = Redis | RedisCluster
Pipe: TypeAlias = Pipeline | ClusterPipeline


class Gate:
    """At most `permits` Redis calls under way at once; a call waits for its turn up to `timeout_s`."""

    def __init__(self, permits: int, timeout_s: float) -> None:
        self._turns = asyncio.Semaphore(permits)
        self._timeout_s = timeout_s

    async def __aenter__(self) -> None:
        try:
            async with asyncio.timeout(self._timeout_s):
                await self._turns.acquire()
        except TimeoutError:
            raise MaxConnectionsError(
                "no Redis connection came free in time (QM_REDIS_TIMEOUT_MS); every one of "
                "QM_REDIS_MAX_CONNECTIONS is busy"
            ) from None

    async def __aexit__(self, *exc: object) -> None:
        self._turns.release()


class GatedCluster(RedisCluster):
    """A RedisCluster whose commands and pipelines take turns at a `Gate` (see the module docstring)."""

    def __init__(self, gate: Gate, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.gate = gate

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        async with self.gate:
            return await super().execute_command(*args, **kwargs)

    def pipeline(self, transaction: Any | None = None, shard_hint: Any | None = None) -> ClusterBatch:
        if transaction or shard_hint:
            raise ValueError("the engine's cluster pipelines are never transactions")
        return ClusterBatch(self)  # type: ignore[abstract]


class ClusterBatch(ClusterPipeline):
    """A cluster pipeline (never a transaction) that keeps its commands (`stack`) and takes its turn at its
    client's gate, if any, to be sent."""

    def __init__(self, client: RedisCluster) -> None:
        super().__init__(client, transaction=False)
        self.stack: list[Sequence[Any]] = []
        self._gate = client.gate if isinstance(client, GatedCluster) else None

    def execute_command(self, *args: Any, **kwargs: Any) -> ClusterBatch:
        self.stack.append(args)
        super().execute_command(*args, **kwargs)
        return self

    async def execute(self, raise_on_error: bool = True, allow_redirections: bool = True) -> list[Any]:
        self.stack = []
        if self._gate is None:
            return await super().execute(raise_on_error, allow_redirections)
        async with self._gate:
            return await super().execute(raise_on_error, allow_redirections)
