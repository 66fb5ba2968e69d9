"""Plain-text formatting for the dashboard: durations, ages, sizes, rates, payloads and safe user text.

Everything here returns ``str`` and imports no Textual, so it is shared by the widgets and tested alone.
User-controlled text (job names, data, errors, log lines) goes through `safe` before it is shown: control
characters become visible escapes, so an ANSI sequence in a job name is displayed, never interpreted. The
widgets also render it without markup, so ``[red]x`` stays ``[red]x``.
"""

from __future__ import annotations

import base64
import json
import unicodedata
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from queue_manager import EncodedPayload

__all__ = [
    "NONE",
    "fmt_bytes",
    "fmt_count",
    "fmt_duration",
    "fmt_inline",
    "fmt_percent",
    "fmt_rate",
    "fmt_time",
    "fmt_value",
    "safe",
    "sparkline",
]

NONE = "-"
"""What an absent value shows as."""

# Eight heights of a text sparkline, lowest first (U+2581 to U+2588).
_BARS = "▁▂▃▄▅▆▇█"
# Unicode categories escaped by `safe`: controls (C0, DEL, C1) and format characters (bidi overrides,
# zero-width joiners), which could reorder or hide the text around them.
_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf"})


def safe(text: str, *, multiline: bool = False) -> str:
    """User text made safe to show: control and format characters become ``\\xNN``/``\\uNNNN`` escapes.

    Args:
        text: The text as stored (a job name, an error, a log line…).
        multiline: Keep newlines and tabs (for stack traces and pretty-printed data).

    Returns:
        The text with every other control character spelled out, e.g. ``ESC[31m`` → ``\\x1b[31m``.
    """
    if text.isprintable():
        return text
    out: list[str] = []
    for char in text:
        if multiline and char in "\n\t":
            out.append(char)
        elif unicodedata.category(char) in _UNSAFE_CATEGORIES:
            code = ord(char)
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")
        else:
            out.append(char)
    return "".join(out)


def fmt_count(value: int) -> str:
    """A count with thousands separators: ``12,345``."""
    return f"{value:,}"


def fmt_duration(value: timedelta | None) -> str:
    """A duration in its largest sensible unit: ``850ms``, ``12.3s``, ``4m05s``, ``2h10m``, ``3d04h``."""
    if value is None:
        return NONE
    seconds = value.total_seconds()
    if seconds < 0:
        seconds = 0.0
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:.1f}s"
    whole = int(seconds)
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    if whole < 86400:
        return f"{whole // 3600}h{whole % 3600 // 60:02d}m"
    return f"{whole // 86400}d{whole % 86400 // 3600:02d}h"


def fmt_rate(per_second: float) -> str:
    """A rate per second: ``0``, ``0.25/s``, ``12.5/s``, ``1,204/s``."""
    if per_second <= 0:
        return "0"
    if per_second < 10:
        return f"{per_second:.2f}/s"
    if per_second < 100:
        return f"{per_second:.1f}/s"
    return f"{per_second:,.0f}/s"


def fmt_percent(fraction: float) -> str:
    """A fraction as a percentage: ``0%``, ``3.2%``, ``100%``."""
    if fraction <= 0:
        return "0%"
    percent = fraction * 100
    return f"{percent:.0f}%" if percent >= 99.95 else f"{percent:.1f}%"


def fmt_bytes(value: int) -> str:
    """A size in binary units: ``0``, ``512 B``, ``12.4 MiB``."""
    if value <= 0:
        return NONE
    size = float(value)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"


def fmt_time(value: datetime | None, *, short: bool = False) -> str:
    """A UTC timestamp to the second: ``2025-03-01 12:00:05``, or ``03-01 12:00:05`` when short."""
    if value is None:
        return NONE
    return value.astimezone(UTC).strftime("%m-%d %H:%M:%S" if short else "%Y-%m-%d %H:%M:%S")


def fmt_value(value: Any) -> str:
    """A payload (data, result, progress) pretty-printed: JSON indented, bytes as a base64 preview."""
    if value is None:
        return NONE
    if isinstance(value, EncodedPayload):  # compressed or encrypted by a client, and no keys here
        return str(value)
    if isinstance(value, bytes | bytearray):
        preview = base64.b64encode(bytes(value[:48])).decode()
        more = "…" if len(value) > 48 else ""
        return f"<{len(value):,} bytes> base64:{preview}{more}"
    try:
        return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True, default=str)
    except (TypeError, ValueError):
        return repr(value)


def fmt_inline(value: Any, limit: int = 80) -> str:
    """A payload on one line (compact JSON), cut to ``limit`` characters with an ellipsis."""
    if value is None:
        return ""
    if isinstance(value, EncodedPayload):
        text = str(value)
    elif isinstance(value, bytes | bytearray):
        text = f"<{len(value):,} bytes>"
    else:
        try:
            text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)
        except (TypeError, ValueError):
            text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def sparkline(values: Sequence[float], width: int) -> str:
    """The last ``width`` values as a text sparkline scaled to their maximum (blank when all are zero).

    Args:
        values: Samples, oldest first.
        width: Characters; the sparkline is left-padded with spaces to this width.

    Returns:
        A string of ``width`` characters.
    """
    tail = list(values)[-width:] if width > 0 else []
    top = max(tail, default=0.0)
    if top <= 0:
        return (" " * (width - len(tail))) + ("▁" * len(tail) if tail else "")
    bars = [_BARS[min(len(_BARS) - 1, round(v / top * (len(_BARS) - 1)))] for v in tail]
    return " " * (width - len(tail)) + "".join(bars)
