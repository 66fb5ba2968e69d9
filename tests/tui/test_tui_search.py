"""The Jobs view's search on the server and the actions on its matches: the Textual-free parts (pages that
follow short and empty server pages, bounded; the count; the plans) and the view driven with Pilot over the
fake source, whose filtered calls read only `FakeSource.scan` jobs each, as the server reads a bounded part
of the state."""

from __future__ import annotations

from typing import Any

import pytest
from textual.pilot import Pilot
from textual.widgets import Static

from queue_manager import Job, JobState
from queue_manager_tui import DashboardApp
from queue_manager_tui.controls import NotApplicable, matches_plan
from queue_manager_tui.screens.confirm import ConfirmScreen
from queue_manager_tui.screens.matches import MatchesScreen
from queue_manager_tui.search import (
    BulkAction,
    Count,
    Search,
    count_matches,
    find_page,
    parse_name,
)
from queue_manager_tui.widgets.jobs_view import PAGE_SIZE
from tests.tui.fakes import FakeSource, job
from tests.tui.helpers import rows, screen_lines, wait_for, wait_live


def _waiting(count: int, named: dict[int, str]) -> list[Job]:
    """``count`` waiting jobs "w0", "w1", … named "send-welcome", but those in ``named`` by position."""
    return [job(f"w{i}", JobState.WAITING, name=named.get(i, "send-welcome")) for i in range(count)]


def _heard(app: DashboardApp) -> list[str]:
    """Every notification the app shows from now on (the views notify through the app)."""
    messages: list[str] = []
    notify = app.notify

    def record(message: str, **options: Any) -> None:
        messages.append(message)
        notify(message, **options)

    app.notify = record  # type: ignore[method-assign]
    return messages


def _note(app: DashboardApp) -> str:
    """What the detail pane says when it shows no job."""
    return str(app.query_one("#job-detail-body", Static).content)


def _source(jobs: dict[JobState, list[Job]], scan: int = 2) -> FakeSource:
    return FakeSource(jobs={"emails": jobs}, scan=scan)


def test_parse_name_takes_a_name_or_a_prefix_and_says_what_is_wrong() -> None:
    assert parse_name(" send-email ") == "send-email"
    assert parse_name("send-*") == "send-*"
    with pytest.raises(ValueError, match=r"'se\*nd' holds a '\*' before its end; '\*' may only end a name"):
        parse_name("se*nd")
    with pytest.raises(ValueError, match=r"'\*' alone matches every name: Esc closes the search"):
        parse_name("*")
    with pytest.raises(ValueError, match="type a job name"):
        parse_name("  ")


async def test_a_search_page_follows_short_and_empty_pages_until_it_is_full() -> None:
    """Two jobs read per call: the page of 3 matches takes calls that return none, one or two."""
    source = _source(
        {JobState.WAITING: _waiting(12, {0: "digest", 5: "digest", 6: "dig", 7: "digest", 11: "digest"})}
    )
    search = Search("emails", JobState.WAITING, "digest")
    first = await find_page(source, search, 3, "")
    assert ([j.id for j in first.jobs], first.cut_short) == (["w0", "w5", "w7"], False)
    assert [call[2:] for call in source.listed] == [
        (3, "", "digest"),  # w0, w1: one match
        (2, "2", "digest"),  # w2, w3: none, a token all the same
        (2, "4", "digest"),  # w4, w5
        (1, "6", "digest"),  # w6 (another name), w7: the page is full
    ]
    rest = await find_page(source, search, 3, first.next_token)
    assert ([j.id for j in rest.jobs], rest.next_token, rest.cut_short) == (["w11"], "", False)
    prefix = await find_page(source, Search("emails", JobState.WAITING, "dig*"), 10, "")
    assert [j.id for j in prefix.jobs] == ["w0", "w5", "w6", "w7", "w11"]


async def test_a_search_page_stops_at_its_bound_of_calls_and_the_token_reads_on() -> None:
    source = _source({JobState.WAITING: _waiting(20, {19: "needle"})})
    search = Search("emails", JobState.WAITING, "needle")
    page = await find_page(source, search, 50, "", max_calls=4)
    assert (page.jobs, page.next_token, page.cut_short) == ([], "8", True)
    assert len(source.listed) == 4
    on = await find_page(source, search, 50, page.next_token, max_calls=10)
    assert ([j.id for j in on.jobs], on.next_token, on.cut_short) == (["w19"], "", False)


async def test_the_count_reads_the_whole_state_or_says_it_stopped() -> None:
    source = _source({JobState.FAILED: [job(f"f{i}", JobState.FAILED, name="x") for i in range(7)]})
    search = Search("emails", JobState.FAILED, "x")
    assert await count_matches(source, search) == Count(7, complete=True)
    assert await count_matches(source, search, max_calls=2) == Count(4, complete=False)
    # Counted on the server (count-only calls): no page of jobs was listed for it.
    assert source.listed == [] and len(source.counted) == 4 + 2


def test_each_state_offers_the_actions_the_server_takes() -> None:
    assert BulkAction.for_state(JobState.FAILED) == (BulkAction.RETRY, BulkAction.REMOVE)
    assert BulkAction.for_state(JobState.CANCELLED) == (BulkAction.RETRY, BulkAction.REMOVE)
    assert BulkAction.for_state(JobState.WAITING) == (BulkAction.CANCEL, BulkAction.REMOVE)
    assert BulkAction.for_state(JobState.ACTIVE) == (BulkAction.CANCEL,)
    assert BulkAction.for_state(JobState.COMPLETED) == (BulkAction.REMOVE,)


async def test_the_plans_ask_with_the_count_and_act_on_every_match() -> None:
    failed = [job(f"f{i}", JobState.FAILED, name="[red]x" if i % 2 else "other") for i in range(7)]
    active = [job(f"a{i}", JobState.ACTIVE, name="send-sms") for i in range(3)]
    source = _source({JobState.FAILED: failed, JobState.ACTIVE: active})
    odd = Search("emails", JobState.FAILED, "[red]x")
    retry = matches_plan(BulkAction.RETRY, odd, Count(3, complete=True))
    assert retry.prompt == "Retry 3 failed jobs of emails named '[red]x'?"
    assert not retry.destructive
    assert await retry.run(source) == "3 jobs of emails named '[red]x' waiting again."
    # One bounded call after the other until the token is empty: 7 jobs read 2 at a time.
    assert [args[-1] for name, args in source.calls] == ["", "2", "4", "6"]
    assert {name for name, _ in source.calls} == {"retry_jobs"}

    remove = matches_plan(BulkAction.REMOVE, odd, Count(20_000, complete=False))
    assert remove.prompt == "Remove more than 20,000 failed jobs of emails named '[red]x'?"
    assert remove.destructive and "every match is acted on, to the end of the state" in remove.detail
    assert await remove.run(source) == "Removed 3 jobs of emails named '[red]x'."

    sms = Search("emails", JobState.ACTIVE, "send-*")
    cancel = matches_plan(BulkAction.CANCEL, sms, Count(3, complete=True))
    assert cancel.prompt == "Cancel 3 active jobs of emails with a name starting 'send-'?"
    assert "their workers are told to stop them" in cancel.detail
    assert await cancel.run(source) == (
        "Told the workers of 3 jobs of emails with a name starting 'send-' to stop them."
    )
    with pytest.raises(NotApplicable, match=r"No failed job of emails named 'nobody' now\."):
        matches_plan(BulkAction.RETRY, Search("emails", JobState.FAILED, "nobody"), Count(0, complete=True))
    with pytest.raises(NotApplicable, match="Remove does not apply to active jobs"):
        matches_plan(BulkAction.REMOVE, sms, Count(3, complete=True))


# ----------------------------------------------------------------- the view, with Pilot


async def _open_emails(pilot: Pilot[None], app: DashboardApp) -> None:
    await wait_live(pilot, app, 3)
    await pilot.press("enter")


async def test_enter_searches_the_whole_state_by_name_and_esc_goes_back_to_the_pages() -> None:
    """The page holds the first 50 jobs; "digest" jobs lie past it too. Typing filters the page; Enter asks
    the server and shows every match; the search stays on in another state; Esc shows the pages again."""
    named = {3: "digest", 51: "digest", 54: "digester"}
    source = _source(
        {JobState.WAITING: _waiting(56, named), JobState.FAILED: [job("f1", JobState.FAILED, name="digest")]},
        scan=10,
    )
    app = DashboardApp(source)
    async with app.run_test(size=(120, 34)) as pilot:
        await _open_emails(pilot, app)
        jobs = app.jobs_view
        await wait_for(pilot, lambda: len(rows(app, "jobs-table")) == PAGE_SIZE, "the first page")
        await pilot.press("slash", *"digest")
        await wait_for(pilot, lambda: rows(app, "jobs-table") == ["w3"], "the page filtered as typed")
        assert all(call[4] is None for call in source.listed)  # typing asks nothing

        await pilot.press("enter")
        await wait_for(pilot, lambda: rows(app, "jobs-table") == ["w3", "w51"], "every exact match")
        assert jobs.search == Search("emails", JobState.WAITING, "digest")
        assert app.focused is jobs.table
        assert any("matches, page 1" in line for line in screen_lines(app))

        await pilot.press("slash", "ctrl+u", *"digest*", "enter")
        await wait_for(pilot, lambda: rows(app, "jobs-table") == ["w3", "w51", "w54"], "the prefix's matches")
        await pilot.press("l", "l", "l")  # to failed: the same search there
        await wait_for(pilot, lambda: rows(app, "jobs-table") == ["f1"], "the failed match")
        assert jobs.search == Search("emails", JobState.FAILED, "digest*")

        await pilot.press("escape")
        assert not jobs.search_open and jobs.search is None
        await pilot.press("h", "h", "h")
        await wait_for(pilot, lambda: len(rows(app, "jobs-table")) == PAGE_SIZE, "the pages again")


async def test_changing_the_text_ends_the_server_search() -> None:
    source = _source({JobState.WAITING: _waiting(56, {51: "digest"})}, scan=10)
    app = DashboardApp(source)
    async with app.run_test(size=(120, 34)) as pilot:
        await _open_emails(pilot, app)
        jobs = app.jobs_view
        await wait_for(pilot, lambda: len(rows(app, "jobs-table")) == PAGE_SIZE, "the first page")
        await pilot.press("slash", *"digest", "enter")
        await wait_for(pilot, lambda: rows(app, "jobs-table") == ["w51"], "the match past the page")
        await pilot.press("slash", "end", "backspace")  # the text is selected on focus: to its end first
        assert jobs.search is None
        # Back to the first page, filtered as typed ("diges" is on no job of it).
        await wait_for(
            pilot,
            lambda: _note(app).startswith("No job on this page matches 'diges'. Enter searches the whole"),
            "the page filter",
        )


async def test_a_search_page_cut_short_by_its_bound_reads_on_with_the_next_page_key() -> None:
    """Nothing in the first 25 calls (one job each): the page says so and `]` reads on."""
    source = _source({JobState.WAITING: _waiting(40, {39: "needle"})}, scan=1)
    app = DashboardApp(source)
    async with app.run_test(size=(120, 34)) as pilot:
        await _open_emails(pilot, app)
        await wait_for(pilot, lambda: len(rows(app, "jobs-table")) == 40, "the page")
        await pilot.press("slash", *"needle", "enter")
        note = "No waiting job of emails named 'needle' in the part of the state read so far: ] reads on."
        await wait_for(pilot, lambda: _note(app) == note, "the note")
        assert rows(app, "jobs-table") == []
        assert any("matches, page 1  ] read on" in line for line in screen_lines(app))
        await pilot.press("right_square_bracket")
        await wait_for(pilot, lambda: rows(app, "jobs-table") == ["w39"], "the match read on")


async def test_enter_still_looks_an_id_up_and_refuses_a_star_inside_a_name() -> None:
    source = _source({JobState.WAITING: _waiting(3, {}), JobState.FAILED: [job("41", JobState.FAILED)]})
    app = DashboardApp(source)
    async with app.run_test(size=(120, 34)) as pilot:
        await _open_emails(pilot, app)
        await wait_for(pilot, lambda: len(rows(app, "jobs-table")) == 3, "the page")
        await pilot.press("slash", *"41", "enter")  # a failed job: not on the waiting page
        await wait_for(pilot, lambda: rows(app, "jobs-table") == ["41"], "the job of that id")
        assert app.jobs_view.search is None
        heard = _heard(app)
        await pilot.press("slash", "ctrl+u", *"se*nd", "enter")
        message = "No job se*nd in emails; as a name, 'se*nd' holds a '*' before its end"
        await wait_for(pilot, lambda: any(message in m for m in heard), "the warning")
        assert app.jobs_view.search is None


async def test_a_acts_on_every_match_after_counting_them_on_the_server() -> None:
    waiting = _waiting(9, {1: "digest", 4: "digest", 8: "digest"})
    active = [job(f"a{i}", JobState.ACTIVE, name="digest") for i in range(2)]
    source = _source({JobState.WAITING: waiting, JobState.ACTIVE: active})
    app = DashboardApp(source)
    async with app.run_test(size=(120, 34)) as pilot:
        await _open_emails(pilot, app)
        await wait_for(pilot, lambda: len(rows(app, "jobs-table")) == 9, "the page")
        heard = _heard(app)
        await pilot.press("A")  # no search yet: says how to make one
        await wait_for(pilot, lambda: any("Search by name first" in m for m in heard), "the hint")
        await pilot.press("slash", *"digest", "enter")
        await wait_for(pilot, lambda: rows(app, "jobs-table") == ["w1", "w4", "w8"], "the matches")
        titles = [command.title for command in app.palette_commands()]
        assert "Act on every waiting job of emails named 'digest'…" in titles

        # Waiting jobs can be cancelled or removed: the choice, then the count, then the question.
        await pilot.press("A")
        await wait_for(pilot, lambda: isinstance(app.screen, MatchesScreen), "the choice")
        await pilot.press("c")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), "the confirmation")
        screen = app.screen
        assert isinstance(screen, ConfirmScreen)
        assert screen.plan.prompt == "Cancel 3 waiting jobs of emails named 'digest'?"
        await pilot.press("y")
        await wait_for(pilot, lambda: len(source.calls) == 5, "every bounded call")
        assert source.calls == [
            ("cancel_jobs", ("emails", JobState.WAITING, "digest", token))
            for token in ("", "2", "4", "6", "8")
        ]
        await wait_for(pilot, lambda: any("Cancelled 3 jobs of emails" in m for m in heard), "done")

        # Esc in the choice changes nothing; active jobs can only be cancelled: straight to the question.
        await pilot.press("A")
        await wait_for(pilot, lambda: isinstance(app.screen, MatchesScreen), "the choice")
        await pilot.press("escape")
        await pilot.press("l")
        await wait_for(pilot, lambda: rows(app, "jobs-table") == ["a0", "a1"], "the active matches")
        await pilot.press("A")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), "the confirmation")
        screen = app.screen
        assert isinstance(screen, ConfirmScreen)
        assert screen.plan.prompt == "Cancel 2 active jobs of emails named 'digest'?"
        await pilot.press("n")
        assert len(source.calls) == 5
