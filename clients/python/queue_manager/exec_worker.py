"""`ExecProcessor`: a processor that runs a command line once per job (``qm exec``), so that a shell script,
a compiled binary or a script in any language can work a queue without a client library.

The contract the command sees (docs/jobs.md, "Run any command as a worker"):

- stdin: the job's data, JSON data as its JSON text and raw data as its bytes (a job added without data:
  ``null``, as the server stores it); empty for an empty raw body.
- environment: the worker's own, plus ``QM_JOB_ID``, ``QM_JOB_NAME``, ``QM_QUEUE``, ``QM_ATTEMPT``
  (1-based), ``QM_MAX_ATTEMPTS``, ``QM_CONTENT_TYPE``, ``QM_WORKER_ID``, and ``TRACEPARENT`` (with
  ``TRACESTATE``) when the run has a trace context.
- stdout: the job's result when the command exits 0: a JSON value when the whole output parses as JSON,
  else its text less trailing newlines, else (not UTF-8) its bytes; no output, no result. More than
  ``max_output_bytes`` fails the attempt.
- exit status: 0 completes the job; any other fails the attempt with the status (or the signal) and the
  last lines of stderr, retried per the job's attempts, unless ``no_retry_exit_codes`` names it: then the
  job fails for good at once, as a command that cannot be started does.
- stderr: each line is a line of the job's log; a line ``::progress N`` (N from 0 to 100) reports progress.
- stopping: the command leads a session (and process group) of its own. A timeout, a cancel or a forced
  shutdown sends SIGTERM to the group, and SIGKILL once ``kill_grace`` has passed with the command still
  running or its output still open. When the command exits, what it left running in its group is stopped
  the same way: a run leaves no process behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import re
import signal
from collections import deque
from collections.abc import Coroutine, Iterable, Mapping, Sequence
from typing import Any

from queue_manager import tracing
from queue_manager.checks import check_grace
from queue_manager.context import JobContext
from queue_manager.convert import JSON_CONTENT_TYPE, OCTET_STREAM, encode_payload
from queue_manager.errors import UnrecoverableError
from queue_manager.v1 import types_pb2

__all__ = ["CommandError", "CommandNotRetriedError", "ExecProcessor", "default_output_limit"]

# The server's default payload limit (its QM_MAX_PAYLOAD_BYTES): the largest result it stores.
_DEFAULT_OUTPUT_LIMIT = 1024 * 1024
# What the failure message keeps of stderr: its last lines, each cut, the whole cut again from the front;
# the server keeps a failure message of up to 10,000 characters.
_TAIL_LINES = 20
_TAIL_LINE_CHARS = 1000
_TAIL_CHARS = 4000
# A stderr "line" longer than this is cut (the rest, up to its newline, is dropped): a command writing
# megabytes without a newline must not make this worker hold them. The job's log keeps 2,000 characters.
_LINE_BYTES = 16 * 1024
_READ_CHUNK = 64 * 1024
# Seconds to wait for the pipes to close after SIGKILL: only a process that left the group (setsid) can
# hold them then, and its output is no longer read.
_AFTER_KILL = 2.0
# Per-run variables a run may lack: an inherited value would describe another worker or trace, so the
# worker's own are never passed on (the others are always set).
_PER_RUN_OPTIONAL = ("QM_WORKER_ID", "TRACEPARENT", "TRACESTATE")
_PROGRESS = re.compile(r"::progress\s+(\S+)\s*")


class CommandError(Exception):
    """A run of the command failed: it exited with a status other than 0, a signal killed it, or its stdout
    was over the result limit. The attempt fails and is retried per the job's attempts."""

    # The failure's stack text (worker_runs.py): none. The message holds what the command's author needs
    # (its exit and the end of its stderr); this worker's Python frames would tell them nothing.
    stacktrace = ""


class CommandNotRetriedError(CommandError, UnrecoverableError):
    """A run failure that another attempt would meet again: the command cannot be started, or it exited
    with a status of ``no_retry_exit_codes``. The job fails for good at once (dead-letter queue)."""


def default_output_limit() -> int:
    """``QM_MAX_PAYLOAD_BYTES`` (the variable the server reads for its payload limit), else 1 MiB."""
    text = os.environ.get("QM_MAX_PAYLOAD_BYTES", "").strip()
    if not text:
        return _DEFAULT_OUTPUT_LIMIT
    if not text.isdigit() or int(text) < 1:
        raise ValueError(
            f"QM_MAX_PAYLOAD_BYTES must be a whole number of bytes, at least 1, not {text[:50]!r}"
        )
    return int(text)


class ExecProcessor:
    """Runs a command line once per job; register it as any async processor, or run it with ``qm exec``.

    Args:
        command: The program and its arguments, run as they are (no shell: ``["sh", "-c", "..."]`` for
            one). The program is looked up on ``PATH`` when it has no ``/``.
        kill_grace: Seconds between SIGTERM and SIGKILL when a run is stopped (finite, at least 0).
        no_retry_exit_codes: Exit statuses that fail the job for good instead of its attempt.
        max_output_bytes: The most stdout a run may write, its result; default `default_output_limit`.
            Keep it at or below the server's payload limit, which refuses a larger result anyway.

    Raises:
        TypeError, ValueError: An argument of the wrong type or out of its range.
    """

    def __init__(
        self,
        command: Sequence[str],
        *,
        kill_grace: float = 5.0,
        no_retry_exit_codes: Iterable[int] = (),
        max_output_bytes: int | None = None,
    ) -> None:
        if isinstance(command, str | bytes) or not all(isinstance(part, str) for part in command):
            raise TypeError("command must be a sequence of str: the program and its arguments")
        if not command or not command[0]:
            raise ValueError("command must name a program to run")
        self.command = list(command)
        self.kill_grace = check_grace(kill_grace, "kill_grace")
        self.no_retry_exit_codes = frozenset(no_retry_exit_codes)
        if not all(isinstance(code, int) and not isinstance(code, bool) for code in self.no_retry_exit_codes):
            raise TypeError("no_retry_exit_codes must be exit statuses (int)")
        if max_output_bytes is None:
            max_output_bytes = default_output_limit()
        if (
            isinstance(max_output_bytes, bool)
            or not isinstance(max_output_bytes, int)
            or max_output_bytes < 1
        ):
            raise ValueError(
                f"max_output_bytes must be a whole number of at least 1, got {max_output_bytes!r}"
            )
        self.max_output_bytes = max_output_bytes
        # Each running command's run, with the task that awaits it (the worker's task of the job).
        self._runs: dict[_Run, asyncio.Task[Any]] = {}

    async def __call__(self, job: JobContext) -> Any:
        body, content_type = _stdin_of(job)
        loop = asyncio.get_running_loop()
        try:
            transport, protocol = await loop.subprocess_exec(
                lambda: _Protocol(loop),
                *self.command,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=_environment(job, content_type),
                start_new_session=True,
            )
        except (OSError, ValueError) as exc:  # not found, not executable; a NUL in the environment
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise CommandNotRetriedError(f"cannot start the command {self.command[0]!r}: {reason}") from None
        run = _Run(transport, protocol, job, body, self.max_output_bytes)
        task = asyncio.current_task()
        assert task is not None
        self._runs[run] = task
        try:
            try:
                await asyncio.shield(run.exited)
            except asyncio.CancelledError:  # a timeout, a cancel, a lost lease or a forced shutdown
                await _to_the_end(run.settle(self.kill_grace))
                raise
            await run.settle(self.kill_grace)
        finally:
            run.close()  # after a cancel or an error in the last settle: nothing of the group survives it
            del self._runs[run]
        return self._outcome(run)

    def _outcome(self, run: _Run) -> Any:
        """The job's result, or the failure of a run that has ended (and whose output has been read)."""
        status = run.transport.get_returncode()
        assert status is not None
        if status != 0:
            if status < 0:
                what = f"the command was killed by signal {_signal_name(-status)}"
            else:
                what = f"the command exited with status {status}"
            tail = run.stderr_tail()
            message = f"{what}; the last lines of its stderr:\n{tail}" if tail else f"{what} (no stderr)"
            if status in self.no_retry_exit_codes:
                raise CommandNotRetriedError(f"{message}\n(not retried: a no-retry exit status)")
            raise CommandError(message)
        if run.stdout_over:
            raise CommandError(
                f"the command wrote more than {self.max_output_bytes:,} bytes to stdout, the result limit "
                "(--max-output-bytes, at most the server's payload limit); write large output elsewhere and "
                "print where it is"
            )
        return _result(bytes(run.stdout))

    def cancel_all(self) -> None:
        """Stops every running command as a forced shutdown does: each run's task is cancelled, so its
        command gets SIGTERM (SIGKILL after ``kill_grace``) and the worker hands its job back."""
        for task in self._runs.values():
            task.cancel()

    async def close(self) -> None:
        """Stops the commands still running (`cancel_all`), waits up to ``kill_grace`` (and a little) for
        them to end, and kills the process group of any left: called last by ``qm exec``."""
        self.cancel_all()
        tasks = set(self._runs.values())
        if tasks:
            await asyncio.wait(tasks, timeout=self.kill_grace + _AFTER_KILL + 1.0)
        for run in list(self._runs):
            run.close()


class _Protocol(asyncio.subprocess.SubprocessStreamProtocol):
    """asyncio's protocol of a subprocess with streams, which also tells when the command itself exits:
    `asyncio.subprocess.Process.wait` waits for its pipes to close as well, which never happens while a
    process it started in the background holds them."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(limit=_READ_CHUNK, loop=loop)
        self.exited: asyncio.Future[None] = loop.create_future()

    def process_exited(self) -> None:
        super().process_exited()
        if not self.exited.done():
            self.exited.set_result(None)


class _Run:
    """One running command: feeds its stdin, reads its stdout (bounded) and stderr (lines) concurrently,
    and stops its process group."""

    def __init__(
        self,
        transport: asyncio.SubprocessTransport,
        protocol: _Protocol,
        job: JobContext,
        body: bytes,
        limit: int,
    ) -> None:
        self.transport = transport
        self.pid = transport.get_pid()
        self.job = job
        self.limit = limit
        self.stdout = bytearray()
        self.stdout_over = False  # more than `limit` bytes came: the rest was read and dropped
        self._tail: deque[str] = deque(maxlen=_TAIL_LINES)
        self._settled = False
        self.exited = protocol.exited
        assert protocol.stdin is not None and protocol.stdout is not None and protocol.stderr is not None
        self._feeder = asyncio.ensure_future(_feed(protocol.stdin, body))
        self._readers = (
            asyncio.ensure_future(self._read_stdout(protocol.stdout)),
            asyncio.ensure_future(self._read_stderr(protocol.stderr)),
        )

    async def settle(self, grace: float) -> None:
        """Ends the run: SIGTERM to the group (to stop the command, or what it left running once it has
        exited), up to `grace` for the command to exit and its pipes to close, then SIGKILL to the group.
        A command that exited alone, leaving nothing behind, has its pipes closed: this returns at once."""
        self._signal(signal.SIGTERM)
        pending: set[asyncio.Future[Any]] = {self.exited, *self._readers}
        _, pending = await asyncio.wait(pending, timeout=grace)
        if pending:
            self._signal(signal.SIGKILL)
            await asyncio.wait(pending, timeout=_AFTER_KILL)
        self._settled = True

    def close(self) -> None:
        """Kills the group if the run did not settle, stops feeding and reading, and closes the pipes."""
        if not self._settled:
            self._signal(signal.SIGKILL)
        for task in (self._feeder, *self._readers):
            task.cancel()
        self.transport.close()

    def _signal(self, sig: signal.Signals) -> None:
        # The group is named by the command's pid (it leads its own session). Once the command has been
        # reaped its pid may be reused, but not while its group still has members, and a group with
        # none answers ESRCH: the signal can reach no other process.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, sig)

    async def _read_stdout(self, stream: asyncio.StreamReader) -> None:
        while chunk := await stream.read(_READ_CHUNK):
            if self.stdout_over:
                continue  # drained, not kept: the command must not block on a full pipe
            self.stdout += chunk
            if len(self.stdout) > self.limit:
                self.stdout_over = True
                self.stdout = bytearray()

    async def _read_stderr(self, stream: asyncio.StreamReader) -> None:
        pending = bytearray()
        skipping = False  # the rest of an over-long line, up to its newline, is dropped
        while chunk := await stream.read(_READ_CHUNK):
            pending += chunk
            while (end := pending.find(b"\n")) >= 0:
                if not skipping:
                    self._line(pending[:end])
                skipping = False
                del pending[: end + 1]
            if len(pending) > _LINE_BYTES:
                if not skipping:
                    self._line(pending[:_LINE_BYTES])
                skipping = True
                pending.clear()
        if pending and not skipping:
            self._line(pending)

    def _line(self, raw: bytes | bytearray) -> None:
        line = bytes(raw).decode("utf-8", errors="replace").rstrip("\r")
        progress = _progress_of(line)
        if progress is not None:
            self.job.report_progress(progress)
            return
        self.job.log(line)
        self._tail.append(line[:_TAIL_LINE_CHARS])

    def stderr_tail(self) -> str:
        """The last lines of stderr (progress lines aside), at most a few thousand characters."""
        text = "\n".join(self._tail)
        return text[-_TAIL_CHARS:]


async def _to_the_end(stop: Coroutine[Any, Any, None]) -> None:
    """Runs a run's stop to its end, bounded by its own grace, even if the task is cancelled again meanwhile:
    a worker's timeout and the server's (CANCEL_JOB) often stop the same run a moment apart, and the second
    must not cut the command's SIGTERM grace short. The cancels taken here still count (`Task.cancelling`),
    so the run then ends as cancelled by the last of them."""
    task = asyncio.ensure_future(stop)
    while not task.done():
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.shield(task)


async def _feed(stdin: asyncio.StreamWriter, body: bytes) -> None:
    """Writes the job's data to the command's stdin and closes it; a command that exits without reading
    it all is no error (the pipe breaks)."""
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        if body:
            stdin.write(body)
            await stdin.drain()
        stdin.close()
        await stdin.wait_closed()


def _stdin_of(job: JobContext) -> tuple[bytes, str]:
    """The job's data as the command's stdin, and its content type ("" for a job without data)."""
    payload = job._job.data
    kind = payload.WhichOneof("body")
    if kind == "raw":
        return payload.raw, payload.content_type or OCTET_STREAM
    if (
        kind == "json"
    ):  # a value the server holds as a protobuf Value: its JSON text, as this client writes it
        encoded = types_pb2.Payload()
        encode_payload(job.data, encoded)
        return encoded.raw, JSON_CONTENT_TYPE
    return b"", ""


def _environment(job: JobContext, content_type: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key not in _PER_RUN_OPTIONAL}
    env.update(
        QM_JOB_ID=job.id,
        QM_JOB_NAME=job.name,
        QM_QUEUE=job.queue_name,
        QM_ATTEMPT=str(job.attempts_made + 1),
        QM_MAX_ATTEMPTS=str(job.max_attempts),
        QM_CONTENT_TYPE=content_type,
    )
    worker_id = getattr(job._worker, "worker_id", "")
    if worker_id:
        env["QM_WORKER_ID"] = worker_id
    # The run's own span when the worker traces (the command's spans nest under it), else the producer's.
    context: Mapping[str, str] = (
        tracing.trace_context(job._span) if job._span is not None else job.metadata.attributes
    )
    for key in ("traceparent", "tracestate"):
        if context.get(key):
            env[key.upper()] = context[key]
    return env


def _progress_of(line: str) -> int | float | None:
    """N of a ``::progress N`` line, N a number from 0 to 100; None for any other line (logged as it is)."""
    match = _PROGRESS.fullmatch(line)
    if match is None:
        return None
    try:
        value = float(match[1])
    except ValueError:
        return None
    if not (math.isfinite(value) and 0 <= value <= 100):
        return None
    return int(value) if value.is_integer() else value


def _result(out: bytes) -> Any:
    """A successful run's stdout as its job's result: JSON, else text less trailing newlines, else bytes."""
    if not out:
        return None
    try:
        text = out.decode("utf-8")
    except UnicodeDecodeError:
        return out
    try:
        return json.loads(text, parse_constant=_no_constant)
    except ValueError:  # not JSON (json.JSONDecodeError is a ValueError, as is _no_constant's)
        return text.rstrip("\r\n")


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _signal_name(number: int) -> str:
    try:
        return f"{signal.Signals(number).name} ({number})"
    except ValueError:
        return str(number)
