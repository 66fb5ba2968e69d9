"""The worker processes of a `WorkerManager`: starting one, asking it to stop, waiting for its end, and
pacing the replacements of processes that keep dying."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

__all__ = ["Child", "RestartPacer", "describe_exit"]


@dataclass(slots=True, eq=False)
class Child:
    """One worker process.

    Attributes:
        process: The running process.
        started: When it started (the event loop's clock).
        stopping: It was sent SIGTERM: it finishes its running jobs and exits.
        in_flight: Jobs it held at the last metrics snapshot.
    """

    process: asyncio.subprocess.Process
    started: float
    stopping: bool = False
    in_flight: int = 0

    @classmethod
    async def start(
        cls, argv: Sequence[str], env: Mapping[str, str], cwd: str | os.PathLike[str] | None
    ) -> Child:
        """Starts a process in a session of its own (a terminal's Ctrl-C does not reach it) with a pipe on
        its stdin that closes if we die (``qm worker --stop-on-stdin-eof`` then shuts it down).

        Raises:
            OSError: The process could not be started.
        """
        process = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.PIPE, env=dict(env), cwd=cwd, start_new_session=True
        )
        return cls(process, asyncio.get_running_loop().time())

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self) -> None:
        """Sends SIGTERM once: the worker's graceful shutdown (a second one would kill it at once)."""
        if not self.stopping:
            self.stopping = True
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.process.kill()

    async def wait(self) -> tuple[int, float]:
        """Waits for the process to end; returns its return code and how long it ran, in seconds."""
        returncode = await self.process.wait()
        if self.process.stdin is not None:
            self.process.stdin.close()
        return returncode, asyncio.get_running_loop().time() - self.started


class RestartPacer:
    """When to start the replacement of a process that exited unexpectedly.

    A process that ran at least ``max_delay`` seconds is replaced at once. One that died younger counts as
    a death in a row, and its replacement waits ``first_delay`` seconds, doubling with each such death up
    to ``max_delay`` (a crash at start-up must not become a tight loop of starts).
    """

    def __init__(self, first_delay: float, max_delay: float) -> None:
        self.first_delay = first_delay
        self.max_delay = max(max_delay, first_delay)
        self.deaths = 0
        self.next_start = 0.0

    def died(self, ran: float | None) -> float:
        """Records an unexpected end after ``ran`` seconds (None: it never started); returns the wait."""
        if ran is not None and ran >= self.max_delay:
            self.deaths, self.next_start = 0, 0.0
            return 0.0
        self.deaths += 1
        delay = min(self.first_delay * 2.0 ** (self.deaths - 1), self.max_delay)
        self.next_start = asyncio.get_running_loop().time() + delay
        return delay

    def wait(self) -> float:
        """Seconds until the next start may happen (0 when it may happen now)."""
        return max(0.0, self.next_start - asyncio.get_running_loop().time())


def describe_exit(returncode: int) -> str:
    """``exit status N`` or ``killed by SIGNAME``, for a log line."""
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit status {returncode}"
