"""The dashboard against a real server with seeded jobs: navigation, every control (each through its
confirmation), read-only mode, and surviving the server going away."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from textual.pilot import Pilot
from textual.widgets import Select, Tree

from queue_manager import (
    JobContext,
    JobState,
    MaintenanceWindow,
    NotFoundError,
    QueueManager,
    UnrecoverableError,
    WorkflowState,
)
from queue_manager_tui import DashboardApp, connect
from queue_manager_tui.app import CONTROL_ACTIONS
from queue_manager_tui.screens.clean import CleanScreen
from queue_manager_tui.screens.confirm import ConfirmScreen
from queue_manager_tui.screens.help import HelpScreen
from queue_manager_tui.screens.matches import MatchesScreen
from queue_manager_tui.state import Link
from tests.conftest import RunningServer
from tests.procs import Procs
from tests.tui.helpers import rows, screen_lines, wait_for, wait_live

SIZE = (120, 34)
# Registering a queue registers its dead-letter queue too (it sorts first).
QUEUES = ["dead-letter-queue", "emails", "reports", "thumbnails"]
WAIT = 15.0
# Snapshots every half second: Pilot waits for an idle process after each key, so not faster.
INTERVAL = 0.5


@dataclass
class Seeded:
    """What the seed put on the server."""

    qm: QueueManager
    failed: list[str]
    waiting: list[str]
    delayed: str
    cancelled: str
    run_id: str


async def seed(qm: QueueManager) -> Seeded:
    """Three queues; in emails 3 failed, 5 waiting, 1 delayed and 1 cancelled job; a worker on thumbnails;
    a running workflow."""
    await qm.register_queue("emails", disable_dead_letter=True)
    await qm.register_queue("reports")
    await qm.register_queue("thumbnails")
    doomed = [
        await qm.add_job("emails", "doomed", {"n": i}, {"attempts": 1, "job_id": f"doomed-{i}"})
        for i in range(3)
    ]

    failing = QueueManager(qm.address, shutdown_grace=2.0)

    async def fail(job: JobContext) -> None:
        raise UnrecoverableError(f"no mailbox for {job.data['n']}")

    failing.register_processor("emails", fail)
    await failing.start_workers()
    for job in doomed:
        assert (await qm.wait_for_job("emails", job.id, timeout=WAIT)).state is JobState.FAILED
    await failing.shutdown()

    waiting = [(await qm.add_job("emails", f"welcome-{i}", {"user": i})).id for i in range(5)]
    delayed = await qm.add_job("emails", "reminder", None, {"delay": 3_600_000})
    cancelled = await qm.add_job("emails", "unwanted")
    await qm.cancel_job("emails", cancelled.id)
    run_id = await qm.execute_workflow(
        {"name": "Monthly report", "steps": [{"key": "build", "queue_name": "reports", "job_name": "build"}]}
    )
    return Seeded(qm, [j.id for j in doomed], waiting, delayed.id, cancelled.id, run_id)


@pytest.fixture
async def seeded(server: RunningServer) -> AsyncIterator[Seeded]:
    qm = QueueManager(server.address)
    seeded = await seed(qm)

    @qm.processor("thumbnails")
    async def thumbnail(job: JobContext) -> None:
        return None

    await qm.start_workers()
    yield seeded
    await qm.shutdown()


async def until(pilot: Pilot[None], check: Callable[[], Awaitable[bool]], what: str) -> None:
    """Lets the app run until an async check of the server passes (bounded)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT
    while not await check():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await pilot.pause(0.05)


async def confirm(pilot: Pilot[None], key: str, prompt: str, answer: str = "y") -> None:
    """Presses a control's key, checks the confirmation's question, and answers it."""
    app = pilot.app
    await pilot.press(key)
    await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), f"the confirmation of {key!r}", WAIT)
    screen = app.screen
    assert isinstance(screen, ConfirmScreen)
    assert screen.plan.prompt == prompt
    await pilot.press(answer)
    await wait_for(
        pilot, lambda: not isinstance(app.screen, ConfirmScreen), "the confirmation to close", WAIT
    )


async def state_of(qm: QueueManager, job_id: str) -> JobState | None:
    return (await qm.get_job("emails", job_id)).state


def dashboard(server: RunningServer, *, read_only: bool = False) -> DashboardApp:
    return DashboardApp(connect(server.address), read_only=read_only, interval=INTERVAL)


async def test_navigation(server: RunningServer, seeded: Seeded) -> None:
    app = dashboard(server)
    async with app.run_test(size=SIZE) as pilot:
        await wait_live(pilot, app, 4)
        queues = app.queues_view
        assert rows(app, "queues-table") == QUEUES
        await wait_for(pilot, lambda: app.state.queues["emails"].waiting == 5, "the seeded counts", WAIT)
        assert queues.selected_queue == "dead-letter-queue"
        await pilot.press("j", "j")
        assert queues.selected_queue == "reports"
        await pilot.press("down", "k", "up")
        assert queues.selected_queue == "emails"

        # Enter: the queue's waiting jobs; h/l: the other states, the detail pane follows the cursor.
        await pilot.press("enter")
        jobs = app.jobs_view
        await wait_for(pilot, lambda: rows(app, "jobs-table") == seeded.waiting, "the waiting jobs", WAIT)
        assert app.active_tab == "jobs" and jobs.queue == "emails" and jobs.state is JobState.WAITING
        await pilot.press("l", "l")
        await wait_for(pilot, lambda: rows(app, "jobs-table") == [seeded.delayed], "the delayed job", WAIT)
        await pilot.press("l")
        await wait_for(pilot, lambda: sorted(rows(app, "jobs-table")) == seeded.failed, "failed", WAIT)
        await wait_for(pilot, lambda: jobs.loaded_job is not None, "the job's detail", WAIT)
        assert jobs.loaded_job is not None and jobs.loaded_job.failed_reason.startswith("no mailbox for")
        assert any("no mailbox for" in line for line in screen_lines(app))
        await pilot.press("h")
        await wait_for(pilot, lambda: rows(app, "jobs-table") == [seeded.delayed], "back to delayed", WAIT)

        # "/": search by name within the page; Enter on an id that is not on it looks it up directly.
        await pilot.press("h", "h")
        await wait_for(pilot, lambda: rows(app, "jobs-table") == seeded.waiting, "back to waiting", WAIT)
        await pilot.press("slash", *"welcome-3")
        await wait_for(pilot, lambda: rows(app, "jobs-table") == [seeded.waiting[3]], "the name filter", WAIT)
        await pilot.press("ctrl+u", *seeded.failed[1], "enter")
        await wait_for(pilot, lambda: rows(app, "jobs-table") == [seeded.failed[1]], "the id lookup", WAIT)
        await pilot.press("escape")
        assert not jobs.search_open
        await wait_for(pilot, lambda: rows(app, "jobs-table") == seeded.waiting, "the whole page again", WAIT)

        # Tabs by number; the workers and workflows views; ? help; q back, then q quits.
        await pilot.press("3")
        await wait_for(pilot, lambda: len(rows(app, "workers-table")) == 1, "the thumbnails worker", WAIT)
        worker = app.state.workers[0]
        assert worker.queues == ["thumbnails"] and worker.language == "python"
        await pilot.press("4")
        tree = app.query_one("#run-tree", Tree)
        await wait_for(pilot, lambda: rows(app, "runs-table") == [seeded.run_id], "the workflow run", WAIT)
        await wait_for(pilot, lambda: len(tree.root.children) == 1, "the run's step", WAIT)
        step = tree.root.children[0].data
        assert step is not None and (step.key, step.queue_name) == ("build", "reports")
        assert (await seeded.qm.get_workflow(seeded.run_id)).state is WorkflowState.RUNNING
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        await pilot.press("escape", "q")
        assert app.active_tab == "queues" and app.return_code is None
        await pilot.press("q")
        await wait_for(pilot, lambda: app.return_code == 0, "the app to quit", WAIT)


async def test_every_control_asks_and_acts(server: RunningServer, seeded: Seeded) -> None:
    qm = seeded.qm
    app = dashboard(server)
    async with app.run_test(size=SIZE) as pilot:
        await wait_live(pilot, app, 4)
        await wait_for(pilot, lambda: app.state.queues["emails"].failed == 3, "the seeded counts", WAIT)
        await pilot.press("j")

        # Pause: "n" changes nothing, "y" pauses; the next snapshot shows it; p again resumes.
        await confirm(pilot, "p", "Pause queue emails?", answer="n")
        assert not (await qm.get_queue("emails")).paused
        await confirm(pilot, "p", "Pause queue emails?")
        await until(pilot, lambda: _paused(qm, True), "emails to be paused")
        await wait_for(pilot, lambda: app.state.queues["emails"].is_paused, "the stream to show it", WAIT)
        await confirm(pilot, "p", "Resume queue emails?")
        await until(pilot, lambda: _paused(qm, False), "emails to be resumed")

        # Job controls on the jobs of emails: cancel and remove a waiting job.
        await pilot.press("enter")
        table = app.jobs_view.table
        await wait_for(pilot, lambda: rows(app, "jobs-table") == seeded.waiting, "the waiting jobs", WAIT)
        first, second = seeded.waiting[0], seeded.waiting[1]
        await confirm(pilot, "c", f"Cancel job {first} (welcome-0) of emails?")
        await until(pilot, lambda: _is(qm, first, JobState.CANCELLED), "the job to be cancelled")
        await wait_for(pilot, lambda: first not in rows(app, "jobs-table"), "the page to follow", WAIT)
        table.select_key(second)
        await confirm(pilot, "d", f"Remove job {second} (welcome-1) of emails?")
        await until(pilot, lambda: _gone(qm, second), "the job to be removed")

        # Promote the delayed job.
        await pilot.press("l", "l")
        await wait_for(pilot, lambda: rows(app, "jobs-table") == [seeded.delayed], "the delayed job", WAIT)
        await confirm(pilot, "P", f"Run delayed job {seeded.delayed} (reminder) of emails now?")
        await until(pilot, lambda: _is(qm, seeded.delayed, JobState.WAITING), "the job to be promoted")

        # Retry one failed job, then all the others (the prompt counts them from the stream).
        await pilot.press("l")
        await wait_for(pilot, lambda: len(rows(app, "jobs-table")) == 3, "the failed jobs", WAIT)
        target = table.selected_key
        assert target is not None
        await confirm(pilot, "r", f"Retry job {target} (doomed) of emails?")
        await until(pilot, lambda: _is(qm, target, JobState.WAITING), "the job to be retried")
        await wait_for(pilot, lambda: app.state.queues["emails"].failed == 2, "two failed left", WAIT)
        await confirm(pilot, "R", "Retry all 2 failed jobs of emails?")
        await until(pilot, lambda: _count(qm, "failed", 0), "no failed job left")

        # Clean: pick the state and age, then confirm.
        await wait_for(pilot, lambda: app.state.queues["emails"].cancelled == 2, "two cancelled jobs", WAIT)
        await pilot.press("C")
        await wait_for(pilot, lambda: isinstance(app.screen, CleanScreen), "the clean dialog", WAIT)
        app.screen.query_one("#clean-state", Select).value = JobState.CANCELLED
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), "the clean confirmation", WAIT)
        screen = app.screen
        assert isinstance(screen, ConfirmScreen)
        assert screen.plan.prompt == "Remove the cancelled jobs of emails?"
        assert screen.plan.detail.startswith("emails holds 2 cancelled jobs now.")
        await pilot.press("y")
        await until(pilot, lambda: _count(qm, "cancelled", 0), "the cancelled jobs to be cleaned")
        assert (await qm.get_queue_metrics("emails")).waiting == 3 + 1 + 3  # untouched, promoted, retried

        # Schedules: listed from the server; d deletes the selected one after asking.
        await qm.add_schedule(
            "reports", "nightly", cron="0 2 * * *", timezone="Europe/Paris", job_name="build"
        )
        await pilot.press("5")
        await wait_for(
            pilot, lambda: rows(app, "schedules-table") == ["reports/nightly"], "the schedule", WAIT
        )
        await confirm(pilot, "d", "Delete schedule nightly of reports?")

        async def no_schedule() -> bool:
            return not await qm.list_schedules()

        await until(pilot, no_schedule, "the schedule to be deleted")
        await wait_for(pilot, lambda: rows(app, "schedules-table") == [], "the empty list", WAIT)


async def test_read_only_offers_no_control(server: RunningServer, seeded: Seeded) -> None:
    app = dashboard(server, read_only=True)
    async with app.run_test(size=SIZE) as pilot:
        await wait_live(pilot, app, 4)
        await pilot.press("j", "enter")
        await wait_for(pilot, lambda: len(rows(app, "jobs-table")) == 5, "the waiting jobs", WAIT)
        for key in ("p", "C", "R", "r", "P", "c", "d", "A"):
            await pilot.press(key)
            await pilot.pause()
            assert not isinstance(app.screen, ConfirmScreen | CleanScreen), key
        assert all(app.check_action(action, ()) is False for action in CONTROL_ACTIONS)
        footer = screen_lines(app)[-1]
        assert "Pause" not in footer and "Remove" not in footer and "Help" in footer
        titles = [command.title for command in app.palette_commands()]
        assert "Jobs of emails" in titles
        assert not [t for t in titles if t.split()[0] in ("Pause", "Resume", "Clean", "Retry", "Remove")]
        assert "read-only" in screen_lines(app)[1]
    metrics = await seeded.qm.get_queue_metrics("emails")
    assert (metrics.is_paused, metrics.waiting, metrics.failed, metrics.cancelled) == (False, 5, 3, 1)


async def test_survives_the_server_going_away(redis_url: str, prefix: str, procs: Procs) -> None:
    first = await procs.server(redis_url, prefix)
    port = int(first.address.rsplit(":", 1)[1])
    qm = QueueManager(first.address)
    await qm.register_queue("emails")
    app = DashboardApp(connect(first.address), interval=INTERVAL)
    async with app.run_test(size=SIZE) as pilot:
        await wait_live(pilot, app, 2)

        first.kill()  # SIGKILL: no goodbye on the stream
        await first.wait()
        await wait_for(pilot, lambda: app.state.connection.link is Link.DOWN, "the outage to show", WAIT)
        assert "disconnected" in screen_lines(app)[1]
        await wait_for(pilot, lambda: app.state.connection.attempts >= 2, "a retry that fails too", WAIT)
        assert app.is_running and rows(app, "queues-table") == QUEUES[:2]  # last figures still shown

        await procs.server(redis_url, prefix, port)
        await qm.add_job("emails", "after-the-restart")
        await wait_for(pilot, lambda: app.state.connection.link is Link.LIVE, "the reconnect", 30.0)
        await wait_for(pilot, lambda: app.state.queues["emails"].waiting == 1, "figures after it", WAIT)
        assert "live" in screen_lines(app)[1]
    await qm.close()


async def _paused(qm: QueueManager, paused: bool) -> bool:
    return (await qm.get_queue("emails")).paused is paused


async def _is(qm: QueueManager, job_id: str, state: JobState) -> bool:
    return await state_of(qm, job_id) is state


async def _gone(qm: QueueManager, job_id: str) -> bool:
    try:
        await qm.get_job("emails", job_id)
    except NotFoundError:
        return True
    return False


async def _count(qm: QueueManager, state: str, expected: int) -> bool:
    return int(getattr(await qm.get_queue_metrics("emails"), state)) == expected


async def _two_queues(server: RunningServer) -> tuple[QueueManager, str, str]:
    """Queues alpha and beta (before dead-letter-queue in the list), one waiting job each."""
    qm = QueueManager(server.address)
    await qm.register_queue("alpha")
    await qm.register_queue("beta")
    a = await qm.add_job("alpha", "apple")
    b = await qm.add_job("beta", "banana")
    return qm, a.id, b.id


async def test_search_from_queues_searches_the_selected_queue(server: RunningServer) -> None:
    """Pressing "/" in Queues searches the queue under the cursor (it searched the last queue opened)."""
    qm, a, b = await _two_queues(server)
    app = dashboard(server)
    async with app.run_test(size=SIZE) as pilot:
        await wait_live(pilot, app, 3)
        await pilot.press("enter")
        await wait_for(pilot, lambda: rows(app, "jobs-table") == [a], "alpha's job", WAIT)
        await pilot.press("slash", *"app")
        await pilot.press("escape", "escape")  # close the search, back to Queues
        assert app.active_tab == "queues"
        await pilot.press("j")
        assert app.queues_view.selected_queue == "beta"
        await pilot.press("slash")
        await wait_for(pilot, lambda: rows(app, "jobs-table") == [b], "beta's job", WAIT)
        jobs = app.jobs_view
        assert (app.active_tab, jobs.queue, jobs.search_open) == ("jobs", "beta", True)
        assert app.query_one("#job-search").has_focus
    await qm.close()


async def test_a_filter_matching_nothing_clears_the_detail_pane(server: RunningServer) -> None:
    qm, a, _ = await _two_queues(server)
    app = dashboard(server)
    async with app.run_test(size=SIZE) as pilot:
        await wait_live(pilot, app, 3)
        await pilot.press("enter")
        jobs = app.jobs_view
        await wait_for(pilot, lambda: jobs.loaded_job is not None, "alpha's job in the detail pane", WAIT)
        await pilot.press("slash", *"zzz")
        await wait_for(pilot, lambda: rows(app, "jobs-table") == [], "the filter to hide the job", WAIT)
        assert jobs.loaded_job is None
        assert any("No job on this page matches 'zzz'" in line for line in screen_lines(app))
        assert not any("apple" in line for line in screen_lines(app))
        await pilot.press("ctrl+u")
        await wait_for(pilot, lambda: jobs.loaded_job is not None, "the job back in the detail pane", WAIT)
        assert jobs.loaded_job is not None and jobs.loaded_job.id == a
    await qm.close()


async def test_a_queue_obliterated_while_shown_says_it_is_gone(server: RunningServer) -> None:
    """Its jobs were left on screen as if it still existed; now the page says it is gone, and shows the
    queue afresh once it is registered again."""
    qm, a, _ = await _two_queues(server)
    app = dashboard(server)
    async with app.run_test(size=SIZE) as pilot:
        await wait_live(pilot, app, 3)
        await pilot.press("enter")
        jobs = app.jobs_view
        await wait_for(pilot, lambda: jobs.loaded_job is not None, "alpha's job", WAIT)
        await qm.obliterate_queue("alpha")
        await wait_for(pilot, lambda: rows(app, "jobs-table") == [], "alpha's jobs to go", WAIT)
        # The table empties and the page says why in two updates: wait for the second too.
        gone = lambda: any("alpha (gone)" in line for line in screen_lines(app))  # noqa: E731
        await wait_for(pilot, gone, "alpha marked gone", WAIT)
        lines = screen_lines(app)
        assert any("Queue alpha no longer exists" in line for line in lines)
        assert jobs.loaded_job is None and jobs.queue == "alpha"

        await qm.register_queue("alpha")
        again = await qm.add_job("alpha", "apricot")
        await wait_for(pilot, lambda: rows(app, "jobs-table") == [again.id], "alpha shown afresh", WAIT)
        assert not any("(gone)" in line for line in screen_lines(app))
        assert a != again.id
    await qm.close()


async def test_settings_changed_elsewhere_show_without_a_reconnect(server: RunningServer) -> None:
    """A priority bound (or rate limit) set by another client while the dashboard is open shows in the
    queue's panel at the next settings read; they were read only on connect and for new queues."""
    qm = QueueManager(address=server.address)
    await qm.register_queue("alpha")
    await qm.add_job("alpha", "apple", None, {"priority": "background"})
    app = dashboard(server)
    app.settings_refresh = INTERVAL * 2
    async with app.run_test(size=SIZE) as pilot:
        await wait_live(pilot, app, 2)
        assert app.queues_view.selected_queue == "alpha"  # it sorts before the dead-letter queue
        await wait_for(pilot, lambda: "alpha" in app.state.limits, "alpha's settings", WAIT)
        assert not any("bound" in line for line in screen_lines(app))
        await qm.register_queue(
            "alpha", priority_bounds={"background": 300_000}, rate_limit={"max": 7, "duration": 1000}
        )

        def shown() -> bool:
            text = "\n".join(screen_lines(app))
            return "bound 5m00s" in text and "of 7" in text

        await wait_for(pilot, shown, "the new bound and rate limit", WAIT)
    await qm.close()


async def test_the_queue_panel_shows_the_groups_and_their_limits(server: RunningServer) -> None:
    """A queue with fairness groups: how many there are (QueueMetrics.groups) and the limits of each (the
    queue's group_limits), set or changed while the dashboard is open."""
    qm = QueueManager(address=server.address)
    await qm.register_queue("alpha")
    await qm.add_bulk("alpha", [{"name": "j", "options": {"group": g}} for g in ("acme", "globex", "acme")])
    app = dashboard(server)
    app.settings_refresh = INTERVAL * 2
    async with app.run_test(size=SIZE) as pilot:
        await wait_live(pilot, app, 2)
        assert app.queues_view.selected_queue == "alpha"

        def line(words: str) -> Callable[[], bool]:
            return lambda: any(words in text for text in screen_lines(app))

        await wait_for(pilot, line("groups: 2; no per-group limit"), "the two groups", WAIT)
        await qm.register_queue(
            "alpha", group_limits={"concurrency": 2, "rate_limit": {"max": 10, "duration": 1000}}
        )
        await qm.add_job("alpha", "j", None, {"group": "initech"})
        await wait_for(pilot, line("groups: 3; each at most 2 active, 10 per 1.0s"), "the limits", WAIT)
    await qm.close()


async def test_the_queue_panel_says_how_many_groups_are_paused(server: RunningServer) -> None:
    """Groups paused and resumed while the dashboard is open (``qm groups pause``): the groups' line counts
    them from the metrics stream (``groups_paused``), with no settings re-read in between (the settings are
    read once, on connect); an idle paused group is one of the queue's groups."""
    qm = QueueManager(address=server.address)
    await qm.register_queue("alpha")
    await qm.add_bulk("alpha", [{"name": "j", "options": {"group": g}} for g in ("acme", "globex")])
    app = dashboard(server)
    app.settings_refresh = 3_600.0  # far beyond the test: only the stream can bring the count
    async with app.run_test(size=SIZE) as pilot:
        await wait_live(pilot, app, 2)
        assert app.queues_view.selected_queue == "alpha"

        def line(words: str) -> Callable[[], bool]:
            return lambda: any(words in text for text in screen_lines(app))

        await wait_for(pilot, line("groups: 2; no per-group limit"), "the two groups", WAIT)
        await qm.pause_group("alpha", "acme")
        await qm.pause_group("alpha", "initech")
        await wait_for(pilot, line("groups: 3, 2 paused; no per-group limit"), "two paused", WAIT)
        await qm.resume_group("alpha", "acme")
        await qm.resume_group("alpha", "initech")
        await wait_for(pilot, line("groups: 2; no per-group limit"), "none paused", WAIT)
    await qm.close()


async def test_the_queue_panel_names_its_paused_groups_and_a_window_s_end(server: RunningServer) -> None:
    """A group's own maintenance window starting (here: given while inside it) and a group paused by hand
    while the dashboard is open: the paused count changes on the stream, so the panel reads the groups again
    and names each paused one, with when its window ends; freed, the lines go."""
    qm = QueueManager(address=server.address)
    await qm.register_queue("alpha")
    await qm.add_job("alpha", "j", None, {"group": "globex"})
    app = dashboard(server)
    app.settings_refresh = 3_600.0  # far beyond the test: only the stream's count brings the groups
    async with app.run_test(size=SIZE) as pilot:
        await wait_live(pilot, app, 2)

        def line(words: str) -> Callable[[], bool]:
            return lambda: any(words in text for text in screen_lines(app))

        await wait_for(pilot, line("groups: 1; no per-group limit"), "the group", WAIT)
        now = datetime.now(UTC)
        window = MaintenanceWindow(f"{now.minute} {now.hour} * * *", timedelta(hours=1))
        held = await qm.set_group_limits("alpha", "acme", maintenance_windows=[window])
        assert held.maintenance_until is not None
        await qm.pause_group("alpha", "globex")
        until = held.maintenance_until.astimezone(UTC)
        await wait_for(
            pilot, line(f"paused groups: acme in maintenance until {until:%H:%M:%S}"), "acme", WAIT
        )
        await wait_for(pilot, line(f"acme in maintenance until {until:%H:%M:%S}, globex"), "globex", WAIT)
        await qm.clear_group_limits("alpha", "acme")
        await qm.resume_group("alpha", "globex")
        named = line("paused groups:")
        await wait_for(pilot, lambda: not named(), "the groups freed", WAIT)
    await qm.close()


async def test_the_queue_panel_shows_the_queues_size_of_its_max_size(server: RunningServer) -> None:
    """A queue with a max_size: its jobs waiting and delayed of it, full or not, and the group max size on
    the groups' line; set or changed while the dashboard is open."""
    qm = QueueManager(address=server.address)
    await qm.register_queue("alpha")
    await qm.add_bulk("alpha", [{"name": "j"}, {"name": "j", "options": {"delay": 600_000}}])
    app = dashboard(server)
    app.settings_refresh = INTERVAL * 2
    async with app.run_test(size=SIZE) as pilot:
        await wait_live(pilot, app, 2)
        assert app.queues_view.selected_queue == "alpha"

        def line(words: str) -> Callable[[], bool]:
            return lambda: any(words in text for text in screen_lines(app))

        await wait_for(pilot, lambda: "alpha" in app.state.limits, "alpha's settings", WAIT)
        assert not any("max_size" in text for text in screen_lines(app))
        await qm.register_queue("alpha", max_size=1_000, group_limits={"max_size": 20})
        await wait_for(pilot, line("size 2 / 1,000 (jobs waiting and delayed / max_size)"), "the size", WAIT)
        await qm.add_job("alpha", "j", None, {"group": "acme"})
        # Lowered below what the queue holds: nothing is removed, and the queue is full.
        await qm.register_queue("alpha", max_size=2, group_limits={"max_size": 20})
        await wait_for(pilot, line("size 3 / 2 (jobs waiting and delayed / max_size); full"), "full", WAIT)
        assert any("groups: 1; each at most 20 waiting" in text for text in screen_lines(app))
    await qm.close()


async def test_enter_searches_the_server_and_a_cancels_every_match(server: RunningServer) -> None:
    """Jobs named "needle…" wait past the first page: typing filters only the page (none there), Enter
    asks the server for the whole state (a prefix with "*"), and A cancels every match after asking with
    the server's count; the hay stays."""
    qm = QueueManager(server.address)
    await qm.register_queue("alpha")
    hay = await qm.add_bulk("alpha", [{"name": "hay"} for _ in range(60)])
    needles = await qm.add_bulk("alpha", [{"name": "needle"}, {"name": "needle-2"}])
    app = dashboard(server)
    async with app.run_test(size=SIZE) as pilot:
        await wait_live(pilot, app, 2)
        assert app.queues_view.selected_queue == "alpha"
        await pilot.press("enter")
        jobs = app.jobs_view
        await wait_for(pilot, lambda: rows(app, "jobs-table") == hay[:50], "the first page", WAIT)
        await pilot.press("slash", *"needle")
        await wait_for(pilot, lambda: rows(app, "jobs-table") == [], "the page filter: none on it", WAIT)
        await pilot.press("enter")  # no job has that id: the jobs of that name, in the whole state
        await wait_for(pilot, lambda: rows(app, "jobs-table") == needles[:1], "the exact name", WAIT)
        await pilot.press("slash", "end", "*", "enter")
        await wait_for(pilot, lambda: rows(app, "jobs-table") == needles, "the prefix's matches", WAIT)
        assert jobs.search is not None and jobs.search.name == "needle*"

        await pilot.press("A")
        await wait_for(pilot, lambda: isinstance(app.screen, MatchesScreen), "the choice", WAIT)
        await confirm(pilot, "c", "Cancel 2 waiting jobs of alpha with a name starting 'needle'?")
        for job_id in needles:
            await until(pilot, lambda j=job_id: _is_in(qm, "alpha", j, JobState.CANCELLED), "the cancel")
        await wait_for(pilot, lambda: rows(app, "jobs-table") == [], "the search shown again: none", WAIT)
        assert (await qm.get_queue_metrics("alpha")).waiting == 60
    await qm.close()


async def _is_in(qm: QueueManager, queue: str, job_id: str, state: JobState) -> bool:
    return (await qm.get_job(queue, job_id)).state is state
