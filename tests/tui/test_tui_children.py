"""The job detail of jobs the plain delayed/group view would misread, against a real server: a parent parked
on the children it added at run time (its wait, its children and their outcomes, links to them) and a job
routed by worker labels (its labels, not only its reserved group)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from textual.widgets import Static

from queue_manager import ChildSpec, JobContext, JobRef, JobState, QueueManager, UnrecoverableError
from queue_manager_tui import DashboardApp, connect
from queue_manager_tui.widgets.nav_table import NavTable
from tests.conftest import RunningServer
from tests.test_delay_job import until_state
from tests.tui.helpers import rows, screen_lines, wait_for, wait_live
from tests.tui.test_tui_live import INTERVAL, SIZE, WAIT


@pytest.fixture
async def qm(server: RunningServer) -> AsyncIterator[QueueManager]:
    client = QueueManager(server.address, concurrency=2, shutdown_grace=5.0)
    yield client
    await client.shutdown()


def _dashboard(server: RunningServer) -> DashboardApp:
    return DashboardApp(connect(server.address), interval=INTERVAL)


def _cell(table: NavTable, row: str, column: str) -> str:
    return str(getattr(table.get_cell(row, column), "plain", ""))


def _detail(app: DashboardApp) -> str:
    """The detail pane's whole text (it scrolls: the screen shows only its top)."""
    return str(app.query_one("#job-detail-body", Static).content)


async def test_a_parent_parked_on_two_children_shows_its_wait_then_their_outcomes(
    server: RunningServer, qm: QueueManager
) -> None:
    for queue in ("files", "kids"):
        await qm.register_queue(queue)
    release = asyncio.Event()

    @qm.processor("files")
    async def split(job: JobContext) -> str:
        if not job.children:
            await job.wait_for_children([ChildSpec("kids", "good", {"n": 1}), ChildSpec("kids", "bad")])
        return "combined"

    @qm.processor("kids")
    async def kid(job: JobContext) -> dict[str, int]:
        await release.wait()
        if job.name == "bad":
            raise UnrecoverableError("no such chunk\nat line 2")
        return {"n": job.data["n"]}

    await qm.start_workers()
    parent = await qm.add_job("files", "split", None, {"attempts": 1})
    parked = await until_state(qm, "files", parent.id, JobState.DELAYED)
    good, bad = (f"kids/{c.job_id}" for c in parked.child_jobs)

    app = _dashboard(server)
    async with app.run_test(size=SIZE) as pilot:
        await wait_live(pilot, app, 3)  # dead-letter-queue, files, kids
        await pilot.press("j", "enter", "l", "l")
        jobs = app.jobs_view
        await wait_for(pilot, lambda: rows(app, "jobs-table") == [parent.id], "the parked parent", WAIT)
        # Its row says what it waits for where a delayed job's due time goes.
        assert _cell(jobs.table, parent.id, "when") == "children"
        assert _cell(jobs.table, parent.id, "info") == "waiting for 2 of 2 children"
        await wait_for(pilot, lambda: jobs.loaded_job is not None, "the parent's detail", WAIT)
        text = _detail(app)
        assert "delayed  waiting for 2 of 2 children" in text and "runs at" not in text
        assert "children added at run time (2, 2 not finished)" in text
        # Each child's state now, from the parent's one GetJob: both run, held by the test.
        await until_state(qm, "kids", good.split("/")[1], JobState.ACTIVE)
        await until_state(qm, "kids", bad.split("/")[1], JobState.ACTIVE)
        app.open_job(JobRef("files", parent.id))
        await wait_for(pilot, lambda: f"{good}  active" in _detail(app), "the children's states now", WAIT)
        assert f"{bad}  active" in _detail(app)

        # The palette opens the children it added, as it does a chain's.
        commands = {command.title: command for command in app.palette_commands()}
        assert f"Open child job {good}" in commands and f"Open child job {bad}" in commands
        commands[f"Open child job {bad}"].run()
        await wait_for(
            pilot,
            lambda: jobs.loaded_job is not None and f"kids/{jobs.loaded_job.id}" == bad,
            "the child's detail",
            WAIT,
        )
        assert f"parent  files/{parent.id}" in _detail(app)

        release.set()
        await until_state(qm, "files", parent.id, JobState.COMPLETED)
        app.open_job(JobRef("files", parent.id))
        await wait_for(
            pilot,
            lambda: jobs.loaded_job is not None and jobs.loaded_job.id == parent.id,
            "the completed parent",
            WAIT,
        )
        text = _detail(app)
        assert "children added at run time (2)" in text and "waiting for" not in text
        assert f'{good}  completed  {{"n":1}}' in text
        assert f"{bad}  failed  no such chunk" in text and "at line 2" not in text


async def test_a_routed_job_shows_its_worker_labels(server: RunningServer, qm: QueueManager) -> None:
    await qm.register_queue("renders")
    # No worker has these labels: the job waits for one.
    routed = await qm.add_job("renders", "render", None, {"worker_labels": {"region": "eu", "gpu": "a100"}})
    app = _dashboard(server)
    async with app.run_test(size=SIZE) as pilot:
        await wait_live(pilot, app, 2)  # dead-letter-queue, renders
        await pilot.press("j")
        # The queue panel already counts its reserved group among the queue's groups (nothing to add).
        groups = "groups: 1; no per-group limit"
        await wait_for(pilot, lambda: any(groups in line for line in screen_lines(app)), "its group", WAIT)
        await pilot.press("enter")
        jobs = app.jobs_view
        await wait_for(pilot, lambda: rows(app, "jobs-table") == [routed.id], "the routed job", WAIT)
        await wait_for(pilot, lambda: jobs.loaded_job is not None, "its detail", WAIT)
        assert "worker labels: gpu=a100, region=eu  (group labels:gpu=a100,region=eu)" in _detail(app)
