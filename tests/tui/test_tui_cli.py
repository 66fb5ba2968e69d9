"""``qm dash``: its options reach the app, a missing dashboard package is explained, and the command runs
in a real terminal (a pseudo-terminal, as textual-serve runs it) and quits on ``q``."""

from __future__ import annotations

import asyncio
import os
import pty
import select
import signal
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import queue_manager_tui
from queue_manager.cli import main
from queue_manager_tui.data import connect
from tests.conftest import RunningServer

QM = str(Path(sys.executable).with_name("qm"))


@pytest.fixture
def runs(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, ...]]:
    calls: list[tuple[Any, ...]] = []

    def fake_run(address: str | None, *, read_only: bool, interval: float) -> int:
        calls.append((address, read_only, interval))
        return 0

    monkeypatch.setattr(queue_manager_tui, "run", fake_run)
    monkeypatch.delenv("QM_READ_ONLY", raising=False)
    monkeypatch.delenv("QM_DASH_INTERVAL", raising=False)
    return calls


def test_dash_options_reach_the_app(runs: list[tuple[Any, ...]], monkeypatch: pytest.MonkeyPatch) -> None:
    assert main(["dash"]) == 0
    assert main(["--server", "before:1", "dash"]) == 0
    assert (
        main(["--server", "before:1", "dash", "--server", "after:2", "--read-only", "--interval", "0.5"]) == 0
    )
    monkeypatch.setenv("QM_READ_ONLY", "yes")
    monkeypatch.setenv("QM_DASH_INTERVAL", "2")
    assert main(["dash"]) == 0
    assert runs == [
        (None, False, 1.0),
        ("before:1", False, 1.0),
        ("after:2", True, 0.5),
        (None, True, 2.0),
    ]


def test_dash_server_defaults_to_qm_server(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QM_SERVER", "from-env:7")
    assert connect(None).address == "from-env:7"
    assert connect("given:8").address == "given:8"


def refused(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """Runs ``qm ARGV``, which argparse must refuse (exit status 2); returns the error line."""
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    return capsys.readouterr().err.splitlines()[-1]


def test_dash_rejects_a_bad_interval(
    runs: list[tuple[Any, ...]], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert refused(["dash", "--interval", "0.01"], capsys) == (
        "qm dash: error: argument --interval: must be from 0.1 to 60 seconds, got '0.01'"
    )
    # A bad value from the environment names the variable, not only the flag nobody gave.
    monkeypatch.setenv("QM_DASH_INTERVAL", "100")
    assert refused(["dash"], capsys) == (
        "qm dash: error: argument --interval: from QM_DASH_INTERVAL: must be from 0.1 to 60 seconds, got "
        "'100' (change or unset QM_DASH_INTERVAL)"
    )
    monkeypatch.setenv("QM_DASH_INTERVAL", "1s")
    assert "from QM_DASH_INTERVAL: must be from 0.1 to 60 seconds, got '1s'" in refused(["dash"], capsys)
    # A flag given on the command line stands, and is the one named when it is the bad value.
    assert "from QM_DASH_INTERVAL" not in refused(["dash", "--interval", "nan"], capsys)
    monkeypatch.setenv("QM_DASH_INTERVAL", "0.5")
    assert main(["dash", "--interval", "2"]) == 0 and main(["dash"]) == 0
    assert [interval for _, _, interval in runs] == [2.0, 0.5]
    monkeypatch.setenv("QM_WORKER_GRACE", "soon")
    assert refused(["worker", "m"], capsys) == (
        "qm worker: error: argument --grace: from QM_WORKER_GRACE: invalid float value: 'soon' (change or "
        "unset QM_WORKER_GRACE)"
    )


def test_dash_without_the_package_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "queue_manager_tui", None)  # makes `import queue_manager_tui` fail
    assert main(["dash"]) == 2
    err = capsys.readouterr().err
    assert "qm dash: the dashboard is not installed" in err
    assert "pip install -e tui/" in err
    assert "Traceback" not in err


async def test_qm_dash_runs_in_a_terminal_and_quits_on_q(server: RunningServer) -> None:
    """The plain command, as textual-serve starts it: it draws, goes live, and ``q`` ends it with status 0."""
    leader, follower = pty.openpty()
    env = {**os.environ, "TERM": "xterm-256color", "QM_SERVER": server.address}
    proc = await asyncio.create_subprocess_exec(
        QM, "dash", stdin=follower, stdout=follower, stderr=follower, env=env
    )
    os.close(follower)
    try:
        # The tabs are drawn, then the status line says the metrics stream is live.
        screen = await asyncio.to_thread(_read_until, leader, "● live".encode(), 20.0)
        assert b"Workflows" in screen and "● live".encode() in screen, screen[-2000:]
        os.write(leader, b"q")
        # Keep reading until the terminal closes: a full pseudo-terminal buffer would block the app.
        await asyncio.to_thread(_read_until, leader, None, 15.0)
        assert await asyncio.wait_for(proc.wait(), 5.0) == 0
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGKILL)
            await proc.wait()
        os.close(leader)


def _read_until(fd: int, marker: bytes | None, timeout: float) -> bytes:
    """Reads a pseudo-terminal until ``marker`` shows up (None: until it closes) or ``timeout`` passes."""
    out = b""
    deadline = time.monotonic() + timeout
    while (marker is None or marker not in out) and (left := deadline - time.monotonic()) > 0:
        ready, _, _ = select.select([fd], [], [], min(left, 0.5))
        if ready:
            try:
                chunk = os.read(fd, 65536)
            except OSError:  # EIO: the other side closed
                break
            if not chunk:
                break
            out += chunk
    return out
