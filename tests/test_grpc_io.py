"""How each process's gRPC reads its sockets (queue_manager/_grpc_io.py): chosen before grpc is imported."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from queue_manager._grpc_io import POLLING_IO

SHOW = "import os; print(repr(os.environ.get('GRPC_EXPERIMENTS')))"


def _run(code: str, **env: str) -> str:
    base = {k: v for k, v in os.environ.items() if k != "GRPC_EXPERIMENTS"}
    done = subprocess.run(
        [sys.executable, "-c", code], env={**base, **env}, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.mark.parametrize("package", ["queue_manager", "queue_manager_server", "queue_manager_tui"])
def test_each_package_turns_the_event_engine_endpoints_off_before_grpc_starts(package: str) -> None:
    # What the server (`qm serve`), workers, producers and the dashboard run with.
    assert _run(f"import {package}; import grpc; {SHOW}") == repr(POLLING_IO)


def test_a_process_that_chose_its_grpc_experiments_keeps_them() -> None:
    assert _run(f"import queue_manager; {SHOW}", GRPC_EXPERIMENTS="") == repr("")
    assert _run(f"import queue_manager; {SHOW}", GRPC_EXPERIMENTS="tcp_rcv_lowat") == repr("tcp_rcv_lowat")


def test_grpc_imported_first_is_left_as_it_started() -> None:
    # The core read the variable when grpc was imported: setting it later would only mislead children.
    assert _run(f"import grpc; import queue_manager; {SHOW}") == "None"
