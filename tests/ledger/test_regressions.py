"""Regression tests for defects the fault-injection suite found (each names the scenario that found it)."""

from __future__ import annotations

from pathlib import Path

import pytest
from redis.asyncio import Redis
from redis.exceptions import OutOfMemoryError

from queue_manager.v1 import workflows_pb2
from queue_manager_server.engine import Engine
from queue_manager_server.engine.control import Control
from queue_manager_server.engine.records import NewJob
from queue_manager_server.services.workflows import Workflows, step_job_id
from tests.ledger.faultkit import Valkey
from tests.test_workflows import step_outcome


async def test_a_step_started_by_a_hand_off_and_its_replay_is_not_cancelled(engine: Engine) -> None:
    """Found by test_three_servers_one_killed_with_flows: a flow entry carried out by one server while a
    janitor of another replays it (the entry is cleared only afterwards) starts the next step twice. The
    second start found the step already started and took it for a step cancelled with its run, so it
    cancelled the step's job, and the run ended cancelled though nobody cancelled it."""
    for q in ("first", "next"):
        await engine.register_queue(q, {})
    workflows = Workflows(engine, 1 << 20)
    workflows.cancel_job = Control(engine).cancel_job
    wf = workflows_pb2.Workflow(
        steps=[
            workflows_pb2.WorkflowStep(
                key="a",
                queue_name="first",
                job_name="a",
                on_success=[workflows_pb2.WorkflowStep(key="b", queue_name="next", job_name="b")],
            )
        ]
    )
    run_id, created = await workflows.execute(wf, "race")
    assert created
    # Step a completed: the hand-off and its replay each record it and learn that b is to start …
    first = await step_outcome(workflows.store, run_id, "a")
    replay = await step_outcome(workflows.store, run_id, "a")
    assert first == replay == ("running", ["b"])
    # … and each starts it: one job, started once, never cancelled.
    await workflows.start_steps(run_id, ["b"])
    await workflows.start_steps(run_id, ["b"])
    job = await engine.get_job("next", step_job_id(run_id, "b"))
    assert job.state == "waiting"
    run = await workflows.get(run_id)
    assert run.state == workflows_pb2.WORKFLOW_STATE_RUNNING
    assert [s.state for s in run.steps] == [
        workflows_pb2.WORKFLOW_STEP_STATE_COMPLETED,
        workflows_pb2.WORKFLOW_STEP_STATE_STARTED,
    ]


async def test_a_step_cancelled_with_its_run_while_starting_is_still_cancelled(engine: Engine) -> None:
    """The other side of the fix above: a run cancelled between deciding to start a step and adding its
    job still cancels that job."""
    for q in ("first", "next"):
        await engine.register_queue(q, {})
    workflows = Workflows(engine, 1 << 20)
    workflows.cancel_job = Control(engine).cancel_job
    wf = workflows_pb2.Workflow(
        steps=[
            workflows_pb2.WorkflowStep(
                key="a",
                queue_name="first",
                job_name="a",
                on_success=[workflows_pb2.WorkflowStep(key="b", queue_name="next", job_name="b")],
            )
        ]
    )
    run_id, _ = await workflows.execute(wf, "cancelled")
    assert await step_outcome(workflows.store, run_id, "a") == ("running", ["b"])
    await workflows.cancel(run_id, "stop")
    await workflows.start_steps(run_id, ["b"])
    job = await engine.get_job("next", step_job_id(run_id, "b"))
    assert job.state == "cancelled"


async def test_a_full_valkey_still_records_what_running_jobs_report(tmp_path: Path) -> None:
    """Found by test_valkey_full_refuses_adds_and_keeps_completions: at maxmemory (noeviction) Valkey
    refused the first write of every script, so lease extensions, completions, releases and recoveries of
    jobs already running failed, the worker's stream broke, and its jobs stayed active until memory was
    raised. Those scripts carry the allow-oom flag now; adds and claims are still refused."""
    valkey = Valkey(tmp_path / "v")
    await valkey.start()
    redis = Redis.from_url(valkey.url)
    try:
        engine = Engine(redis, "oom")
        await engine.scripts.load_all()
        await engine.register_queue("q", {})
        await engine.add_jobs("q", [NewJob(id=f"j{i}", name="j", data=b"1") for i in range(3)])
        claimed = await engine.claim("q", 3, "tok", "w", 60_000)
        assert len(claimed.jobs) == 3
        await redis.config_set("maxmemory", 1)  # always above it: every ordinary write is refused
        with pytest.raises(OutOfMemoryError):
            await engine.add_jobs("q", [NewJob(id="late", name="j", data=b"1")])
        assert [code for code, _ in await engine.extend("q", [("j0", "tok")], 60_000)] == [0]
        codes, _ = await engine.complete("q", [("j0", "tok", b"1", "application/json")])
        assert codes == [0]
        await engine.release("q", [("j1", "tok")], stalled=True)
        await redis.config_set("maxmemory", 0)
        assert (await engine.get_job("q", "j0")).state == "completed"
        assert (await engine.get_job("q", "j1")).state == "waiting"
    finally:
        await redis.aclose()
        await valkey.stop()
