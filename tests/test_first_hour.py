"""What a new user ran into in their first hour (issue 6), each pinned against a real server."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import sys
from pathlib import Path

import pytest

from queue_manager import JobContext, JobState, QueueManager
from queue_manager import worker as worker_module
from queue_manager.cli import main
from queue_manager.logsampling import BURST, WINDOW_S, Sampler
from queue_manager_server.app import App, print_banner
from queue_manager_server.bind import explain
from queue_manager_server.config import Settings, parse_args
from queue_manager_server.services import reports as server_reports
from tests.conftest import RunningServer
from tests.procs import ROOT
from tests.test_logsampling import Clock

WAIT = 20.0


async def qm_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Runs ``qm ARGV`` in a thread (the server shares this event loop): (status, stdout, stderr)."""
    capsys.readouterr()
    status = await asyncio.to_thread(main, list(argv))
    out, err = capsys.readouterr()
    return status, out, err


async def run(*argv: str, shell: bool = False) -> tuple[int, str, str]:
    """Runs a subprocess without blocking the in-process server: (status, stdout, stderr)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    if shell:
        proc = await asyncio.create_subprocess_shell(
            argv[0], stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env
        )
    else:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env
        )
    async with asyncio.timeout(60):
        out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_failed_runs_are_logged_on_the_worker(
    server: RunningServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="queue_manager.worker")
    qm = QueueManager(address=server.address, concurrency=2, shutdown_grace=5.0)
    await qm.register_queue("fails")
    runs = asyncio.Queue[int]()

    @qm.processor("fails")
    async def boom(job: JobContext) -> None:
        runs.put_nowait(job.attempts_made)
        raise ValueError(f"bad input {job.attempts_made}")

    try:
        await qm.start_workers()
        job = await qm.add_job("fails", "parse", None, {"attempts": 2, "backoff": 10})
        finished = await qm.wait_for_job("fails", job.id, WAIT)
    finally:
        await qm.shutdown()
    assert finished.state is JobState.FAILED and runs.qsize() == 2

    warnings = [
        r for r in caplog.records if r.levelno == logging.WARNING and "failed on attempt" in r.message
    ]
    assert [r.message for r in warnings] == [
        f"job fails/{job.id} (parse) failed on attempt 1 of 2: ValueError: bad input 0; will be retried",
        f"job fails/{job.id} (parse) failed on attempt 2 of 2: ValueError: bad input 1; no attempts left",
    ]
    assert [(r.queue, r.job_id, r.attempt) for r in warnings] == [("fails", job.id, 1), ("fails", job.id, 2)]
    tracebacks = [r for r in caplog.records if r.levelno == logging.DEBUG and r.message.endswith("traceback")]
    assert len(tracebacks) == 2
    assert tracebacks[0].exc_info is not None and tracebacks[0].exc_info[0] is ValueError


async def test_the_failure_line_escapes_control_characters_of_the_users_text(
    server: RunningServer, caplog: pytest.LogCaptureFixture
) -> None:
    # An error's ANSI sequences reached the terminal raw (it could recolour, move the cursor or retitle
    # it), and a newline in it started a line that read as another record.
    caplog.set_level(logging.INFO, logger="queue_manager.worker")
    qm = QueueManager(address=server.address, concurrency=1, shutdown_grace=5.0)
    await qm.register_queue("ansi")

    @qm.processor("ansi")
    async def paint(job: JobContext) -> None:
        raise ValueError("\x1b[31mred\x1b[0m\nINFO fake record\u202e")

    try:
        await qm.start_workers()
        job = await qm.add_job("ansi", "n\x1b]0;title\x07", None, {"attempts": 1})
        await qm.wait_for_job("ansi", job.id, WAIT)
    finally:
        await qm.shutdown()
    [warning] = [r for r in caplog.records if "failed on attempt" in r.message]
    assert warning.message == (
        f"job ansi/{job.id} (n\\x1b]0;title\\x07) failed on attempt 1 of 1: "
        "ValueError: \\x1b[31mred\\x1b[0m\\x0aINFO fake record\\u202e; no attempts left"
    )
    assert warning.message.isprintable()


async def test_a_storm_of_failures_is_logged_as_its_first_few_and_a_count(
    server: RunningServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="queue_manager.worker")
    caplog.set_level(logging.INFO, logger="queue_manager_server.reports")
    qm = QueueManager(address=server.address, concurrency=8, shutdown_grace=5.0)
    await qm.register_queue("storm")
    assert server.app.workers is not None
    reports = server.app.workers.reports
    clock = Clock()  # stands still: every failure falls in one window however slow the machine
    reports.failure_log = Sampler(server_reports._log_left_out, clock=clock)

    @qm.processor("storm")
    async def pay(job: JobContext) -> None:
        if job.name != "ok":
            raise ConnectionError("the payment service is down")

    jobs = 3 * BURST
    try:
        worker = await qm.start_workers()
        worker._failure_log = Sampler(worker_module._log_left_out, clock=clock)
        ids = await qm.add_bulk("storm", [{"name": "pay", "options": {"attempts": 1}}] * jobs)
        for job_id in ids:
            assert (await qm.wait_for_job("storm", job_id, WAIT)).state is JobState.FAILED
        # The worker's line for each of the first few, and one for the rest (told when it stops).
        lines = [r for r in caplog.records if "failed on attempt" in r.message]
        assert len(lines) == BURST
        # The server's too: its count is told by the first report once the second has passed (here the
        # report of a run that succeeds).
        assert len([r for r in caplog.records if r.message == "job failed for good"]) == BURST
        assert not [r for r in caplog.records if r.message == "more jobs failed for good"]
        clock.now += WINDOW_S
        ok = await qm.add_job("storm", "ok")
        assert (await qm.wait_for_job("storm", ok.id, WAIT)).state is JobState.COMPLETED
        assert [r.count for r in caplog.records if r.message == "more jobs failed for good"] == [jobs - BURST]
    finally:
        await qm.shutdown()
    [summary] = [r for r in caplog.records if "more ConnectionError failures" in r.message]
    assert summary.levelno == logging.WARNING
    assert (summary.queue, summary.count) == ("storm", jobs - BURST)
    assert summary.message.startswith(f"queue storm: {jobs - BURST} more ConnectionError failures within")
    [told] = [r for r in caplog.records if r.message == "more jobs failed for good"]
    assert (told.levelno, told.queue, told.count) == (logging.WARNING, "storm", jobs - BURST)


async def test_no_traceback_unless_debug(server: RunningServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="queue_manager.worker")
    qm = QueueManager(address=server.address, concurrency=1, shutdown_grace=5.0)
    await qm.register_queue("fails-once")
    qm.register_processor("fails-once", lambda job: 1 / 0)  # a plain def, run in a thread
    try:
        await qm.start_workers()
        job = await qm.add_job("fails-once", "divide", None, {"attempts": 1})
        await qm.wait_for_job("fails-once", job.id, WAIT)
    finally:
        await qm.shutdown()
    [warning] = [r for r in caplog.records if "failed on attempt" in r.message]
    assert warning.levelno == logging.WARNING and warning.exc_info is None
    assert "ZeroDivisionError: division by zero; no attempts left" in warning.message
    assert not [r for r in caplog.records if r.levelno == logging.DEBUG]


async def test_jobs_list_without_state_lists_every_state(
    server: RunningServer, capsys: pytest.CaptureFixture[str]
) -> None:
    a = server.address
    qm = QueueManager(address=a)
    try:
        await qm.register_queue("mixed")
        waiting = await qm.add_job("mixed", "w")
        delayed = await qm.add_job("mixed", "d", None, {"delay": 600_000})
        cancelled = await qm.add_job("mixed", "c")
        await qm.cancel_job("mixed", cancelled.id)
    finally:
        await qm.shutdown()

    status, out, err = await qm_cli(capsys, "--server", a, "-o", "json", "jobs", "list", "mixed")
    assert status == 0, err
    listing = json.loads(out)
    assert [(j["id"], j["state"]) for j in listing["jobs"]] == [
        (waiting.id, "waiting"),
        (delayed.id, "delayed"),
        (cancelled.id, "cancelled"),
    ]
    assert listing["next_page_tokens"] == {}

    # The page size is shared: one job shown, the rest named with the command that shows them.
    status, out, err = await qm_cli(capsys, "--server", a, "jobs", "list", "mixed", "--page-size", "1")
    assert status == 0, err
    lines = out.splitlines()
    assert lines[1].split()[:3] == [waiting.id, "w", "waiting"]
    assert lines[2:] == [
        "more delayed: qm jobs list mixed --state delayed",
        "more cancelled: qm jobs list mixed --state cancelled",
    ]
    status, _, err = await qm_cli(capsys, "--server", a, "jobs", "list", "mixed", "--page-token", "x")
    assert status == 2 and "--page-token needs --state" in err


async def test_output_option_is_accepted_after_the_subcommand(
    server: RunningServer, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    a = server.address
    status, out, err = await qm_cli(capsys, "--server", a, "queues", "register", "late-o", "-o", "json")
    assert status == 0, err
    assert json.loads(out)["name"] == "late-o"
    status, out, _ = await qm_cli(capsys, "--server", a, "jobs", "list", "late-o", "--output", "json")
    assert json.loads(out) == {"jobs": [], "next_page_tokens": {}}
    # After the subcommand wins over before it; absent after it, the earlier value (or QM_OUTPUT) stands.
    status, out, _ = await qm_cli(capsys, "--server", a, "-o", "json", "queues", "list", "-o", "table")
    assert out.startswith("NAME")
    monkeypatch.setenv("QM_OUTPUT", "json")
    status, out, _ = await qm_cli(capsys, "--server", a, "queues", "list")
    assert "late-o" in [q["name"] for q in json.loads(out)]


async def test_register_says_whether_the_queue_was_created(
    server: RunningServer, capsys: pytest.CaptureFixture[str]
) -> None:
    a = server.address
    status, out, err = await qm_cli(capsys, "--server", a, "queues", "register", "reg")
    assert status == 0, err
    assert out.splitlines()[0] == "queue 'reg' created"
    status, out, _ = await qm_cli(capsys, "--server", a, "queues", "register", "reg", "--concurrency", "3")
    assert out.splitlines()[0] == "queue 'reg' already existed; its settings are now as below"
    assert '"concurrency":3' in out
    status, out, _ = await qm_cli(capsys, "--server", a, "-o", "json", "queues", "register", "reg")
    assert json.loads(out)["created"] is False
    status, out, _ = await qm_cli(capsys, "--server", a, "-o", "json", "queues", "register", "reg2")
    assert json.loads(out)["created"] is True


async def test_unknown_queue_error_names_the_qm_command(
    server: RunningServer, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, err = await qm_cli(capsys, "--server", server.address, "add", "nope", "n")
    assert (status, out) == (1, "")
    assert err == (
        "error: NOT_FOUND: queue 'nope' is not registered; register it first (qm queues register nope)\n"
    )


async def test_piping_into_head_exits_quietly(server: RunningServer, tmp_path: Path) -> None:
    qm = QueueManager(address=server.address)
    try:
        await qm.register_queue("many")
        # ~150 bytes a row, 1,000 rows: far more than a pipe holds, so writes fail once head has gone.
        await qm.add_bulk("many", [{"name": "n" * 100} for _ in range(1000)])
    finally:
        await qm.shutdown()
    err_file = tmp_path / "err"
    command = (
        f"{sys.executable} -m queue_manager.cli --server {server.address} jobs list many --state waiting "
        f"--page-size 1000 2>{err_file} | head -n 1; echo status=${{PIPESTATUS[0]}}"
    )
    status, out, _ = await run(f"bash -c '{command}'", shell=True)
    assert status == 0
    assert out.splitlines()[0].startswith("ID ")
    assert out.splitlines()[-1] == "status=141"  # as a tool killed by SIGPIPE
    assert err_file.read_text() == ""


async def test_help_into_a_closed_pipe_exits_quietly() -> None:
    """``qm --help | head -0``: the help is written while the arguments are parsed, where a closed pipe
    ended in a BrokenPipeError traceback."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader has gone before the help is written
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "queue_manager.cli",
            "jobs",
            "--help",
            stdout=write_end,
            stderr=asyncio.subprocess.PIPE,
        )
    finally:
        os.close(write_end)
    async with asyncio.timeout(60):
        _, err = await proc.communicate()
    assert (proc.returncode, err.decode()) == (141, "")


def test_serve_help_names_each_number_flags_default(capsys: pytest.CaptureFixture[str]) -> None:
    """``qm serve --help`` named no default of its lease, limits and intervals; now each, as the environment
    leaves it."""
    with pytest.raises(SystemExit):
        parse_args(["--help"], env={"QM_MAX_WORKER_CREDITS": "500"})
    text = " ".join(capsys.readouterr().out.split())
    for shown in (
        "--listen LISTEN HOST:PORT to serve gRPC on (default 127.0.0.1:50051) [QM_LISTEN]",
        "--lease-ms LEASE_MS job lease (default 30000) [QM_LEASE_DURATION_MS]",
        "largest job data or result (default 1048576) [QM_MAX_PAYLOAD_BYTES]",
        "(credits beyond are ignored) (default 500) [QM_MAX_WORKER_CREDITS]",
        "DEBUG, INFO, WARNING, ERROR or CRITICAL (default INFO) [QM_LOG_LEVEL, LOG_LEVEL]",
    ):
        assert shown in text, shown


async def test_second_server_on_a_busy_port_prints_one_clear_error(
    server: RunningServer, tmp_path: Path
) -> None:
    expected = [
        f"qm serve: cannot listen on {server.address}: the address is in use (is another server running "
        "there?); choose another port with --listen or QM_LISTEN"
    ]
    external = ("--redis-url", server.redis_url, "--key-prefix", server.prefix)
    embedded = ("--data-dir", str(tmp_path / "data"))  # the port is checked before any Valkey starts
    for where in (external, embedded):
        status, _, err = await run(
            sys.executable, "-m", "queue_manager_server", "--listen", server.address, *where
        )
        assert (status, err.splitlines()) == (2, expected)
    assert not (tmp_path / "data" / "valkey.log").exists()


def test_bind_reasons_in_plain_words() -> None:
    core = (
        "E1203 11:19:23.374019    7610 add_port.cc:83] Failed to add port to server: No address added out "
        "of total 1 resolved for '0.0.0.0:50992' (Failed to add any wildcard listeners: Error in bind for "
        "address '[::]:50992': Address already in useError in bind for address '0.0.0.0:50992': Address "
        "already in use)"
    )
    assert explain(core).startswith("the address is in use")
    polling = (  # the polling listener's words (queue_manager/_grpc_io.py)
        "E1205 07:41:19.068931   10481 add_port.cc:83] Failed to add port to server: No address added out "
        "of total 1 resolved for '0.0.0.0:51893' (Failed to add any wildcard listeners (Unable to configure "
        "socket (bind: Address already in use (98))) (Unable to configure socket (bind: Address already in "
        "use (98))))"
    )
    assert explain(polling).startswith("the address is in use (is another server running there?)")
    elsewhere = "(Unable to configure socket (bind: Cannot assign requested address (99)))"
    assert explain(elsewhere) == "no network interface of this machine has that address"
    lookup = "E1203 add_port.cc:83] Failed to add port: address lookup failed for x:1: Domain name not found"
    assert explain(lookup) == "the host name does not resolve"
    assert explain("") == "address in use or invalid"


def test_banner_suggests_grpcurl_only_where_it_is_installed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    app = App(Settings(listen="127.0.0.1:0", redis_url="redis://127.0.0.1:1"))
    app.port = 50051
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.setattr(sys, "executable", str(bin_dir / "python"))  # as after `make run`: no grpcurl
    print_banner(app)
    banner = capsys.readouterr().err
    assert "grpcurl" not in banner and "queues register demo" in banner

    grpcurl = bin_dir / "grpcurl"  # as after `make dev`
    grpcurl.write_text("#!/bin/sh\n")
    grpcurl.chmod(0o755)
    print_banner(app)
    assert "grpcurl -plaintext 127.0.0.1:50051 list" in capsys.readouterr().err


async def test_busy_http_port_is_one_clear_error_before_anything_starts(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        http = f"127.0.0.1:{taken.getsockname()[1]}"
        status, _, err = await run(
            sys.executable,
            "-m",
            "queue_manager_server",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            str(tmp_path / "data"),
            "--http-listen",
            http,
        )
    assert status == 2
    assert err.splitlines() == [
        f"qm serve: cannot serve HTTP on {http}: the address is in use (is another server running there?); "
        "choose another with --http-listen HOST:PORT (QM_HTTP_LISTEN), or turn the HTTP port off with "
        "--http-listen off"
    ]
    assert not (tmp_path / "data" / "valkey.log").exists()
