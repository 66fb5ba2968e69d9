"""Page requests of the list calls (ListJobs, ListWorkflows, GetJobLogs): size and opaque page token.

A token is ``<kind>:<position>`` in URL-safe base64: an offset (``o``, ListJobs), a log line number
(``l``, GetJobLogs), or where a bulk call continues (``r`` RetryFailedJobs, ``c`` CancelJobs, ``x``
RemoveJobs: engine/search.py). Positions are bounded: Redis reads them as 64-bit integers, and a crafted
token past that range must be refused here (INVALID_ARGUMENT), not by Redis (an internal error).

A cursor token (``<kind>:<score>:<member>``, ListWorkflows' ``w``) names the last item a page listed of a
sorted set read newest first, instead of an offset: items added at the head while a caller pages (runs
started meanwhile) then shift nothing, so no item is listed twice or skipped.
"""

from __future__ import annotations

import base64

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


def cursor_request(size: int, token: str, kind: str, rpc: str) -> tuple[int, tuple[int, str] | None]:
    """A request's page size (0: the default) and the cursor its token names: the score and member of the
    last item the page before listed (none: from the first item)."""
    size = size or DEFAULT_PAGE_SIZE
    if size > MAX_PAGE_SIZE:
        raise InvalidArgument("page_size", f"{size} is above the maximum of {MAX_PAGE_SIZE}")
    if not token:
        return size, None
    try:
        found, score, member = base64.urlsafe_b64decode(token.encode()).decode().split(":", 2)
        value = int(score)
    except ValueError:  # not base64, not UTF-8, fewer than two ':' or no integer
        found, value, member = "", -1, ""
    if found != kind or not 0 <= value <= MAX_POSITION:
        raise InvalidArgument("page_token", f"is not a token returned by {rpc}; omit it for the first page")
    return size, (value, member)


def next_cursor(kind: str, score: int, member: str) -> str:
    return base64.urlsafe_b64encode(f"{kind}:{score}:{member}".encode()).decode()


def position(token: str, kind: str, rpc: str) -> int:
    """The position a token of this kind names (none: 0)."""
    return _position(token, kind, rpc)


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
