"""The Redis clients the engine runs on: one server's (redis.asyncio.Redis, also behind Redis Sentinel) or a
Redis/Valkey Cluster's.

For a Cluster, redis-py's RedisCluster keeps a pool per node that raises MaxConnectionsError once it is full,
where the one-server client's BlockingConnectionPool waits for a free connection (app.py). `GatedCluster`
puts a gate in front instead: a command or a pipeline waits (up to the Redis timeout) for one of `permits`
turns, and each turn uses at most one connection of each node; the permits leave out the connections held
outside the gate (engine/nodes.py, and the event subscription: app.py), so a node's pool never runs out. Its
pipelines (`ClusterBatch`) keep the commands they were given, so what a node refuses NOSCRIPT (a restart or
failover emptied its script cache) can be sent again (engine/store.py).

Behind Sentinel (sentinel.py) the client is one server's whose pool, `SentinelPool`, is blocking like the
one-server pool and makes `SentinelConnection`s: each asks the sentinels where the primary is whenever it
(re)connects, and takes a READONLY reply (a demoted primary) for a broken connection.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, TypeAlias

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.client import Pipeline
from redis.asyncio.cluster import ClusterPipeline, RedisCluster
from redis.asyncio.connection import SSLConnection
from redis.asyncio.sentinel import SentinelConnectionPool, SentinelManagedConnection
from redis.exceptions import MaxConnectionsError

from queue_manager_server.engine.packing import hiredis_packing

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
    """A RedisCluster whose commands and pipelines take turns at a `Gate` (see the module docstring), and
    whose connections pack commands with hiredis (engine/packing.py), as one server's pool's do (app.py)."""

    def __init__(self, gate: Gate, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.gate = gate
        # redis-py takes no connection class for a Cluster (TCP or, for rediss://, TLS). Every node it makes,
        # now or when the slots map changes, gets its class from these keyword arguments (the one dict the
        # client and its nodes manager share); the start-up nodes were made already, with no connection yet.
        # redis-py's own packer encodes each argument in Python before hiredis packs them: the Cluster's
        # single adds cost the server ~20% more CPU per add with it (bench/RESULTS.md, 2026-12-07).
        packing = hiredis_packing(self.connection_kwargs["connection_class"])
        self.connection_kwargs["connection_class"] = packing
        for node in self.nodes_manager.startup_nodes.values():
            node.connection_class = packing

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


class SentinelConnection(SentinelManagedConnection):
    """A connection to the sentinels' primary that finds it again whenever it reconnects.

    redis-py's SentinelManagedConnection asks the sentinels only in ``connect()``, but a connection that was
    dropped (a broken socket, a READONLY reply) and is then sent a command reconnects by itself to the address
    it had: a pipeline's retry, a plain command's retry and the engine's held connections (engine/direct.py)
    went back to the lost primary. Here they ask the sentinels first.
    """

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        if not self.is_connected:
            await self.connect()  # type: ignore[no-untyped-call]
        await super().send_packed_command(command, check_health)


class SentinelSSLConnection(SentinelConnection, SSLConnection):
    """`SentinelConnection` over TLS."""


class SentinelPool(SentinelConnectionPool, BlockingConnectionPool):
    """redis-py's SentinelConnectionPool made blocking: past `max_connections` a call waits (up to `timeout`)
    for a free connection instead of failing, as the one-server pool does (app.py). Closing it closes the
    sentinels' clients too."""

    async def aclose(self) -> None:
        try:
            await super().aclose()
        finally:
            await self.sentinel_manager.aclose()
