"""Bulk streams written in full or not at all.

A stream larger than one script call cannot be added atomically (one script adding 100,000 jobs would
block Redis for seconds), so it goes in three steps:

1. **Stage**: each chunk of jobs is pushed, as the add script's arguments, onto a list per queue and
   stream (``stage_jobs.lua``). Staged jobs are invisible: no job hash, no id taken, no worker sees them.
2. **Decide**: one ``SET NX`` on the stream's decision key records ``c`` (committed). A janitor that finds
   a stream idle without a decision records ``a`` (rolled back) with the same ``SET NX``, so exactly one
   of the two wins, across every queue of the stream.
3. **Publish or discard**: a committed stream's staged jobs are added by ``publish_staged.lua``, a chunk
   per call, in stream order, idempotent on job id; a rolled-back stream's lists are dropped. Both are
   safe to repeat and to run from several servers at once.

A server killed before the decision leaves staged lists that janitors roll back once they are idle for
``idle_ms``; killed after it, janitors finish the publishing. Either way no job of the stream is visible
until the stream is committed whole, and none is added twice.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from queue_manager_server.engine.engine import ADD_CHUNK, Engine, new_job_id
from queue_manager_server.engine.keys import stream_decision
from queue_manager_server.engine.records import NewJob
from queue_manager_server.errors import QueueNotFound, Unavailable

log = logging.getLogger("queue_manager_server.bulk")
T = TypeVar("T")

# Staging calls per round trip (each stages ADD_CHUNK jobs). One round trip at a time: the staged list holds
# the jobs in stream order, which is the order they are published in (and so run in, within a priority
# level); two round trips on two connections may be run in either order.
STAGE_PIPELINE = 4
# Publish calls per round trip: each adds ADD_CHUNK jobs from the head of the staged list.
PUBLISH_PIPELINE = 4
# A decision outlives any publishing that may still follow it (a server killed mid-publish is finished
# by janitors within their interval); it is deleted as soon as the writing server is done.
DECISION_TTL_S = 7 * 24 * 3600
COMMITTED, ROLLED_BACK = b"c", b"a"


@dataclass(slots=True)
class StreamResult:
    """What a bulk stream did: every job id in stream order, and how many jobs were new."""

    ids: list[str]
    created: int
    # Jobs that replaced the pending job holding their dedup key (Dedup.mode REPLACE).
    replaced: int = 0


class BulkStreams:
    """Writes bulk streams through staging, and resolves streams their writer left behind."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.redis = engine.redis
        self.store = engine.store
        # Publishing and roll-backs that finish even when the caller is gone.
        self._background: set[asyncio.Task[Any]] = set()

    # ---- writing a stream ---------------------------------------------------------------------

    async def write(self, batches: Sequence[tuple[str, Sequence[NewJob]]]) -> StreamResult:
        """Adds every job of every (queue, jobs) batch, or none of them.

        Raises:
            QueueNotFound: A queue is not registered (checked before anything is written).
            Unavailable: The stream was rolled back (it stayed idle too long); nothing was added.
        """
        for queue, _ in batches:
            await self.engine.get_queue(queue)
        sid = stream_id()
        queues = list(dict.fromkeys(queue for queue, _ in batches))
        ids: list[str] = []
        try:
            await self._stage(sid, batches, ids)
            committed = await self.commit(sid)
        except BaseException:
            self._roll_back_later(sid, queues)
            raise
        if not committed:
            self._roll_back_later(sid, queues)
            raise Unavailable(
                "the bulk stream was rolled back because writing it stalled; nothing was added, send it again"
            )
        # Past the decision the stream is published even if the caller goes away meanwhile.
        holders: dict[tuple[str, str], str] = {}
        replaced: dict[str, int] = {}
        publishing = self._spawn(self._publish_all(sid, queues, holders, replaced), f"publish:{sid}")
        try:
            created = await asyncio.shield(publishing)
        except Exception as exc:
            raise Unavailable(
                f"the bulk stream is committed, but adding its jobs was interrupted ({type(exc).__name__}: "
                f"{exc}); janitors finish adding it in full once the job store recovers, and sending it "
                "again with the same job ids adds nothing twice"
            ) from None
        # A job whose dedup key was held is answered by the holder's id.
        if holders:
            pos = 0
            for queue, jobs in batches:
                for i in range(pos, pos + len(jobs)):
                    ids[i] = holders.get((queue, ids[i]), ids[i])
                pos += len(jobs)
        return StreamResult(ids=ids, created=created, replaced=sum(replaced.values()))

    async def _stage(self, sid: str, batches: Sequence[tuple[str, Sequence[NewJob]]], ids: list[str]) -> None:
        calls: list[tuple[str, list[Any]]] = []
        for queue, jobs in batches:
            for start in range(0, len(jobs), ADD_CHUNK):
                args: list[Any] = [sid]
                for j in jobs[start : start + ADD_CHUNK]:
                    if not j.id:
                        j.id = new_job_id()
                    ids.append(j.id)
                    args += j.argv()
                calls.append((queue, args))
        for i in range(0, len(calls), STAGE_PIPELINE):
            group = calls[i : i + STAGE_PIPELINE]
            pipe = self.store.pipeline()
            for queue, args in group:
                k = self.engine.keys(queue)
                self.engine.scripts.call_in(pipe, "stage_jobs", [k.meta, k.staged(sid), k.bulk], args)
            for (queue, _), code in zip(group, await self.store.execute(pipe), strict=True):
                if int(code) < 0:
                    raise QueueNotFound(queue)

    async def _publish_all(
        self,
        sid: str,
        queues: list[str],
        holders: dict[tuple[str, str], str] | None = None,
        replaced: dict[str, int] | None = None,
    ) -> int:
        created = 0
        for queue in queues:
            created += await self.publish_staged(queue, sid, holders, replaced)
        await self.redis.delete(stream_decision(self.engine.prefix, sid))
        return created

    def _roll_back_later(self, sid: str, queues: list[str]) -> None:
        self._spawn(self._roll_back(sid, queues), f"rollback:{sid}")

    def _spawn(self, coro: Coroutine[Any, Any, T], name: str) -> asyncio.Task[T]:
        """Runs work that must finish even when the stream handler that started it is cancelled."""
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    async def _roll_back(self, sid: str, queues: list[str]) -> None:
        try:
            if await self.roll_back(sid):
                for queue in queues:
                    await self.discard_staged(queue, sid)
                await self.redis.delete(stream_decision(self.engine.prefix, sid))
            else:  # committed just before it failed: finish it instead
                await self._publish_all(sid, queues)
        except Exception as exc:
            log.warning(
                "bulk stream clean-up failed; the janitor will finish it",
                extra={"stream": sid, "error": f"{type(exc).__name__}: {exc}"},
            )

    async def wait_background(self) -> None:
        """Waits for publishing and roll-backs still running (at shutdown, and in tests)."""
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)

    # ---- decisions ----------------------------------------------------------------------------

    async def commit(self, sid: str) -> bool:
        """Records the commit unless the stream was rolled back first; True when it is committed."""
        return await self._decide(sid, COMMITTED)

    async def roll_back(self, sid: str) -> bool:
        """Records the roll-back unless the stream was committed first; True when it is rolled back."""
        return await self._decide(sid, ROLLED_BACK)

    async def _decide(self, sid: str, verdict: bytes) -> bool:
        key = stream_decision(self.engine.prefix, sid)
        if await self.redis.set(key, verdict, nx=True, ex=DECISION_TTL_S):
            return True
        return bool(await self.redis.get(key) == verdict)

    # ---- per-queue scripts --------------------------------------------------------------------

    async def publish_staged(
        self,
        queue: str,
        sid: str,
        holders: dict[tuple[str, str], str] | None = None,
        replaced: dict[str, int] | None = None,
    ) -> int:
        """Adds a committed stream's staged jobs to the queue; returns how many were new.

        holders: filled with (queue, job id) -> the holder's id for jobs whose dedup key was held.
        replaced: queue -> jobs that replaced the pending job holding their dedup key, added to.
        """
        k = self.engine.keys(queue)
        keys = [k.meta, k.waiting, k.delayed, k.staged(sid), k.bulk]
        args: list[Any] = [k.job_prefix, self.engine.channel, queue, sid, ADD_CHUNK]
        created = 0
        while True:
            pipe = self.store.pipeline()
            for _ in range(PUBLISH_PIPELINE):
                self.engine.scripts.call_in(pipe, "publish_staged", keys, args)
            for r in await self.store.execute(pipe):
                if int(r[0]) < 0:  # the queue was obliterated meanwhile: its staged jobs went with it
                    return created
                created += int(r[0])
                if replaced is not None:
                    replaced[queue] = replaced.get(queue, 0) + int(r[2])
                if holders is not None:
                    for i in range(3, len(r) - 1, 2):
                        holders[(queue, _text(r[i]))] = _text(r[i + 1])
                if int(r[1]) == 1:
                    return created

    async def discard_staged(self, queue: str, sid: str) -> None:
        k = self.engine.keys(queue)
        await self.engine.scripts.run("discard_staged", [k.staged(sid), k.bulk], [sid])

    # ---- streams left behind ------------------------------------------------------------------

    async def resolve(self, queue: str, idle_ms: int) -> tuple[int, int]:
        """Finishes streams staged into the queue whose writer is gone: publishes committed ones and
        rolls back those idle for idle_ms with no decision. Returns (streams published, rolled back)."""
        staged = await self.redis.hgetall(self.engine.keys(queue).bulk)
        if not staged:
            return 0, 0
        now = await self.engine.redis_time_ms(queue)
        published = rolled_back = 0
        for raw_sid, last in staged.items():
            sid = raw_sid.decode() if isinstance(raw_sid, bytes) else str(raw_sid)
            verdict = await self.redis.get(stream_decision(self.engine.prefix, sid))
            if verdict is None and now - int(last) > idle_ms:
                verdict = ROLLED_BACK if await self.roll_back(sid) else COMMITTED
            if verdict == COMMITTED:
                await self.publish_staged(queue, sid)
                published += 1
            elif verdict == ROLLED_BACK:
                await self.discard_staged(queue, sid)
                rolled_back += 1
        return published, rolled_back


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def stream_id() -> str:
    """A random id for a bulk stream."""
    return os.urandom(8).hex()
