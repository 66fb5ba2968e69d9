"""Formats a failed run's traceback for its report, cheaply when the same failure repeats.

A processor that fails often fails the same way (a dependency down, bad input of one kind): each failure
is raised from the same frames. Python 3.11's traceback formatting reads and parses the source line of every
frame for its carets, which cost a worker about as much CPU as a whole successful run per failure. The frames'
text depends only on which code ran where, so it is kept per (code, instruction) path and only the
exception's own lines are formatted each time. The text is exactly what ``traceback.format_exception`` gives.
"""

from __future__ import annotations

import traceback
import unicodedata
from types import CodeType, TracebackType

# Distinct failure paths whose frame text is kept: a worker fails in few ways; this bounds an odd one.
MAX_PATHS = 256
# Unicode categories `printable` escapes: controls (C0, DEL, C1) and format characters (bidi overrides,
# zero-width joiners), which could reorder or hide the text around them; the dashboard escapes the same.
_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf"})

_frames: dict[tuple[tuple[CodeType, int], ...], str] = {}


def format_failure(exc: BaseException) -> str:
    """``"".join(traceback.format_exception(exc))``, with the frames' text reused for a repeated path."""
    tb = exc.__traceback__
    chained = exc.__cause__ is not None or (exc.__context__ is not None and not exc.__suppress_context__)
    if tb is None or chained or isinstance(exc, BaseExceptionGroup):
        return "".join(traceback.format_exception(exc))
    path = _path(tb)
    frames = _frames.get(path)
    if frames is None:
        frames = "".join(traceback.format_tb(tb))
        if len(_frames) >= MAX_PATHS:
            del _frames[next(iter(_frames))]
        _frames[path] = frames
    return "Traceback (most recent call last):\n" + frames + _exception_only(exc)


# Exception types' names as a traceback's last line gives them: module-qualified outside builtins and
# __main__ (one per type; a worker fails in few ways).
_names: dict[type[BaseException], str] = {}


def _exception_only(exc: BaseException) -> str:
    """``"".join(traceback.format_exception_only(exc))``, written directly for the usual failure (no
    SyntaxError, no notes): the traceback module builds a whole TracebackException for that one line, 2.3 µs
    of the 2.9 a repeated failure's text cost a worker."""
    try:
        notes = getattr(exc, "__notes__", None)
    except Exception:
        notes = True
    cls = type(exc)
    if notes is not None or issubclass(cls, SyntaxError) or not _DIRECT:
        return "".join(traceback.format_exception_only(exc))
    name = _names.get(cls)
    if name is None:
        name, module = cls.__qualname__, cls.__module__
        if module not in ("__main__", "builtins"):
            name = f"{module if isinstance(module, str) else '<unknown>'}.{name}"
        if len(_names) < MAX_PATHS:
            _names[cls] = name
    text = exception_text(exc)
    return f"{name}: {text}\n" if text else f"{name}\n"


def exception_text(exc: BaseException) -> str:
    """``str(exc)``, or what the traceback module writes when that raises: a processor's exception class may
    break its own ``__str__``, which must not break the report of its failure."""
    try:
        return str(exc)
    except BaseException:  # as the traceback module reads it
        return "<exception str() failed>"


def printable(text: str) -> str:
    """User text (an error, a job name) made safe for a one-line log: control and format characters become
    ``\\xNN``/``\\uNNNN`` escapes, so an ANSI sequence in a processor's error is shown, never obeyed by the
    terminal, and a newline cannot start a line that looks like another record."""
    if text.isprintable():
        return text
    return "".join(
        (f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}")
        if unicodedata.category(c) in _UNSAFE_CATEGORIES
        else c
        for c in text
    )


class _Probe(Exception):
    """An exception the check below formats both ways."""


# The direct line is used only where it is what this Python's traceback module writes (a later Python that
# formats the line otherwise gets the module's own).
_DIRECT = True
_DIRECT = all(
    _exception_only(probe) == "".join(traceback.format_exception_only(probe))
    for probe in (_Probe("a message"), _Probe(), KeyError("k"))
)


def _path(tb: TracebackType | None) -> tuple[tuple[CodeType, int], ...]:
    out: list[tuple[CodeType, int]] = []
    while tb is not None:
        out.append((tb.tb_frame.f_code, tb.tb_lasti))
        tb = tb.tb_next
    return tuple(out)
