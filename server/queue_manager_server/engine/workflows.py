"""Workflow runs in Redis: one hash per run holding its step graph, and the scripts that move it on.

services/workflows.py lays a workflow out (step keys, graph fields, step specs) and adds the steps' jobs;
this module only stores runs and runs the wf_*.lua scripts (lua/includes/workflow.lua describes the run
hash). Every key of a run carries the run's own hash tag, so each script touches one slot.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from queue_manager_server.engine.engine import Engine, _b, _i, _s
from queue_manager_server.engine.keys import workflow_registry, workflow_run, workflow_starting
from queue_manager_server.engine.scripts import execute

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


class WorkflowStore:
    """Stores workflow runs and runs the scripts that create, advance and cancel them."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.redis = engine.redis
        self.prefix = engine.prefix

    def key(self, run_id: str) -> str:
        return workflow_run(self.prefix, run_id)

    async def create(self, run_id: str, fields: dict[str, str | bytes | int]) -> tuple[bool, list[str]]:
        """Creates the run unless it exists. Returns (created, keys of steps to start).

        The run is marked as starting first (in the same round trip, ahead of the creation), so a janitor
        starts its first steps if this server dies before it has added their jobs.
        """
        args: list[Any] = []
        for name, value in fields.items():
            args += [name, value]
        pipe = self.redis.pipeline(transaction=False)
        scripts = self.engine.scripts
        await scripts.get("wf_starting")(keys=[workflow_starting(self.prefix)], args=[run_id], client=pipe)
        await scripts.get("wf_create")(keys=[self.key(run_id)], args=args, client=pipe)
        now, r = await execute(pipe)
        if _i(r[0]):
            await self.redis.zadd(workflow_registry(self.prefix), {run_id: _i(now)})
        return bool(_i(r[0])), [_s(k) for k in r[1:]]

    async def finish_step(
        self, run_id: str, step_key: str, outcome: str, result: bytes, content_type: str, error: str
    ) -> StepDone | None:
        """Records a step's outcome (c, f or x). Returns the run's state, the keys of steps to start and the
        run's fields that starting them reads, or None when the run no longer exists."""
        r = await self.engine.scripts.run(
            "wf_step_done", [self.key(run_id)], [step_key, outcome, result, content_type, error]
        )
        if not isinstance(r[0], bytes) and _i(r[0]) == -1:
            return None
        rest = r[1:]
        end = next((i for i, v in enumerate(rest) if v == b""), len(rest))
        keys = [_s(k) for k in rest[:end]]
        pairs = rest[end + 1 :]
        run = (
            RunRecord(run_id, {_s(pairs[i]): _b(pairs[i + 1]) for i in range(0, len(pairs), 2)})
            if keys
            else None
        )
        return StepDone(_s(r[0]), keys, run)

    async def started(self, run_id: str, step_keys: list[str]) -> list[str]:
        """Marks steps whose jobs were added as started; returns those cancelled meanwhile."""
        if not step_keys:
            return []
        return [_s(k) for k in await self.engine.scripts.run("wf_started", [self.key(run_id)], step_keys)]

    async def done_starting(self, run_id: str) -> None:
        await self.redis.zrem(workflow_starting(self.prefix), run_id)

    async def starting_before(self, cutoff_ms: int, limit: int = 100) -> list[str]:
        """Runs marked as starting before cutoff (their creator may have died)."""
        ids = await self.redis.zrangebyscore(workflow_starting(self.prefix), "-inf", cutoff_ms, 0, limit)
        return [_s(i) for i in ids]

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
        await self.redis.pexpire(self.key(run_id), RUN_RETENTION_MS)

    async def page(self, offset: int, count: int) -> tuple[list[RunRecord], int]:
        """A page of runs, newest first, without step fields; runs that expired are forgotten."""
        registry = workflow_registry(self.prefix)
        total = await self.redis.zcard(registry)
        ids = [_s(i) for i in await self.redis.zrevrange(registry, offset, offset + count - 1)]
        pipe = self.redis.pipeline(transaction=False)
        summary = ["id", "name", "st", "ts", "fts", "md", "cr", "n", "nf"]
        for run_id in ids:
            pipe.hmget(self.key(run_id), summary)
        rows = await execute(pipe)
        records, gone = [], []
        for run_id, row in zip(ids, rows, strict=True):
            if row[2] is None:
                gone.append(run_id)
                continue
            fields = {name: _b(v) for name, v in zip(summary, row, strict=True) if v is not None}
            records.append(RunRecord(run_id, fields))
        if gone:
            await self.redis.zrem(registry, *gone)
        return records, _i(total) - len(gone)

    async def forget_expired(self, now_ms: int) -> int:
        """Drops registry entries of runs created before the retention period (their hashes expire)."""
        return int(
            await self.redis.zremrangebyscore(
                workflow_registry(self.prefix), "-inf", now_ms - 2 * RUN_RETENTION_MS
            )
        )
