"""The exec worker (`ExecProcessor`, ``qm exec``): a command line run once per job, against a real server.

The commands are small Python programs (``sys.executable -c``), so the tests depend on no shell.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import textwrap
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from queue_manager import JobState, QueueManager
from queue_manager.cli import main
from queue_manager.exec_worker import ExecProcessor
from queue_manager.worker import Worker
from tests.conftest import RunningServer
from tests.rawworker import eventually

WAIT = 30.0


def py(code: str) -> list[str]:
    """A command running Python code with this interpreter."""
    return [sys.executable, "-c", textwrap.dedent(code)]


@asynccontextmanager
async def exec_worker(
    server: RunningServer, queue: str, command: Sequence[str], **options: Any
) -> AsyncIterator[tuple[QueueManager, Worker]]:
    """A client and a worker running `command` for the jobs of `queue` (registered here)."""
    client = QueueManager(address=server.address)
    await client.register_queue(queue)
    processor = ExecProcessor(command, **options)
    worker = Worker(server.address, {queue: processor}, concurrency=4, shutdown_grace=5.0)
    await worker.start()
    try:
        async with asyncio.timeout(WAIT):
            await worker.wait_connected()
        yield client, worker
    finally:
        await worker.shutdown()
        await processor.close()
        await client.shutdown()


class Reports:
    """A loopback TCP server the commands tell things to (`REPORT`): each connection's first line, and the
    connection, to answer on. Awaited, never polled."""

    def __init__(self) -> None:
        self._lines: asyncio.Queue[tuple[str, asyncio.StreamWriter]] = asyncio.Queue()
        self._writers: list[asyncio.StreamWriter] = []
        self.port = 0

    async def __aenter__(self) -> Reports:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        for writer in self._writers:
            writer.close()
        self._server.close()
        await self._server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.append(writer)
        line = await reader.readline()
        await self._lines.put((line.decode().strip(), writer))

    async def next(self) -> tuple[str, asyncio.StreamWriter]:
        async with asyncio.timeout(WAIT):
            return await self._lines.get()


# Python code of a command: report(text) sends a line to the test's `Reports` (its port in argv[1]) and
# returns the connection.
REPORT = """
import socket, sys
def report(text):
    connection = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
    connection.sendall(text.encode() + b"\\n")
    return connection
"""


async def wait_gone(*pids: int) -> None:
    """Waits until the processes have ended (a pidfd is readable once its process has exited, reaped or
    not: an orphan's zombie may wait for a reaper that never comes, in a container whose first process
    reaps nothing)."""
    loop = asyncio.get_running_loop()
    for pid in pids:
        try:
            fd = os.pidfd_open(pid)
        except ProcessLookupError:
            continue
        ended: asyncio.Future[None] = loop.create_future()
        loop.add_reader(fd, _set_done, ended)
        try:
            async with asyncio.timeout(WAIT):
                await ended
        finally:
            loop.remove_reader(fd)
            os.close(fd)


def _set_done(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


# A command that starts a grandchild (ignoring SIGTERM when argv[2] asks), reports both pids once the
# grandchild is ready, and waits for ever: only the signals of its stop can end it.
SPAWNER = py(
    REPORT
    + """
import os, subprocess, time
code = "import signal, time\\n"
if sys.argv[2] == "ignore-term":
    code += "signal.signal(signal.SIGTERM, signal.SIG_IGN)\\n"
code += "print('ready', flush=True)\\ntime.sleep(600)"
child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
assert child.stdout.readline() == b"ready\\n"
report(f"{os.getpid()} {child.pid}")
time.sleep(600)
"""
)


# ----------------------------------------------------------------- input and output


async def test_json_data_on_stdin_and_json_stdout_is_the_result(server: RunningServer) -> None:
    command = py(
        """
        import json, sys
        data = json.load(sys.stdin)
        print(json.dumps({"sum": sum(data["values"]), "text": sys.stdin.read() == ""}))
        """
    )
    async with exec_worker(server, "x-json", command) as (client, _):
        job = await client.add_job("x-json", "add", {"values": [1, 2, 3]})
        done = await client.wait_for_job("x-json", job.id, timeout=WAIT)
    assert (done.state, done.result) == (JobState.COMPLETED, {"sum": 6, "text": True})


async def test_text_stdout_is_a_string_and_other_bytes_are_kept_raw(server: RunningServer) -> None:
    command = py(
        """
        import os, sys
        if os.environ["QM_JOB_NAME"] == "text":
            print("hello, world\\n")  # trailing newlines are dropped
        elif os.environ["QM_JOB_NAME"] == "bytes":
            sys.stdout.buffer.write(b"\\xff\\x00 not utf-8")
        elif os.environ["QM_JOB_NAME"] == "nan":
            print("NaN")  # Python reads it, JSON does not: text
        """
    )
    async with exec_worker(server, "x-text", command) as (client, _):
        jobs = {name: await client.add_job("x-text", name) for name in ("text", "bytes", "nan", "silent")}
        done = {n: await client.wait_for_job("x-text", j.id, timeout=WAIT) for n, j in jobs.items()}
    assert {n: j.state for n, j in done.items()} == dict.fromkeys(jobs, JobState.COMPLETED)
    assert done["text"].result == "hello, world"
    assert done["bytes"].result == b"\xff\x00 not utf-8"
    assert done["nan"].result == "NaN"
    assert done["silent"].result is None


async def test_raw_data_reaches_stdin_as_its_bytes(server: RunningServer) -> None:
    command = py(
        """
        import json, os, sys
        print(json.dumps([sys.stdin.buffer.read().hex(), os.environ["QM_CONTENT_TYPE"]]))
        """
    )
    async with exec_worker(server, "x-raw", command) as (client, _):
        raw = await client.add_job("x-raw", "raw", b"\x00\xffabc\n")
        empty = await client.add_job("x-raw", "empty")
        assert (await client.wait_for_job("x-raw", raw.id, timeout=WAIT)).result == [
            "00ff6162630a",
            "application/octet-stream",
        ]
        # A job added without data holds JSON null.
        assert (await client.wait_for_job("x-raw", empty.id, timeout=WAIT)).result == [
            "6e756c6c",
            "application/json",
        ]


async def test_environment_names_the_job_and_passes_the_rest_through(
    server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("QM_EXEC_TEST_PASSED", "through")
    monkeypatch.setenv("TRACEPARENT", "00-stale-trace-of-the-worker-itself")
    names = [
        "QM_JOB_ID",
        "QM_JOB_NAME",
        "QM_QUEUE",
        "QM_ATTEMPT",
        "QM_MAX_ATTEMPTS",
        "QM_CONTENT_TYPE",
        "QM_WORKER_ID",
        "TRACEPARENT",
        "QM_EXEC_TEST_PASSED",
    ]
    command = py(f"import json, os; print(json.dumps({{k: os.environ.get(k) for k in {names!r}}}))")
    traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    async with exec_worker(server, "x-env", command) as (client, worker):
        traced = await client.add_job(
            "x-env",
            "traced",
            {"a": 1},
            {"attempts": 3, "metadata": {"attributes": {"traceparent": traceparent}}},
        )
        plain = await client.add_job("x-env", "plain")
        env = (await client.wait_for_job("x-env", traced.id, timeout=WAIT)).result
        other = (await client.wait_for_job("x-env", plain.id, timeout=WAIT)).result
    assert env == {
        "QM_JOB_ID": traced.id,
        "QM_JOB_NAME": "traced",
        "QM_QUEUE": "x-env",
        "QM_ATTEMPT": "1",
        "QM_MAX_ATTEMPTS": "3",
        "QM_CONTENT_TYPE": "application/json",
        "QM_WORKER_ID": worker.worker_id,
        "TRACEPARENT": traceparent,
        "QM_EXEC_TEST_PASSED": "through",
    }
    assert other["TRACEPARENT"] is None  # the worker's own is no trace of this job


# ----------------------------------------------------------------- failures


async def test_nonzero_exit_is_retried_then_fails_with_the_stderr_tail(server: RunningServer) -> None:
    command = py(
        """
        import os, sys
        for n in range(100):
            print(f"noise {n}", file=sys.stderr)
        print(f"boom on attempt {os.environ['QM_ATTEMPT']}", file=sys.stderr)
        sys.exit(3)
        """
    )
    async with exec_worker(server, "x-exit", command) as (client, _):
        job = await client.add_job("x-exit", "fails", None, {"attempts": 2, "backoff": 1})
        done = await client.wait_for_job("x-exit", job.id, timeout=WAIT)
    assert (done.state, done.attempts_made) == (JobState.FAILED, 2)
    assert done.failed_reason.startswith("the command exited with status 3; the last lines of its stderr:\n")
    assert done.failed_reason.endswith("noise 99\nboom on attempt 2")
    assert "noise 50" not in done.failed_reason  # the tail only
    assert [e.message.splitlines()[-1] for e in done.errors] == ["boom on attempt 1", "boom on attempt 2"]
    # No stack of the worker's own Python frames: the command's failure is all in the message.
    assert done.stacktrace == "" and all(e.stacktrace == "" for e in done.errors)


async def test_a_signal_that_kills_the_command_is_named(server: RunningServer) -> None:
    command = py("import os, signal; os.kill(os.getpid(), signal.SIGKILL)")
    async with exec_worker(server, "x-sig", command) as (client, _):
        job = await client.add_job("x-sig", "killed", None, {"attempts": 1})
        done = await client.wait_for_job("x-sig", job.id, timeout=WAIT)
    assert (done.state, done.failed_reason) == (
        JobState.FAILED,
        "the command was killed by signal SIGKILL (9) (no stderr)",
    )


async def test_no_retry_exit_code_fails_for_good_at_once(server: RunningServer) -> None:
    command = py("import sys; print('bad input', file=sys.stderr); sys.exit(4)")
    async with exec_worker(server, "x-noretry", command, no_retry_exit_codes=[4, 5]) as (client, _):
        job = await client.add_job("x-noretry", "bad", {"n": 1}, {"attempts": 5, "backoff": 1})
        done = await client.wait_for_job("x-noretry", job.id, timeout=WAIT)

        async def copied() -> bool:  # the dead-letter copy is made by the hand-off just after the failure
            return bool((await client.list_dead_letters())[0])

        await eventually(copied, timeout=WAIT)
        letters, _ = await client.list_dead_letters()
    assert (done.state, done.attempts_made) == (JobState.FAILED, 1)
    assert "exited with status 4" in done.failed_reason and "bad input" in done.failed_reason
    assert [(d.original_job_id, d.original_data) for d in letters] == [(job.id, {"n": 1})]


async def test_a_command_that_cannot_start_fails_without_retry(server: RunningServer, tmp_path: Path) -> None:
    not_executable = tmp_path / "script.sh"
    not_executable.write_text("#!/bin/sh\necho hi\n")
    for command, reason in (
        ([str(tmp_path / "no-such-program")], "No such file or directory"),
        ([str(not_executable)], "Permission denied"),
    ):
        async with exec_worker(server, "x-nostart", command) as (client, _):
            job = await client.add_job("x-nostart", "run", None, {"attempts": 3, "backoff": 1})
            done = await client.wait_for_job("x-nostart", job.id, timeout=WAIT)
        assert (done.state, done.attempts_made) == (JobState.FAILED, 1)
        assert done.failed_reason == f"cannot start the command {command[0]!r}: {reason}"


async def test_oversized_stdout_fails_the_attempt_and_is_drained(server: RunningServer) -> None:
    # 4 MB on stdout and 1 MB on stderr: the command blocks on neither pipe.
    command = py(
        """
        import sys
        for n in range(1000):
            sys.stderr.write("x" * 999 + "\\n")
            sys.stdout.write("y" * 4000)
        """
    )
    async with exec_worker(server, "x-big", command, max_output_bytes=100_000) as (client, _):
        job = await client.add_job("x-big", "big", None, {"attempts": 1})
        done = await client.wait_for_job("x-big", job.id, timeout=WAIT)
    assert done.state is JobState.FAILED
    assert done.failed_reason.startswith(
        "the command wrote more than 100,000 bytes to stdout, the result limit"
    )


async def test_large_output_on_both_pipes_completes(server: RunningServer) -> None:
    command = py(
        """
        import json, sys
        for n in range(3000):
            print(f"line {n} " + "z" * 200, file=sys.stderr)
        json.dump(["w" * 100] * 5000, sys.stdout)
        """
    )
    async with exec_worker(server, "x-large", command) as (client, _):
        job = await client.add_job("x-large", "large")
        done = await client.wait_for_job("x-large", job.id, timeout=WAIT)
        logs, _ = await client.get_job_logs("x-large", job.id, page_size=1000)
    assert (done.state, done.result) == (JobState.COMPLETED, ["w" * 100] * 5000)
    assert logs[-1].message == "line 2999 " + "z" * 200


# ----------------------------------------------------------------- stderr: logs and progress


async def test_stderr_lines_are_the_job_log_and_progress_lines_report_progress(server: RunningServer) -> None:
    command = py(
        """
        import sys
        for line in ("step one", "::progress 40", "::progress 150", "step two\\r"):
            print(line, file=sys.stderr, flush=True)
        print("ok")
        """
    )
    async with exec_worker(server, "x-logs", command) as (client, _):
        job = await client.add_job("x-logs", "logged")
        done = await client.wait_for_job("x-logs", job.id, timeout=WAIT)
    assert (done.state, done.result, done.progress) == (JobState.COMPLETED, "ok", 40)
    # A progress line out of range is no progress: it stays a line of the log.
    assert [line.message for line in done.logs] == ["step one", "::progress 150", "step two"]


# ----------------------------------------------------------------- stopping


async def test_a_job_timeout_stops_the_command_and_its_grandchild(server: RunningServer) -> None:
    async with (
        Reports() as reports,
        exec_worker(server, "x-timeout", [*SPAWNER, str(reports.port), "ignore-term"], kill_grace=0.5) as (
            client,
            _,
        ),
    ):
        job = await client.add_job("x-timeout", "slow", None, {"attempts": 1, "timeout": 4000})
        child, grandchild = map(int, (await reports.next())[0].split())
        done = await client.wait_for_job("x-timeout", job.id, timeout=WAIT)
        # The grandchild ignores SIGTERM: only the SIGKILL after the grace ends it.
        await wait_gone(child, grandchild)
    assert done.state is JobState.FAILED
    assert "timed out" in done.failed_reason


async def test_a_cancel_stops_the_command_and_its_grandchild(server: RunningServer) -> None:
    async with (
        Reports() as reports,
        exec_worker(server, "x-cancel", [*SPAWNER, str(reports.port), "default"]) as (client, _),
    ):
        job = await client.add_job("x-cancel", "slow")
        child, grandchild = map(int, (await reports.next())[0].split())
        await client.cancel_job("x-cancel", job.id, "no longer wanted")
        done = await client.wait_for_job("x-cancel", job.id, timeout=WAIT)
        await wait_gone(child, grandchild)
    assert done.state is JobState.CANCELLED


async def test_what_an_exited_command_left_running_is_stopped(server: RunningServer, tmp_path: Path) -> None:
    """A command that exits while a process it started holds its stdout ends its run at once (asyncio's
    own wait would wait for the pipe), and that process is stopped with it."""
    command = py(
        """
        import subprocess, sys
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
        print(child.pid)
        """
    )
    async with exec_worker(server, "x-left", command) as (client, _):
        job = await client.add_job("x-left", "leaves")
        done = await client.wait_for_job("x-left", job.id, timeout=WAIT)
        await wait_gone(done.result)
    assert done.state is JobState.COMPLETED


def test_the_processor_refuses_a_bad_command() -> None:
    with pytest.raises(TypeError, match="sequence of str"):
        ExecProcessor("echo hi")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="name a program"):
        ExecProcessor([])
    with pytest.raises(ValueError, match="kill_grace"):
        ExecProcessor(["true"], kill_grace=-1)
    with pytest.raises(ValueError, match="max_output_bytes"):
        ExecProcessor(["true"], max_output_bytes=0)


# ----------------------------------------------------------------- the qm exec command


@pytest.mark.parametrize(
    "argv",
    [["exec", "--queue", "q"], ["exec", "--queue", "q", "--"]],
    ids=["nothing", "nothing-after-dashes"],
)
def test_qm_exec_refuses_a_missing_command(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err == (
        "qm: error: qm exec needs the command to run after --, e.g. qm exec --queue images -- "
        "./resize.sh --width 800\n"
    )


def test_qm_exec_refuses_exit_code_zero_as_no_retry(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["exec", "--queue", "q", "--no-retry-exit-code", "0", "--", "true"])
    assert exited.value.code == 2
    assert "--no-retry-exit-code: must be a whole number from 1 to 255, got '0'" in capsys.readouterr().err


async def test_qm_exec_runs_jobs_and_a_sigterm_lets_the_running_command_finish(
    server: RunningServer, tmp_path: Path
) -> None:
    script = tmp_path / "handler.py"
    script.write_text(
        REPORT
        + """
import json, os
data = json.load(sys.stdin)
if os.environ["QM_JOB_NAME"] == "slow":  # runs until the test answers
    connection = report("started")
    assert connection.recv(100) == b"finish\\n"
print(json.dumps({"double": data * 2, "args": sys.argv[2:]}))
"""
    )
    client = QueueManager(address=server.address)
    await client.register_queue("x-cli")
    async with Reports() as reports:
        process = await qm_exec(
            server,
            *("--queue", "x-cli", "--concurrency", "2", "--label", "team=imaging"),
            *("--", sys.executable, str(script), str(reports.port), "--flag", "a b"),
        )
        assert process.stderr is not None
        try:
            jobs = [await client.add_job("x-cli", "quick", n) for n in range(3)]
            done = [await client.wait_for_job("x-cli", job.id, timeout=WAIT) for job in jobs]
            assert [j.result for j in done] == [
                {"double": n * 2, "args": ["--flag", "a b"]} for n in range(3)
            ]
            (worker,) = await client.list_workers("x-cli")
            assert (worker.labels["team"], worker.labels["exec"]) == ("imaging", Path(sys.executable).name)

            slow = await client.add_job("x-cli", "slow", 21)
            started, connection = await reports.next()
            assert started == "started"
            process.send_signal(signal.SIGTERM)
            await stderr_line(process, b"signal SIGTERM: shutting down")
            assert process.returncode is None  # it waits for the command
            connection.write(b"finish\n")
            async with asyncio.timeout(WAIT):
                await process.stderr.read()
                assert await process.wait() == 0
            finished = await client.get_job("x-cli", slow.id)
            assert (finished.state, finished.result) == (
                JobState.COMPLETED,
                {"double": 42, "args": ["--flag", "a b"]},
            )
        finally:
            await stop(process)
            await client.shutdown()


async def test_qm_exec_a_second_signal_stops_the_running_command(server: RunningServer) -> None:
    client = QueueManager(address=server.address)
    await client.register_queue("x-force")
    async with Reports() as reports:
        process = await qm_exec(
            server,
            *("--queue", "x-force", "--kill-grace", "0.5"),
            *("--", *SPAWNER, str(reports.port), "ignore-term"),
        )
        assert process.stderr is not None
        try:
            job = await client.add_job("x-force", "slow")
            child, grandchild = map(int, (await reports.next())[0].split())
            process.send_signal(signal.SIGTERM)
            await stderr_line(process, b"signal SIGTERM: shutting down")
            process.send_signal(signal.SIGTERM)
            async with asyncio.timeout(WAIT):
                await process.stderr.read()
                assert await process.wait() == 0
            await wait_gone(child, grandchild)
            # Handed back, not failed: another worker runs it.
            again = await client.get_job("x-force", job.id)
            assert (again.state, again.attempts_made) == (JobState.WAITING, 0)
        finally:
            await stop(process)
            await client.shutdown()


async def qm_exec(server: RunningServer, *argv: str) -> asyncio.subprocess.Process:
    """``qm --server ADDRESS exec ARGV`` in a process of its own, its stderr piped."""
    return await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "queue_manager.cli", "--server", server.address, "exec", *argv),
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        stderr=asyncio.subprocess.PIPE,
    )


async def stderr_line(process: asyncio.subprocess.Process, text: bytes) -> None:
    """Reads the process's stderr up to a line holding `text`."""
    assert process.stderr is not None
    async with asyncio.timeout(WAIT):
        while text not in await process.stderr.readline():
            assert not process.stderr.at_eof(), f"qm exec ended without saying {text!r}"


async def stop(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        process.kill()
        await process.wait()
