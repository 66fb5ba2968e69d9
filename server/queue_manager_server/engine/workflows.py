"""Workflow runs in Redis: one hash per run holding its step graph, and the scripts that move it on.

services/workflows.py lays a workflow out (step keys, graph fields, step specs) and adds the steps' jobs;
this module only stores runs and runs the wf_*.lua scripts (lua/includes/workflow.lua describes the run
hash). Every key of a run carries the run's own hash tag, so each script touches one slot.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from queue_manager_server.engine.clients import Pipe
from queue_manager_server.engine.engine import Engine, _b, _i, _s
from queue_manager_server.engine.keys import workflow_registry, workflow_run, workflow_starting

# How long a finished run stays readable.
RUN_RETENTION_MS = 7 * 24 * 3600 * 1000


@dataclass(slots=True)
class RunRecord:
    """A stored run: its raw hash fields."""

    run_id: str
    fields: dict[str, bytes]

    def text(self, name: str, default: str = "") -> str:
        v = self.fields.get(name)
        return v.decode() if v is not None else default

    def int(self, name: str) -> int:
        v = self.fields.get(name)
        return int(v) if v else 0

    def step_keys(self) -> list[str]:
        return self.text("order").split()


@dataclass(slots=True)
class StepDone:
    """A step's outcome recorded: the run's state, the keys of steps to start, and the run's fields that
    starting them reads (None when none start)."""

    state: str
    to_start: list[str]
    run: RunRecord | None


def _step_done(run_id: str, r: list[Any]) -> StepDone | None:
    """wf_step_done.lua's reply: the run's state, the keys of steps to start, "" and field pairs."""
    if not isinstance(r[0], bytes) and _i(r[0]) == -1:
        return None
    rest = r[1:]
    end = next((i for i, v in enumerate(rest) if v == b""), len(rest))
    keys = [_s(k) for k in rest[:end]]
    pairs = rest[end + 1 :]
    run = (
        RunRecord(run_id, {_s(pairs[i]): _b(pairs[i + 1]) for i in range(0, len(pairs), 2)}) if keys else None
    )
    return StepDone(_s(r[0]), keys, run)


class WorkflowStore:
    """Stores workflow runs and runs the scripts that create, advance and cancel them."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.redis = engine.redis
        self.store = engine.store
        self.prefix = engine.prefix

    def key(self, run_id: str) -> str:
        return workflow_run(self.prefix, run_id)

    async def create(self, run_id: str, fields: dict[str, str | bytes | int]) -> tuple[bool, list[str], int]:
        """Creates the run unless it exists. Returns (created, keys of steps to start, Redis's time in ms).

        The run is marked as starting first (in the same round trip, ahead of the creation), so a janitor
        starts its first steps if this server dies before it has added their jobs. It is registered (at the
        time returned) when its first steps are marked started (`started`), or by that janitor.
        """
        args: list[Any] = []
        for name, value in fields.items():
            args += [name, value]
        pipe = self.store.pipeline()
        scripts = self.engine.scripts
        scripts.call_in(pipe, "wf_starting", [workflow_starting(self.prefix)], [run_id])
        scripts.call_in(pipe, "wf_create", [self.key(run_id)], args)
        now, r = await self.store.execute(pipe)
        return bool(_i(r[0])), [_s(k) for k in r[1:]], _i(now)

    async def _each(
        self,
        name: str,
        calls: Sequence[tuple[list[str], list[Any]]],
        more: Callable[[Pipe], None] | None = None,
    ) -> list[Any]:
        """The replies of the script `name` run once per (keys, args) of calls, in one round trip with the
        commands `more` adds (their replies are not returned). One call alone goes without a pipeline."""
        if more is None and len(calls) <= 1:
            return [await self.engine.scripts.run(name, *calls[0])] if calls else []
        pipe = self.store.pipeline()
        for keys, args in calls:
            self.engine.scripts.call_in(pipe, name, keys, args)
        if more is not None:
            more(pipe)
        return (await self.store.execute(pipe))[: len(calls)]

    async def finish_steps(
        self, outcomes: Sequence[tuple[str, str, str, bytes, str, str]]
    ) -> list[StepDone | None]:
        """Records steps' outcomes (run id, step key, outcome c, f or x, result, its content type, failure
        reason), in the order given and in one round trip. Returns for each the run's state, the keys of
        steps to start and the run's fields that starting them reads, or None when the run no longer
        exists."""
        calls = [([self.key(run_id)], [key, *rest]) for run_id, key, *rest in outcomes]
        replies = await self._each("wf_step_done", calls)
        return [_step_done(o[0], r) for o, r in zip(outcomes, replies, strict=True)]

    async def started(
        self,
        marks: Sequence[tuple[str, list[str]]],
        finished: Sequence[str] = (),
        registered: Sequence[tuple[str, int]] = (),
    ) -> list[list[str]]:
        """Marks steps whose jobs were added as started (run id, step keys), in one round trip with the
        expiry of runs that finished (expire_finished) and, for new runs (run id, creation time), their entry
        in the registry (unless there already) and the end of their starting mark. Returns for each mark the
        keys cancelled with the run meanwhile."""

        def more(pipe: Pipe) -> None:
            for run_id in finished:
                pipe.pexpire(self.key(run_id), RUN_RETENTION_MS)
            if registered:
                pipe.zadd(workflow_registry(self.prefix), dict(registered), nx=True)
                pipe.zrem(workflow_starting(self.prefix), *(run_id for run_id, _ in registered))

        marked = [n for n, (_, keys) in enumerate(marks) if keys]
        calls = [([self.key(marks[n][0])], list(marks[n][1])) for n in marked]
        replies = await self._each("wf_started", calls, more if finished or registered else None)
        out: list[list[str]] = [[] for _ in marks]
        for n, reply in zip(marked, replies, strict=True):
            out[n] = [_s(k) for k in reply]
        return out

    async def done_starting(self, run_id: str) -> None:
        await self.redis.zrem(workflow_starting(self.prefix), run_id)

    async def starting_before(self, cutoff_ms: int, limit: int = 100) -> list[tuple[str, int]]:
        """Runs marked as starting before cutoff (their creator may have died), with the time of the mark."""
        rows = await self.redis.zrangebyscore(
            workflow_starting(self.prefix), "-inf", cutoff_ms, 0, limit, withscores=True
        )
        return [(_s(row[0]), int(row[1])) for row in rows]

    async def to_start(self, run_id: str) -> list[str]:
        """Keys of steps decided to start (state g), in definition order."""
        record = await self.read(run_id)
        if record is None:
            return []
        return [k for k in record.step_keys() if record.text(f"s:{k}") == "g"]

    async def cancel(self, run_id: str, reason: str) -> tuple[int, list[str]]:
        """Returns (1, started step keys) when cancelled, (0, [state]) when already finished, (-1, [])."""
        r = await self.engine.scripts.run("wf_cancel", [self.key(run_id)], [reason])
        return _i(r[0]), [_s(k) for k in r[1:]]

    async def read(self, run_id: str) -> RunRecord | None:
        raw = await self.redis.hgetall(self.key(run_id))
        return RunRecord(run_id, {_s(k): _b(v) for k, v in raw.items()}) if raw else None

    async def fields(self, run_id: str, names: list[str]) -> dict[str, bytes | None]:
        values = await self.redis.hmget(self.key(run_id), names)
        return {name: (_b(v) if v is not None else None) for name, v in zip(names, values, strict=True)}

    async def expire_finished(self, run_id: str) -> None:
        """Lets a finished run expire after the retention period."""
        await self.started([], [run_id])

    async def page(
        self, after: tuple[int, str] | None, count: int
    ) -> tuple[list[RunRecord], int, tuple[int, str] | None]:
        """A page of runs, newest first, without step fields, from the run after `after` (the creation ms and
        id of the last run the page before listed; None: from the newest); runs that expired are forgotten.
        Returns the page, how many runs there are, and the cursor of the page's last run when more follow.
        Runs started while a caller pages sort before the cursor, so they shift nothing (paging.py)."""
        registry = workflow_registry(self.prefix)
        total = await self.redis.zcard(registry)
        if after is None:
            rows = await self.redis.zrevrange(registry, 0, count, withscores=True)
            runs = [(_s(row[0]), int(row[1])) for row in rows]
        else:
            score, last = after
            # Runs created in the cursor's millisecond are listed in reverse order of their ids (bytewise, as
            # UTF-8 strings compare): those whose ids sort below its id come after it. Then the older runs.
            same = await self.redis.zrevrangebyscore(registry, score, score, withscores=True)
            runs = [(run_id, score) for run_id in (_s(row[0]) for row in same) if run_id < last][: count + 1]
            if len(runs) <= count:
                rows = await self.redis.zrevrangebyscore(
                    registry, f"({score}", "-inf", start=0, num=count + 1 - len(runs), withscores=True
                )
                runs += [(_s(row[0]), int(row[1])) for row in rows]
        more = len(runs) > count
        ids = [run_id for run_id, _ in runs[:count]]
        cursor = (runs[count - 1][1], ids[-1]) if more else None
        pipe = self.store.pipeline()
        summary = ["id", "name", "st", "ts", "fts", "md", "cr", "n", "nf"]
        for run_id in ids:
            pipe.hmget(self.key(run_id), summary)
        found = await self.store.execute(pipe)
        records, gone = [], []
        for run_id, row in zip(ids, found, strict=True):
            if row[2] is None:
                gone.append(run_id)
                continue
            fields = {name: _b(v) for name, v in zip(summary, row, strict=True) if v is not None}
            records.append(RunRecord(run_id, fields))
        if gone:
            await self.redis.zrem(registry, *gone)
        return records, _i(total) - len(gone), cursor

    async def forget_expired(self, now_ms: int) -> int:
        """Drops registry entries of runs created before the retention period (their hashes expire)."""
        return int(
            await self.redis.zremrangebyscore(
                workflow_registry(self.prefix), "-inf", now_ms - 2 * RUN_RETENTION_MS
            )
        )
