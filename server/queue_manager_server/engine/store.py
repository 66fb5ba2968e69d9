"""The engine's seam to Redis/Valkey: one server or a Cluster, chosen once when the engine is made
(`make_store`), so no call on the hot path asks which.

The scripts and keys are the same for both: every key of a queue carries its ``{queue}`` hash tag, so each
script call touches one hash slot. What differs is how commands travel:

- One server (`SingleStore`): pipelines sent in one round trip without redis-py's SCRIPT EXISTS check, and
  the held connections of the hottest calls (engine/direct.py).
- A Cluster (`ClusterStore`): pipelines split by node (one round trip per node concerned, sent in
  parallel); the hottest calls on held connections per node (engine/nodes.py) when a batch goes to one node,
  as a pipeline otherwise; Redis's clock read on the node holding the keys it is compared with.

Both send again what Redis refused NOSCRIPT (scripts.resend_refused).

On the test clock (engine/clock.py) one server's store reads Redis's clock as the scripts do, with the test
clock's offset added (`TestClockStore`); a Cluster is refused there (the offset key would be in a slot of its
own, out of the scripts' reach).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, cast

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.exceptions import ResponseError

from queue_manager_server.engine.clients import ClusterBatch, Pipe
from queue_manager_server.engine.direct import DirectConnection
from queue_manager_server.engine.nodes import HeldStats, NodesHeld
from queue_manager_server.engine.records import NodeMemory
from queue_manager_server.engine.scripts import Scripts, resend_refused


class Held(Protocol):
    """A connection of its own for a hot call (engine/direct.py)."""

    async def run(self, commands: Sequence[Sequence[Any]]) -> list[Any] | None:
        """The replies of `commands`, or None when the caller must send them as a pipeline instead."""
        ...


class Store(Protocol):
    """How the engine sends commands: see the module docstring."""

    redis: Any

    def pipeline(self) -> Pipe:
        """A new pipeline (never a transaction); send it with `execute`."""
        ...

    async def execute(self, pipe: Pipe, raise_on_error: bool = True) -> list[Any]:
        """Sends the pipeline and returns its replies in order. The first error reply is raised, or with
        raise_on_error=False left in its place (a pipeline that serves several callers, each of whom gets
        its own command's outcome). Calls refused NOSCRIPT are sent again once their scripts are loaded."""
        ...

    async def resend(self, stack: Sequence[Sequence[Any]], results: list[Any]) -> None:
        """Sends again the commands of `stack` that Redis refused NOSCRIPT (their replies in `results`), once
        their scripts are loaded; the new replies are put in their place."""
        ...

    def held(self) -> Held:
        """A held connection for one kind of hot call."""
        ...

    async def time_ms(self, key: str | None = None) -> int:
        """Redis's clock (ms) on the node that holds `key` (any node when None)."""
        ...

    def time_in(self, pipe: Pipe, key: str | None = None) -> None:
        """Queues a TIME on the node that holds `key`, any node when None (its reply as redis-py's ``time()``
        gives it)."""
        ...

    async def memory(self) -> list[NodeMemory]:
        """Every primary's memory use and limit (one ``INFO memory`` each, sent in parallel)."""
        ...


class SingleStore:
    """One Redis/Valkey server (or a primary with replicas): see the module docstring."""

    def __init__(self, redis: Redis, scripts: Scripts) -> None:
        self.redis = redis
        self._scripts = scripts

    def pipeline(self) -> Pipeline:
        return self.redis.pipeline(transaction=False)

    async def execute(self, pipe: Pipe, raise_on_error: bool = True) -> list[Any]:
        """`Store.execute` in one round trip, the connection always handed back.

        redis-py would send ``SCRIPT EXISTS`` before every pipeline that carries a script (a second round
        trip on the hot path: each AddJob paid it). Instead the scripts' EVALSHAs go out as they are, and only
        when Redis answers NOSCRIPT are the scripts loaded and the refused calls sent again.
        """
        pipe = cast("Pipeline", pipe)
        pipe.scripts = set()
        stack = [args for args, _ in pipe.command_stack]
        results = await self._send(pipe)
        await self.resend(stack, results)
        for i, r in enumerate(results):
            if isinstance(r, ResponseError):
                pipe.annotate_exception(r, i + 1, stack[i])
                if raise_on_error:
                    raise r
        return results

    async def _send(self, pipe: Pipe) -> list[Any]:
        pipe = cast("Pipeline", pipe)
        try:
            return list(await pipe.execute(raise_on_error=False))
        finally:
            await pipe.reset()  # type: ignore[no-untyped-call]

    async def resend(self, stack: Sequence[Sequence[Any]], results: list[Any]) -> None:
        await resend_refused(self._scripts, stack, results, self.pipeline, self._send)

    def held(self) -> DirectConnection:
        return DirectConnection(self.redis)

    async def time_ms(self, key: str | None = None) -> int:
        sec, usec = await self.redis.time()
        return int(sec) * 1000 + int(usec) // 1000

    def time_in(self, pipe: Pipe, key: str | None = None) -> None:
        pipe.time()

    async def memory(self) -> list[NodeMemory]:
        kw = self.redis.connection_pool.connection_kwargs
        # A Sentinel's pool finds its primary per connection: no fixed address to name.
        node = f"{kw['host']}:{kw['port']}" if "host" in kw and "port" in kw else kw.get("path", "primary")
        return [node_memory(node, await self.redis.info("memory"))]


class TestClockStore(SingleStore):
    """One server on the test clock: Redis's clock is read through clock_now.lua, which adds the offset the
    test has moved it by (engine/clock.py), so Python's reads agree with the scripts'."""

    async def time_ms(self, key: str | None = None) -> int:
        sec, usec = await self._scripts.run("clock_now", [], [])
        return int(sec) * 1000 + int(usec) // 1000

    def time_in(self, pipe: Pipe, key: str | None = None) -> None:
        self._scripts.call_in(pipe, "clock_now", [], [])


class ClusterStore:
    """A Redis/Valkey Cluster: see the module docstring."""

    def __init__(self, redis: RedisCluster, scripts: Scripts) -> None:
        self.redis = redis
        self._scripts = scripts
        # The hash slot of each key the held connections saw, and what became of their batches.
        self._slots: dict[str, int] = {}
        self.held_stats = HeldStats()

    def pipeline(self) -> ClusterBatch:
        return ClusterBatch(self.redis)  # type: ignore[abstract]

    async def execute(self, pipe: Pipe, raise_on_error: bool = True) -> list[Any]:
        stack = cast("ClusterBatch", pipe).stack
        results = await self._send(pipe)
        await self.resend(stack, results)
        if raise_on_error:
            for r in results:
                if isinstance(r, ResponseError):
                    raise r
        return results

    async def _send(self, pipe: Pipe) -> list[Any]:
        return list(await pipe.execute(raise_on_error=False))

    async def resend(self, stack: Sequence[Sequence[Any]], results: list[Any]) -> None:
        await resend_refused(self._scripts, stack, results, self.pipeline, self._send)

    def held(self) -> NodesHeld:
        return NodesHeld(self.redis, self._slots, self.held_stats)

    def _node(self, key: str | None) -> ClusterNode:
        """The primary that serves `key` (the default node for None, or a slot no node serves)."""
        node = self.redis.get_node_from_key(key) if key is not None else None
        return node if node is not None else self.redis.get_default_node()

    async def time_ms(self, key: str | None = None) -> int:
        sec, usec = await self.redis.time(target_nodes=self._node(key))
        return int(sec) * 1000 + int(usec) // 1000

    def time_in(self, pipe: Pipe, key: str | None = None) -> None:
        # A cluster pipeline refuses a keyless command unless it is told the node (redis-py).
        pipe.execute_command("TIME", target_nodes=self._node(key))

    async def memory(self) -> list[NodeMemory]:
        nodes = self.redis.get_primaries()
        infos = await self.redis.info("memory", target_nodes=nodes)
        if len(nodes) == 1:  # redis-py answers one node's reply as it is, several as {node name: reply}
            infos = {nodes[0].name: infos}
        return sorted((node_memory(str(name), info) for name, info in infos.items()), key=lambda m: m.node)


def node_memory(node: str, info: dict[str, Any]) -> NodeMemory:
    return NodeMemory(node, int(info.get("used_memory", 0)), int(info.get("maxmemory", 0)))


# Why a server on the test clock cannot use a Cluster (Settings.test_clock; config.py test_clock_problem).
TEST_CLOCK_ON_CLUSTER = (
    "the test clock (test_clock) needs a single Redis/Valkey server, not a Cluster: every script reads its "
    "offset key, which would sit in another hash slot than the queue's keys"
)


def make_store(redis: Redis | RedisCluster, scripts: Scripts, test_clock: bool = False) -> Store:
    """The store for this client: a Cluster's or one server's (on the test clock: `TestClockStore`).

    Raises:
        ValueError: test_clock on a Cluster (TEST_CLOCK_ON_CLUSTER).
    """
    if isinstance(redis, RedisCluster):
        if test_clock:
            raise ValueError(TEST_CLOCK_ON_CLUSTER)
        return ClusterStore(redis, scripts)
    return TestClockStore(redis, scripts) if test_clock else SingleStore(redis, scripts)
