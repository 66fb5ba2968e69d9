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


SAMPLES: dict[str, Callable[[], BaseException]] = {
    "plain": lambda: _caught(lambda: _raise(0)),
    "other line": lambda: _caught(lambda: _raise(7)),
    "chained": lambda: _caught(_chained),
    "during handling": lambda: _caught(_in_handler),
    "group": lambda: _caught(_group),
    "note": lambda: _caught(_noted),
    "never raised": lambda: Flaky("no traceback"),
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
