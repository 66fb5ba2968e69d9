"""The filter options of ``qm jobs list``, ``qm jobs count`` and the bulk commands ``qm jobs
retry-all|cancel-all|remove-all``.

The server reads at most a few thousand jobs of a state per call when a filter is given, so a page can come
back short or empty with a token: these commands follow the tokens themselves (a listing until its page is
full, a bulk command until the whole state was read).
"""

from __future__ import annotations

import argparse
from datetime import datetime
from typing import Any

from queue_manager.cli.common import UsageError, bounded_int, client, job_state, option, show
from queue_manager.cli.groups import group_name
from queue_manager.convert import Job
from queue_manager.enums import JobState
from queue_manager.sync import SyncQueueManager

# The filter options and the keyword of each in the client's calls.
_FLAGS = ("name", "group", "tag", "correlation_id", "created_after", "created_before")


def _text(flag: str) -> Any:
    def parse(text: str) -> str:
        if not text.strip():
            raise argparse.ArgumentTypeError(f"is empty; leave {flag} out to match every job")
        return text

    return parse


def _name(text: str) -> str:
    _text("--name")(text)
    if "*" in text[:-1]:
        raise argparse.ArgumentTypeError(f"{text!r}: '*' may only end a name, as a prefix ('send-*')")
    if text == "*":
        raise argparse.ArgumentTypeError("'*' alone matches every name; leave --name out instead")
    return text


def _time(flag: str) -> Any:
    def parse(text: str) -> datetime:
        try:
            return datetime.fromisoformat(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{text!r} is not an ISO 8601 time such as 2030-01-31T08:00:00+01:00 (no offset: local time)"
            ) from None

    return parse


def add_filter_options(parser: argparse.ArgumentParser) -> None:
    """Adds --name, --group, --tag, --correlation-id, --created-after and --created-before."""
    option(parser, "--name", type=_name, help="only jobs of this name; ending with '*', a prefix ('send-*')")
    option(parser, "--group", type=group_name, help="only jobs of this fairness group")
    option(parser, "--tag", type=_text("--tag"), help="only jobs whose metadata holds this tag")
    option(
        parser, "--correlation-id", type=_text("--correlation-id"), help="only jobs with this correlation id"
    )
    option(
        parser,
        "--created-after",
        type=_time("--created-after"),
        help="only jobs created at or after this time (ISO 8601; no offset: local time)",
    )
    option(
        parser, "--created-before", type=_time("--created-before"), help="only jobs created before this time"
    )


def filters(args: argparse.Namespace) -> dict[str, Any]:
    """The filter options given, as the client's keywords (none given: {})."""
    given = {flag: getattr(args, flag) for flag in _FLAGS if getattr(args, flag) is not None}
    after, before = given.get("created_after"), given.get("created_before")
    if after is not None and before is not None:
        try:
            empty = after >= before
        except TypeError:  # one with an offset, one without
            raise UsageError(
                "--created-after and --created-before must both carry a UTC offset, or neither"
            ) from None
        if empty:
            raise UsageError(
                f"--created-after {after.isoformat()} is not before --created-before "
                f"{before.isoformat()}: no job can match"
            )
    return given


def gather(
    qm: SyncQueueManager, queue: str, state: JobState | str, size: int, token: str, given: dict[str, Any]
) -> tuple[list[Job], str]:
    """Up to `size` jobs of a state from `token` on, following the tokens of short filtered pages."""
    jobs: list[Job] = []
    while True:
        page, token = qm.list_jobs(queue, state, size - len(jobs), token, **given)
        jobs += page
        if not token or len(jobs) >= size:
            return jobs, token


def register(jobs: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``qm jobs count``, ``qm jobs cancel-all`` and ``qm jobs remove-all`` (jobs.py gives ``retry-all`` the
    filter options)."""
    count = jobs.add_parser(
        "count",
        help="count the jobs of one state that match the filter options, on the server (no job is sent)",
    )
    count.add_argument("queue")
    states = "waiting, active, delayed, completed, failed, paused or cancelled"
    option(count, "--state", required=True, type=job_state(), help=states)
    add_filter_options(count)
    option(
        count,
        "--max-calls",
        type=bounded_int(1),
        default=None,
        help="stop after this many calls (each reads a few thousand jobs) and print the token to go on "
        "from (default: count to the end of the state)",
    )
    option(count, "--page-token", default="", help="go on from this token (a previous count's)")
    count.set_defaults(command="jobs count", handler=_count)
    cancel = jobs.add_parser(
        "cancel-all",
        help="cancel the jobs of one state that match the filter options (active ones are stopped by their "
        "workers)",
    )
    cancel.add_argument("queue")
    cancellable = job_state(
        JobState.WAITING,
        JobState.PAUSED,
        JobState.DELAYED,
        JobState.ACTIVE,
        note="a finished job cannot be cancelled (qm jobs remove-all removes it)",
    )
    option(cancel, "--state", required=True, type=cancellable, help="waiting, paused, delayed or active")
    add_filter_options(cancel)
    option(cancel, "--reason", default="", help="why, kept with each job")
    cancel.set_defaults(command="jobs cancel-all", handler=_cancel_all)
    remove = jobs.add_parser("remove-all", help="remove the jobs of one state that match the filter options")
    remove.add_argument("queue")
    removable = job_state(
        JobState.WAITING,
        JobState.PAUSED,
        JobState.DELAYED,
        JobState.COMPLETED,
        JobState.FAILED,
        JobState.CANCELLED,
        note="cancel active jobs first (qm jobs cancel-all QUEUE --state active), then remove them",
    )
    option(
        remove,
        "--state",
        required=True,
        type=removable,
        help="waiting, paused, delayed, completed, failed or cancelled",
    )
    add_filter_options(remove)
    remove.set_defaults(command="jobs remove-all", handler=_remove_all)


def retry_matching(args: argparse.Namespace, given: dict[str, Any]) -> int:
    """``qm jobs retry-all`` with filter options: bounded calls until the whole state was read."""
    count, token = 0, ""
    with client(args) as qm:
        while True:
            result = qm.retry_jobs(args.queue, args.state, **given, page_token=token)
            count, token = count + result.count, result.next_page_token
            if not token:
                break
    show(args, {"queue": args.queue, "state": args.state, "retried": count})
    return 0


def _count(args: argparse.Namespace) -> int:
    given = filters(args)
    with client(args) as qm:
        counted = qm.count_jobs(
            args.queue, args.state, **given, page_token=args.page_token, max_calls=args.max_calls
        )
    out: dict[str, Any] = {"queue": args.queue, "state": args.state, "count": counted.count}
    out["complete"] = counted.complete
    if not counted.complete:
        out["next_page_token"] = counted.next_page_token
    show(args, out)
    return 0


def _cancel_all(args: argparse.Namespace) -> int:
    given = filters(args)
    count = requested = 0
    token = ""
    with client(args) as qm:
        while True:
            result = qm.cancel_jobs(args.queue, args.state, **given, page_token=token, reason=args.reason)
            count, requested = count + result.count, requested + result.requested
            token = result.next_page_token
            if not token:
                break
    show(args, {"queue": args.queue, "state": args.state, "cancelled": count, "stop_requested": requested})
    return 0


def _remove_all(args: argparse.Namespace) -> int:
    given = filters(args)
    count, token = 0, ""
    with client(args) as qm:
        while True:
            result = qm.remove_jobs(args.queue, args.state, **given, page_token=token)
            count, token = count + result.count, result.next_page_token
            if not token:
                break
    show(args, {"queue": args.queue, "state": args.state, "removed": count})
    return 0
