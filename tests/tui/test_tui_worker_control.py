"""The dashboard's worker controls against a real server and a real worker: p quiets and resumes the
selected worker at once, s stops it after asking; the Workers view shows the state."""

from __future__ import annotations

import asyncio

from queue_manager import JobContext, QueueManager, Worker, WorkerState
from queue_manager_tui import DashboardApp, connect
from tests.conftest import RunningServer
from tests.tui.helpers import rows, screen_lines, wait_for, wait_live
from tests.tui.test_tui_live import INTERVAL, SIZE, WAIT, confirm, until


async def test_quiet_resume_and_stop_a_worker(server: RunningServer) -> None:
    qm = QueueManager(server.address)
    await qm.register_queue("emails", disable_dead_letter=True)

    async def work(job: JobContext) -> None:
        return None

    worker = Worker(server.address, {"emails": work}, worker_id="mail-1", shutdown_grace=5)
    await worker.start()
    async with asyncio.timeout(WAIT):
        await worker.wait_connected()

    async def state_is(state: WorkerState | None) -> bool:
        listed = {w.worker_id: w.state for w in await qm.list_workers()}
        return listed.get("mail-1") == state

    app = DashboardApp(connect(server.address), interval=INTERVAL)
    try:
        async with app.run_test(size=SIZE) as pilot:
            await wait_live(pilot, app, 1)
            await pilot.press("3")
            await wait_for(pilot, lambda: rows(app, "workers-table") == ["mail-1"], "the worker's row", WAIT)
            await pilot.press("p")  # no question: quiet is undone by p again
            await until(pilot, lambda: state_is(WorkerState.QUIET), "the worker to be quiet")
            await wait_for(
                pilot, lambda: any("mail-1 (quiet)" in line for line in screen_lines(app)), "(quiet)", WAIT
            )
            await pilot.press("p")
            await until(pilot, lambda: state_is(WorkerState.ACTIVE), "the worker to be resumed")
            await confirm(pilot, "s", "Stop worker mail-1 on " + worker.labels["host"] + "?")
            async with asyncio.timeout(WAIT):
                await worker.wait_closed()  # its run ended by itself
            assert worker.stopped_by_server
            await until(pilot, lambda: state_is(None), "the worker to leave the list")
    finally:
        await worker.shutdown(grace=5)
        await qm.shutdown()
