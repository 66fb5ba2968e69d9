"""``qm workflows …``: running, reading, listing, cancelling and retrying workflow runs."""

from __future__ import annotations

import argparse
from typing import Any

from queue_manager.cli.common import UsageError, bounded_int, client, option, plain, read_data, show

_RUN_COLUMNS = ("run_id", "name", "state", "finished_step_count", "step_count", "created_at")
_STEP_COLUMNS = ("key", "state", "queue_name", "job_name", "job_id", "job_state", "error")


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Adds ``workflows`` to the ``qm`` parser."""
    workflows = commands.add_parser("workflows", help="run and inspect workflows").add_subparsers(
        metavar="ACTION", required=True
    )
    run = workflows.add_parser("run", help="start a workflow run from a JSON definition")
    run.add_argument("definition", metavar="JSON", help="the workflow as JSON (@FILE reads a file, @- stdin)")
    option(run, "--run-id", default=None, help="your own run id (running it again starts nothing)")
    run.set_defaults(command="workflows run", handler=_run)
    get = workflows.add_parser("get", help="show a run and its steps")
    get.add_argument("run_id", metavar="RUN_ID")
    get.set_defaults(command="workflows get", handler=_get)
    listing = workflows.add_parser("list", help="list runs, newest first")
    option(listing, "--page-size", type=bounded_int(1, 1000), default=100, help="runs per page, 1 to 1000")
    option(listing, "--page-token", default="", help="token of the page to read")
    listing.set_defaults(command="workflows list", handler=_list)
    cancel = workflows.add_parser("cancel", help="cancel a running run")
    cancel.add_argument("run_id", metavar="RUN_ID")
    option(cancel, "--reason", default="", help="why, kept with the run")
    cancel.set_defaults(command="workflows cancel", handler=_cancel)
    retry = workflows.add_parser("retry", help="run a failed run's failed steps again")
    retry.add_argument("run_id", metavar="RUN_ID")
    retry.set_defaults(command="workflows retry", handler=_retry)


def _run(args: argparse.Namespace) -> int:
    definition = read_data(args.definition, "the workflow definition (the JSON argument)")
    if not isinstance(definition, dict):
        raise UsageError("the workflow definition must be a JSON object")
    with client(args) as qm:
        run_id = qm.execute_workflow(definition, run_id=args.run_id)
    show(args, {"run_id": run_id})
    return 0


def _get(args: argparse.Namespace) -> int:
    with client(args) as qm:
        run = plain(qm.get_workflow(args.run_id))
    if args.output == "json":
        show(args, run)
        return 0
    steps: list[dict[str, Any]] = run.pop("steps")
    show(args, run)
    print()
    show(args, steps, columns=_STEP_COLUMNS)
    return 0


def _list(args: argparse.Namespace) -> int:
    with client(args) as qm:
        runs, token = qm.list_workflows(args.page_size, args.page_token)
    if args.output == "json":
        show(args, {"runs": [plain(r) for r in runs], "next_page_token": token})
    else:
        show(args, [plain(r) for r in runs], columns=_RUN_COLUMNS)
        if token:
            print(f"next page: --page-token {token}")
    return 0


def _cancel(args: argparse.Namespace) -> int:
    with client(args) as qm:
        run = qm.cancel_workflow(args.run_id, args.reason)
    show(args, {"run_id": run.run_id, "state": plain(run.state), "cancel_reason": run.cancel_reason})
    return 0


def _retry(args: argparse.Namespace) -> int:
    with client(args) as qm:
        run = qm.retry_workflow(args.run_id)
    started = [s.key for s in run.steps if plain(s.state) == "started"]
    show(args, {"run_id": run.run_id, "state": plain(run.state), "started_steps": started})
    return 0
