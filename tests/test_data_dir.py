"""One server per embedded data directory: a second server is refused, a killed server's Valkey follows it.

Real `qm serve` processes, each with its own embedded Valkey; faults are SIGKILL (the server) and
SIGSTOP/SIGCONT (its Valkey, to hold the lock while a new server waits for it).
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import signal
import subprocess
from pathlib import Path
from typing import IO

import grpc
import pytest

from queue_manager.v1 import jobs_pb2 as jpb
from queue_manager.v1 import queue_service_pb2 as qpb
from queue_manager.v1 import queue_service_pb2_grpc as jrpc
from queue_manager.v1 import queue_service_pb2_grpc as qrpc
from queue_manager_server.datadir import LOCK_NAME, DataDirLock, DataDirLocked, pid_alive, read_holder
from tests.procs import Procs, wait_serving


async def add_jobs(address: str, n: int) -> list[str]:
    async with grpc.aio.insecure_channel(address) as ch:
        await qrpc.QueueServiceStub(ch).RegisterQueue(qpb.RegisterQueueRequest(name="q"))
        stub = jrpc.QueueServiceStub(ch)
        return [
            (await stub.AddJob(jpb.AddJobRequest(queue_name="q", job=jpb.NewJob(name=f"j{i}")))).job.id
            for i in range(n)
        ]


async def stored(address: str, ids: list[str]) -> list[str]:
    """The ids GetJob finds, in order."""
    async with grpc.aio.insecure_channel(address) as ch:
        stub = jrpc.QueueServiceStub(ch)
        return [
            (await stub.GetJob(jpb.GetJobRequest(queue_name="q", job_id=i), timeout=10)).job.id for i in ids
        ]


async def until(check: object, what: str, timeout: float = 10.0) -> None:
    """Polls a condition (a no-argument callable) until true, bounded by timeout."""
    assert callable(check)
    for _ in range(int(timeout / 0.05)):
        if check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"not true after {timeout} s: {what}")


async def test_second_server_on_the_same_data_dir_is_refused(procs: Procs, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    first = await procs.embedded_server(data_dir)
    ids = await add_jobs(first.address, 3)
    second = await procs.embedded_server(data_dir, wait=False)
    assert await second.wait(timeout=20) == 2
    refusal = second.output().strip().splitlines()[-1]
    assert refusal.startswith(f"qm serve: data directory {data_dir.resolve()} is in use by another qm serve")
    assert f"(pid {first.popen.pid}, listening on {first.address}, started " in refusal
    assert "give this one another --data-dir (QM_DATA_DIR)" in refusal
    # The first server and its Valkey carry on, alone in the directory.
    assert read_holder(data_dir)["pid"] == first.popen.pid
    assert await stored(first.address, ids) == ids
    first.terminate()
    assert await first.wait() == 0


async def test_a_started_server_writes_only_its_own_lines(procs: Procs, tmp_path: Path) -> None:
    # Valkey was once forked with a preexec_fn while gRPC's threads ran, and gRPC logged "Other threads are
    # currently calling into gRPC, skipping fork() handlers" as the first line of every `qm serve`.
    server = await procs.embedded_server(tmp_path / "data")
    await add_jobs(server.address, 1)
    server.terminate()
    assert await server.wait() == 0
    lines = server.output().splitlines()
    assert json.loads(lines[0])["event"] == "embedded valkey started"
    assert not [line for line in lines if "fork" in line]


async def test_killed_server_valkey_exits_and_a_new_server_takes_over(procs: Procs, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    first = await procs.embedded_server(data_dir)
    ids = await add_jobs(first.address, 20)
    orphan = read_holder(data_dir)["valkey_pid"]
    # Freeze the Valkey so the kernel's SIGTERM (parent-death signal) waits: the new server must wait too.
    os.kill(orphan, signal.SIGSTOP)
    try:
        first.kill()
        await first.wait()
        second = await procs.embedded_server(data_dir, wait=False)
        await until(lambda: "waiting for the Valkey of an exited server" in second.output(), "second waits")
        assert second.popen.poll() is None
    finally:
        os.kill(orphan, signal.SIGCONT)
    await until(lambda: not pid_alive(orphan), "the orphaned Valkey exits by itself")
    await wait_serving(second)
    holder = read_holder(data_dir)
    assert holder["pid"] == second.popen.pid and holder["valkey_pid"] != orphan
    assert await stored(second.address, ids) == ids
    second.terminate()
    assert await second.wait() == 0


async def test_a_killed_embedded_valkey_is_started_again_under_its_server(
    procs: Procs, tmp_path: Path
) -> None:
    # It stayed dead: the server answered every call UNAVAILABLE ("retry shortly") until restarted by hand.
    data_dir = tmp_path / "data"
    server = await procs.embedded_server(data_dir)
    ids = await add_jobs(server.address, 5)
    dead = read_holder(data_dir)["valkey_pid"]
    os.kill(dead, signal.SIGKILL)
    await until(lambda: read_holder(data_dir).get("valkey_pid") not in (None, dead), "a new Valkey pid")
    assert pid_alive(read_holder(data_dir)["valkey_pid"])
    assert "embedded valkey exited; starting it again from its append-only file" in server.output()
    assert await stored(server.address, ids) == ids  # read back from the append-only file
    assert len(await add_jobs(server.address, 1)) == 1
    server.terminate()
    assert await server.wait() == 0
    assert not pid_alive(read_holder(data_dir).get("valkey_pid", 0))


def hold_lock_of_dead_server(data_dir: Path) -> tuple[IO[str], int]:
    """Locks data_dir the way a Valkey left by a killed server does; returns the open file and that pid."""
    gone = subprocess.Popen(["true"])
    gone.wait()
    held = open(data_dir / LOCK_NAME, "w")  # noqa: SIM115 - the caller closes it
    fcntl.flock(held, fcntl.LOCK_EX)
    held.write(json.dumps({"pid": gone.pid, "listen": "127.0.0.1:1", "started": "then", "valkey_pid": 7}))
    held.flush()
    return held, gone.pid


async def test_lock_left_by_a_dead_server_is_waited_for_then_refused(tmp_path: Path) -> None:
    """The holder's server is gone but something (its Valkey) keeps the lock: bounded wait, clear refusal."""
    held, dead_pid = hold_lock_of_dead_server(tmp_path)
    with held:
        lock = DataDirLock(tmp_path)
        with pytest.raises(
            DataDirLocked, match=rf"still locked 0 s after its server exited \(pid {dead_pid},"
        ):
            await lock.acquire("127.0.0.1:2", dead_holder_wait_s=0.3)
        assert lock.fd == -1
    assert read_holder(tmp_path)["pid"] == dead_pid  # the holder's details were left as they were
