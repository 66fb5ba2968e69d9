"""The job detail pane: data, result, error and stack, attempts, times, progress, routing, log tail, links and
the children a job added at run time."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.css.query import NoMatches
from textual.widgets import Static

from queue_manager import ChildJob, Job, JobLogLine, JobRef, JobState
from queue_manager.routing import ROUTE_PREFIX
from queue_manager_tui.format import NONE, fmt_inline, fmt_time, fmt_value, safe
from queue_manager_tui.widgets.cells import STATE_STYLES, children_wait, event_wait

__all__ = ["JobDetail", "job_text"]

# Characters of data/result shown before cutting: the pane is for reading, not for dumping megabytes.
_PAYLOAD_LIMIT = 4_000
# Lines of a failed run's message and of the end of its stack trace shown in the error history.
_ERROR_LINES = 3
# Characters of a child's result or error shown on its line: the child's own detail has the rest.
_CHILD_OUTCOME = 60


class JobDetail(VerticalScroll, can_focus=True):
    """A scrollable pane describing one job (focus it with Tab to scroll a long one)."""

    def compose(self) -> ComposeResult:
        yield Static(Text("Select a job to see its details.", style="dim"), id="job-detail-body")

    def show_job(self, job: Job, logs: list[JobLogLine]) -> None:
        """Shows a job and its newest log lines."""
        body = self._body()
        if body is not None:
            body.update(job_text(job, logs))
            self.scroll_home(animate=False)

    def show_note(self, note: str) -> None:
        """Shows a message instead of a job ("no job selected", "job removed"…)."""
        body = self._body()
        if body is not None:
            body.update(Text(safe(note), style="dim"))

    def _body(self) -> Static | None:
        """The text of the pane; None while it is not mounted (a job read that lands as the app closes)."""
        try:
            return self.query_one("#job-detail-body", Static)
        except NoMatches:
            return None


def job_text(job: Job, logs: list[JobLogLine]) -> Text:
    """The detail pane's text for a job; every user-controlled part is literal."""
    out = Text()
    out.append(safe(job.name), style="bold")
    out.append(f"  {safe(job.id)}\n", style="dim")
    if job.state is not None:
        out.append(job.state.value, style=STATE_STYLES[job.state])
    if wait := children_wait(job) or event_wait(job):
        # In place of a due time, which such a job does not have (or, for a timed event wait, beside it):
        # it runs again once they have finished, or the event came.
        out.append(f"  {wait}", style="blue")
    if job.cancel_requested:
        out.append("  cancel requested", style="magenta")
    out.append(f"  priority {job.priority.name.lower()}  attempts {job.attempts_made}/{job.max_attempts}")
    if job.stalled_count:
        out.append(f"  stalled {job.stalled_count}x", style="yellow")
    out.append("\n")
    _times(out, job)
    if job.progress is not None:
        _field(out, "progress", fmt_value(job.progress))
    if job.worker_id:
        _field(out, "worker", job.worker_id)
    _routing(out, job)
    _section(out, "data", _payload(job.data))
    if job.result is not None:
        _section(out, "result", _payload(job.result))
    if job.failed_reason:
        _section(out, "error", job.failed_reason, style="red")
    if job.stacktrace:
        _section(out, "stack", job.stacktrace, style="red")
    if job.cancel_reason:
        _field(out, "cancel reason", job.cancel_reason)
    _errors(out, job)
    _links(out, job)
    _child_jobs(out, job)
    _event(out, job)
    _logs(out, job, logs)
    out.rstrip()
    return out


def _times(out: Text, job: Job) -> None:
    parts = [("created", job.created_at), ("started", job.processed_at), ("finished", job.finished_at)]
    parts.append(("runs at", job.run_at))
    for label, value in parts:
        if value is not None or label == "created":
            out.append(f"{label:<9} {fmt_time(value)} UTC\n", style="dim")


def _links(out: Text, job: Job) -> None:
    lines: list[str] = []
    for parent in job.parents:
        outcome = parent.state.value if parent.state is not None else ""
        step = f" step {parent.step_key}" if parent.step_key else ""
        lines.append(f"parent  {_ref(JobRef(parent.queue_name, parent.job_id))}{step} {outcome}".rstrip())
    lines += [f"child   {_ref(child)}" for child in job.children]
    if job.chain_root is not None:
        lines.append(f"chain root  {_ref(job.chain_root)}")
    if job.chain_failure:
        lines.append(f"chain stopped: {job.chain_failure}")
    if job.workflow is not None:
        lines.append(f"workflow run {job.workflow.run_id} step {job.workflow.step_key}  (w: open)")
    if lines:
        _section(out, "links", "\n".join(lines), style="cyan")


def _routing(out: Text, job: Job) -> None:
    """The job's fairness group, or for a job routed by worker labels those labels and the reserved group
    the server keeps it in (its own ``group`` is empty; the group is what ``qm groups`` lists and limits)."""
    options = job.options
    if options.group:
        _field(out, "group", options.group)
    if options.worker_labels:
        # The server names the group with the pairs in key order.
        pairs = [f"{key}={value}" for key, value in sorted(options.worker_labels.items())]
        _field(out, "worker labels", f"{', '.join(pairs)}  (group {ROUTE_PREFIX}{','.join(pairs)})")


def _child_jobs(out: Text, job: Job) -> None:
    """The children the job added at run time, in the order added, each with its state (its current one while
    it has not finished) and the first line of its result or error."""
    if not job.child_jobs:
        return
    total = len(job.child_jobs)
    pending = f", {job.children_pending} not finished" if job.children_pending else ""
    lines = [_child_line(child) for child in job.child_jobs]
    _section(out, f"children added at run time ({total}{pending})", "\n".join(lines))


def _event(out: Text, job: Job) -> None:
    """The external event that ended the job's last wait, with its data; or that the wait timed out."""
    if job.event is not None:
        e = job.event
        event_id = f"  id {e.event_id}" if e.event_id else ""
        head = f"{e.key}{event_id}  pushed {fmt_time(e.pushed_at)} UTC"
        _section(out, "external event", f"{head}\n{_payload(e.data)}")
    elif job.event_wait is not None and not event_wait(job):
        _section(out, "external event", f"none: the wait for {', '.join(job.event_wait.keys)} timed out")


def _child_line(child: ChildJob) -> str:
    """A child's line: its state now while it runs (GetJob reads it: no call per child here), its outcome once
    it finished (and its state now, when a retry by hand has moved it on since)."""
    now = child.current_state
    if child.state is None:
        state = now.value if now is not None else "not finished"
    else:
        state = child.state.value + (f" (now {now.value})" if now is not None and now != child.state else "")
    if child.truncated:
        outcome = "result over 1 KiB: open the child"
    elif child.state is JobState.COMPLETED:
        outcome = fmt_inline(child.result, _CHILD_OUTCOME)
    else:
        outcome = _first_line(child.failed_reason)
    return f"{_ref(JobRef(child.queue_name, child.job_id))}  {state}  {outcome}".rstrip()


def _first_line(text: str) -> str:
    line = text.splitlines()[0] if text else ""
    return line if len(line) <= _CHILD_OUTCOME else line[: _CHILD_OUTCOME - 1] + "…"


def _errors(out: Text, job: Job) -> None:
    """The job's failed runs (its error history), oldest first: how each ended, its message and the last
    lines of its stack trace (the whole of the last one is under "stack")."""
    if not job.errors:
        return
    lines: list[str] = []
    for e in job.errors:
        kind = e.kind.value if e.kind is not None else "unknown"
        when = f"{fmt_time(e.time)} UTC" if e.time else NONE
        lines.append(f"attempt {e.attempt}  {kind}  {when}  worker {e.worker_id or NONE}")
        lines += [f"  {line}" for line in e.message.splitlines()[:_ERROR_LINES]]
        lines += [f"    {line}" for line in e.stacktrace.rstrip().splitlines()[-_ERROR_LINES:]]
    runs = "run" if len(job.errors) == 1 else "runs"
    _section(out, f"errors ({len(job.errors)} failed {runs}, oldest first)", "\n".join(lines), style="red")


def _logs(out: Text, job: Job, logs: list[JobLogLine]) -> None:
    if not logs:
        return
    shown = f"last {len(logs)} of {job.log_count}" if job.log_count > len(logs) else f"{len(logs)}"
    body = "\n".join(f"{fmt_time(line.time) if line.time else NONE}  {line.message}" for line in logs)
    _section(out, f"log ({shown} lines)", body)


def _ref(ref: JobRef) -> str:
    return f"{ref.queue_name}/{ref.job_id}"


def _payload(value: object) -> str:
    text = fmt_value(value)
    if len(text) > _PAYLOAD_LIMIT:
        return text[:_PAYLOAD_LIMIT] + f"\n… ({len(text) - _PAYLOAD_LIMIT:,} more characters)"
    return text


def _field(out: Text, label: str, value: str) -> None:
    out.append(f"{label}: ", style="bold")
    out.append(safe(value, multiline=True))
    out.append("\n")


def _section(out: Text, label: str, body: str, style: str = "") -> None:
    out.append(f"\n{label}\n", style="bold underline")
    out.append(safe(body, multiline=True), style=style)
    out.append("\n")
