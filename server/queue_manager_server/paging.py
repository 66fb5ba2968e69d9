"""Page requests of the list calls (ListJobs, ListWorkflows, ListGroups, GetJobLogs) and where the bulk
actions go on: size and opaque token.

A token is ``<kind>:<position>`` in URL-safe base64 for a log line number (``l``, GetJobLogs). Positions are
bounded: Redis reads them as 64-bit integers, and a crafted token past that range must be refused here
(INVALID_ARGUMENT), not by Redis (an internal error).

A cursor token (``<kind>:<score>:<member>``) names the last item a page listed instead of an offset, and the
next page starts strictly after it, so items that join or leave ahead of it while a caller pages shift
nothing: no item is listed twice or skipped for that. ListWorkflows' ``w`` names a run of the registry
(sorted by creation, newest first), ListGroups' ``g`` a group (its score 0, its name). ListJobs pages by
cursor in every state, filtered or not, and its counts (count_only) go on from the same cursors:

- ``s``: the states held in sorted sets (delayed by run time, active by lease expiry, completed, failed and
  cancelled newest first), the score and id of the last job listed, ties on score broken by id. Every job
  that stays in the state from the first page to the last is listed exactly once, whatever joined or left
  meanwhile, the cursor's own job included; a job that joins after the cursor's place is listed, one that
  joins before it (a newer finished job) is not. A job whose score changes while a caller pages (an active
  job's lease extended, a delayed job rescheduled) is listed where it is when its page is read: once more,
  or not at all.
- ``q``: waiting and paused jobs, held in lists (one per priority level, then each fairness group's), where
  a job has no score: the cursor is the last job listed, its list (``WAITING_CURSOR``: level and group) and
  its index there. The next page starts after that job where it is now, wherever jobs ahead of it were
  claimed or pushed meanwhile; if it left its list (claimed, removed, cancelled, moved), from its list's
  head, since jobs leave a list by its head when claimed. Jobs that stay in their list are never skipped;
  they may be listed again only when the cursor's job left its list other than by a claim (its list is then
  read again from its head) or more than 1,000 jobs were pushed to the head ahead of it (CURSOR_SLACK in
  lua/includes/filter.lua). Jobs added to the head of a list, or to a list before the cursor's (a higher
  priority), after the cursor passed are not listed; jobs added to the tail are.

The bulk actions (RetryFailedJobs with a filter, limit or token, CancelJobs, RemoveJobs) go on from the same
cursors, ``s`` or ``q`` after the call's letter (``r``, ``c``, ``x``: ``rs``, ``cq``…) so a token is taken
back only by the call and the kind of state that answered it. What a caller can expect is the above, with
what an action does to the jobs it reads: they leave the state, so none is acted on twice (but an active job
asked to stop, which stays, is asked again if its lease is extended past the cursor before the pass ends),
and a ``q`` cursor names the last job read that stayed in its list (lua/includes/filter.lua bulk_cursor), not
one the call took out of it.

A token of the offsets ListJobs and ListGroups answered before (``o``), or of the positions the bulk actions
answered before (``r``, ``c``, ``x``), is refused as out of date (INVALID_ARGUMENT): the caller starts again
from the first page or call.
"""

from __future__ import annotations

import base64
import re

from queue_manager_server.errors import InvalidArgument

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
# Far beyond any real list, and with a page added still far inside Redis's 64-bit range.
MAX_POSITION = 1 << 53


def page_request(size: int, token: str, kind: str, rpc: str) -> tuple[int, int]:
    """A request's page size (0: the default) and the position its token names (none: 0)."""
    size = size or DEFAULT_PAGE_SIZE
    if size > MAX_PAGE_SIZE:
        raise InvalidArgument("page_size", f"{size} is above the maximum of {MAX_PAGE_SIZE}")
    return size, _position(token, kind, rpc)


def next_token(kind: str, position: int) -> str:
    return base64.urlsafe_b64encode(f"{kind}:{position}".encode()).decode()


# A waiting job's place in a ``q`` cursor's member: its level, its fairness group ('' for none; a group name
# holds no control character, validate.group) and its id (lua/includes/filter.lua read_cursor).
WAITING_CURSOR = re.compile(r"[1-5]\n[^\n]*\n.+", re.DOTALL)


def job_cursor(state: str) -> tuple[str, re.Pattern[str] | None]:
    """The kind of cursor the jobs of a state are paged by (ListJobs; the bulk actions after their letter)
    and the form its member must have: waiting and paused jobs are held in lists, the others in sorted
    sets."""
    return ("q", WAITING_CURSOR) if state in ("waiting", "paused") else ("s", None)


def cursor_request(
    size: int,
    token: str,
    kind: str,
    rpc: str,
    member: re.Pattern[str] | None = None,
    stale: str = "",
) -> tuple[int, tuple[int, str] | None]:
    """A request's page size (0: the default) and the cursor its token names: the score and member of the
    last item the page before listed (none: from the first item).

    Args:
        size: The requested page size.
        token: The page token ('' for the first page).
        kind: The kind of cursor the call answers.
        rpc: The call's name, for the message.
        member: The form the cursor's member must have, when it has one.
        stale: The kind of token the call answered before it paged by cursor, refused as out of date.
    """
    size = size or DEFAULT_PAGE_SIZE
    if size > MAX_PAGE_SIZE:
        raise InvalidArgument("page_size", f"{size} is above the maximum of {MAX_PAGE_SIZE}")
    return size, cursor(token, kind, rpc, member, stale)


def cursor(
    token: str,
    kind: str,
    rpc: str,
    member: re.Pattern[str] | None = None,
    stale: str = "",
    again: str = "list again from the first page",
) -> tuple[int, str] | None:
    """The cursor a token names: the score and member of the last item the call before read (none: from the
    first item).

    Args:
        token: The page token ('' for the first call).
        kind: The kind of cursor the call answers.
        rpc: The call's name, for the message.
        member: The form the cursor's member must have, when it has one.
        stale: The kind of token the call answered before it paged by cursor, refused as out of date.
        again: What the caller of an out-of-date token does instead, for the message.
    """
    if not token:
        return None
    try:
        found, score, name = base64.urlsafe_b64decode(token.encode()).decode().split(":", 2)
        value = int(score)
    except ValueError:  # not base64, not UTF-8, fewer than two ':' or no integer
        found, value, name = "", -1, ""
        if stale and _position(token, stale, rpc) >= 0:  # a valid old token (a bad one raises there)
            raise InvalidArgument(
                "page_token",
                f"is a position token of an older {rpc}, which no longer pages by position; omit it and "
                f"{again}",
            ) from None
    if found != kind or not 0 <= value <= MAX_POSITION or (member and not member.fullmatch(name)):
        raise InvalidArgument("page_token", f"is not a token returned by {rpc}; omit it for the first page")
    return value, name


def next_cursor(kind: str, score: int, member: str) -> str:
    return base64.urlsafe_b64encode(f"{kind}:{score}:{member}".encode()).decode()


def _position(token: str, kind: str, rpc: str) -> int:
    if not token:
        return 0
    try:
        found, value = base64.urlsafe_b64decode(token.encode()).decode().split(":")
        position = int(value)
    except ValueError:  # not base64, not UTF-8, no single ':' or no integer
        position, found = -1, ""
    if found != kind or not 0 <= position <= MAX_POSITION:
        raise InvalidArgument("page_token", f"is not a token returned by {rpc}; omit it for the first page")
    return position
