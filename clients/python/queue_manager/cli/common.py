"""Shared pieces of the ``qm`` commands: options from the environment, the client, output."""

from __future__ import annotations

import argparse
import base64
import dataclasses
import enum
import functools
import json
import os
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from queue_manager.channel import resolve_address
from queue_manager.enums import JobPriority, JobState
from queue_manager.options import MAX_RATE_BURST, parse_priority
from queue_manager.sync import SyncQueueManager

JOB_COLUMNS = ("id", "name", "state", "priority", "attempts_made", "created_at", "failed_reason")

# The server's limits (server/queue_manager_server/validate.py), checked here too so that an error names
# the flag and its real range; the Python API checks only the 32-bit range and leaves these to the server.
MAX_ATTEMPTS = 10_000
MAX_DURATION_MS = 10 * 365 * 24 * 3600 * 1000  # ten years
MAX_EXPIRE_AFTER_MS = 365 * 24 * 3600 * 1000  # a job's expiry: 365 days
UINT32_MAX = 2**32 - 1
MAX_SIZE = 2**48  # a size limit (QueueConfig.max_size, GroupLimits.max_size): validate.py MAX_SIZE_LIMIT


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
        kw["default"] = _FromEnv(os.environ[env])  # argparse applies `type` to string defaults
        if "type" in kw:
            kw["type"] = _naming_env(kw["type"], env)
        required = False
    parser.add_argument(*flags, required=required, help=f"{help} [env {env}]", **kw)


class _FromEnv(str):
    """An option's default read from its environment variable, told apart from a value on the command line
    so that a refusal of it names the variable the person has to change."""

    __slots__ = ()


def _naming_env(parse: Callable[[str], Any], env: str) -> Callable[[str], Any]:
    """Wraps an argparse ``type`` so that refusing the environment's value names `env`: argparse's own
    message (``argument --interval: invalid float value: 'abc'``) named only the flag, which was not given.
    """

    @functools.wraps(parse)  # argparse's "invalid <type> value" message takes the name of the type
    def parse_value(text: str) -> Any:
        try:
            return parse(text)
        except (argparse.ArgumentTypeError, TypeError, ValueError) as exc:
            if not isinstance(text, _FromEnv):
                raise
            why = str(exc)
            if not isinstance(exc, argparse.ArgumentTypeError):
                why = f"invalid {getattr(parse, '__name__', repr(parse))} value: {str(text)!r}"
            raise argparse.ArgumentTypeError(f"from {env}: {why} (change or unset {env})") from None

    return parse_value


def bounded_int(
    low: int,
    high: int | None = None,
    *,
    unit: str = "",
    notes: Mapping[int, str] | None = None,
    off: bool = False,
) -> Callable[[str], int]:
    """An argparse ``type``: a whole number from `low` to `high` (None: no maximum); with `off`, also ``off``
    (or ``none``) for 0, as a limit's flags take it (``--group-rate off`` beside ``--group-concurrency off``).

    Its error (``argument --attempts: must be a whole number from 0 (the queue's default) to 10000, got
    '1.5'``, exit status 2) states the unit, the range and what its ends mean (`notes`, such as
    ``{0: "no limit"}``): a fraction is refused, never rounded.
    """
    notes = notes or {}

    def shown(n: int) -> str:
        return f"{n} ({notes[n]})" if n in notes else str(n)

    kind = f"whole {unit}" if unit else "a whole number"
    span = f" from {shown(low)} to {shown(high)}" if high is not None else f" (at least {shown(low)})"

    def parse(text: str) -> int:
        if off and text.strip().lower() in ("off", "none"):
            return 0
        try:
            value = int(text, 10)
        except ValueError:
            value = None
        if value is None or value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"must be {kind}{span}{', or off' if off else ''}, got {text!r}")
        return value

    return parse


def priority_level(text: str) -> JobPriority:
    """An argparse ``type``: a priority as ``--priority`` and ``qm jobs priority`` take it, a level name (any
    case) or 1 to 5. A bad one is a usage error naming the flag (exit status 2), before anything is sent: it
    used to reach the client library and come back as ``error: INVALID_ARGUMENT`` (exit status 1)."""
    try:
        return parse_priority(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def job_state(*allowed: JobState, note: str = "") -> Callable[[str], str]:
    """An argparse ``type``: a job state by name (any case), one of `allowed` (default: every state), as the
    command's call takes it; `note` says what to do instead for a state the command refuses (``remove-all``
    of active jobs: cancel them first). The server refuses the others too, but in the protocol's numbers."""
    states = allowed or tuple(JobState)
    names = ", ".join(s.value for s in states[:-1]) + f" or {states[-1].value}"

    def parse(text: str) -> str:
        name = text.strip().lower()
        if name not in {s.value for s in states}:
            refused = f"; {note}" if note and name in {s.value for s in JobState} else ""
            raise argparse.ArgumentTypeError(f"must be {names}, got {text!r}{refused}")
        return name

    return parse


# A size limit (``--max-size``): a whole number of jobs up to the server's maximum; ``0`` or ``off`` for none.
size_limit = bounded_int(0, MAX_SIZE, notes={0: "no limit"}, off=True)


def milliseconds(low: int = 0, high: int | None = MAX_DURATION_MS) -> Callable[[str], int]:
    """An argparse ``type``: a duration flag (``--delay 5s``, ``--timeout 2m``, or ``1500``: milliseconds) as
    whole milliseconds from `low` to `high` (default the server's maximum duration, 10 years; None: no
    maximum). The same as `span_ms`: every duration flag of ``qm`` takes units."""
    return span_ms(low, high)


# A span as people write it: whole numbers with units, largest first ("5m", "1h30m", "250ms").
_SPAN_UNITS = {"d": 86_400_000, "h": 3_600_000, "m": 60_000, "s": 1000, "ms": 1}
_SPAN_PART = re.compile(r"(\d+)(ms|d|h|m|s)")
_SPAN = re.compile(r"(?:\d+(?:ms|d|h|m|s))+")


def _largest_unit(ms: int) -> str:
    """`ms` in the largest unit that holds it whole: ``30s``, ``1h``, ``3650d`` (a maximum shown in whole days
    read ``0d`` for ``qm pull fetch --wait``'s 30 s)."""
    for unit, size in _SPAN_UNITS.items():  # largest first
        if size > 1 and ms % size == 0 and ms:
            return f"{ms // size}{unit}"
    return f"{ms} ms"


def span_ms(low: int, high: int | None) -> Callable[[str], int]:
    """An argparse ``type``: a duration such as ``5m``, ``90s``, ``1h30m`` or ``250ms`` (units d, h, m, s,
    ms; a bare number is milliseconds), as whole milliseconds from `low` to `high` (None: no maximum)."""
    span = f"from {low} ms to {_largest_unit(high)}" if high is not None else f"of at least {low} ms"

    def parse(text: str) -> int:
        value = None
        if text.isdigit():
            value = int(text)
        elif _SPAN.fullmatch(text):
            value = sum(int(n) * _SPAN_UNITS[unit] for n, unit in _SPAN_PART.findall(text))
        if value is None or value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(
                f"must be a duration {span}, such as 5m, 90s, 1h30m or 250ms (a bare number is "
                f"milliseconds), got {text!r}"
            )
        return value

    return parse


# The longest timed pause the server takes (``--for``; PauseQueueRequest.resume_after).
MAX_PAUSE_MS = 366 * 86_400_000


def add_pause_time(parser: argparse.ArgumentParser, what: str) -> None:
    """``--for DURATION`` / ``--until TIME`` of ``qm queues pause`` and ``qm groups pause``: a pause that
    lifts by itself (at most one of the two)."""
    timed = parser.add_mutually_exclusive_group()
    timed.add_argument(
        "--for",
        dest="resume_after",
        type=span_ms(1, MAX_PAUSE_MS),
        metavar="DURATION",
        help=f"resume the {what} by itself after this long (15m, 2h, 1d; at most 366d)",
    )
    timed.add_argument(
        "--until",
        dest="resume_at",
        type=iso_time,
        metavar="TIME",
        help=f"resume the {what} by itself at this ISO 8601 time (2030-01-31T02:00:00Z; no zone: local time)",
    )


def iso_time(text: str) -> datetime:
    """An argparse ``type``: an ISO 8601 time (``--at``, ``--until``)."""
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be an ISO 8601 time such as 2030-01-31T08:00:00+01:00, got {text!r}"
        ) from None


def duration_text(ms: int) -> str:
    """Milliseconds as a duration flag takes them, in the largest unit that holds them whole: 5m, 2h, 90s,
    1500ms."""
    for unit in ("d", "h", "m", "s"):
        if ms and ms % _SPAN_UNITS[unit] == 0:
            return f"{ms // _SPAN_UNITS[unit]}{unit}"
    return f"{ms}ms"


def rate(text: str) -> tuple[int, int]:
    """An argparse ``type``: a rate limit ``MAX/DURATION`` (``10/1s``: 10 job starts a second; the duration
    as `span_ms` takes it), or ``off``; returns (max, window in ms), (0, 0) for ``off``."""
    if text.strip().lower() in ("off", "none"):
        return 0, 0
    count, sep, window = text.partition("/")
    if not sep:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not MAX/DURATION, such as 10/1s (10 job starts a second) or 100/1m (or off)"
        )
    parts = (("MAX", count, bounded_int(1, UINT32_MAX)), ("DURATION", window, span_ms(1, MAX_DURATION_MS)))
    values = []
    for name, part, parse in parts:
        try:
            values.append(parse(part.strip()))
        except argparse.ArgumentTypeError as exc:
            raise argparse.ArgumentTypeError(f"{name} of {text!r} {exc}") from None
    return values[0], values[1]


def rate_text(limit: Mapping[str, Any] | None) -> str:
    """A rate limit (its JSON-ready form, ``{"max", "duration", "burst"}`` in ms) as ``--rate`` takes it:
    10/1s, and its burst when one was set: ``10/1s burst 50``."""
    if not limit or not limit.get("max"):
        return ""
    text = f"{limit['max']}/{duration_text(int(limit['duration']))}"
    return f"{text} burst {limit['burst']}" if limit.get("burst") else text


def rate_burst(flag: str) -> Callable[[str], int]:
    """An argparse ``type`` for a rate limit's burst (``RateLimit.burst``): 0 (the default, a tenth of the
    max) to 1,000,000."""
    return bounded_int(0, MAX_RATE_BURST, notes={0: f"the default: a tenth of {flag}'s max"})


def add_attempts_and_timeout(parser: argparse.ArgumentParser, of: str = "") -> None:
    """``--attempts`` and ``--timeout`` of a job (``qm add``) or of each job (`of`: ``qm schedules add``)."""
    option(
        parser,
        "--attempts",
        type=bounded_int(0, MAX_ATTEMPTS, notes={0: "the queue's default"}),
        help=f"maximum runs{of} including the first, 0 to {MAX_ATTEMPTS} (default and 0: the queue's)",
    )
    option(
        parser,
        "--timeout",
        type=milliseconds(1),
        help=f"how long a run{of} may take (5m, 90s, 250ms; bare number: ms; default: no limit)",
    )


def key_value(text: str) -> tuple[str, str]:
    """An argparse ``type``: KEY=VALUE, KEY not empty (a label)."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def job_options(args: argparse.Namespace, keys: tuple[str, ...]) -> dict[str, Any]:
    """The job options given as flags; ``--attempts 0`` (the queue's default) is left unset."""
    options = {key: getattr(args, key) for key in keys if getattr(args, key) is not None}
    if options.get("attempts") == 0:
        del options["attempts"]
    return options


def client(args: argparse.Namespace) -> SyncQueueManager:
    return SyncQueueManager(resolve_address(args.server))


def read_data(text: str | None, what: str = "--data") -> Any:
    """JSON text given to the option or argument `what` (``@FILE`` reads a file, ``@-`` stdin).

    JSON here is RFC 8259: NaN and Infinity, which Python's json module would read, are refused like any
    other invalid text (a UsageError naming `what`, exit status 2).
    """
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
            raise UsageError(f"{what}: {exc}") from None
    try:
        return json.loads(text, parse_constant=_no_constant)
    except ValueError as exc:  # json.JSONDecodeError is a ValueError, as is _no_constant's
        raise UsageError(f"{what} is not valid JSON: {exc}") from None


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value (RFC 8259 has no NaN or Infinity)")


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
    if isinstance(value, dict):  # enum keys (priority bounds) by name, as enum values
        return {(k.name.lower() if isinstance(k, enum.Enum) else str(k)): plain(v) for k, v in value.items()}
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
    # A row is one line: a multi-line value (a failure reason with the command's stderr) is shown with its
    # line breaks escaped, as in JSON, instead of starting lines that read as rows of their own.
    cells = [[one_line(cell(row.get(c))) for c in columns] for row in rows]
    widths = [max([len(c.upper())] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    print("  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip())
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())


def one_line(text: str) -> str:
    """`text` with its line breaks (and tabs) escaped, for a table cell."""
    return text.replace("\r", "\\r").replace("\n", "\\n").replace("\t", "\\t")


def cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return str(value)
