"""How each process's gRPC reads its sockets (queue_manager/_grpc_io.py): chosen before grpc is imported."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from queue_manager._grpc_io import POLLING_IO

REPO = Path(__file__).resolve().parent.parent

SHOW = "import os; print(repr(os.environ.get('GRPC_EXPERIMENTS')))"


def _run(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    """`code` in a fresh interpreter whose environment has no GRPC_EXPERIMENTS beyond `env` (the repository
    root first on its path: the benchmark's modules are not installed)."""
    base = {k: v for k, v in os.environ.items() if k != "GRPC_EXPERIMENTS"}
    path = os.pathsep.join(p for p in (str(REPO), base.get("PYTHONPATH", "")) if p)
    return subprocess.run(
        [sys.executable, "-c", code],
        env={**base, "PYTHONPATH": path, **env},
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )


def _shown(code: str, **env: str) -> str:
    done = _run(code, **env)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.mark.parametrize("package", ["queue_manager", "queue_manager_server", "queue_manager_tui"])
def test_each_package_turns_the_event_engine_endpoints_off_before_grpc_starts(package: str) -> None:
    # What the server (`qm serve`), workers, producers and the dashboard run with.
    assert _shown(f"import {package}; import grpc; {SHOW}") == repr(POLLING_IO)


@pytest.mark.parametrize("module", ["bench.producer", "bench.worker"])
def test_the_benchmarks_producers_and_workers_run_as_our_clients_do(module: str) -> None:
    # Their figures are our clients' only if their grpc reads its sockets as our clients' does.
    assert _shown(f"import {module}; {SHOW}") == repr(POLLING_IO)


def test_a_process_that_chose_its_grpc_experiments_keeps_them() -> None:
    assert _shown(f"import queue_manager; {SHOW}", GRPC_EXPERIMENTS="") == repr("")
    assert _shown(f"import queue_manager; {SHOW}", GRPC_EXPERIMENTS="tcp_rcv_lowat") == repr("tcp_rcv_lowat")


# Binds a port already taken; grpc's core writes why to stderr, each listener in its own words.
BUSY_BIND = """
import socket
import queue_manager, grpc
from concurrent import futures
taken = socket.socket(); taken.bind(("127.0.0.1", 0)); taken.listen()
server = grpc.server(futures.ThreadPoolExecutor(1))
try:
    server.add_insecure_port("127.0.0.1:%d" % taken.getsockname()[1])
except RuntimeError:
    pass
"""


def test_the_core_takes_the_setting_its_listener_reads_sockets_itself() -> None:
    """Not only the variable: grpc's core runs the polling listener (its words for a failed bind), and with
    GRPC_EXPERIMENTS="" its EventEngine one. Fails if a grpc release stops honouring the experiment."""
    ours, theirs = _run(BUSY_BIND).stderr, _run(BUSY_BIND, GRPC_EXPERIMENTS="").stderr
    assert "Unable to configure socket (bind: Address already in use" in ours, ours
    assert "Error in bind for address" in theirs, theirs


def test_grpc_imported_first_is_left_as_it_started() -> None:
    # The core read the variable when grpc was imported: setting it later would only mislead children.
    assert _shown(f"import grpc; import queue_manager; {SHOW}") == "None"


# Two channels made in a process, with logging at INFO.
TWO_CHANNELS = (
    "import logging; logging.basicConfig(level=logging.INFO); "
    "from queue_manager.channel import sync_channel; "
    "sync_channel('127.0.0.1:1').close(); sync_channel('127.0.0.1:1').close()"
)
LATE_HINT = "grpc was imported before queue_manager"


def test_grpc_imported_first_is_told_once_at_the_first_channel() -> None:
    late = _run(f"import grpc; import queue_manager; {TWO_CHANNELS}")
    assert late.returncode == 0, late.stderr
    assert late.stderr.count(LATE_HINT) == 1, late.stderr
    assert f"GRPC_EXPERIMENTS={POLLING_IO}" in late.stderr
    # Imported in time, or the process chose its experiments itself: nothing to tell.
    chose = _run(f"import grpc; import queue_manager; {TWO_CHANNELS}", GRPC_EXPERIMENTS="")
    assert LATE_HINT not in _run(f"import queue_manager; import grpc; {TWO_CHANNELS}").stderr
    assert LATE_HINT not in chose.stderr
