"""The embedded Valkey's data directory lock: one server, and one Valkey, per directory.

Two Valkeys appending to one append-only file merge their histories, so a server holds an exclusive
``flock`` on ``<data dir>/qm.lock`` for its whole life and its Valkey child inherits the descriptor: the
directory stays locked while either process lives (a Valkey outliving a killed server still writes the
file). The lock file says who holds it, as one JSON object, so a refused server can name the holder.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import fcntl
import json
import logging
import os
from pathlib import Path
from typing import Any

log = logging.getLogger("queue_manager_server.datadir")

LOCK_NAME = "qm.lock"
# How long a new server waits for the lock of a server that is gone: its Valkey got SIGTERM from the
# kernel (parent-death signal) and is writing the rest of its append-only file before it exits.
DEAD_HOLDER_WAIT_S = 10.0
_POLL_S = 0.05


class DataDirLocked(Exception):
    """Another server (or the Valkey it left behind) holds the data directory."""


def read_holder(data_dir: Path) -> dict[str, Any]:
    """What the lock file of data_dir says about its holder ({} if nothing readable)."""
    try:
        info = json.loads((data_dir / LOCK_NAME).read_text() or "{}")
    except (OSError, ValueError):
        return {}
    return info if isinstance(info, dict) else {}


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists and is not a zombie."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a killed server its parent has not reaped yet is a zombie: dead for our purpose
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def describe(info: dict[str, Any]) -> str:
    """The holder as a person reads it: pid, listen address, start time, its Valkey."""
    if not info:
        return "a process that has not written its details yet"
    parts = [f"pid {info.get('pid', '?')}", f"listening on {info.get('listen', '?')}"]
    parts.append(f"started {info.get('started', '?')}")
    if info.get("valkey_pid"):
        parts.append(f"Valkey pid {info['valkey_pid']} on port {info.get('valkey_port', '?')}")
    return ", ".join(parts)


class DataDirLock:
    """An exclusive lock on a data directory, held from acquire() to release()."""

    def __init__(self, data_dir: str | Path) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.path = self.data_dir / LOCK_NAME
        self.fd = -1
        self._info: dict[str, Any] = {}

    async def acquire(self, listen: str, dead_holder_wait_s: float = DEAD_HOLDER_WAIT_S) -> None:
        """Takes the lock and records this process in the lock file.

        A live holder is refused at once. A dead one (a killed server whose Valkey is still exiting) is
        waited for up to dead_holder_wait_s.

        Raises:
            DataDirLocked: the directory is in use; the message names the holder.
        """
        self.data_dir.mkdir(parents=True, exist_ok=True)
        # No O_TRUNC: the holder's details must survive until the lock is ours.
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            await self._wait_for_lock(fd, dead_holder_wait_s)
        except BaseException:
            os.close(fd)
            raise
        self.fd = fd
        now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        self.record(pid=os.getpid(), listen=listen, started=now)

    async def _wait_for_lock(self, fd: int, wait_s: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        told = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                pass
            info = read_holder(self.data_dir)
            if pid_alive(int(info.get("pid", 0))):
                raise DataDirLocked(
                    f"data directory {self.data_dir} is in use by another qm serve ({describe(info)}); "
                    "stop that server, or give this one another --data-dir (QM_DATA_DIR)"
                )
            if loop.time() >= deadline:
                raise DataDirLocked(
                    f"data directory {self.data_dir} is still locked {wait_s:.0f} s after its server "
                    f"exited ({describe(info)}); its Valkey may still be running: stop it, then retry"
                )
            if not told and info:
                log.warning("waiting for the Valkey of an exited server", extra={"holder": describe(info)})
                told = True
            await asyncio.sleep(_POLL_S)

    def record(self, **fields: Any) -> None:
        """Adds fields (Valkey pid and port, the bound address) to the lock file."""
        if self.fd < 0:
            return
        self._info.update(fields)
        data = json.dumps(self._info).encode() + b"\n"
        os.pwrite(self.fd, data, 0)
        os.ftruncate(self.fd, len(data))

    def release(self) -> None:
        """Clears the lock file and unlocks; call it once the Valkey child has exited."""
        if self.fd < 0:
            return
        with contextlib.suppress(OSError):
            os.ftruncate(self.fd, 0)
        os.close(self.fd)
        self.fd = -1
