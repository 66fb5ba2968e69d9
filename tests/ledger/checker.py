"""The ledger check: journals of producers and workers against what Redis holds after a scenario.

Like Jepsen's total-queue checker it sorts every job into what the promise allows and what it does not:

- **lost**: an acknowledged add (or a successor a finished flow job owes: next chain link, workflow step,
  schedule run, dead-letter copy) that is missing, or not finished once the system has settled;
- **duplicated**: a job run more often than the scenario allows, a completion the server accepted from a
  run that had lost its lease (the stored result names a run that was not the job's last), a chain link
  added twice, a schedule occurrence fired twice;
- **unexpected**: a job nobody added, a refused add that was written anyway, a run of an unknown job, a
  stored result that no journalled run produced;
- **invariants**: everything ``invariants.py`` finds in Redis.

Job ids are chosen by the producers, so every id is known; flow successors have derived ids
(``services/flows.py successor_id``, ``<run id>.<step key>``, ``schedule:<id>:<ms>``, ``<queue>:<id>``).
"""

from __future__ import annotations

import itertools
import json
import os
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from redis.asyncio import Redis

from queue_manager.v1 import types_pb2
from queue_manager_server.engine.engine import DEFAULT_DLQ
from queue_manager_server.engine.keys import workflow_run
from queue_manager_server.services.flows import successor_id
from tests.ledger.invariants import FINAL, QueueScan, scan_globals, scan_queue
from tests.ledger.journal import Journal

JobKey = tuple[str, str]
# At most this many examples of each kind of problem go into the report's text.
SHOWN = 8


@dataclass
class Run:
    """One run of a job, from a worker's journal."""

    queue: str
    id: str
    worker: str
    token: str
    attempts_made: int
    stalled: int
    redelivery: bool
    started: float
    outcome: str = ""  # done, fail, abandon; "" when the worker died during the run

    @property
    def order(self) -> tuple[int, float]:
        """Runs of one job in the order they were leased: every new lease follows a failed or lost run."""
        return (self.attempts_made + self.stalled, self.started)


@dataclass
class Chain:
    """A job added with ``chain_to``: its queue and id, and the queues of its links in order."""

    queue: str
    id: str
    links: list[str]


@dataclass
class Workflow:
    """A workflow run whose steps all succeed: step key -> queue."""

    run_id: str
    steps: dict[str, str]


@dataclass
class Schedule:
    """An interval schedule expected to fire `runs` times, `every_ms` apart."""

    queue: str
    id: str
    runs: int
    every_ms: int


@dataclass
class Expect:
    """What a scenario allows.

    Attributes:
        queues: The queues its jobs live in (the dead-letter queue is added when a job fails for good).
        max_runs: Runs allowed per job, a number or a function of (queue, id).
        settled: The system is idle: every acknowledged job must be finished.
        exact_counters: No retention rule or removal ran, so counters must equal the sets.
        chains, workflows, schedules: Flows whose successors the ledger owes.
        lease_grace_ms: See ``invariants.scan_queue``.
    """

    queues: list[str]
    max_runs: int | Callable[[str, str], int] = 1
    settled: bool = True
    exact_counters: bool = True
    chains: list[Chain] = field(default_factory=list)
    workflows: list[Workflow] = field(default_factory=list)
    schedules: list[Schedule] = field(default_factory=list)
    lease_grace_ms: int = 5_000

    def allowed(self, key: JobKey) -> int:
        return self.max_runs(*key) if callable(self.max_runs) else self.max_runs


@dataclass
class Report:
    """The verdict on one scenario, with counts and the scenario's measured figures."""

    scenario: str
    counts: Counter[str] = field(default_factory=Counter)
    lost: list[str] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    invariants: list[str] = field(default_factory=list)
    figures: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not (self.lost or self.duplicated or self.unexpected or self.invariants)

    def summary(self) -> str:
        c = self.counts
        line = (
            f"ledger[{self.scenario}]: acked {c['acked']}, refused {c['refused']}, unknown {c['unknown']} "
            f"({c['unknown_written']} written) | completed {c['completed']}, failed {c['failed']}, "
            f"dead-lettered {c['dead_lettered']}, flow jobs {c['derived']} | runs {c['runs']} "
            f"({c['redelivered']} redelivered, {c['rerun_jobs']} jobs run more than once, "
            f"{c['rejected_runs']} finished runs not kept) | lost {len(self.lost)}, duplicated "
            f"{len(self.duplicated)}, unexpected {len(self.unexpected)}, invariants {len(self.invariants)}"
        )
        if self.figures:
            line += " | " + ", ".join(f"{k} {v:g}" for k, v in self.figures.items())
        for title, items in (
            ("lost", self.lost),
            ("duplicated", self.duplicated),
            ("unexpected", self.unexpected),
            ("invariants", self.invariants),
        ):
            for item in items[:SHOWN]:
                line += f"\n  {title}: {item}"
            if len(items) > SHOWN:
                line += f"\n  {title}: … and {len(items) - SHOWN} more"
        return line

    def publish(self) -> None:
        """Prints the summary; with QM_FAULTS_REPORT set, appends the report as JSON to that file."""
        print(self.summary(), flush=True)
        path = os.environ.get("QM_FAULTS_REPORT")
        if path:
            record = {
                "scenario": self.scenario,
                "date": time.strftime("%Y-%m-%d %H:%M:%S"),
                "counts": dict(self.counts),
                "lost": len(self.lost),
                "duplicated": len(self.duplicated),
                "unexpected": len(self.unexpected),
                "invariants": len(self.invariants),
                "figures": self.figures,
            }
            with open(path, "a") as out:
                out.write(json.dumps(record) + "\n")


@dataclass
class Ledger:
    """The journals of one scenario, folded: each add's outcome, each job's runs."""

    outcome: dict[JobKey, str] = field(default_factory=dict)
    runs: dict[JobKey, list[Run]] = field(default_factory=lambda: defaultdict(list))

    @classmethod
    def read(cls, directory: Path) -> Ledger:
        ledger = cls()
        started: dict[tuple[str, str, str, int, int], Run] = {}
        for r in Journal.read(directory):
            ev = r["ev"]
            if ev in ("try", "ack", "refused", "unknown"):
                for job_id in r["ids"]:
                    ledger._add_outcome((r["q"], job_id), ev)
            elif ev == "start":
                run = Run(r["q"], r["id"], r["w"], r["tok"], r["atm"], r["stc"], r["re"], r["t"])
                ledger.runs[(run.queue, run.id)].append(run)
                started[(r["q"], r["id"], r["tok"], r["atm"], r["stc"])] = run
            elif ev in ("done", "fail", "abandon"):
                run_or_none = started.get((r["q"], r["id"], r["tok"], r["atm"], r["stc"]))
                if run_or_none is not None:
                    run_or_none.outcome = ev
        return ledger

    def _add_outcome(self, key: JobKey, ev: str) -> None:
        before = self.outcome.get(key)
        if before == "ack":
            return
        # "try" alone (no outcome journalled) means the call never returned: unknown.
        self.outcome[key] = "unknown" if ev == "try" else ev

    def ids(self, kind: str) -> set[JobKey]:
        return {key for key, ev in self.outcome.items() if ev == kind}


async def check(scenario: str, redis: Redis, prefix: str, journals: Path, expect: Expect) -> Report:
    """Checks one scenario; returns the report (``Report.ok``, ``Report.summary``)."""
    ledger = Ledger.read(journals)
    report = Report(scenario)
    scans = {q: await _scan(redis, prefix, q, expect) for q in expect.queues}
    if any(s.ids("failed") for s in scans.values()) and DEFAULT_DLQ not in scans:
        scans[DEFAULT_DLQ] = await _scan(redis, prefix, DEFAULT_DLQ, expect)
    for s in scans.values():
        report.invariants += s.violations
    if expect.settled:
        report.invariants += await scan_globals(redis, prefix)

    def exists(key: JobKey) -> bool:
        return key[0] in scans and key[1] in scans[key[0]].jobs

    acked = ledger.ids("ack")
    written_unknown = {key for key in ledger.ids("unknown") if exists(key)}
    report.counts.update(
        acked=len(acked), refused=len(ledger.ids("refused")), unknown=len(ledger.ids("unknown")),
        unknown_written=len(written_unknown),
    )  # fmt: skip
    for key in sorted(ledger.ids("refused")):
        if exists(key):
            report.unexpected.append(f"{key[0]}/{key[1]}: a refused add was written")
    owed = set(acked | written_unknown)
    derived = await _flows(redis, prefix, scans, expect, owed, report)
    owed |= derived
    report.counts["derived"] = len(derived)
    for key in sorted(acked | derived):
        _check_owed(key, scans, expect.settled, report)
    for q, s in scans.items():
        for job_id in sorted(s.jobs):
            if (q, job_id) not in owed:
                report.unexpected.append(f"{q}/{job_id}: in Redis, but nobody added it")
        report.counts["completed"] += len(s.ids("completed")) if q != DEFAULT_DLQ else 0
        report.counts["failed"] += len(s.ids("failed")) if q != DEFAULT_DLQ else 0
    _check_runs(ledger, scans, owed, expect, report)
    return report


async def _scan(redis: Redis, prefix: str, queue: str, expect: Expect) -> QueueScan:
    return await scan_queue(
        redis,
        prefix,
        queue,
        settled=expect.settled,
        exact_counters=expect.exact_counters,
        lease_grace_ms=expect.lease_grace_ms,
    )


def _check_owed(key: JobKey, scans: dict[str, QueueScan], settled: bool, report: Report) -> None:
    q, job_id = key
    scan = scans.get(q)
    if scan is None or job_id not in scan.jobs:
        report.lost.append(f"{q}/{job_id}: acknowledged (or owed by a flow) but missing")
    elif settled and scan.state(job_id) not in FINAL:
        report.lost.append(f"{q}/{job_id}: still {scan.state(job_id)} after the system settled")


def _check_runs(
    ledger: Ledger, scans: dict[str, QueueScan], owed: set[JobKey], expect: Expect, report: Report
) -> None:
    for key, runs in sorted(ledger.runs.items()):
        report.counts["runs"] += len(runs)
        report.counts["redelivered"] += sum(r.redelivery for r in runs)
        report.counts["rerun_jobs"] += len(runs) > 1
        if key not in owed:
            report.unexpected.append(f"{key[0]}/{key[1]}: ran {len(runs)} times but nobody added it")
            continue
        if len(runs) > expect.allowed(key):
            who = ", ".join(f"{r.worker}(stalls {r.stalled}, {r.outcome or 'killed'})" for r in runs)
            allowed = expect.allowed(key)
            report.duplicated.append(f"{key[0]}/{key[1]}: {len(runs)} runs, {allowed} allowed: {who}")
    for q, scan in scans.items():
        if q == DEFAULT_DLQ:
            continue
        for job_id in sorted(scan.ids("completed")):
            _check_winner(q, job_id, scan.jobs.get(job_id, {}), ledger.runs.get((q, job_id), []), report)


def _check_winner(q: str, job_id: str, fields: dict[str, bytes], runs: list[Run], report: Report) -> None:
    """The stored result must come from the job's last run: earlier runs had lost their lease by then."""
    try:
        result = json.loads(fields.get("res", b""))
        won = (result["w"], result["tok"], result["atm"], result["stc"])
    except (ValueError, KeyError, TypeError):
        report.unexpected.append(f"{q}/{job_id}: completed with a result no ledger worker returns")
        return
    match = [r for r in runs if (r.worker, r.token, r.attempts_made, r.stalled) == won]
    if not match:
        report.unexpected.append(f"{q}/{job_id}: its result names a run no journal recorded ({won[0]})")
        return
    last = max(runs, key=lambda r: r.order)
    if match[0] is not last:
        report.duplicated.append(
            f"{q}/{job_id}: completion kept from {won[0]} (stalls {won[3]}), a run that had lost its lease "
            f"to {last.worker} (stalls {last.stalled})"
        )
    report.counts["rejected_runs"] += sum(r.outcome == "done" for r in runs) - 1


async def _flows(
    redis: Redis, prefix: str, scans: dict[str, QueueScan], expect: Expect, owed: set[JobKey], report: Report
) -> set[JobKey]:
    """The jobs that flows owe (chain links, workflow steps, schedule runs, dead-letter copies)."""
    derived: set[JobKey] = set()
    for chain in expect.chains:
        parent = (chain.queue, chain.id)
        for link_queue in chain.links:
            if parent not in owed and parent not in derived:
                break
            scan = scans.get(parent[0])
            if scan is None or scan.state(parent[1]) != "completed":
                break  # the chain stops (or has not reached this link yet)
            parent = (link_queue, successor_id(*parent))
            derived.add(parent)
    _count_children(scans, expect, report)
    for wf in expect.workflows:
        derived |= {(q, f"{wf.run_id}.{key}") for key, q in wf.steps.items()}
        await _check_run(redis, prefix, wf, report)
    for sched in expect.schedules:
        derived |= _schedule_runs(scans[sched.queue], sched, report)
    for q, scan in list(scans.items()):
        if q == DEFAULT_DLQ:
            continue
        copies = {(DEFAULT_DLQ, f"{q}:{job_id}") for job_id in scan.ids("failed")}
        report.counts["dead_lettered"] += len(copies)
        derived |= copies
    return derived


def _count_children(scans: dict[str, QueueScan], expect: Expect, report: Report) -> None:
    """A chain link's predecessor names it as its only successor: one child per parent."""
    link_queues = {q for chain in expect.chains for q in chain.links}
    children: Counter[JobKey] = Counter()
    for q in link_queues:
        for job_id, fields in scans[q].jobs.items():
            par = fields.get("par")
            if par is None:
                continue
            view = types_pb2.Job.FromString(par)
            if not view.HasField("chain_root"):
                continue  # a workflow step
            for parent in view.parents[:1]:
                children[(parent.job.queue_name, parent.job.job_id)] += 1
                if job_id != successor_id(parent.job.queue_name, parent.job.job_id):
                    report.unexpected.append(f"{q}/{job_id}: a chain link whose id is not derived")
    for (q, job_id), n in children.items():
        if n > 1:
            report.duplicated.append(f"{q}/{job_id}: chain link added {n} times")


async def _check_run(redis: Redis, prefix: str, wf: Workflow, report: Report) -> None:
    run = {k.decode(): v.decode() for k, v in (await redis.hgetall(workflow_run(prefix, wf.run_id))).items()}
    states = {key: run.get(f"s:{key}", "") for key in wf.steps}
    if run.get("st") != "completed" or any(s != "c" for s in states.values()):
        report.lost.append(f"workflow {wf.run_id}: run {run.get('st')!r}, steps {states}")
    elif run.get("nf") != run.get("n"):
        counted = f"{run.get('nf')} of {run.get('n')}"
        report.invariants.append(f"workflow {wf.run_id}: {counted} steps counted finished")


def _schedule_runs(scan: QueueScan, sched: Schedule, report: Report) -> set[JobKey]:
    """The schedule's jobs: `runs` of them, one per occurrence, `every_ms` apart."""
    mark = f"schedule:{sched.id}:"
    occurrences = sorted(int(job_id[len(mark) :]) for job_id in scan.jobs if job_id.startswith(mark))
    gaps = {b - a for a, b in itertools.pairwise(occurrences)}
    if len(occurrences) < sched.runs:
        report.lost.append(f"schedule {sched.id}: {len(occurrences)} runs of {sched.runs}")
    elif len(occurrences) > sched.runs:
        report.duplicated.append(f"schedule {sched.id}: {len(occurrences)} runs of {sched.runs}")
    if gaps - {sched.every_ms}:
        apart = sorted(gaps)
        report.duplicated.append(f"schedule {sched.id}: occurrences {apart} ms apart, not {sched.every_ms}")
    return {(scan.queue, f"{mark}{ms}") for ms in occurrences}
