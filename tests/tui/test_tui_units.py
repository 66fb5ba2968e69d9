"""The dashboard's Textual-free parts: formatting, the snapshot bookkeeping, backoff and control plans."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from queue_manager import (
    GroupInfo,
    GroupLimits,
    JobPriority,
    JobState,
    MetricsSnapshot,
    Queue,
    QueueConfig,
    QueueMetrics,
    RateLimit,
)
from queue_manager_tui.controls import (
    NotApplicable,
    cancel_plan,
    clean_plan,
    parse_grace,
    pause_plan,
    promote_plan,
    remove_plan,
    retry_all_plan,
    retry_plan,
)
from queue_manager_tui.format import (
    fmt_bytes,
    fmt_duration,
    fmt_inline,
    fmt_percent,
    fmt_rate,
    safe,
    sparkline,
)
from queue_manager_tui.state import Backoff, DashboardState
from queue_manager_tui.widgets.queues_view import (
    COLUMNS,
    _facts,
    _groups_sentence,
    _levels_sentence,
    _limit,
    _paused_groups_sentence,
    _paused_text,
    _row,
    _size_sentence,
    _title,
)
from tests.tui.fakes import ANSI_ERROR, FakeSource, at, job, levels, queue_metrics


def test_safe_spells_out_control_characters() -> None:
    assert safe(ANSI_ERROR) == "\\x1b[31mred alert\\x1b[0m and [link=http://evil]click[/link]"
    assert safe("a\u202eb\u200bc") == "a\\u202eb\\u200bc"  # a bidi override and a zero-width space
    assert safe("line1\nline2\tx") == "line1\\x0aline2\\x09x"
    assert safe("line1\nline2\tx", multiline=True) == "line1\nline2\tx"
    assert safe("plain [red]x[/red] ü") == "plain [red]x[/red] ü"  # markup is not our business here


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (None, "-"),
        (timedelta(milliseconds=850), "850ms"),
        (timedelta(seconds=12.34), "12.3s"),
        (timedelta(seconds=245), "4m05s"),
        (timedelta(hours=2, minutes=10), "2h10m"),
        (timedelta(days=3, hours=4), "3d04h"),
        (timedelta(seconds=-5), "0ms"),
    ],
)
def test_fmt_duration(value: timedelta | None, text: str) -> None:
    assert fmt_duration(value) == text


def test_numbers() -> None:
    assert [fmt_rate(x) for x in (0, 0.25, 12.5, 1204)] == ["0", "0.25/s", "12.5/s", "1,204/s"]
    assert [fmt_percent(x) for x in (0, 0.032, 1.0)] == ["0%", "3.2%", "100%"]
    assert [fmt_bytes(x) for x in (0, 512, 13 * 1024**2)] == ["-", "512 B", "13.0 MiB"]
    assert fmt_inline({"a": "x" * 100}, 20) == '{"a":"xxxxxxxxxxxxx…'
    assert fmt_inline(b"\x00\x01") == "<2 bytes>"


def test_sparkline_scales_to_the_maximum_and_pads() -> None:
    assert sparkline([0, 4, 8], 5) == "  ▁▅█"
    assert sparkline([1, 2, 3, 4, 5, 6, 7, 8], 4) == "▅▆▇█"
    assert sparkline([0, 0], 3) == " ▁▁"
    assert sparkline([], 3) == "   "


def test_parse_grace() -> None:
    assert parse_grace("0") == timedelta(0)
    assert parse_grace(" 90 ") == timedelta(seconds=90)
    assert parse_grace("500ms") == timedelta(milliseconds=500)
    assert parse_grace("15m") == timedelta(minutes=15)
    assert parse_grace("1.5h") == timedelta(minutes=90)
    assert parse_grace("7d") == timedelta(days=7)
    assert parse_grace("3650d") == timedelta(days=3650)
    for bad in ("", "soon", "-1m", "1e400", "nan"):
        with pytest.raises(ValueError):
            parse_grace(bad)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        # 1e400 is inf as a float: it was refused as "a grace period is zero or more".
        ("1e400", r"'1e400' is too long a grace period: at most 3650d \(10 years\)"),
        ("1e400s", "'1e400s' is too long a grace period"),
        ("inf", "'inf' is too long a grace period"),
        ("3651d", "'3651d' is too long a grace period"),  # the server refused it
        ("1e300d", "'1e300d' is too long a grace period"),
        ("nan", "'nan' is not a grace period such as 0, 30s"),
        ("-1m", "'-1m' is negative: a grace period is zero or more"),
        ("-inf", "'-inf' is negative"),
    ],
)
def test_parse_grace_says_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_grace(text)


def test_backoff_doubles_up_to_a_ceiling_and_resets() -> None:
    backoff = Backoff(initial=0.5, maximum=4.0)
    assert [backoff.next() for _ in range(6)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    backoff.reset()
    assert backoff.next() == 0.5


def _snapshot(seconds: int, *metrics: QueueMetrics) -> MetricsSnapshot:
    return MetricsSnapshot(time=at(seconds), metrics=list(metrics), workers=[])


def test_state_keeps_completions_per_interval_and_follows_queues() -> None:
    state = DashboardState()
    first = state.apply(_snapshot(0, QueueMetrics("a", completed_total=10), QueueMetrics("b")))
    assert (first.added, first.removed) == (("a", "b"), ())
    assert state.series("a") == []  # one snapshot is no interval yet
    state.apply(_snapshot(1, QueueMetrics("a", completed_total=15), QueueMetrics("b")))
    state.apply(_snapshot(2, QueueMetrics("a", completed_total=15), QueueMetrics("b")))
    assert state.series("a") == [5.0, 0.0]
    # Obliterated and registered again: totals start afresh, never a negative rate.
    gone = state.apply(_snapshot(3, QueueMetrics("a", completed_total=2)))
    assert (gone.added, gone.removed) == ((), ("b",))
    assert state.series("a") == [5.0, 0.0, 0.0]
    assert state.queue_names == ["a"]
    # After an outage the first sample would span it: it is skipped.
    state.forget_totals()
    state.apply(_snapshot(60, QueueMetrics("a", completed_total=500)))
    state.apply(_snapshot(61, QueueMetrics("a", completed_total=503)))
    assert state.series("a") == [5.0, 0.0, 0.0, 3.0]


async def test_queue_plans_say_what_they_affect() -> None:
    source = FakeSource()
    emails = queue_metrics("emails", 5)
    plan = retry_all_plan(emails)
    assert plan.prompt == "Retry all 3 failed jobs of emails?"
    assert await plan.run(source) == "3 jobs of emails waiting again."
    pause = pause_plan(emails)
    assert pause.prompt == "Pause queue emails?"
    assert "37 waiting jobs" in pause.detail and "4 active jobs" in pause.detail
    await pause.run(source)
    resume = pause_plan(queue_metrics("reports", 5))
    assert (resume.prompt, resume.detail) == (
        "Resume queue reports?",
        "Its 12 held jobs start again as workers take them.",
    )
    await resume.run(source)
    clean = clean_plan(emails, JobState.COMPLETED, timedelta(hours=1))
    assert clean.prompt == "Remove the completed jobs of emails finished more than 1h00m ago?"
    assert clean.detail.startswith("emails holds 1,095 completed jobs now.")
    assert clean.destructive
    await clean.run(source)
    assert source.calls == [
        ("retry_failed", ("emails",)),
        ("pause_queue", ("emails",)),
        ("resume_queue", ("reports",)),
        ("clean_queue", ("emails", JobState.COMPLETED, timedelta(hours=1))),
    ]
    with pytest.raises(NotApplicable, match="thumbnails has no failed jobs"):
        retry_all_plan(queue_metrics("thumbnails", 5))
    with pytest.raises(NotApplicable, match="no delayed jobs"):
        clean_plan(queue_metrics("reports", 5), JobState.DELAYED, timedelta(0))
    with pytest.raises(NotApplicable):
        clean_plan(emails, JobState.ACTIVE, timedelta(0))


async def test_job_plans_check_the_state_and_keep_names_literal() -> None:
    source = FakeSource()
    failed = job("42", JobState.FAILED, name="[red]x\x1b[0m", failed_reason="boom")
    retry = retry_plan(failed)
    assert retry.prompt == "Retry job 42 ([red]x\\x1b[0m) of emails?"
    assert retry.detail == "It is failed: boom"
    await retry.run(source)
    await remove_plan(failed).run(source)
    await promote_plan(job("90", JobState.DELAYED)).run(source)
    active = cancel_plan(job("7", JobState.ACTIVE))
    assert "its worker is told to stop it" in active.detail
    await active.run(source)
    assert source.calls == [
        ("retry_job", ("emails", "42")),
        ("remove_job", ("emails", "42")),
        ("promote_job", ("emails", "90")),
        ("cancel_job", ("emails", "7")),
    ]
    with pytest.raises(NotApplicable, match="only failed or cancelled"):
        retry_plan(job("1", JobState.WAITING))
    with pytest.raises(NotApplicable, match="only delayed jobs"):
        promote_plan(job("1", JobState.WAITING))
    with pytest.raises(NotApplicable, match="cancel it first"):
        remove_plan(job("1", JobState.ACTIVE))
    with pytest.raises(NotApplicable, match="completed already"):
        cancel_plan(job("1", JobState.COMPLETED))


def test_the_rate_limit_column_says_tokens_left_of_the_bucket_size() -> None:
    """It read "1/10" under "Limit", which looked like a rate; a part token was rounded up to a start."""
    assert dict(COLUMNS)["limit"] == "Tokens left"
    emails = queue_metrics("emails", 0)
    ten = RateLimit(max=10, duration=1000)
    assert _limit(replace(emails, rate_limit_tokens=1.0), ten) == "1 of 10"
    assert _limit(replace(emails, rate_limit_tokens=0.6), ten) == "0 of 10"
    assert (
        _limit(replace(emails, rate_limit_tokens=1234.9), RateLimit(max=5000, duration=1000))
        == "1,234 of 5,000"
    )
    assert _limit(emails, None) == "-"
    assert _limit(replace(emails, held_until=at(30)), ten) == "held"


def test_the_queue_panel_lists_ready_jobs_by_priority_with_their_bounds() -> None:
    emails = queue_metrics("emails", 0)
    five = {JobPriority.BACKGROUND: timedelta(minutes=5)}
    assert _levels_sentence(emails, five) == (
        "by priority: high 5 (oldest 12.0s), normal 30 (oldest 1m15s), "
        "background 2 (oldest 50.0s, bound 5m00s)"
    )
    # A bounded level with nothing ready still shows its bound; nothing ready and no bound: said so.
    idle = replace(emails, levels=levels())
    assert _levels_sentence(idle, five) == "by priority: background 0 (bound 5m00s)"
    assert _levels_sentence(idle, {}) == "by priority: none ready"
    # A server older than the per-level figures sends none: no line at all.
    assert "by priority" not in _facts(replace(emails, levels=[]), None, five).plain


def test_the_queue_panel_counts_the_failed_runs_by_kind() -> None:
    facts = _facts(queue_metrics("emails", 0), None, {}).plain
    assert "runs ended by 9 errors, 5 timeouts, 1 stalls" in facts


def test_the_queue_panel_gives_the_memory_estimate() -> None:
    facts = _facts(queue_metrics("emails", 0), None, {}).plain
    assert "; memory about 3.4 MiB" in facts


def test_the_queue_panel_gives_the_groups_and_the_limits_of_each() -> None:
    emails = queue_metrics("emails", 0)
    both = GroupLimits(concurrency=2, rate_limit=RateLimit(max=10, duration=1000))
    assert _groups_sentence(emails, both) == "groups: 4; each at most 2 active, 10 per 1.0s"
    assert _groups_sentence(emails, GroupLimits(concurrency=1_500)) == "groups: 4; each at most 1,500 active"
    rate_only = GroupLimits(rate_limit=RateLimit(max=5, duration=timedelta(minutes=1)))
    assert _groups_sentence(emails, rate_only) == "groups: 4; each 5 per 1m00s"
    assert _groups_sentence(emails, None) == "groups: 4; no per-group limit"
    sized = GroupLimits(concurrency=2, max_size=1_000)
    assert _groups_sentence(emails, sized) == "groups: 4; each at most 2 active, at most 1,000 waiting"
    assert _groups_sentence(emails, GroupLimits(max_size=5)) == "groups: 4; each at most 5 waiting"
    # Shown when the queue has groups or limits them; a queue that uses no groups has no line.
    assert "groups: 4;" in _facts(emails, None, {}, None).plain
    no_groups = replace(emails, groups=0)
    assert "groups: 0; each at most 2 active" in _facts(no_groups, None, {}, both).plain
    assert "groups" not in _facts(no_groups, None, {}, None).plain


def test_the_groups_line_says_how_many_groups_are_paused_when_any() -> None:
    """The count is the stream's own (``QueueMetrics.groups_paused``): exact however many groups a queue has,
    read with every snapshot rather than by paging the queue's groups."""
    emails = queue_metrics("emails", 0)
    both = GroupLimits(concurrency=2, rate_limit=RateLimit(max=10, duration=1000))
    assert (
        _groups_sentence(replace(emails, groups_paused=3), both)
        == "groups: 4, 3 paused; each at most 2 active, 10 per 1.0s"
    )
    assert _groups_sentence(replace(emails, groups_paused=0), None) == "groups: 4; no per-group limit"
    many = replace(emails, groups=25_000, groups_paused=12_500)
    assert _groups_sentence(many, None) == "groups: 25,000, 12,500 paused; no per-group limit"
    assert "groups: 4, 1 paused;" in _facts(replace(emails, groups_paused=1), None, {}, None).plain


def test_the_paused_groups_are_named_with_when_their_window_or_timed_pause_ends() -> None:
    at = datetime(2026, 12, 8, 4, 0, tzinfo=UTC)
    groups = [
        GroupInfo("acme", paused=True, maintenance_until=at),
        GroupInfo("globex", paused=True, paused_until=at - timedelta(hours=1)),
        GroupInfo("initech", paused=True),
    ]
    assert _paused_groups_sentence(groups) == (
        "paused groups: acme in maintenance until 04:00:00, globex until 03:00:00, initech"
    )
    many = [GroupInfo(f"g{i}", paused=True) for i in range(7)]
    assert _paused_groups_sentence(many) == "paused groups: g0, g1, g2, g3, g4 and 2 more"
    emails = replace(queue_metrics("emails", 0), groups_paused=1)
    assert "paused groups: acme" in _facts(emails, None, {}, None, 0, groups[:1]).plain
    assert "paused groups" not in _facts(emails, None, {}, None).plain


def test_the_queue_panel_gives_the_size_of_a_queue_with_a_max_size() -> None:
    emails = queue_metrics("emails", 0)  # 37 waiting, 2 delayed
    assert _size_sentence(emails, 1_000) == "size 39 / 1,000 (jobs waiting and delayed / max_size)"
    # Paused jobs count as the waiting ones they are; at the limit (or past it, by jobs the server added
    # itself) the queue is full.
    paused = replace(emails, waiting=0, paused=998, delayed=2, is_paused=True)
    assert _size_sentence(paused, 1_000) == (
        "size 1,000 / 1,000 (jobs waiting and delayed / max_size); "
        "full: adds are refused until workers take some"
    )
    assert _size_sentence(emails, 30).endswith("; full: adds are refused until workers take some")
    assert "size 39 / 1,000" in _facts(emails, None, {}, None, 1_000).plain
    assert "size" not in _facts(emails, None, {}, None).plain  # no max_size: no line


def test_a_timed_pause_shows_when_it_lifts() -> None:
    emails = replace(queue_metrics("emails", 0), is_paused=True)
    assert _paused_text(emails) == "PAUSED"
    until = datetime(2026, 12, 8, 2, 0, 0, tzinfo=UTC)
    timed = replace(emails, paused_until=until)
    assert _paused_text(timed) == "paused until 02:00:00"
    assert "paused until 02:00:00" in _title(timed, []).plain
    assert _row(timed, [], None)[1].plain == "paused until 02:00:00"
    assert _row(emails, [], None)[1].plain == "PAUSED"
    window = replace(emails, maintenance_until=until.replace(hour=4))
    assert _paused_text(window) == "in maintenance until 04:00:00"
    both = replace(timed, maintenance_until=until.replace(hour=4))
    assert _paused_text(both) == "paused until 02:00:00, in maintenance until 04:00:00"


def test_the_state_keeps_the_size_limits_of_the_queues_that_have_them() -> None:
    state = DashboardState()
    state.set_settings([Queue("a", QueueConfig(max_size=500)), Queue("b", QueueConfig())])
    assert state.max_sizes == {"a": 500}
    state.apply(MetricsSnapshot(time=at(0), metrics=[QueueMetrics("a")]))
    state.apply(MetricsSnapshot(time=at(1), metrics=[QueueMetrics("b")]))  # a went away
    assert state.max_sizes == {}


def test_the_state_keeps_the_group_limits_of_the_queues_that_have_them() -> None:
    state = DashboardState()
    limited = GroupLimits(concurrency=3)
    state.set_settings([Queue("a", QueueConfig(group_limits=limited)), Queue("b", QueueConfig())])
    assert state.group_limits == {"a": limited}
    state.apply(MetricsSnapshot(time=at(0), metrics=[QueueMetrics("a")]))
    state.apply(MetricsSnapshot(time=at(1), metrics=[QueueMetrics("b")]))  # a went away
    assert state.group_limits == {}


def test_job_detail_lists_the_error_history_oldest_first_and_literally() -> None:
    from queue_manager import JobError, JobErrorKind
    from queue_manager_tui.widgets.job_detail import job_text

    failed = job("42", JobState.FAILED, failed_reason="boom [b]2[/b]", stacktrace="Trace\n  line")
    failed.errors = [
        JobError(1, JobErrorKind.TIMEOUT, "job timed out after 1s", "", "w1", at(0)),
        JobError(2, JobErrorKind.ERROR, "boom [b]2[/b]", "Traceback\n  a\n  b\n  c\nValueError", "w2", at(5)),
    ]
    text = job_text(failed, []).plain
    section = text[text.index("errors (2 failed runs, oldest first)") :]
    lines = section.splitlines()
    assert lines[1].startswith("attempt 1  timeout  ") and lines[1].endswith("worker w1")
    assert lines[2] == "  job timed out after 1s"
    assert lines[3].startswith("attempt 2  error  ") and lines[3].endswith("worker w2")
    # Markup in a message is text; of a stack trace the last lines show (the last failure's whole is above).
    assert lines[4:8] == ["  boom [b]2[/b]", "      b", "      c", "    ValueError"]


def test_a_step_skipped_by_its_condition_gives_the_reason_dim_and_a_failed_one_red() -> None:
    from queue_manager.workflows import WorkflowStepRun, WorkflowStepState
    from queue_manager_tui.widgets.workflows_view import step_label

    def reason_style(state: WorkflowStepState, error: str) -> str:
        label = step_label(WorkflowStepRun("ship", "q", "ship", state=state, error=error))
        start = label.plain.index(error)
        return [str(span.style) for span in label.spans if span.start <= start < span.end][-1]

    assert reason_style(WorkflowStepState.SKIPPED, "run_if: check.total > 100 is false (42)") == "dim"
    assert reason_style(WorkflowStepState.FAILED, "boom") == "red"
