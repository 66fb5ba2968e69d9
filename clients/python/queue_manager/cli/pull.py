"""``qm pull fetch|complete|fail|extend|progress``: a pull worker from the shell (docs/api.md, "Pull workers
(no stream)"), so that a script or an operator takes and settles jobs without writing a client.

``fetch`` leases jobs and prints each with its lease token; the other commands present that token
(``--token``) and take the job up by its lease (`SyncQueueManager.pulled_job`), so a run may be fetched by
one command and settled by another. They report no run duration: the server measures the run from its
fetch. With ``-o json``, ``fetch`` prints one JSON object per line (JSON Lines, nothing when no job was
ready), which ``while read -r job`` and ``jq`` read a job at a time; the other commands print one object.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from queue_manager.cli.common import UsageError, bounded_int, client, plain, read_data, show, span_ms
from queue_manager.pull import MAX_FETCH, MAX_WAIT_S, SyncPulledJob
from queue_manager.sync import SyncQueueManager

# The server's bounds of a pulled job's lease (services/pull.py MIN_LEASE_MS, MAX_LEASE_MS).
_MIN_LEASE_MS, _MAX_LEASE_MS = 1_000, 3_600_000
# The longest retry-after a failure may ask for (server services/reports.py MAX_RETRY_AFTER_MS).
_MAX_RETRY_AFTER_MS = 24 * 3_600_000
_FETCH_COLUMNS = ("id", "name", "attempt", "lease_token", "lease_expires", "data")


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Adds ``pull`` to the ``qm`` parser."""
    pull = commands.add_parser(
        "pull", help="take and settle jobs as a pull worker (no stream): fetch, complete, fail, extend"
    ).add_subparsers(metavar="ACTION", required=True)

    fetch = pull.add_parser("fetch", help="lease ready jobs; prints each with the lease token to settle it")
    fetch.add_argument("queue")
    fetch.add_argument(
        "--max",
        dest="max_jobs",
        type=bounded_int(1, MAX_FETCH),
        default=1,
        help=f"most jobs to lease, 1 to {MAX_FETCH} (default 1)",
    )
    fetch.add_argument(
        "--wait",
        type=span_ms(0, round(MAX_WAIT_S * 1000)),
        default=0,
        help=f"wait this long for a first job when none is ready (10s, 500ms; at most {MAX_WAIT_S:g}s; "
        "default: answer at once)",
    )
    _lease_flag(fetch, "how long each lease runs unless extended")
    fetch.add_argument(
        "--worker-id",
        dest="worker_name",
        default=None,
        help="a name for this worker: listed by 'qm workers list' for a lease after the fetch, and recorded "
        "on its jobs",
    )
    fetch.set_defaults(command="pull fetch", handler=_fetch)

    complete = pull.add_parser("complete", help="record a fetched job's successful run")
    _lease_args(complete)
    complete.add_argument(
        "--result", default=None, help="the run's result as JSON (@FILE reads a file, @- stdin)"
    )
    complete.set_defaults(command="pull complete", handler=_complete)

    fail = pull.add_parser(
        "fail", help="record a fetched job's failed run: retried per its attempts and backoff, or failed"
    )
    _lease_args(fail)
    fail.add_argument("--reason", required=True, help="why the run failed (the job's failed reason)")
    fail.add_argument("--stacktrace", default="", help="a stack trace, for display")
    retry = fail.add_mutually_exclusive_group()
    retry.add_argument("--no-retry", action="store_true", help="fail for good now, skipping attempts left")
    retry.add_argument(
        "--retry-after",
        type=span_ms(0, _MAX_RETRY_AFTER_MS),
        default=None,
        help="the run was told to slow down: the job waits this long without using an attempt, and the "
        "queue starts no job meanwhile (5s, 1m; at most 1d)",
    )
    fail.set_defaults(command="pull fail", handler=_fail)

    extend = pull.add_parser(
        "extend", help="extend a fetched job's lease (a heartbeat); says whether a cancel was requested"
    )
    _lease_args(extend)
    _lease_flag(extend, "the new lease runs this long from now")
    extend.set_defaults(command="pull extend", handler=_extend)

    progress = pull.add_parser("progress", help="record a fetched job's progress and log lines")
    _lease_args(progress)
    progress.add_argument(
        "--progress",
        dest="value",
        default=None,
        help="progress as JSON: a number 0-100 or any JSON value (@FILE reads a file, @- stdin)",
    )
    progress.add_argument(
        "--log", action="append", default=[], metavar="LINE", help="a line for the job's log (repeatable)"
    )
    progress.set_defaults(command="pull progress", handler=_progress)


def _lease_args(parser: argparse.ArgumentParser) -> None:
    """QUEUE JOB --token TOKEN: the lease a settling command presents."""
    parser.add_argument("queue")
    parser.add_argument("job_id", metavar="JOB")
    parser.add_argument("--token", required=True, help="the lease token 'qm pull fetch' printed with the job")


def _lease_flag(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument(
        "--lease",
        type=span_ms(_MIN_LEASE_MS, _MAX_LEASE_MS),
        default=None,
        help=f"{what} (30s, 5m; 1s to 1h; default: the server's lease duration)",
    )


def _seconds(ms: int | None) -> float | None:
    return None if ms is None else ms / 1000


def _fetched(job: SyncPulledJob) -> dict[str, Any]:
    """A fetched job as printed: the job, its attempt number and its lease."""
    return {
        **plain(job.job),
        "attempt": job.job.attempts_made + 1,
        "lease_token": job.lease_token,
        "lease_expires": plain(job.lease_expires),
        "redelivery": job.redelivery,
    }


def _fetch(args: argparse.Namespace) -> int:
    with client(args) as qm:
        jobs = qm.fetch_jobs(
            args.queue,
            args.max_jobs,
            wait=args.wait / 1000,
            lease_duration=_seconds(args.lease),
            worker_name=args.worker_name,
        )
    rows = [_fetched(j) for j in jobs]
    if args.output == "json":
        # One object a line (JSON Lines): a script reads a job at a time, and no job is no line at all.
        for row in rows:
            print(json.dumps(row, ensure_ascii=False, separators=(",", ":"), default=str))
    else:
        show(args, rows, _FETCH_COLUMNS)
    return 0


def _taken_up(args: argparse.Namespace, qm: SyncQueueManager) -> SyncPulledJob:
    return qm.pulled_job(args.queue, args.job_id, args.token)


def _complete(args: argparse.Namespace) -> int:
    result = read_data(args.result, "--result")
    with client(args) as qm:
        _taken_up(args, qm).complete(result)
    if args.output == "json":
        show(args, {"queue": args.queue, "id": args.job_id, "state": "completed"})
    else:
        print(f"completed {args.queue}/{args.job_id}")
    return 0


def _fail(args: argparse.Namespace) -> int:
    with client(args) as qm:
        outcome = _taken_up(args, qm).fail(
            args.reason,
            no_retry=args.no_retry,
            retry_after=_seconds(args.retry_after),
            stacktrace=args.stacktrace,
        )
    row = {"queue": args.queue, "id": args.job_id, **plain(outcome)}
    if args.output == "json":
        show(args, row)
    elif outcome.will_retry:
        print(f"failed {args.queue}/{args.job_id}: will retry at {plain(outcome.retry_at)}")
    else:
        print(f"failed {args.queue}/{args.job_id} for good")
    return 0


def _extend(args: argparse.Namespace) -> int:
    with client(args) as qm:
        job = _taken_up(args, qm)
        expires = job.extend_lease(_seconds(args.lease))
    row = {
        "queue": args.queue,
        "id": args.job_id,
        "lease_expires": plain(expires),
        "cancel_requested": job.cancel_requested,
    }
    if args.output == "json":
        show(args, row)
    else:
        note = "; cancel requested: stop the run" if job.cancel_requested else ""
        print(f"extended {args.queue}/{args.job_id} until {row['lease_expires']}{note}")
    return 0


def _progress(args: argparse.Namespace) -> int:
    if args.value is None and not args.log:
        raise UsageError("pull progress: give --progress, --log or both")
    value = read_data(args.value, "--progress")
    with client(args) as qm:
        _taken_up(args, qm).report_progress(value, args.log)
    if args.output == "json":
        show(args, {"queue": args.queue, "id": args.job_id, "progress": value, "logs": len(args.log)})
    else:
        print(f"recorded progress of {args.queue}/{args.job_id} ({len(args.log)} log line(s))")
    return 0
