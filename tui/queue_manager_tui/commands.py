"""The command palette: the dashboard's views, queues, job links and controls by name, and its provider."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Protocol

from textual.command import DiscoveryHit, Hit, Hits, Provider
from textual.content import Content
from textual.style import Style

from queue_manager import Job, JobRef
from queue_manager_tui.format import safe

if TYPE_CHECKING:
    from queue_manager_tui.app import DashboardApp

__all__ = ["DashboardCommands", "PaletteCommand", "PaletteSource", "palette_commands"]


@dataclass(frozen=True, slots=True)
class PaletteCommand:
    """One entry of the palette.

    Attributes:
        title: What the user searches for, e.g. "Pause queue emails".
        help: A line under it.
        run: Called when chosen (controls still ask for confirmation).
    """

    title: str
    help: str
    run: Callable[[], object]


class PaletteSource(Protocol):
    """The app side: the commands that make sense right now (no controls when read-only)."""

    def palette_commands(self) -> list[PaletteCommand]: ...


class DashboardCommands(Provider):
    """Offers `PaletteSource.palette_commands`; titles are literal (queue and job names are user text)."""

    def _commands(self) -> list[PaletteCommand]:
        app = self.app
        if not hasattr(app, "palette_commands"):
            return []
        source: PaletteSource = app
        return source.palette_commands()

    async def discover(self) -> Hits:
        for command in self._commands():
            yield DiscoveryHit(Content(command.title), command.run, text=command.title, help=command.help)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for command in self._commands():
            score, offsets = matcher.fuzzy_search.match(matcher.query, command.title)
            if score > 0:
                yield Hit(
                    score,
                    _highlight(command.title, offsets, matcher.match_style),
                    command.run,
                    text=command.title,
                    help=command.help,
                )


def _highlight(title: str, offsets: Sequence[int], style: Style) -> Content:
    """The title with its matched letters styled; unlike `Matcher.highlight` it never reads markup."""
    content = Content(title)
    for offset in offsets:
        if not title[offset].isspace():
            content = content.stylize(style, offset, offset + 1)
    return content


def palette_commands(app: DashboardApp) -> list[PaletteCommand]:
    """What the palette offers now: the views, each queue's jobs, the selected job's links and, unless
    the app is read-only, the controls that apply to the selected queue and job."""
    commands = [
        PaletteCommand("Show queues", "the Queues view (1)", partial(app.action_show_tab, "queues")),
        PaletteCommand("Show jobs", "the Jobs view (2)", partial(app.action_show_tab, "jobs")),
        PaletteCommand("Show workers", "the Workers view (3)", partial(app.action_show_tab, "workers")),
        PaletteCommand("Show workflows", "the Workflows view (4)", partial(app.action_show_tab, "workflows")),
        PaletteCommand("Show schedules", "the Schedules view (5)", partial(app.action_show_tab, "schedules")),
        PaletteCommand(
            "Show dead letters", "the Dead letters view (6)", partial(app.action_show_tab, "deadletters")
        ),
        PaletteCommand("Search jobs", "by id or name; Enter asks the server (/)", app.action_search),
        PaletteCommand("Help", "every key (?)", app.action_help),
    ]
    commands += [
        PaletteCommand(f"Jobs of {name}", f"open the jobs of queue {name}", partial(app.show_jobs_of, name))
        for name in app.state.queue_names
    ]
    job = app.jobs_view.selected_job() if app.active_tab == "jobs" else None
    if job is not None:
        commands += _link_commands(app, job)
    if not app.read_only:
        commands += _control_commands(app, job)
    return commands


def _link_commands(app: DashboardApp, job: Job) -> list[PaletteCommand]:
    links = [JobRef(p.queue_name, p.job_id) for p in job.parents]
    titles = [f"Open parent job {_ref(ref)}" for ref in links]
    # The children it started when it finished (chain, workflow) and those it added at run time.
    children = job.children + [JobRef(c.queue_name, c.job_id) for c in job.child_jobs]
    children = list(dict.fromkeys(children))
    links += children
    titles += [f"Open child job {_ref(ref)}" for ref in children]
    if job.chain_root is not None:
        links.append(job.chain_root)
        titles.append(f"Open chain root {_ref(job.chain_root)}")
    commands = [
        PaletteCommand(title, "a linked job", partial(app.open_job, ref))
        for title, ref in zip(titles, links, strict=True)
    ]
    if job.workflow is not None:
        run_id = job.workflow.run_id
        title = f"Open workflow run {safe(run_id)}"
        commands.append(
            PaletteCommand(title, "the run this job is a step of (w)", partial(app.open_workflow, run_id))
        )
    return commands


def _control_commands(app: DashboardApp, job: Job | None) -> list[PaletteCommand]:
    commands: list[PaletteCommand] = []
    queue = app.current_queue
    metrics = app.state.queues.get(queue) if queue is not None else None
    if metrics is not None:
        name = metrics.queue_name
        verb = "Resume" if metrics.is_paused else "Pause"
        commands += [
            PaletteCommand(f"{verb} queue {name}", "asks first (p)", app.action_pause_resume),
            PaletteCommand(f"Clean queue {name}…", "by state and age, asks first (C)", app.action_clean),
            PaletteCommand(f"Retry all failed jobs of {name}", "asks first (R)", app.action_retry_all),
        ]
    if job is not None:
        label = safe(job.id)
        commands += [
            PaletteCommand(
                f"Retry job {label}", "a failed or cancelled job, asks first (r)", app.action_retry
            ),
            PaletteCommand(f"Promote job {label}", "a delayed job, asks first (P)", app.action_promote),
            PaletteCommand(f"Cancel job {label}", "asks first (c)", app.action_cancel_job),
            PaletteCommand(f"Remove job {label}", "asks first (d)", app.action_remove),
        ]
    search = app.jobs_view.search if app.active_tab == "jobs" else None
    if search is not None:
        title = f"Act on every {search.state.value} job of {search.queue} {search.label}…"
        what = "retry, cancel or remove them, asks first (A)"
        commands.append(PaletteCommand(title, what, app.action_act_on_matches))
    schedule = app.schedules_view.selected() if app.active_tab == "schedules" else None
    if schedule is not None:
        title = f"Delete schedule {safe(schedule.id)} of {schedule.queue_name}"
        commands.append(PaletteCommand(title, "its jobs stay, asks first (d)", app.action_remove))
    if app.active_tab == "deadletters":
        copy = app.dead_letters_view.selected()
        commands.append(PaletteCommand("Requeue every copy shown", "asks first (R)", app.action_retry_all))
        if copy is not None:
            label = f"{copy.letter.original_queue}/{safe(copy.letter.original_job_id)}"
            commands += [
                PaletteCommand(f"Requeue the copy of {label}", "asks first (r)", app.action_retry),
                PaletteCommand(
                    f"Edit and requeue {label}…", "JSON editor, asks first (e)", app.action_edit_requeue
                ),
                PaletteCommand(f"Delete the copy of {label}", "asks first (d)", app.action_remove),
            ]
    return commands


def _ref(ref: JobRef) -> str:
    return f"{ref.queue_name}/{safe(ref.job_id)}"
