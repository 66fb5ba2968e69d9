"""A failed run's stack trace is formatted exactly as the traceback module does, also when reused."""

from __future__ import annotations

import traceback
from collections.abc import Callable

import pytest

from queue_manager import tracebacks
from queue_manager.tracebacks import format_failure


class Flaky(Exception):
    pass


def _raise(kind: int) -> None:
    if kind == 0:
        raise Flaky("first attempt fails")
    raise ValueError(f"bad input {kind}")


def _caught(fn: Callable[[], object]) -> BaseException:
    try:
        fn()
    except BaseException as exc:
        return exc
    raise AssertionError("did not raise")


def _chained() -> None:
    try:
        _raise(0)
    except Flaky as exc:
        raise KeyError("k") from exc


def _in_handler() -> None:
    try:
        _raise(0)
    except Flaky:
        raise KeyError("during handling")  # noqa: B904 - the implicit context is the sample


def _group() -> None:
    raise ExceptionGroup("several", [Flaky("a"), ValueError("b")])


def _noted() -> None:
    try:
        _raise(1)
    except ValueError as exc:
        exc.add_note("with a note")
        raise


class Outer:
    class Inner(Exception):
        pass


class Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no text")


class FromMain(Exception):
    pass


FromMain.__module__ = "__main__"


class NoModule(Exception):
    pass


NoModule.__module__ = None  # type: ignore[assignment]


def _raise_any(exc: BaseException) -> Callable[[], BaseException]:
    def raising() -> None:
        raise exc

    return lambda: _caught(raising)


def _syntax() -> None:
    compile("def (", "<job>", "exec")


SAMPLES: dict[str, Callable[[], BaseException]] = {
    "plain": lambda: _caught(lambda: _raise(0)),
    "other line": lambda: _caught(lambda: _raise(7)),
    "chained": lambda: _caught(_chained),
    "during handling": lambda: _caught(_in_handler),
    "group": lambda: _caught(_group),
    "note": lambda: _caught(_noted),
    "never raised": lambda: Flaky("no traceback"),
    "no message": _raise_any(Flaky()),
    "a builtin's": _raise_any(KeyError("k")),
    "a number for message": _raise_any(ValueError(3)),
    "nested class": _raise_any(Outer.Inner("inner")),
    "str() fails": _raise_any(Unprintable("x")),
    "from __main__": _raise_any(FromMain("main")),
    "no module": _raise_any(NoModule("none")),
    "syntax error": lambda: _caught(_syntax),
}


@pytest.mark.parametrize("name", list(SAMPLES))
def test_the_text_is_the_traceback_modules(name: str) -> None:
    for _ in range(3):  # the first formats the frames, the next reuse them
        exc = SAMPLES[name]()
        assert format_failure(exc) == "".join(traceback.format_exception(exc))


def test_a_repeated_path_reuses_its_frames_and_the_store_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tracebacks, "_frames", {})
    monkeypatch.setattr(tracebacks, "MAX_PATHS", 2)
    calls = 0
    real = traceback.format_tb

    def counting(tb: object) -> list[str]:
        nonlocal calls
        calls += 1
        return real(tb)  # type: ignore[arg-type]

    monkeypatch.setattr(traceback, "format_tb", counting)
    for i in range(5):
        text = format_failure(_caught(lambda: _raise(0)))
        assert text.endswith("Flaky: first attempt fails\n") and f"{i}" not in text.splitlines()[-1]
    assert calls == 1  # one path, formatted once
    format_failure(_caught(lambda: _raise(1)))
    format_failure(_caught(_noted))
    assert len(tracebacks._frames) == 2 and calls == 3


def test_the_usual_last_line_is_written_directly_and_the_rest_by_the_traceback_module(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A plain failure's last line is built without the traceback module (2.3 µs a failure); notes, syntax
    errors, and a Python whose module writes the line otherwise get the module's own."""
    calls = 0
    real = traceback.format_exception_only

    def counting(exc: BaseException) -> list[str]:
        nonlocal calls
        calls += 1
        return real(exc)

    monkeypatch.setattr(traceback, "format_exception_only", counting)
    for name in ("plain", "no message", "str() fails", "nested class"):
        format_failure(SAMPLES[name]())
    assert calls == 0
    format_failure(SAMPLES["note"]())
    format_failure(SAMPLES["syntax error"]())
    assert calls == 2
    monkeypatch.setattr(tracebacks, "_DIRECT", False)
    exc = SAMPLES["plain"]()
    assert format_failure(exc) == "".join(traceback.format_exception(exc)) and calls == 3
