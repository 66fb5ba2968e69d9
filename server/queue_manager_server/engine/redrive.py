"""Redriving dead-letter copies: each copy back to its original queue, in idempotent steps.

A copy (``<queue>:<job id>`` in a dead-letter queue, engine.py `Engine.hand_off_dead_letters`) and its
original live in different queues, so in a Cluster in different hash slots: no one script can take the copy
and give the job back. As the dead-letter hand-off does, the work goes through an outbox:

1. ``redrive_take`` (the dead-letter queue): the copies leave their state for the queue's redrive outbox, each
   under a fresh token. No worker of the dead-letter queue can claim them from here on (a copy a worker holds
   is not taken), and the copy's id is free for a new copy of the same job. New data for one named copy
   (RedriveDeadLettersRequest.data) is recorded in its entry by the same call, beside the copy's own data:
   every later step (and a replay) runs the original with it, and a copy put back drops it, unchanged.
2. ``redrive_jobs`` (each original queue, one call per queue per batch): a failed original runs again, a gone
   one is added anew; the token is recorded in the queue's ``redriven`` set, so a replay changes nothing.
3. ``redrive_done`` (the dead-letter queue): the outbox entries go; copies whose original queue is gone are
   put back, waiting.
4. The original queues forget the tokens (one ZREM each): no entry is left to replay them.

A server that dies between steps leaves outbox entries; the janitor carries them on (`DeadLetters.resume`)
once they are older than REPLAY_AFTER_MS, which a live redrive never reaches: it replays step 2 (a no-op for
a token recorded) and goes on. Tokens a crash left recorded (between steps 3 and 4) are dropped after
KEEP_TOKENS_MS.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from queue_manager_server.engine.engine import DEFAULT_DLQ, Engine, new_job_id
from queue_manager_server.engine.records import NewJob, is_json_type
from queue_manager_server.errors import InvalidArgument, QueueNotFound

# Copies taken per redrive_take call, and waiting entries it looks at to find them: each call stays short
# however large the dead-letter queue (taking a copy out of its list is a scan of the list's head).
TAKE_CHUNK = 100
LOOK_CHUNK = 1000
# The janitor replays an outbox entry only once it is this old: a live redrive clears its entries within
# milliseconds, so a replay never runs beside the redrive that took the copy.
REPLAY_AFTER_MS = 30_000
# An original queue keeps the token of a redrive it carried out until the dead-letter queue's entry is gone
# (step 4), or at most this long (a server died between steps 3 and 4).
KEEP_TOKENS_MS = 86_400_000

# redrive_jobs.lua's codes per copy.
_DONE_BEFORE, _RETRIED, _ADDED, _UNCHANGED = 0, 1, 2, 3
NO_QUEUE = -1

# Why a copy named by id stays where it is (redrive_take.lua's codes).
_SKIP_REASONS = {
    "missing": "no such job in the dead-letter queue",
    "not-copy": "not a dead-letter copy (it was added to the queue directly)",
    "other-queue": "a copy of another queue's job",
    "no-queue": "its original queue is not registered",
    "bad-data": "its data is no longer a dead-letter copy's (original_name, original_content_type and "
    "original_data are needed)",
    "active": "a worker of the dead-letter queue holds it",
    "completed": "a worker of the dead-letter queue consumed it",
}


@dataclass(slots=True)
class RedriveCounts:
    """What became of one original queue's copies."""

    retried: int = 0
    added: int = 0
    unchanged: int = 0

    @property
    def count(self) -> int:
        return self.retried + self.added + self.unchanged


@dataclass(slots=True)
class RedriveResult:
    """A redrive's outcome: counts per original queue, copies named by id that stayed (id, why), and original
    queues that are gone (their copies stay)."""

    queues: dict[str, RedriveCounts] = field(default_factory=dict)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    missing_queues: list[str] = field(default_factory=list)

    @property
    def count(self) -> int:
        return sum(c.count for c in self.queues.values())


@dataclass(slots=True)
class Taken:
    """A copy in a dead-letter queue's redrive outbox: its id, original queue, token, the data it held,
    whether its original's data is to be replaced, and the new data (body, content type) it was taken with
    (its original runs with that rather than the copy's original_data)."""

    copy_id: str
    queue: str
    token: str
    data: bytes
    replace: bool
    edit: tuple[bytes, str] | None = None


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def _edit(body: bytes | None, ct: bytes | None) -> tuple[bytes, str] | None:
    """The new data an outbox entry was taken with (its ``rdd`` and ``rdc`` fields), if any."""
    return None if body is None or ct is None else (body, _s(ct))


def original_job(copy: Taken) -> NewJob | None:
    """The original job a copy's data describes (engine.py hand_off_dead_letters writes it): its id (the
    copy's, less the queue), name, data and content type (the copy's `edit` when it has one). None when the
    data is not a copy's (redrive_take.lua checks the same, so a copy taken reads)."""
    try:
        body = json.loads(copy.data)
        name, ct, data = body["original_name"], body["original_content_type"], body["original_data"]
        if not isinstance(name, str) or not isinstance(ct, str):
            return None
        if is_json_type(ct):
            raw = json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()
        else:
            raw = base64.b64decode(data, validate=True)
    except (ValueError, KeyError, TypeError, binascii.Error):
        return None
    if copy.edit is not None:
        raw, ct = copy.edit
    return NewJob(id=copy.copy_id[len(copy.queue) + 1 :], name=name, data=raw, content_type=ct)


class DeadLetters:
    """Redrive of dead-letter copies on top of an `Engine`: one method per script, with its name and argument
    order, and the steps that join them."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.redis = engine.redis
        self.store = engine.store
        self.scripts = engine.scripts

    # ---- the operation ------------------------------------------------------------------------

    async def redrive(
        self,
        dlq: str,
        original_queue: str = "",
        limit: int = 0,
        job_ids: Sequence[str] = (),
        replace: bool = False,
        data: tuple[bytes, str] | None = None,
    ) -> RedriveResult:
        """Sends copies in the dead-letter queue `dlq` back to their original queues.

        Args:
            dlq: The dead-letter queue.
            original_queue: Only copies of this queue's jobs ("" every queue's).
            limit: At most this many copies (0 every one); with `job_ids`, unused.
            job_ids: Only these copies; empty: the waiting copies in the queue's order.
            replace: A failed original runs again with the copy's original_data.
            data: With exactly one of `job_ids`: (body, content type) its original runs with (`replace`
                implied); checked by the caller as an add's data is.

        Raises:
            QueueNotFound: `dlq` or `original_queue` is not registered.
            InvalidArgument: `dlq` is no queue's dead-letter queue, or `data` comes with other than one copy.
        """
        if data is not None and len(job_ids) != 1:
            raise InvalidArgument(
                "data", f"replaces one copy's data: give exactly one job_id ({len(job_ids)} given)"
            )
        await self.check_dead_letter_queue(dlq)
        if original_queue:
            await self.engine.get_queue(original_queue)
        result = RedriveResult()
        gone: set[str] = set()
        if job_ids:
            _, taken, codes = await self.redrive_take(
                dlq, new_job_id(), original_queue, 0, 0, 0, replace or data is not None, data, [], job_ids
            )
            for job_id, code in zip(job_ids, codes, strict=True):
                if code != "ok":
                    result.skipped.append((job_id, _SKIP_REASONS.get(code, f"it is {code}")))
            await self._hand_back(dlq, taken, result, gone)
            return result
        cursor, left = 0, limit
        while cursor >= 0 and (limit == 0 or left > 0):
            chunk = TAKE_CHUNK if limit == 0 else min(TAKE_CHUNK, left)
            cursor, taken, _ = await self.redrive_take(
                dlq, new_job_id(), original_queue, chunk, LOOK_CHUNK, cursor, replace, None, sorted(gone), ()
            )
            left -= await self._hand_back(dlq, taken, result, gone)
        return result

    async def check_dead_letter_queue(self, dlq: str) -> None:
        """Raises QueueNotFound when `dlq` is not registered, InvalidArgument when no queue names it as its
        dead-letter queue (the default one always counts)."""
        await self.engine.get_queue(dlq)
        if dlq == DEFAULT_DLQ:
            return
        if any(_s(q.fields.get("dlq", b"")) == dlq for q in await self.engine.list_queues()):
            return
        raise InvalidArgument(
            "queue_name",
            f"queue {dlq!r} is not a dead-letter queue: no queue sends its failed jobs there "
            "(RegisterQueue config.dead_letter_queue names a queue's)",
        )

    async def resume(self, dlq: str, limit: int = TAKE_CHUNK) -> int:
        """Carries on the redrives a server left half-done in `dlq` (entries older than REPLAY_AFTER_MS):
        the janitor's part. Returns how many entries it cleared."""
        k = self.engine.keys(dlq)
        now = await self.engine.redis_time_ms(dlq)
        ids = [
            _s(i) for i in await self.redis.zrangebyscore(k.redrive, "-inf", now - REPLAY_AFTER_MS, 0, limit)
        ]
        if not ids:
            return 0
        pipe = self.store.pipeline()
        for copy_id in ids:
            pipe.hmget(k.redrive_entry_prefix + copy_id, ["rdt", "dlo", "data", "rdr", "rdd", "rdc"])
        taken = [
            Taken(copy_id, _s(dlo), _s(token), data or b"", rdr == b"1", _edit(rdd, rdc))
            for copy_id, (token, dlo, data, rdr, rdd, rdc) in zip(
                ids, await self.store.execute(pipe), strict=True
            )
            if token is not None and dlo is not None
        ]
        result = RedriveResult()
        await self._hand_back(dlq, taken, result, set())
        return len(taken)

    async def _hand_back(
        self, dlq: str, taken: Sequence[Taken], result: RedriveResult, gone: set[str]
    ) -> int:
        """Steps 2 to 4 for copies taken: each original queue gets its jobs back, the outbox entries go (a
        copy whose queue is gone, or whose data cannot be read, is put back), the queues forget the tokens.
        Counts into `result`, and `gone` learns the queues that are not registered. Returns how many copies
        went back."""
        if not taken:
            return 0
        per_call: dict[tuple[str, bool], list[tuple[Taken, NewJob]]] = {}
        back: list[Taken] = []
        for copy in taken:
            job = original_job(copy)
            if job is None:
                back.append(copy)
                result.skipped.append((copy.copy_id, _SKIP_REASONS["bad-data"]))
            else:
                per_call.setdefault((copy.queue, copy.replace), []).append((copy, job))
        calls = list(per_call.items())
        replies = await self.redrive_jobs_many([(q, r, items) for (q, r), items in calls])
        done: list[Taken] = []
        for ((queue, _), items), reply in zip(calls, replies, strict=True):
            if isinstance(reply, int):  # NO_QUEUE
                back += [copy for copy, _ in items]
                if queue not in gone:
                    gone.add(queue)
                    result.missing_queues.append(queue)
                continue
            counts = result.queues.setdefault(queue, RedriveCounts())
            for (copy, _), code in zip(items, reply, strict=True):
                done.append(copy)
                if code == _RETRIED:
                    counts.retried += 1
                elif code == _ADDED:
                    counts.added += 1
                else:  # left as it is, or done before: a replay (the janitor's) of a copy sent back
                    counts.unchanged += 1
        await self.redrive_done(
            dlq, [(c.copy_id, c.token, "d") for c in done] + [(c.copy_id, c.token, "r") for c in back]
        )
        await self._forget(done)
        for queue in {c.queue for c in done}:
            await self.engine.notify_waiting(queue)
            # A retried workflow step's job re-opens its run (redrive_jobs.lua flow_retried): hand it off now.
            await self.engine.after_flow_finish(queue, wait=True)
        return len(done)

    async def _forget(self, done: Sequence[Taken]) -> None:
        """Step 4: each original queue drops the tokens of the redrives it carried out (their outbox entries
        are gone, so nothing can replay them), one ZREM per queue in one round trip."""
        tokens: dict[str, list[str]] = {}
        for copy in done:
            tokens.setdefault(copy.queue, []).append(copy.token)
        pipe = self.store.pipeline()
        for queue, names in tokens.items():
            pipe.zrem(self.engine.keys(queue).redriven, *names)
        await self.store.execute(pipe)

    # ---- the scripts ----------------------------------------------------------------------------

    async def redrive_take(
        self,
        dlq: str,
        token_base: str,
        original_queue: str,
        take: int,
        look: int,
        cursor: int,
        replace: bool,
        data: tuple[bytes, str] | None,
        passed: Sequence[str],
        job_ids: Sequence[str],
    ) -> tuple[int, list[Taken], list[str]]:
        """Takes copies into the redrive outbox (redrive_take.lua): the named ones, or up to `take` waiting
        ones among `look` after `cursor`; copies of the `passed` queues stay. `data` (body, content type) is
        the new data of the one named copy, recorded in its entry (None: none). Returns the next cursor (-1:
        the end), the copies taken and a code per named copy."""
        k = self.engine.keys(dlq)
        keys = [k.meta, k.waiting, k.delayed, k.failed, k.redrive]
        args: list[Any] = [
            k.job_prefix,
            k.redrive_entry_prefix,
            token_base,
            original_queue,
            take,
            look,
            cursor,
        ]
        body, ct = data if data is not None else (b"", "")
        args += ["1" if replace else "0", ct, body, len(passed), *passed, *job_ids]
        r = await self.scripts.run("redrive_take", keys, args)
        if int(r[0]) == NO_QUEUE and len(r) == 1:
            raise QueueNotFound(dlq)
        if int(r[3]):  # copies that parents waited for: they end for them (common.lua on_removed)
            await self.engine.after_flow_finish(dlq)
        flat = r[1]
        taken = [
            Taken(_s(flat[i]), _s(flat[i + 1]), _s(flat[i + 2]), flat[i + 3], replace, data)
            for i in range(0, len(flat), 4)
        ]
        return int(r[0]), taken, [_s(c) for c in r[2]]

    async def redrive_jobs_many(
        self, calls: Sequence[tuple[str, bool, Sequence[tuple[Taken, NewJob]]]]
    ) -> list[list[int] | int]:
        """redrive_jobs.lua once per (original queue, replace, copies), all in one round trip. Returns per
        call its codes, or NO_QUEUE when the queue is not registered."""
        if not calls:
            return []
        pipe = self.store.pipeline()
        for queue, replace, items in calls:
            k = self.engine.keys(queue)
            keys = [k.meta, k.waiting, k.delayed, k.failed, k.redriven]
            args: list[Any] = [k.job_prefix, "1" if replace else "0", KEEP_TOKENS_MS, len(items)]
            for copy, job in items:
                header, data, _, _ = job.argv()
                args += [copy.token, header, data]
            self.scripts.call_in(pipe, "redrive_jobs", keys, args)
        out: list[list[int] | int] = []
        for reply in await self.store.execute(pipe):
            out.append(NO_QUEUE if reply == [NO_QUEUE] else [int(c) for c in reply])
        return out

    async def redrive_done(self, dlq: str, items: Sequence[tuple[str, str, str]]) -> int:
        """Clears outbox entries (redrive_done.lua): items are (copy id, token, "d" done or "r" put back)."""
        if not items:
            return 0
        k = self.engine.keys(dlq)
        args: list[Any] = [k.job_prefix, k.redrive_entry_prefix]
        for item in items:
            args += item
        return int(await self.scripts.run("redrive_done", [k.redrive, k.waiting], args))
