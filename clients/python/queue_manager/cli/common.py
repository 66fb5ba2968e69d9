"""Shared pieces of the ``qm`` commands: options from the environment, the client, output."""

from __future__ import annotations

import argparse
import base64
import dataclasses
import enum
import json
import os
import sys
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from queue_manager.channel import resolve_address
from queue_manager.sync import SyncQueueManager

JOB_COLUMNS = ("id", "name", "state", "priority", "attempts_made", "created_at", "failed_reason")


class UsageError(Exception):
    """Bad command-line input found after parsing (exit status 2)."""


def option(
    parser: argparse.ArgumentParser,
    *flags: str,
    help: str,
    required: bool = False,
    env: str | None = None,
    **kw: Any,
) -> None:
    """Adds an option; with `env`, its default comes from that variable when it is set.

    Only settings of where and how to run read the environment (the global options, the worker's and the
    dashboard's, each named after its command): a variable shared by options of several commands read
    seconds in one and milliseconds in another, and could fill in a destructive command's required
    choice (``QM_STATE`` for ``queues clean``).
    """
    if env is None:
        parser.add_argument(*flags, required=required, help=help, **kw)
        return
    if env in os.environ:
        kw["default"] = os.environ[env]  # argparse applies `type` to string defaults
        required = False
    parser.add_argument(*flags, required=required, help=f"{help} [env {env}]", **kw)


def client(args: argparse.Namespace) -> SyncQueueManager:
    return SyncQueueManager(resolve_address(args.server))


def read_data(text: str | None) -> Any:
    if text is None:
        return None
    if text.startswith("@"):
        source = text[1:]
        try:
            if source == "-":
                text = sys.stdin.read()
            else:
                with open(source, encoding="utf-8") as handle:
                    text = handle.read()
        except OSError as exc:
            raise UsageError(f"--data: {exc}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"--data is not valid JSON: {exc}") from None


def plain(value: Any) -> Any:
    """A JSON-ready copy: dataclasses as dicts, times as ISO 8601, durations as milliseconds."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, enum.IntEnum):
        return value.name.lower()
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, timedelta):
        return round(value / timedelta(milliseconds=1))
    if isinstance(value, bytes):
        return {"base64": base64.b64encode(value).decode()}
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


def show(args: argparse.Namespace, data: Any, columns: Sequence[str] | None = None) -> None:
    if args.output == "json":
        print(json.dumps(data, indent=2, ensure_ascii=False, default=str))
    elif isinstance(data, list):
        print_table(data, columns or (sorted(data[0]) if data else ()))
    elif isinstance(data, dict):
        width = max((len(k) for k in data), default=0)
        for key, value in data.items():
            print(f"{key:<{width}}  {cell(value)}")
    else:
        print(data)


def print_table(rows: list[dict[str, Any]], columns: Sequence[str]) -> None:
    cells = [[cell(row.get(c)) for c in columns] for row in rows]
    widths = [max([len(c.upper())] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    print("  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip())
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())


def cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return str(value)
