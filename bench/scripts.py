"""`python -m bench.scripts`: what the engine's scripts cost Valkey, no server, client or worker in the way.

The engine (queue_manager_server.engine) on its own fresh Valkey (the bench's binary and settings, persistence
off) runs the job path's script calls and reads Valkey's own account of them (`INFO commandstats`):

- *lone*: one job at a time, as at a few hundred jobs/s: its add with the claim folded in (one script call),
  then its completion. Once back to back and once ``--gap-ms`` apart, since a Valkey that slept between two
  calls spends about twice as long on each (its caches went cold: bench/RESULTS.md, "Small hours of
  2026-12-06").
- *batch*: claims and completions of ``--batch`` jobs, as in a drain.
- *failures*: failed runs that are retried (the failure path: `fail.lua`), one at a time and ``--batch``
  per call; each run raised, so the queue's raised-runs counter moves (one HINCRBY per call).

For each: Valkey's µs per script call (or per job) and the commands the scripts ran per call (per job).
The command counts do not depend on the machine's speed, so they are the figure to compare on a noisy
machine; each command a script runs costs Valkey ~1–2 µs whatever it does. ``--rounds`` rounds, each on a
fresh Valkey; medians with min–max.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path

from redis.asyncio import Redis

from bench.stack import start_valkey, stop_valkey
from queue_manager_server.engine import Engine
from queue_manager_server.engine.records import ClaimRequest, NewJob

_JSON = "application/json"
Step = Callable[[int], Awaitable[None]]


# Commands of this harness and of connecting, not of the scripts.
_NOT_SCRIPTS = (
    "cmdstat_evalsha",
    "cmdstat_info",
    "cmdstat_config",
    "cmdstat_hello",
    "cmdstat_client",
    "cmdstat_script",
)


async def _stats(redis: Redis) -> tuple[float, int, int]:
    """Scripts' µs, script calls, and the commands they ran, since the last CONFIG RESETSTAT."""
    info = await redis.info("commandstats")
    script = info.get("cmdstat_evalsha", {})
    ran = sum(int(s["calls"]) for name, s in info.items() if not name.startswith(_NOT_SCRIPTS))
    return float(script.get("usec", 0)), int(script.get("calls", 0)), ran


async def _measure(redis: Redis, steps: int, step: Step, gap: float) -> tuple[float, float]:
    """(Valkey µs per script call, commands per script call) over `steps` calls of step."""
    await redis.config_resetstat()
    for i in range(steps):
        await step(i)
        if gap:
            await asyncio.sleep(gap)
    usec, calls, ran = await _stats(redis)
    if not calls:
        raise RuntimeError("no script ran")
    return usec / calls, ran / calls


def _lone_steps(engine: Engine) -> tuple[Step, Step]:
    """A lone job's add with its folded claim, and its completion (the i-th add's job)."""
    leased: list[tuple[str, str]] = []

    async def add(i: int) -> None:
        token = f"t{len(leased)}"
        (r,) = await engine.add_jobs_many(
            [("lone", [NewJob(id="", name="noop", data=b'{"i":%d}' % i)])],
            fetch=True,
            claims=[ClaimRequest(take=100, token=token, worker_id="w", lease_ms=60_000)],
        )
        if isinstance(r, Exception) or r.claim is None or len(r.claim.jobs) != 1:
            raise RuntimeError(f"the add's folded claim took no job: {r!r}")
        leased.append((r.claim.jobs[0].id, token))

    async def complete(i: int) -> None:
        job_id, token = leased[i]
        codes, _ = await engine.complete("lone", [(job_id, token, b"null", _JSON)], [500])
        if codes != [0]:
            raise RuntimeError(f"completion refused: {codes}")

    return add, complete


async def _failures(engine: Engine, redis: Redis, jobs: int, batch: int) -> dict[str, tuple[float, float]]:
    """Retried failures: lone ones (per call), then batches of `batch` (per job)."""
    out: dict[str, tuple[float, float]] = {}
    await engine.register_queue("failing", {})
    await engine.add_jobs("failing", [NewJob(id="", name="noop", data=b"{}", attempts=3)])
    (warm,) = (await engine.claim("failing", 1, "warm", "w", 60_000)).jobs
    await engine.fail("failing", [(warm.id, "warm", "boom", "", False)])  # fail.lua loaded before measuring
    sizes = (
        ("lone failure, retried (per call)", 1, jobs),
        (f"failure of {batch}, retried (per job)", batch, jobs),
    )
    for name, size, count in sizes:
        calls = max(1, count // size)
        leased: list[tuple[str, list[str]]] = []
        for i in range(calls):
            await engine.add_jobs("failing", [NewJob(id="", name="noop", data=b"{}", attempts=3)] * size)
            c = await engine.claim("failing", size, f"f{size}-{i}", "w", 60_000)
            if len(c.jobs) != size:
                raise RuntimeError(f"claim of {size} took {len(c.jobs)}")
            leased.append((f"f{size}-{i}", [j.id for j in c.jobs]))

        async def fail(i: int, leased: list[tuple[str, list[str]]] = leased) -> None:
            token, ids = leased[i]
            outcomes = await engine.fail(
                "failing", [(j, token, "boom", "", False) for j in ids], [500] * len(ids)
            )
            if any(code < 0 for code, _ in outcomes):
                raise RuntimeError(f"failure refused: {outcomes}")

        usec, ran = await _measure(redis, calls, fail, 0.0)
        out[name] = (usec / size, ran / size)
    return out


async def one_round(jobs: int, batch: int, gap: float) -> dict[str, tuple[float, float]]:
    """One round on a fresh Valkey: figure name → (Valkey µs, commands), per call for lone jobs, per job for
    batches."""
    out: dict[str, tuple[float, float]] = {}
    with tempfile.TemporaryDirectory(prefix="qm-bench-scripts-") as workdir:
        valkey = start_valkey(Path(workdir), "off")
        redis = Redis(host="127.0.0.1", port=valkey.port)
        try:
            engine = Engine(redis, "bench")
            await engine.register_queue("lone", {})
            await engine.register_queue("batch", {})
            # Every script loaded first (a first call is refused NOSCRIPT and sent again).
            warm_add, warm_complete = _lone_steps(engine)
            await warm_add(0)
            await warm_complete(0)
            await engine.claim("batch", 1, "warm", "w", 60_000)
            for label, pause in (("back to back", 0.0), (f"{gap * 1000:g} ms apart", gap)):
                add, complete = _lone_steps(engine)
                out[f"lone add with its claim, {label} (per call)"] = await _measure(redis, jobs, add, pause)
                out[f"lone completion, {label} (per call)"] = await _measure(redis, jobs, complete, pause)
            rounds = max(1, jobs // batch)
            for _ in range(rounds):
                jobs_ = [NewJob(id="", name="noop", data=b'{"i":%d}' % j) for j in range(batch)]
                await engine.add_jobs("batch", jobs_)
            claims = []

            async def claim(i: int) -> None:
                c = await engine.claim("batch", batch, f"b{i}", "w", 60_000)
                if len(c.jobs) != batch:
                    raise RuntimeError(f"claim of {batch} took {len(c.jobs)}")
                claims.append(c)

            async def complete_batch(i: int) -> None:
                items = [(j.id, f"b{i}", b"null", _JSON) for j in claims[i].jobs]
                codes, _ = await engine.complete("batch", items, [500] * len(items))
                if any(codes):
                    raise RuntimeError(f"completion refused: {codes}")

            usec, ran = await _measure(redis, rounds, claim, 0.0)
            out[f"claim of {batch} (per job)"] = (usec / batch, ran / batch)
            usec, ran = await _measure(redis, rounds, complete_batch, 0.0)
            out[f"completion of {batch} (per job)"] = (usec / batch, ran / batch)
            out.update(await _failures(engine, redis, jobs, batch))
        finally:
            await redis.aclose()
            stop_valkey(valkey)
    return out


def _spread(values: list[float], digits: int) -> str:
    med = statistics.median(values)
    if len(values) == 1:
        return f"{med:.{digits}f}"
    return f"{med:.{digits}f} ({min(values):.{digits}f}–{max(values):.{digits}f})"


async def main_async(args: argparse.Namespace) -> None:
    runs: list[dict[str, tuple[float, float]]] = []
    for r in range(args.rounds):
        runs.append(await one_round(args.jobs, args.batch, args.gap_ms / 1000))
        print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)
    print("| Script calls | Valkey µs | commands |")
    print("|---|---|---|")
    for name in runs[0]:
        usec = [run[name][0] for run in runs]
        ran = [run[name][1] for run in runs]
        print(f"| {name} | {_spread(usec, 1)} | {_spread(ran, 2)} |")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.scripts", description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=1000, help="lone jobs per measure (and jobs in batches)")
    parser.add_argument("--batch", type=int, default=100, help="jobs per batched claim and completion")
    parser.add_argument("--gap-ms", type=float, default=2.0, help="pause between lone calls (500 jobs/s: 2)")
    parser.add_argument("--smoke", action="store_true", help="a few calls, one round (CI)")
    args = parser.parse_args()
    if args.smoke:
        args.rounds, args.jobs, args.batch = 1, 20, 10
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
