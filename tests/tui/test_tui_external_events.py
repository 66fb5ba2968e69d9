"""The job detail and row of a job parked for an external event, against a real server: what it waits for
(and until when) where a delayed job's due time goes, then the event that woke it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from textual.widgets import Static

from queue_manager import JobContext, JobRef, JobState, QueueManager
from queue_manager_tui import DashboardApp, connect
from queue_manager_tui.widgets.nav_table import NavTable
from tests.conftest import RunningServer
from tests.test_delay_job import until_state
from tests.tui.helpers import rows, wait_for, wait_live
from tests.tui.test_tui_live import INTERVAL, SIZE, WAIT


@pytest.fixture
async def qm(server: RunningServer) -> AsyncIterator[QueueManager]:
    client = QueueManager(server.address, concurrency=2, shutdown_grace=5.0)
    yield client
    await client.shutdown()


def _cell(table: NavTable, row: str, column: str) -> str:
    return str(getattr(table.get_cell(row, column), "plain", ""))


def _detail(app: DashboardApp) -> str:
    return str(app.query_one("#job-detail-body", Static).content)


async def test_a_job_parked_for_an_event_shows_its_keys_then_the_event_that_woke_it(
    server: RunningServer, qm: QueueManager
) -> None:
    await qm.register_queue("payments")

    @qm.processor("payments")
    async def settle(job: JobContext) -> str:
        if job.event is None:
            await job.wait_for_event(["payment:7:paid", "payment:7:failed"])
        return "settled"

    await qm.start_workers()
    job = await qm.add_job("payments", "settle", None)
    await until_state(qm, "payments", job.id, JobState.DELAYED)

    app = DashboardApp(connect(server.address), interval=INTERVAL)
    async with app.run_test(size=SIZE) as pilot:
        await wait_live(pilot, app, 2)  # dead-letter-queue, payments
        await pilot.press("j", "enter", "l", "l")
        jobs = app.jobs_view
        await wait_for(pilot, lambda: rows(app, "jobs-table") == [job.id], "the parked job", WAIT)
        # Its row says what it waits for where a delayed job's due time goes.
        assert _cell(jobs.table, job.id, "when") == "event"
        assert _cell(jobs.table, job.id, "info") == "waiting for event payment:7:paid, payment:7:failed"
        await wait_for(pilot, lambda: jobs.loaded_job is not None, "its detail", WAIT)
        text = _detail(app)
        assert "delayed  waiting for event payment:7:paid, payment:7:failed" in text and "runs at" not in text

        await qm.push_event("payment:7:paid", {"amount": 12}, event_id="whk-3")
        await until_state(qm, "payments", job.id, JobState.COMPLETED)
        app.open_job(JobRef("payments", job.id))
        await wait_for(
            pilot,
            lambda: jobs.loaded_job is not None and jobs.loaded_job.state is JobState.COMPLETED,
            "the completed job",
            WAIT,
        )
        text = _detail(app)
        assert "waiting for event" not in text
        assert "external event\npayment:7:paid  id whk-3  pushed " in text and '"amount": 12' in text


async def test_a_timed_wait_shows_its_deadline(server: RunningServer, qm: QueueManager) -> None:
    await qm.register_queue("timed-ev")

    @qm.processor("timed-ev")
    async def wait(job: JobContext) -> None:
        await job.wait_for_event("approval:9", timeout=3600)

    await qm.start_workers()
    job = await qm.add_job("timed-ev", "w", None)
    parked = await until_state(qm, "timed-ev", job.id, JobState.DELAYED)
    until = parked.event_wait.until.strftime("%Y-%m-%d %H:%M:%S")
    app = DashboardApp(connect(server.address), interval=INTERVAL)
    async with app.run_test(size=SIZE) as pilot:
        await wait_live(pilot, app, 2)
        await pilot.press("j", "enter", "l", "l")
        jobs = app.jobs_view
        await wait_for(pilot, lambda: rows(app, "jobs-table") == [job.id], "the parked job", WAIT)
        assert _cell(jobs.table, job.id, "info") == f"waiting for event approval:9 (until {until} UTC)"
        await wait_for(pilot, lambda: jobs.loaded_job is not None, "its detail", WAIT)
        assert f"delayed  waiting for event approval:9 (until {until} UTC)" in _detail(app)
