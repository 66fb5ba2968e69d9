"""A Redis connection of its own for the hottest calls: the coalesced adds (services/adds.py), the claims,
the runs' outcomes (completions and failures).

redis-py's pipeline costs the server ~74 µs of CPU per round trip (the pool, retries, its command stack and
observability hooks), its bare connection ~40 µs. The add coalescer writes one batch at a time, so one held
connection serves it: its commands are packed, sent and their replies read with nothing in between. Anything
unusual goes back to the pipeline (`scripts.execute`) with its retry and script loading: a second caller
while the connection is busy, and a connection that failed (the batch is sent again there; adds are
idempotent on job id, so a batch that had been written is found, not written twice).

The connection comes from the client's pool and stays checked out, so closing the client closes it. On a
Cluster each node has its own (`NodeConnection`, engine/nodes.py chooses the node).
"""

from __future__ import annotations

import abc
import asyncio
from collections.abc import Sequence
from typing import Any, cast

from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterNode
from redis.asyncio.connection import AbstractConnection, Connection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError


class HeldConnection(abc.ABC):
    """Sends command batches on one held connection, one batch at a time; where the connection comes from is
    the subclass's (`_connect`)."""

    def __init__(self) -> None:
        self._conn: AbstractConnection | None = None
        # The connection's socket timeout, applied here to a whole batch (send and replies) instead.
        self._timeout: float | None = None
        self._busy = False

    @property
    def busy(self) -> bool:
        """A batch is under way on the connection (another is answered None at once)."""
        return self._busy

    @abc.abstractmethod
    async def _connect(self) -> AbstractConnection:
        """A connection that stays ours (made once, on the first batch)."""

    async def _failed(self, conn: AbstractConnection) -> None:
        """The connection failed mid-batch (the batch goes as a pipeline): it connects afresh next time."""
        await conn.disconnect()

    async def run(self, commands: Sequence[Sequence[Any]]) -> list[Any] | None:
        """The replies of `commands` in order, an error reply as its exception (NOSCRIPT included: the
        caller loads the scripts and sends those again); None when nothing was sent here (busy) or the
        connection failed, when the caller sends the batch its usual way."""
        if self._busy:
            return None
        self._busy = True
        try:
            conn = self._conn
            if conn is None:
                conn = self._conn = await self._connect()
                # redis-py bounds each send with asyncio.wait_for (a task, and a turn of the event loop before
                # the bytes leave) and each read with a timeout context: ~28 µs of CPU per round trip. The
                # connection is ours alone, so one deadline here bounds the whole batch instead.
                self._timeout, conn.socket_timeout = conn.socket_timeout, None
            try:
                async with asyncio.timeout(self._timeout):
                    await conn.send_packed_command(conn.pack_commands(commands), check_health=False)
                    replies: list[Any] = []
                    for _ in commands:
                        try:
                            replies.append(await conn.read_response())
                        except ResponseError as exc:
                            replies.append(exc)
                return replies
            # OSError takes the deadline's TimeoutError too.
            except (RedisConnectionError, RedisTimeoutError, OSError):
                await self._failed(conn)
                return None
            except BaseException:  # cancelled mid-reply: what is left to read would answer the next batch
                await conn.disconnect(nowait=True)
                raise
        finally:
            self._busy = False


class DirectConnection(HeldConnection):
    """A held connection from one server's client pool."""

    def __init__(self, redis: Redis) -> None:
        super().__init__()
        self._pool = redis.connection_pool

    async def _connect(self) -> AbstractConnection:
        return await self._pool.get_connection()  # type: ignore[no-untyped-call,no-any-return]


class NodeConnection(HeldConnection):
    """A held connection to one node of a Cluster, from that node's own connections (redis-py's ClusterNode:
    it counts against the node's QM_REDIS_MAX_CONNECTIONS, and closing the client closes it). Once `drop`ped
    (a failed connection, a redirection) it is handed back to the node and this object is not used again."""

    def __init__(self, node: ClusterNode) -> None:
        super().__init__()
        self.node = node
        self.dropped = False

    async def _connect(self) -> AbstractConnection:
        # MaxConnectionsError when the node has none left: the caller sends its batch as a pipeline.
        return self.node.acquire_connection()

    async def _failed(self, conn: AbstractConnection) -> None:
        await super()._failed(conn)
        self.drop()

    def drop(self) -> None:
        """Hands the connection back to its node, as redis-py's calls leave theirs (the node may no longer be
        the one a slot's batches go to, or the connection failed: a later holder starts afresh)."""
        self.dropped = True
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.socket_timeout = self._timeout
            self.node.release(cast("Connection", conn))  # what acquire_connection gave
