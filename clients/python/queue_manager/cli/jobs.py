"""``qm add`` and ``qm jobs …``: adding, reading and controlling jobs."""

from __future__ import annotations

import argparse
from typing import Any

from queue_manager.cli.common import JOB_COLUMNS, client, option, plain, read_data, show


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Adds ``add`` and ``jobs`` to the ``qm`` parser."""
    add = commands.add_parser("add", help="add a job")
    add.add_argument("queue")
    add.add_argument("name")
    option(add, "--data", default=None, help="job data as JSON (@FILE reads a file, @- stdin)")
    option(add, "--priority", help="critical, high, normal, low, background or 1-5")
    option(add, "--delay", type=int, help="milliseconds before the job may start")
    option(add, "--attempts", type=int, help="maximum runs including the first")
    option(add, "--job-id", help="idempotency key")
    option(add, "--timeout", type=int, help="milliseconds a run may take")
    add.set_defaults(command="add", handler=_add)

    jobs = commands.add_parser("jobs", help="read, remove and control jobs").add_subparsers(
        metavar="ACTION", required=True
    )
    get = jobs.add_parser("get", help="show one job")
    get.add_argument("queue")
    get.add_argument("job_id", metavar="ID")
    get.set_defaults(command="jobs get", handler=_get)
    listing = jobs.add_parser("list", help="list a queue's jobs in one state")
    listing.add_argument("queue")
    option(listing, "--state", required=True, help="waiting, active, delayed, completed, failed or paused")
    option(listing, "--page-size", type=int, default=100, help="jobs per page, 1 to 1000")
    option(listing, "--page-token", default="", help="token of the page to read")
    listing.set_defaults(command="jobs list", handler=_list)
    remove = jobs.add_parser("remove", help="remove a job that is not active")
    remove.add_argument("queue")
    remove.add_argument("job_id", metavar="ID")
    remove.set_defaults(command="jobs remove", handler=_remove)


def _add(args: argparse.Namespace) -> int:
    options: dict[str, Any] = {}
    for key in ("priority", "delay", "attempts", "job_id", "timeout"):
        value = getattr(args, key)
        if value is not None:
            options[key] = value
    with client(args) as qm:
        job = qm.add_job(args.queue, args.name, read_data(args.data), options)
    show(args, plain(job), columns=JOB_COLUMNS)
    return 0


def _get(args: argparse.Namespace) -> int:
    with client(args) as qm:
        job = qm.get_job(args.queue, args.job_id)
    show(args, plain(job))
    return 0


def _list(args: argparse.Namespace) -> int:
    with client(args) as qm:
        jobs, token = qm.list_jobs(args.queue, args.state, args.page_size, args.page_token)
    if args.output == "json":
        show(args, {"jobs": [plain(job) for job in jobs], "next_page_token": token})
    else:
        show(args, [plain(job) for job in jobs], columns=JOB_COLUMNS)
        if token:
            print(f"next page: --page-token {token}")
    return 0


def _remove(args: argparse.Namespace) -> int:
    with client(args) as qm:
        previous = qm.remove_job(args.queue, args.job_id)
    show(args, {"queue": args.queue, "id": args.job_id, "previous_state": plain(previous)})
    return 0
