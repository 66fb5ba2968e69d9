"""Formats a failed run's traceback for its report, cheaply when the same failure repeats.

A processor that fails often fails the same way (a dependency down, bad input of one kind): each failure
is raised from the same frames. Python 3.11's traceback formatting reads and parses the source line of every
frame for its carets, which cost a worker about as much CPU as a whole successful run per failure. The frames'
text depends only on which code ran where, so it is kept per (code, instruction) path and only the
exception's own lines are formatted each time. The text is exactly what ``traceback.format_exception`` gives.
"""

from __future__ import annotations

import traceback
from types import CodeType, TracebackType

# Distinct failure paths whose frame text is kept: a worker fails in few ways; this bounds an odd one.
MAX_PATHS = 256

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
    return "Traceback (most recent call last):\n" + frames + "".join(traceback.format_exception_only(exc))


def _path(tb: TracebackType | None) -> tuple[tuple[CodeType, int], ...]:
    out: list[tuple[CodeType, int]] = []
    while tb is not None:
        out.append((tb.tb_frame.f_code, tb.tb_lasti))
        tb = tb.tb_next
    return tuple(out)
