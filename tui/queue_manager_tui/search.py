"""The Jobs view's search on the server: a name (exact, or a prefix ending with "*") in one queue and state,
its pages, the count of its matches and the bulk actions on them. No Textual here.

The server keeps no index for a filter: each filtered call reads a bounded part of the state (at most a few
thousand jobs), so a page may come back short, or empty, with a token. `find_page` keeps asking until the
page is full, the state is read to its end, or it made `MAX_SEARCH_CALLS` calls (then the token it returns
reads on, as the next page); `count_matches` counts on the server (ListJobs count_only) within
`MAX_COUNT_CALLS` calls; `act_on_matches`
follows the tokens to the end, as the user asked for every match.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from queue_manager import Job, JobState
from queue_manager_tui.data import DataSource
from queue_manager_tui.format import safe

__all__ = [
    "MAX_COUNT_CALLS",
    "MAX_SEARCH_CALLS",
    "BulkAction",
    "BulkOutcome",
    "Count",
    "Search",
    "SearchPage",
    "act_on_matches",
    "count_matches",
    "find_page",
    "parse_name",
]

# The server reads at most 4,000 jobs of the state per filtered call: 25 calls read up to 100,000 jobs for
# one page (a second or two on a busy server) before the page is shown as it is and `]` reads on.
MAX_SEARCH_CALLS = 25
# Counting stops after this many calls (each a count-only ListJobs reading up to 4,000 jobs of the state on
# the server, no job sent back: 400,000 jobs in all); the confirmation then says "more than", and the action
# itself still goes to the end of the state.
MAX_COUNT_CALLS = 100


def parse_name(text: str) -> str:
    """The name filter the user typed: exact, or a prefix ending with "*".

    Raises:
        ValueError: Empty, a "*" before the end, or "*" alone (the message says what to type instead).
    """
    name = text.strip()
    if not name:
        raise ValueError("type a job name, or a prefix ending with '*' (send-*)")
    if "*" in name[:-1]:
        raise ValueError(f"'{safe(name)}' holds a '*' before its end; '*' may only end a name (send-*)")
    if name == "*":
        raise ValueError("'*' alone matches every name: Esc closes the search and shows every job")
    return name


@dataclass(frozen=True, slots=True)
class Search:
    """A search by name of one queue's jobs in one state.

    Attributes:
        queue: The queue.
        state: The state searched.
        name: The name, exact, or a prefix when it ends with "*".
    """

    queue: str
    state: JobState
    name: str

    @property
    def label(self) -> str:
        """The matches in words, for prompts: "named 'send-email'", "with a name starting 'send-'"."""
        if self.name.endswith("*"):
            return f"with a name starting '{safe(self.name[:-1])}'"
        return f"named '{safe(self.name)}'"


@dataclass(frozen=True, slots=True)
class SearchPage:
    """One page of a search.

    Attributes:
        jobs: The matches found (at most the page size).
        next_token: Where the next page starts ("" once the state was read to its end).
        cut_short: The page stopped at `MAX_SEARCH_CALLS` before it was full: the state is not read to its
            end, and more matches may follow.
    """

    jobs: list[Job]
    next_token: str
    cut_short: bool


async def find_page(
    source: DataSource, search: Search, page_size: int, page_token: str, max_calls: int = MAX_SEARCH_CALLS
) -> SearchPage:
    """Up to ``page_size`` matches from ``page_token`` on, following short and empty pages (bounded).

    Args:
        source: Where jobs come from.
        search: What to look for.
        page_size: Most matches on the page.
        page_token: Where to start ("" for the first page).
        max_calls: Most calls for this page.
    """
    jobs: list[Job] = []
    token = page_token
    for _ in range(max_calls):
        found, token = await source.list_jobs(
            search.queue, search.state, page_size - len(jobs), token, name=search.name
        )
        jobs += found
        if not token or len(jobs) >= page_size:
            return SearchPage(jobs, token, cut_short=False)
    return SearchPage(jobs, token, cut_short=True)


@dataclass(frozen=True, slots=True)
class Count:
    """How many jobs a search matches now.

    Attributes:
        count: The matches counted.
        complete: The whole state was read; False when counting stopped at `MAX_COUNT_CALLS` (more may match).
    """

    count: int
    complete: bool


async def count_matches(source: DataSource, search: Search, max_calls: int = MAX_COUNT_CALLS) -> Count:
    """Counts the matches on the server, no job sent back (bounded: see `Count.complete`)."""
    count, token = 0, ""
    for _ in range(max_calls):
        found, token = await source.count_jobs(search.queue, search.state, search.name, token)
        count += found
        if not token:
            return Count(count, complete=True)
    return Count(count, complete=False)


class BulkAction(enum.Enum):
    """What can be done to every match, and the states each applies to (as the server checks)."""

    RETRY = "retry"
    CANCEL = "cancel"
    REMOVE = "remove"

    def applies_to(self, state: JobState) -> bool:
        if self is BulkAction.RETRY:
            return state in (JobState.FAILED, JobState.CANCELLED)
        if self is BulkAction.CANCEL:
            return state in (JobState.WAITING, JobState.PAUSED, JobState.DELAYED, JobState.ACTIVE)
        return state is not JobState.ACTIVE

    @classmethod
    def for_state(cls, state: JobState) -> tuple[BulkAction, ...]:
        """The actions that apply to jobs in ``state`` (at least one for every state)."""
        return tuple(action for action in cls if action.applies_to(state))


@dataclass(frozen=True, slots=True)
class BulkOutcome:
    """What a bulk action did.

    Attributes:
        count: Jobs retried, cancelled or removed.
        requested: Active jobs whose workers were told to stop them (cancel only).
    """

    count: int
    requested: int = 0


async def act_on_matches(source: DataSource, action: BulkAction, search: Search) -> BulkOutcome:
    """Retries, cancels or removes every match: one bounded call after the other until the token is ""."""
    call = {
        BulkAction.RETRY: source.retry_jobs,
        BulkAction.CANCEL: source.cancel_jobs,
        BulkAction.REMOVE: source.remove_jobs,
    }[action]
    count = requested = 0
    token = ""
    while True:
        result = await call(search.queue, search.state, search.name, token)
        count, requested, token = count + result.count, requested + result.requested, result.next_page_token
        if not token:
            return BulkOutcome(count, requested)
