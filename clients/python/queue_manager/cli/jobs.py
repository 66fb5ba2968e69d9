"""``qm add`` and ``qm jobs …``: adding, reading and controlling jobs."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from queue_manager.cli import search
from queue_manager.cli.common import (
    JOB_COLUMNS,
    MAX_DURATION_MS,
    MAX_EXPIRE_AFTER_MS,
    UsageError,
    add_attempts_and_timeout,
    bounded_int,
    client,
    iso_time,
    job_options,
    job_state,
    key_value,
    milliseconds,
    option,
    plain,
    print_table,
    priority_level,
    read_data,
    show,
    span_ms,
)
from queue_manager.cli.groups import group_name
from queue_manager.convert import JobLogLine, job_from_proto
from queue_manager.dead_letters import KEEP_DATA
from queue_manager.enums import DedupMode, JobState
from queue_manager.requests import add_job_request
from queue_manager.v1 import jobs_pb2, queue_service_pb2_grpc


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Adds ``add`` and ``jobs`` to the ``qm`` parser."""
    add = commands.add_parser("add", help="add a job")
    add.add_argument("queue")
    add.add_argument("name")
    option(add, "--data", default=None, help="job data as JSON (@FILE reads a file, @- stdin)")
    option(add, "--priority", type=priority_level, help="critical, high, normal, low, background or 1-5")
    option(
        add,
        "--delay",
        type=milliseconds(),
        help="how long before the job may start (5m, 90s, 250ms; bare number: ms)",
    )
    add_attempts_and_timeout(add)
    option(
        add,
        "--expire-after",
        type=span_ms(1, MAX_EXPIRE_AFTER_MS),
        help="not started within this long of being ready (5m, 90s, 1h30m, 250ms; bare number: ms), the job "
        "is not run: it ends cancelled as expired (default: the queue's default_job_options, else never)",
    )
    option(
        add,
        "--job-id",
        help="idempotency key: if a job has it already, nothing is added and that job is shown",
    )
    option(
        add,
        "--group",
        type=group_name,
        help="fairness group (a tenant, a customer): the ready jobs of different groups take turns "
        "(qm groups list QUEUE)",
    )
    option(
        add,
        "--worker-label",
        action="append",
        type=key_value,
        metavar="KEY=VALUE",
        help="a label the worker must have to run the job (repeatable; every one must match): the job "
        "waits until such a worker connects",
    )
    option(
        add,
        "--lifo",
        action="store_const",
        const=True,
        help="to the head of its priority level: of the jobs of a level the last added runs first",
    )
    option(add, "--dedup-key", help="dedup key: while held, adding with it returns the holding job")
    option(
        add,
        "--dedup-ttl",
        type=milliseconds(1),
        help="how long the dedup key is held (10m, 90s; bare number: ms; default: until the job is done)",
    )
    option(
        add,
        "--dedup-mode",
        choices=[mode.value for mode in DedupMode],
        help="while the key is held: keep_first ignores the add (default), extend also restarts the ttl, "
        "replace gives a job that has not started this add's name and data (debounce)",
    )
    add.set_defaults(command="add", handler=_add)

    jobs = commands.add_parser("jobs", help="read, remove and control jobs").add_subparsers(
        metavar="ACTION", required=True
    )
    get = jobs.add_parser("get", aliases=["show"], help="show one job, with its error history")
    get.add_argument("queue")
    get.add_argument("job_id", metavar="ID")
    get.set_defaults(command="jobs get", handler=_get)
    listing = jobs.add_parser(
        "list",
        help="list a queue's jobs: in one state, or in all (active, waiting, paused, delayed, failed, "
        "cancelled, completed; the page size is shared)",
    )
    listing.add_argument("queue")
    option(
        listing,
        "--state",
        default=None,
        type=job_state(),
        help="waiting, active, delayed, completed, failed, paused or cancelled (default: all states)",
    )
    option(listing, "--page-size", type=int, default=100, help="jobs per page, 1 to 1000")
    option(listing, "--page-token", default="", help="token of the page to read")
    search.add_filter_options(listing)
    listing.set_defaults(command="jobs list", handler=_list)
    remove = jobs.add_parser("remove", help="remove a job that is not active")
    remove.add_argument("queue")
    remove.add_argument("job_id", metavar="ID")
    remove.set_defaults(command="jobs remove", handler=_remove)
    cancel = jobs.add_parser("cancel", help="cancel a job (an active one is stopped by its worker)")
    cancel.add_argument("queue")
    cancel.add_argument("job_id", metavar="ID")
    option(cancel, "--reason", default="", help="why, kept with the job")
    cancel.set_defaults(command="jobs cancel", handler=_cancel)
    _register_control(jobs)
    search.register(jobs)


def _register_control(jobs: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``qm jobs logs|wait|retry|retry-all|promote|reschedule|priority|update-data`` (docs/jobs.md)."""
    logs = jobs.add_parser("logs", help="show a job's log lines, oldest first")
    logs.add_argument("queue")
    logs.add_argument("job_id", metavar="ID")
    option(logs, "--page-size", type=bounded_int(1, 1000), default=100, help="lines per page, 1 to 1000")
    option(logs, "--page-token", default="", help="token of the page to read")
    logs.add_argument("--all", action="store_true", help="read every page")
    logs.set_defaults(command="jobs logs", handler=_logs)
    wait = jobs.add_parser(
        "wait",
        help="wait until a job is finished; exit 0 if it completed, 1 if it failed or was cancelled, "
        "124 if it is still unfinished after --timeout",
    )
    wait.add_argument("queue")
    wait.add_argument("job_id", metavar="ID")
    option(
        wait,
        "--timeout",
        type=milliseconds(0, None),
        help="how long to wait at most (60s, 5m; bare number: ms; default: as long as it takes)",
    )
    wait.set_defaults(command="jobs wait", handler=_wait)
    retry = jobs.add_parser("retry", help="run a failed or cancelled job again (attempts counted afresh)")
    retry.add_argument("queue")
    retry.add_argument("job_id", metavar="ID")
    option(
        retry,
        "--data",
        default=None,
        help="new data for the job as JSON (@FILE reads a file, @- stdin; null sets JSON null), set in the "
        "same step as the retry: edit and requeue (default: the job keeps its data)",
    )
    retry.set_defaults(command="jobs retry", handler=_retry)
    retry_all = jobs.add_parser(
        "retry-all",
        help="run every failed (or cancelled) job of a queue again, or those the filter options match",
    )
    retry_all.add_argument("queue")
    option(
        retry_all,
        "--state",
        default="failed",
        type=job_state(JobState.FAILED, JobState.CANCELLED),
        help="failed (default) or cancelled",
    )
    search.add_filter_options(retry_all)
    retry_all.set_defaults(command="jobs retry-all", handler=_retry_all)
    promote = jobs.add_parser("promote", help="make a delayed job waiting now")
    promote.add_argument("queue")
    promote.add_argument("job_id", metavar="ID")
    promote.set_defaults(command="jobs promote", handler=_promote)
    reschedule = jobs.add_parser(
        "reschedule", help="change when a delayed job runs; a waiting job becomes delayed until then"
    )
    reschedule.add_argument("queue")
    reschedule.add_argument("job_id", metavar="ID")
    when = reschedule.add_mutually_exclusive_group(required=True)
    when.add_argument(
        "--delay",
        type=span_ms(0, MAX_DURATION_MS),
        help="how long from now (5m, 90s, 1h30m, 250ms; bare number: ms); 0 makes the job due now",
    )
    when.add_argument(
        "--at",
        type=iso_time,
        help="when, as ISO 8601 (2030-01-31T08:00:00+01:00; without an offset: local time); a time that has "
        "come makes the job due now",
    )
    reschedule.set_defaults(command="jobs reschedule", handler=_reschedule)
    priority = jobs.add_parser("priority", help="change a waiting or delayed job's priority")
    priority.add_argument("queue")
    priority.add_argument("job_id", metavar="ID")
    priority.add_argument(
        "priority", type=priority_level, help="critical, high, normal, low, background or 1-5"
    )
    priority.set_defaults(command="jobs priority", handler=_priority)
    update = jobs.add_parser(
        "update-data", help="replace the data of a job that has not finished (its next attempt gets it)"
    )
    update.add_argument("queue")
    update.add_argument("job_id", metavar="ID")
    option(update, "--data", required=True, help="the new data as JSON (@FILE reads a file, @- stdin)")
    update.set_defaults(command="jobs update-data", handler=_update_data)


def _add(args: argparse.Namespace) -> int:
    """``qm add``: exits 0 whether the job was added or one with its --job-id (or --dedup-key) was there
    already; then stderr says so and ``-o json`` shows ``"created": false``."""
    options = job_options(
        args, ("priority", "delay", "attempts", "job_id", "timeout", "expire_after", "group", "lifo")
    )
    if args.dedup_key is not None:
        if args.dedup_mode == DedupMode.EXTEND and args.dedup_ttl is None:
            raise UsageError("--dedup-mode extend restarts the ttl at each duplicate: give --dedup-ttl")
        options["dedup"] = {"key": args.dedup_key, "ttl": args.dedup_ttl, "mode": args.dedup_mode}
    elif args.dedup_ttl is not None or args.dedup_mode is not None:
        raise UsageError(
            f"{'--dedup-ttl' if args.dedup_ttl is not None else '--dedup-mode'} needs --dedup-key"
        )
    if args.worker_label:
        options["worker_labels"] = dict(args.worker_label)
    request = add_job_request(args.queue, args.name, read_data(args.data), options)
    with client(args) as qm:  # the stub, not qm.add_job: that returns the job without `created`
        stub = queue_service_pb2_grpc.QueueServiceStub(qm.channel)
        response: jobs_pb2.AddJobResponse = stub.AddJob(request, timeout=qm.timeout)
    job = plain(job_from_proto(response.job))
    replaced = response.disposition == jobs_pb2.ADD_DISPOSITION_REPLACED
    # What this add did, as Job.created and Job.replaced tell the Python API's callers: the job read from
    # the answer leaves both unset, which printed two empty rows (and "replaced": null in -o json).
    job["created"], job["replaced"] = response.created, replaced
    if replaced:
        print(
            f"qm add: job {job['id']!r} of queue {args.queue!r} held --dedup-key {args.dedup_key!r} and had "
            "not started: it has this add's name and data now; no job was added",
            file=sys.stderr,
        )
    elif not response.created:
        if args.job_id is not None and job["id"] == args.job_id:
            held = f"job {job['id']!r} already existed in queue {args.queue!r}"
        else:
            held = f"job {job['id']!r} of queue {args.queue!r} holds --dedup-key {args.dedup_key!r}"
        print(f"qm add: {held}; nothing was added", file=sys.stderr)
    if args.output == "json":
        show(args, {**job, "created": response.created, "disposition": _disposition(response)})
    else:
        show(args, job, columns=JOB_COLUMNS)
    return 0


def _disposition(response: jobs_pb2.AddJobResponse) -> str:
    """What the add did, in lower case (``created``, ``existing``, ``deduplicated``, ``replaced``); a server
    that predates AddJobResponse.disposition is answered from ``created``."""
    if response.disposition:
        return jobs_pb2.AddDisposition.Name(response.disposition).removeprefix("ADD_DISPOSITION_").lower()
    return "created" if response.created else "existing"


def _get(args: argparse.Namespace) -> int:
    with client(args) as qm:
        job = qm.get_job(args.queue, args.job_id)
    data = plain(job)
    if args.output == "json":
        show(args, data)
        return 0
    # The error history gets lines of its own: a stack trace in one table cell is unreadable.
    errors = data.pop("errors", None) or []
    show(args, data)
    if errors:
        print(f"errors ({len(errors)}, oldest first):")
        for e in errors:
            kind = e.get("kind") or "unknown"
            print(
                f"  attempt {e['attempt']}  {kind}  {e.get('time') or ''}  worker {e.get('worker_id') or '-'}"
            )
            for text in (e.get("message") or "", e.get("stacktrace") or ""):
                for line in text.rstrip("\n").splitlines():
                    print(f"    {line}")
    return 0


def _list(args: argparse.Namespace) -> int:
    """``qm jobs list``; with filter options, short pages are followed until the page is full (or the state
    read to its end)."""
    if args.state is None:
        return _list_all(args)
    if not 1 <= args.page_size <= 1000:
        raise UsageError(f"--page-size must be 1 to 1000, got {args.page_size}")
    given = search.filters(args)
    with client(args) as qm:
        jobs, token = search.gather(qm, args.queue, args.state, args.page_size, args.page_token, given)
    if args.output == "json":
        show(args, {"jobs": [plain(job) for job in jobs], "next_page_token": token})
    else:
        show(args, [plain(job) for job in jobs], columns=JOB_COLUMNS)
        if token:
            print(f"next page: --page-token {token}")
    return 0


def _list_all(args: argparse.Namespace) -> int:
    """``qm jobs list QUEUE`` without ``--state``: up to a page of jobs, across states in `_ALL_STATES` order.

    A state with jobs not shown is named with the ``--state`` (and ``--page-token``) that continues it; in
    JSON as ``next_page_tokens`` (state → token, "" meaning from its first page).
    """
    if args.page_token:
        raise UsageError("--page-token needs --state (page tokens belong to one state)")
    if not 1 <= args.page_size <= 1000:  # checked here too: the last states are probed with a size of 1
        raise UsageError(f"--page-size must be 1 to 1000, got {args.page_size}")
    shown: list[dict[str, Any]] = []
    more: dict[str, str] = {}
    given = search.filters(args)
    with client(args) as qm:
        for state in _ALL_STATES:
            room = args.page_size - len(shown)
            page, token = search.gather(qm, args.queue, state, max(room, 1), "", given)
            if room <= 0:  # the page is full: only find out whether this state has jobs
                if page:
                    more[state.value] = ""
                continue
            shown += [plain(job) for job in page]
            if token:
                more[state.value] = token
    if args.output == "json":
        show(args, {"jobs": shown, "next_page_tokens": more})
        return 0
    show(args, shown, columns=JOB_COLUMNS)
    for name, token in more.items():
        tail = f" --page-token {token}" if token else ""
        print(f"more {name}: qm jobs list {args.queue} --state {name}{tail}")
    return 0


# Without --state: running and upcoming work first, history last.
_ALL_STATES = (
    JobState.ACTIVE,
    JobState.WAITING,
    JobState.PAUSED,
    JobState.DELAYED,
    JobState.FAILED,
    JobState.CANCELLED,
    JobState.COMPLETED,
)


def _remove(args: argparse.Namespace) -> int:
    with client(args) as qm:
        previous = qm.remove_job(args.queue, args.job_id)
    show(args, {"queue": args.queue, "id": args.job_id, "previous_state": plain(previous)})
    return 0


def _cancel(args: argparse.Namespace) -> int:
    with client(args) as qm:
        job = qm.cancel_job(args.queue, args.job_id, args.reason)
    show(args, plain(job))
    return 0


def _logs(args: argparse.Namespace) -> int:
    lines: list[JobLogLine] = []
    token = args.page_token
    with client(args) as qm:
        while True:
            page, token = qm.get_job_logs(args.queue, args.job_id, args.page_size, token)
            lines += page
            if not (args.all and token):
                break
    rows = [plain(line) for line in lines]
    if args.output == "json":
        show(args, {"lines": rows, "next_page_token": token})
        return 0
    print_table(rows, ("time", "message"))
    if token:
        print(f"next page: --page-token {token}")
    return 0


def _wait(args: argparse.Namespace) -> int:
    timeout = None if args.timeout is None else args.timeout / 1000
    with client(args) as qm:
        try:
            job = qm.wait_for_job(args.queue, args.job_id, timeout)
        except TimeoutError as exc:
            print(f"error: DEADLINE_EXCEEDED: {exc}", file=sys.stderr)
            return 124
    show(args, plain(job))
    return 0 if job.state is JobState.COMPLETED else 1


def _retry(args: argparse.Namespace) -> int:
    data = read_data(args.data) if args.data is not None else KEEP_DATA  # --data null: JSON null
    with client(args) as qm:
        job = qm.retry_job(args.queue, args.job_id, data)
    show(args, plain(job), columns=JOB_COLUMNS)
    return 0


def _retry_all(args: argparse.Namespace) -> int:
    given = search.filters(args)
    if given:
        return search.retry_matching(args, given)
    with client(args) as qm:
        count = qm.retry_failed(args.queue, args.state)
    show(args, {"queue": args.queue, "state": args.state, "retried": count})
    return 0


def _promote(args: argparse.Namespace) -> int:
    with client(args) as qm:
        job = qm.promote_job(args.queue, args.job_id)
    show(args, plain(job))
    return 0


def _reschedule(args: argparse.Namespace) -> int:
    with client(args) as qm:
        job = qm.reschedule_job(args.queue, args.job_id, delay=args.delay, run_at=args.at)
    show(args, plain(job))
    return 0


def _priority(args: argparse.Namespace) -> int:
    with client(args) as qm:
        job = qm.change_priority(args.queue, args.job_id, args.priority)
    show(args, plain(job))
    return 0


def _update_data(args: argparse.Namespace) -> int:
    data = read_data(args.data)
    with client(args) as qm:
        job = qm.update_job_data(args.queue, args.job_id, data)
    show(args, plain(job))
    return 0
