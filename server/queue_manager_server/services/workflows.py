"""Workflows: a graph of steps, each a job in some queue, stored in Redis so workers in any language run them.

`ExecuteWorkflow` lays the workflow out (a key per step, the graph as run-hash fields, each step's spec)
and creates the run in one script (``wf_create.lua``); root steps start at once. Each step's job carries
its run and step key (``flo`` + ``par``), so when it finishes, the flow hand-off (services/flows.py) records
the outcome in the run (``wf_step_done.lua``), which decides the next steps: ``on_success`` ones after a
completion, ``on_failure`` ones after a failure for good, a ``depends_on`` step once all it waits for have
completed (fan-in); the branches not taken are skipped, and so is a due step whose run_if conditions on its
predecessors' results do not all hold (services/conditions.py). Step job ids are ``<run id>.<step key>``,
so a hand-off carried out twice (a server killed meanwhile) adds no step twice. Each step's processor gets
its predecessors' results as the job's parents.
"""

from __future__ import annotations

import logging
import os
import re
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import grpc

from queue_manager.v1 import types_pb2, workflows_pb2
from queue_manager_server import convert, paging, validate
from queue_manager_server.engine import Engine
from queue_manager_server.engine.job_control import JobControl
from queue_manager_server.engine.records import NewJob
from queue_manager_server.engine.workflows import RunRecord, WorkflowStore
from queue_manager_server.errors import (
    InvalidArgument,
    QueueManagerError,
    QueueNotFound,
    WorkflowNotFound,
    WrongState,
)
from queue_manager_server.services import conditions
from queue_manager_server.services.errors import unary

log = logging.getLogger("queue_manager_server.workflows")

MAX_STEPS = 1000
MAX_DEPTH = 32
_STEP_KEY = re.compile(r"[A-Za-z0-9_-]{1,64}")
_RUN_ID = re.compile(r"[A-Za-z0-9_.-]{1,100}")
_BRANCHES = {
    "root": workflows_pb2.WORKFLOW_BRANCH_ROOT,
    "ok": workflows_pb2.WORKFLOW_BRANCH_ON_SUCCESS,
    "ko": workflows_pb2.WORKFLOW_BRANCH_ON_FAILURE,
}
_STEP_STATES = {
    "w": workflows_pb2.WORKFLOW_STEP_STATE_PENDING,
    "p": workflows_pb2.WORKFLOW_STEP_STATE_PENDING,
    "g": workflows_pb2.WORKFLOW_STEP_STATE_STARTED,
    "s": workflows_pb2.WORKFLOW_STEP_STATE_STARTED,
    "c": workflows_pb2.WORKFLOW_STEP_STATE_COMPLETED,
    "f": workflows_pb2.WORKFLOW_STEP_STATE_FAILED,
    "k": workflows_pb2.WORKFLOW_STEP_STATE_SKIPPED,
    "x": workflows_pb2.WORKFLOW_STEP_STATE_CANCELLED,
}
_RUN_STATES = {
    "running": workflows_pb2.WORKFLOW_STATE_RUNNING,
    "completed": workflows_pb2.WORKFLOW_STATE_COMPLETED,
    "failed": workflows_pb2.WORKFLOW_STATE_FAILED,
    "cancelled": workflows_pb2.WORKFLOW_STATE_CANCELLED,
}
# How a step's job ended, or that it was retried (its flow entry: services/flows.py RETRIED), as
# wf_step_done.lua records it.
_OUTCOMES = {"completed": "c", "failed": "f", "cancelled": "x", "retried": "r"}
# A run whose first steps have no jobs this long after its creation lost its creator: start them.
STARTING_GRACE_MS = 5_000

# Cancels one job of a step (queue, job id, reason); set once job cancellation is wired in.
JobCanceller = Callable[[str, str, str], Awaitable[object]]
# A step's job finished: run id, step key, the job's state, its flow entry (result, content type, error).
_Finished = tuple[str, str, str, dict[str, bytes]]
# Steps of a run to start: run id, step keys, the run as stored (None: read it).
_Start = tuple[str, list[str], "RunRecord | None"]


def step_job_id(run_id: str, step_key: str) -> str:
    """The id of a step's job: derived from the run, so starting a step twice adds one job."""
    return f"{run_id}.{step_key}"


@dataclass(slots=True)
class _Step:
    key: str
    spec: workflows_pb2.WorkflowStep  # without its nested steps
    parent: str
    branch: str
    ok: list[str] = field(default_factory=list)
    ko: list[str] = field(default_factory=list)
    dependents: list[str] = field(default_factory=list)
    conditions: str = ""  # run_if as stored (services/conditions.py), empty for none


def layout(wf: workflows_pb2.Workflow, payload_limit: int) -> list[_Step]:
    """Validates a workflow and flattens it into steps, depth first. Raises InvalidArgument."""
    if not wf.steps:
        raise InvalidArgument("workflow.steps", "a workflow needs at least one step")
    validate.text(wf.id, "workflow.id", 200, required=False)
    validate.text(wf.name, "workflow.name", 200, required=False)
    validate.metadata(wf.metadata, "workflow.metadata")
    steps: list[_Step] = []

    def walk(
        items: list[workflows_pb2.WorkflowStep], parent: str, branch: str, at: str, depth: int
    ) -> list[str]:
        # Only a branch that holds steps counts: the empty branches of a step 32 levels deep are no 33rd.
        if items and depth > MAX_DEPTH:
            raise InvalidArgument(at, f"branches nest at most {MAX_DEPTH} levels deep")
        keys = []
        for i, step in enumerate(items):
            where = f"{at}[{i}]"
            if len(steps) >= MAX_STEPS:
                raise InvalidArgument("workflow.steps", f"a workflow has at most {MAX_STEPS} steps")
            key = step.key or (f"{parent}.{'s' if branch == 'ok' else 'f'}{i}" if parent else str(i))
            if step.key and not _STEP_KEY.fullmatch(step.key):
                raise InvalidArgument(f"{where}.key", "use 1-64 letters, digits, '-' or '_'")
            _check_step(step, where, payload_limit)
            spec = workflows_pb2.WorkflowStep()
            spec.CopyFrom(step)
            spec.ClearField("on_success")
            spec.ClearField("on_failure")
            spec.key = key
            node = _Step(key=key, spec=spec, parent=parent, branch=branch)
            steps.append(node)
            node.ok = walk(list(step.on_success), key, "ok", f"{where}.on_success", depth + 1)
            node.ko = walk(list(step.on_failure), key, "ko", f"{where}.on_failure", depth + 1)
            keys.append(key)
        return keys

    walk(list(wf.steps), "", "root", "workflow.steps", 1)
    by_key: dict[str, _Step] = {}
    for s in steps:
        if s.key in by_key:
            raise InvalidArgument(
                "workflow.steps", f"two steps have the key {s.key!r}; step keys must be unique"
            )
        by_key[s.key] = s
    for s in steps:
        for dep in s.spec.depends_on:
            if dep not in by_key or dep == s.key:
                raise InvalidArgument(
                    f"step {s.key!r}.depends_on", f"{dep!r} is not the key of another step of this workflow"
                )
            by_key[dep].dependents.append(s.key)
    _check_acyclic(steps, by_key)
    for s in steps:
        predecessors = [s.parent] if s.parent else []
        predecessors += [d for d in s.spec.depends_on if d not in predecessors]
        s.conditions = conditions.encode(s.key, s.spec.run_if, predecessors, payload_limit)
    return steps


def _check_step(step: workflows_pb2.WorkflowStep, where: str, payload_limit: int) -> None:
    validate.queue_name(step.queue_name, f"{where}.queue_name")
    o = step.options
    for name, given in (
        ("job_id", bool(o.job_id)),
        ("chain_to", bool(o.chain_to)),
        ("dedup", o.HasField("dedup")),
    ):
        if given:
            raise InvalidArgument(
                f"{where}.options.{name}", "is not allowed in a workflow step (the run names its jobs)"
            )
    convert.job_from(step.job_name, step.data, step.options, where, payload_limit)


def _check_acyclic(steps: list[_Step], by_key: dict[str, _Step]) -> None:
    """A step waiting (through depends_on and branches) for itself would never start: refuse it."""
    edges = {s.key: [*s.ok, *s.ko, *s.dependents] for s in steps}
    done: set[str] = set()
    for start in edges:
        if start in done:
            continue
        path, stack = {start}, [(start, iter(edges[start]))]
        while stack:
            node, children = stack[-1]
            nxt = next(children, None)
            if nxt is None:
                stack.pop()
                path.discard(node)
                done.add(node)
            elif nxt in path:
                raise InvalidArgument(
                    f"step {nxt!r}.depends_on", "these steps wait for each other in a cycle"
                )
            elif nxt not in done:
                path.add(nxt)
                stack.append((nxt, iter(edges[nxt])))


def run_fields(wf: workflows_pb2.Workflow, steps: list[_Step]) -> dict[str, str | bytes | int]:
    """The run hash as wf_create.lua stores it (lua/includes/workflow.lua describes the fields)."""
    fields: dict[str, str | bytes | int] = {
        "id": wf.id,
        "name": wf.name,
        "md": wf.metadata.SerializeToString(),
        "st": "running",
        "n": len(steps),
        "nf": 0,
        "order": " ".join(s.key for s in steps),
    }
    for s in steps:
        state = "w" if s.parent else ("p" if s.spec.depends_on else "g")
        fields[f"s:{s.key}"] = state
        fields[f"spec:{s.key}"] = s.spec.SerializeToString()
        if s.parent:
            fields[f"pk:{s.key}"] = s.parent
            fields[f"br:{s.key}"] = s.branch
        if s.spec.depends_on:
            fields[f"nd:{s.key}"] = len(s.spec.depends_on)
        if s.conditions:
            fields[f"if:{s.key}"] = s.conditions
        for name, keys in (
            ("ok", s.ok),
            ("ko", s.ko),
            ("dep", list(s.spec.depends_on)),
            ("rd", s.dependents),
        ):
            if keys:
                fields[f"{name}:{s.key}"] = " ".join(keys)
    return fields


class Workflows:
    """Executes, advances, reads and cancels workflow runs."""

    def __init__(self, engine: Engine, payload_limit: int) -> None:
        self.engine = engine
        self.store = WorkflowStore(engine)
        self.payload_limit = payload_limit
        self.cancel_job: JobCanceller | None = None

    async def execute(self, wf: workflows_pb2.Workflow, run_id: str) -> tuple[str, bool]:
        if run_id and not _RUN_ID.fullmatch(run_id):
            raise InvalidArgument("run_id", "use 1-100 letters, digits, '-', '_' or '.'")
        run_id = run_id or os.urandom(12).hex()
        steps = layout(wf, self.payload_limit)
        await self.engine.require_queues(sorted({s.spec.queue_name for s in steps}))
        fields = run_fields(wf, steps)
        created, to_start, now = await self.store.create(run_id, fields)
        if created:
            # The steps a new run starts are roots that follow nothing: what starting them reads of the run
            # (their specs, its metadata) is what was just written, so it is not read back. The run is
            # registered when they are marked started.
            await self._start(
                [(run_id, to_start, RunRecord(run_id, _stored(fields)))], registered=[(run_id, now)]
            )
        else:
            await self.start_steps(run_id, await self.store.to_start(run_id))
            await self.store.done_starting(run_id)
        return run_id, created

    async def step_finished(
        self, run_id: str, step_key: str, state: str, entry: dict[str, bytes]
    ) -> list[types_pb2.JobRef]:
        """Records how a step's job finished and starts what follows; returns the jobs started."""
        return (await self.steps_finished([(run_id, step_key, state, entry)]))[0]

    async def steps_finished(self, steps: Sequence[_Finished]) -> list[list[types_pb2.JobRef]]:
        """Records how steps' jobs finished (run id, step key, job state, the job's flow entry), in the order
        given, and starts what follows them, in shared round trips: the outcomes in one, the jobs of the
        steps they start in one (one add per queue), their started marks and the expiry of runs that
        finished in one. A round trip per step made a workflow step a sixth as fast as a plain job.
        Returns the jobs each started."""
        recorded = [i for i, (_, _, state, _) in enumerate(steps) if state in _OUTCOMES]
        outcomes = await self.store.finish_steps(
            [
                (
                    steps[i][0],
                    steps[i][1],
                    _OUTCOMES[steps[i][2]],
                    steps[i][3].get("res", b""),
                    steps[i][3].get("rct", b"").decode(),
                    steps[i][3].get("err", b"").decode() or steps[i][2],
                )
                for i in recorded
            ]
        )
        starts: list[_Start] = []
        owners: list[int] = []
        finished: list[str] = []
        for i, done in zip(recorded, outcomes, strict=True):
            if done is None:
                continue
            if done.to_start:
                starts.append((steps[i][0], done.to_start, done.run))
                owners.append(i)
            if done.state != "running":
                finished.append(steps[i][0])
        refs: list[list[types_pb2.JobRef]] = [[] for _ in steps]
        for i, started in zip(owners, await self._start(starts, finished), strict=True):
            refs[i] = started
        return refs

    async def start_steps(
        self, run_id: str, keys: list[str], run: RunRecord | None = None
    ) -> list[types_pb2.JobRef]:
        """Adds the jobs of steps decided to start (idempotent), then marks them started. run: the run as
        stored, when the caller has it (else it is read)."""
        return (await self._start([(run_id, keys, run)]))[0]

    async def _start(
        self,
        starts: Sequence[_Start],
        finished: Sequence[str] = (),
        registered: Sequence[tuple[str, int]] = (),
    ) -> list[list[types_pb2.JobRef]]:
        """start_steps for several runs: their jobs added in one round trip (one add per queue), then marked
        started in another, with the expiry of the runs in finished and the registration of new runs (run id,
        creation time: WorkflowStore.started). Returns the jobs each run started."""
        refs: list[list[types_pb2.JobRef]] = [[] for _ in starts]
        by_queue: dict[str, list[tuple[int, str, NewJob]]] = defaultdict(list)
        runs: list[RunRecord | None] = []
        for n, (run_id, keys, run) in enumerate(starts):
            if keys and run is None:
                run = await self.store.read(run_id)
            runs.append(run)
            if not keys or run is None:
                continue
            metadata = workflows_pb2.WorkflowMetadata.FromString(run.fields.get("md", b""))
            for key in keys:
                spec = _spec(run, key)
                by_queue[spec.queue_name].append((n, key, self._step_job(run, run_id, key, spec, metadata)))
        if not by_queue and not finished and not registered:
            return refs
        groups = list(by_queue.items())
        results = (
            await self.engine.add_jobs_many(
                [(queue, [job for _, _, job in items]) for queue, items in groups]
            )
            if groups
            else []
        )
        added: list[list[str]] = [[] for _ in starts]
        refused: list[tuple[int, str, QueueNotFound]] = []
        for (queue, items), result in zip(groups, results, strict=True):
            if isinstance(result, QueueNotFound):
                refused += [(n, key, result) for n, key, _ in items]
                continue
            if isinstance(result, Exception):
                raise result  # Redis failed: the caller's outbox entries stay queued for the next pass
            for n, key, job in items:
                added[n].append(key)
                refs[n].append(types_pb2.JobRef(queue_name=queue, job_id=job.id))
        marks = [(run_id, keys) for (run_id, _, _), keys in zip(starts, added, strict=True)]
        cancelled = await self.store.started(marks, finished, registered)
        for (run_id, _, _), run, keys in zip(starts, runs, cancelled, strict=True):
            if run is None:
                continue
            for key in keys:  # the run was cancelled meanwhile
                await self._cancel_step_job(run, run_id, key, "the workflow run was cancelled")
        # A step whose queue is gone (deleted since the run was created) fails: what follows its failure
        # starts in turn.
        for n, key, exc in refused:
            refs[n] += await self.step_finished(starts[n][0], key, "failed", {"err": str(exc).encode()})
        return refs

    def _step_job(
        self,
        run: RunRecord,
        run_id: str,
        key: str,
        spec: workflows_pb2.WorkflowStep,
        metadata: workflows_pb2.WorkflowMetadata,
    ) -> NewJob:
        """The job of a starting step: its spec's job, with its run and parents as its flow view, the run's
        attributes (its trace context among them) under the spec's own, and the run's correlation id and
        tags unless the spec has metadata of its own."""
        job = convert.job_from(spec.job_name, spec.data, spec.options, key, self.payload_limit)
        job.id = step_job_id(run_id, key)
        view = types_pb2.Job(
            parents=_parents(run, run_id, key, spec),
            workflow=types_pb2.WorkflowStepRef(run_id=run_id, step_key=key),
        )
        job.extra = {"flo": b"1", "par": view.SerializeToString()}
        fallback = None
        if metadata.correlation_id or metadata.tags:
            fallback = types_pb2.JobMetadata(correlation_id=metadata.correlation_id, tags=metadata.tags)
        job.metadata = convert.inherit_metadata(job.metadata, metadata.attributes, fallback)
        return job

    async def resume_starting(self) -> int:
        """Starts the first steps of runs whose creator died before adding their jobs (janitor)."""
        now = await self.engine.redis_time_ms()
        resumed = 0
        for run_id, marked in await self.store.starting_before(now - STARTING_GRACE_MS):
            await self._start(
                [(run_id, await self.store.to_start(run_id), None)], registered=[(run_id, marked)]
            )
            resumed += 1
        await self.store.forget_expired(now)
        return resumed

    async def cancel(self, run_id: str, reason: str) -> workflows_pb2.WorkflowRun:
        code, keys = await self.store.cancel(run_id, reason)
        if code == -1:
            raise WorkflowNotFound(run_id)
        if code == 0:
            raise WrongState(
                f"workflow run {run_id!r} is already {keys[0]}; only a running run can be cancelled"
            )
        run = await self.store.read(run_id)
        if run is not None:
            for key in keys:
                await self._cancel_step_job(run, run_id, key, reason or "the workflow run was cancelled")
        await self.store.expire_finished(run_id)
        return await self.get(run_id)

    async def retry(self, run_id: str) -> tuple[list[str], workflows_pb2.WorkflowRun]:
        """Runs the job of every failed (or cancelled) step of a finished run again, in one call: the steps
        reopen (wf_step_done.lua, outcome r, carried out by the retries' flow hand-offs before this returns)
        and the run is running again. A step whose job is no longer failed or cancelled was retried by
        another call meanwhile: it is left to that one. Returns the keys of the steps retried and the run.

        Raises:
            WorkflowNotFound: No such run.
            WrongState: The run is running, completed or cancelled with CancelWorkflow, or the job of a
                step to retry no longer exists (nothing is retried then).
        """
        run = await self.store.read(run_id)
        if run is None:
            raise WorkflowNotFound(run_id)
        _check_retryable(run)
        keys = [k for k in run.step_keys() if _retryable_step(run, k)]
        jobs = [(_spec(run, k).queue_name, step_job_id(run_id, k)) for k in keys]
        states = await self.engine.job_states(jobs)
        gone = [
            f"{k!r} (job {job_id!r} in queue {queue!r})"
            for k, (queue, job_id), st in zip(keys, jobs, states, strict=True)
            if not st
        ]
        if gone:
            raise WrongState(
                f"workflow run {run_id!r} cannot be retried: the job of step {', '.join(gone)} no longer "
                "exists (removed by its queue's retention of failed jobs, or by hand); nothing was retried"
            )
        todo = [
            (k, job) for k, job, st in zip(keys, jobs, states, strict=True) if st in ("failed", "cancelled")
        ]
        codes = await JobControl(self.engine).retry_each([job for _, job in todo])
        retried = [k for (k, _), code in zip(todo, codes, strict=True) if code == 1]
        for (k, (queue, job_id)), code in zip(todo, codes, strict=True):
            if code != 1:  # retried, removed or its queue deleted by another call meanwhile
                log.info(
                    "step job not retried",
                    extra={"run_id": run_id, "step": k, "queue": queue, "job_id": job_id, "code": code},
                )
        return retried, await self.get(run_id)

    async def _cancel_step_job(self, run: RunRecord, run_id: str, key: str, reason: str) -> None:
        if self.cancel_job is None:
            return
        try:
            await self.cancel_job(_spec(run, key).queue_name, step_job_id(run_id, key), reason)
        except QueueManagerError as exc:  # finished or gone meanwhile: nothing left to stop
            log.info("step job not cancelled", extra={"run_id": run_id, "step": key, "error": str(exc)})

    async def get(self, run_id: str) -> workflows_pb2.WorkflowRun:
        run = await self.store.read(run_id)
        if run is None:
            raise WorkflowNotFound(run_id)
        out = _run_out(run)
        started: list[tuple[workflows_pb2.WorkflowStepRun, str, str]] = []
        for key in run.step_keys():
            spec = _spec(run, key)
            code = run.text(f"s:{key}")
            step = out.steps.add(
                key=key,
                queue_name=spec.queue_name,
                job_name=spec.job_name,
                state=_STEP_STATES.get(code, workflows_pb2.WORKFLOW_STEP_STATE_UNSPECIFIED),
                error=run.text(f"e:{key}"),
                parent_key=run.text(f"pk:{key}"),
                branch=_BRANCHES[run.text(f"br:{key}", "root")],
                depends_on=spec.depends_on,
            )
            if code in ("g", "s", "c", "f", "x") and not (code == "x" and not run.text(f"e:{key}")):
                step.job_id = step_job_id(run_id, key)
                started.append((step, spec.queue_name, step.job_id))
            if f"r:{key}" in run.fields:
                step.result.CopyFrom(
                    convert.payload_out(run.fields[f"r:{key}"], run.text(f"rct:{key}"), json_view=True)
                )
        states = await self.engine.job_states([(queue, job_id) for _, queue, job_id in started])
        for (step, _, _), state in zip(started, states, strict=True):
            step.job_state = convert.STATE_VALUES.get(state, types_pb2.JOB_STATE_UNSPECIFIED)
        return out

    async def page(self, page_size: int, page_token: str) -> workflows_pb2.ListWorkflowsResponse:
        size, after = paging.cursor_request(page_size, page_token, "w", "ListWorkflows")
        records, total, last = await self.store.page(after, size)
        response = workflows_pb2.ListWorkflowsResponse(runs=[_run_out(r) for r in records], total_size=total)
        if last is not None:
            response.next_page_token = paging.next_cursor("w", *last)
        return response


def _check_retryable(run: RunRecord) -> None:
    """Refuses RetryWorkflow for a run that is not failed, or was cancelled with CancelWorkflow."""
    state, run_id = run.text("st"), run.run_id
    if state == "running":
        raise WrongState(
            f"workflow run {run_id!r} is still running; only a finished run that failed can be retried "
            "(retry one failed step's job with RetryJob to run it again now)"
        )
    if state == "completed":
        raise WrongState(f"workflow run {run_id!r} completed; there is nothing to retry")
    if state == "cancelled" and "cr" in run.fields:
        raise WrongState(
            f"workflow run {run_id!r} was cancelled with CancelWorkflow; a cancelled run is not retried "
            "(execute the workflow again under a new run id)"
        )


def _retryable_step(run: RunRecord, key: str) -> bool:
    """A step RetryWorkflow runs again: failed for good, or cancelled with a job (its job was cancelled)."""
    code = run.text(f"s:{key}")
    return code == "f" or (code == "x" and bool(run.text(f"e:{key}")))


def _stored(fields: dict[str, str | bytes | int]) -> dict[str, bytes]:
    """Run fields as Redis stores and returns them (bytes)."""
    return {k: v if isinstance(v, bytes) else str(v).encode() for k, v in fields.items()}


def _spec(run: RunRecord, key: str) -> workflows_pb2.WorkflowStep:
    return workflows_pb2.WorkflowStep.FromString(run.fields.get(f"spec:{key}", b""))


def _parents(
    run: RunRecord, run_id: str, key: str, spec: workflows_pb2.WorkflowStep
) -> list[types_pb2.ParentJob]:
    """The steps a starting step follows: its branch parent and everything it depends on, with outcomes."""
    keys = [run.text(f"pk:{key}")] if run.text(f"pk:{key}") else []
    keys += [k for k in spec.depends_on if k not in keys]
    parents = []
    for k in keys:
        completed = run.text(f"s:{k}") == "c"
        parent = types_pb2.ParentJob(
            job=types_pb2.JobRef(queue_name=_spec(run, k).queue_name, job_id=step_job_id(run_id, k)),
            step_key=k,
            state=types_pb2.JOB_STATE_COMPLETED if completed else types_pb2.JOB_STATE_FAILED,
            failed_reason=run.text(f"e:{k}"),
        )
        if completed:
            parent.result.CopyFrom(
                convert.payload_out(run.fields.get(f"r:{k}"), run.text(f"rct:{k}"), json_view=False)
            )
        parents.append(parent)
    return parents


def _run_out(run: RunRecord) -> workflows_pb2.WorkflowRun:
    out = workflows_pb2.WorkflowRun(
        run_id=run.run_id,
        workflow_id=run.text("id"),
        name=run.text("name"),
        state=_RUN_STATES.get(run.text("st"), workflows_pb2.WORKFLOW_STATE_UNSPECIFIED),
        metadata=workflows_pb2.WorkflowMetadata.FromString(run.fields.get("md", b"")),
        cancel_reason=run.text("cr"),
        step_count=run.int("n"),
        finished_step_count=run.int("nf"),
    )
    if run.int("ts"):
        out.create_time.CopyFrom(convert.ms_timestamp(run.int("ts")))
    if run.int("fts"):
        out.finish_time.CopyFrom(convert.ms_timestamp(run.int("fts")))
    return out


class WorkflowHandlers:
    """ExecuteWorkflow, GetWorkflow, ListWorkflows, CancelWorkflow and RetryWorkflow (part of
    `QueueService`)."""

    workflows: Workflows

    @unary
    async def ExecuteWorkflow(
        self, request: workflows_pb2.ExecuteWorkflowRequest, context: grpc.aio.ServicerContext
    ) -> workflows_pb2.ExecuteWorkflowResponse:
        run_id, created = await self.workflows.execute(request.workflow, request.run_id)
        return workflows_pb2.ExecuteWorkflowResponse(run_id=run_id, created=created)

    @unary
    async def GetWorkflow(
        self, request: workflows_pb2.GetWorkflowRequest, context: grpc.aio.ServicerContext
    ) -> workflows_pb2.GetWorkflowResponse:
        run_id = validate.text(request.run_id, "run_id", 100)
        return workflows_pb2.GetWorkflowResponse(run=await self.workflows.get(run_id))

    @unary
    async def ListWorkflows(
        self, request: workflows_pb2.ListWorkflowsRequest, context: grpc.aio.ServicerContext
    ) -> workflows_pb2.ListWorkflowsResponse:
        return await self.workflows.page(request.page_size, request.page_token)

    @unary
    async def CancelWorkflow(
        self, request: workflows_pb2.CancelWorkflowRequest, context: grpc.aio.ServicerContext
    ) -> workflows_pb2.CancelWorkflowResponse:
        run_id = validate.text(request.run_id, "run_id", 100)
        reason = validate.text(request.reason, "reason", 1000, required=False)
        return workflows_pb2.CancelWorkflowResponse(run=await self.workflows.cancel(run_id, reason))

    @unary
    async def RetryWorkflow(
        self, request: workflows_pb2.RetryWorkflowRequest, context: grpc.aio.ServicerContext
    ) -> workflows_pb2.RetryWorkflowResponse:
        run_id = validate.text(request.run_id, "run_id", 100)
        retried, run = await self.workflows.retry(run_id)
        return workflows_pb2.RetryWorkflowResponse(run=run, retried_step_keys=retried)
