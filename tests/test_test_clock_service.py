"""The test clock over gRPC (TestClockService) and `qm test-server`, which give test suites in any language
what queue_manager_server.testing gives Python's: a real server whose clock a test moves."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest

from queue_manager import FailedPreconditionError, JobState, PermissionDeniedError, QueueManager
from queue_manager.cli import main as qm_main
from queue_manager.v1 import test_clock_service_pb2 as pb
from queue_manager.v1 import test_clock_service_pb2_grpc as pb_grpc
from queue_manager_server.testing import TestServer
from tests.conftest import ServerFactory
from tests.security_kit import token_file
from tests.test_grpcurl import grpcurl

HOUR = timedelta(hours=1)
ROOT = Path(__file__).resolve().parent.parent


async def test_a_client_moves_the_clock_and_a_delayed_job_is_waiting_when_the_call_returns(
    redis_url: str, prefix: str
) -> None:
    async with TestServer(redis_url=redis_url, key_prefix=prefix) as server:
        qm = QueueManager(server.address)
        try:
            await qm.register_queue("q")
            start = await qm.test_clock_now()
            job = await qm.add_job("q", "remind", None, {"delay": HOUR})
            assert (await qm.get_job("q", job.id)).state is JobState.DELAYED
            moved = await qm.advance_test_clock(HOUR)
            assert (await qm.get_job("q", job.id)).state is JobState.WAITING
            assert HOUR <= moved - start < HOUR + timedelta(seconds=30)
            assert await server.clock.offset() == HOUR
            # 0 moves nothing but still has the server catch up; the clock reads at least where it was.
            assert await qm.advance_test_clock(0) >= moved
        finally:
            await qm.shutdown()


async def test_a_server_on_real_time_refuses_and_changes_nothing(server_factory: ServerFactory) -> None:
    server = await server_factory()
    qm = QueueManager(server.address)
    try:
        with pytest.raises(FailedPreconditionError, match=r"real time.*qm test-server"):
            await qm.advance_test_clock(HOUR)
        with pytest.raises(FailedPreconditionError, match="real time"):
            await qm.test_clock_now()
    finally:
        await qm.shutdown()
    assert not server.app.engine.test_clock  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("seconds", "nanos", "message"),
    [
        (-1, 0, "amount: must not be negative"),
        (0, -5, "amount: must not be negative"),
        (11 * 365 * 86400, 0, "10-year"),
    ],
)
async def test_a_bad_amount_is_invalid_argument_and_moves_nothing(
    redis_url: str, prefix: str, seconds: int, nanos: int, message: str
) -> None:
    async with TestServer(redis_url=redis_url, key_prefix=prefix) as server:
        async with grpc.aio.insecure_channel(server.address) as channel:
            stub = pb_grpc.TestClockServiceStub(channel)
            request = pb.AdvanceClockRequest()
            request.amount.seconds, request.amount.nanos = seconds, nanos
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.AdvanceClock(request)
        assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert message in (caught.value.details() or "")
        assert await server.clock.offset() == timedelta(0)


@pytest.mark.parametrize(
    ("amount", "error"), [(-1, ValueError), (math_inf := float("inf"), ValueError), ("1h", TypeError)]
)
async def test_the_client_refuses_a_bad_amount_before_any_call(
    amount: object, error: type[Exception]
) -> None:
    qm = QueueManager("127.0.0.1:1")  # nothing listens there: a call would fail otherwise
    try:
        with pytest.raises(error):
            await qm.advance_test_clock(amount)  # type: ignore[arg-type]
    finally:
        await qm.shutdown()


async def test_only_an_admin_of_every_queue_moves_the_clock_and_a_viewer_reads_it(
    redis_url: str, prefix: str, tmp_path: Path
) -> None:
    tokens = token_file(
        tmp_path / "tokens.toml",
        {"viewer": ("viewer", ["*"]), "admin-q": ("admin", ["q*"]), "admin": ("admin", ["*"])},
    )
    async with TestServer(
        redis_url=redis_url, key_prefix=prefix, auth_file=str(tmp_path / "tokens.toml")
    ) as server:
        for name, allowed in (("viewer", False), ("admin-q", False), ("admin", True)):
            qm = QueueManager(server.address, token=tokens[name])
            try:
                assert await qm.test_clock_now()  # reading needs only read
                if allowed:
                    await qm.advance_test_clock(60)
                else:
                    with pytest.raises(PermissionDeniedError):
                        await qm.advance_test_clock(60)
            finally:
                await qm.shutdown()
        assert await server.clock.offset() == timedelta(seconds=60)


async def test_qm_test_server_runs_on_its_own_valkey_prints_its_address_and_stops_on_sigterm(
    tmp_path: Path,
) -> None:
    # A production Redis in the environment must not be reached: the test server takes no Redis settings.
    env = {
        **os.environ,
        "QM_REDIS_URL": "redis://127.0.0.1:1/0",
        "REDIS_URL": "redis://127.0.0.1:1/0",
        "TMPDIR": str(tmp_path),
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "queue_manager.cli",
        "test-server",
        "--lease-ms",
        "5000",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
        cwd=ROOT,
    )
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 60)
        address = line.decode().strip()
        assert address.startswith("127.0.0.1:"), line
        assert _valkey_dirs(tmp_path)  # its Valkey's directory
        # `qm clock` from the command line, as a shell-driven test suite would use it.
        assert await asyncio.to_thread(qm_main, ["--server", address, "clock", "advance", "2h"]) == 0
        qm = QueueManager(address)
        try:
            now = await qm.test_clock_now()
            assert now - datetime.now(UTC) > timedelta(hours=1, minutes=59)
        finally:
            await qm.shutdown()
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        status = await asyncio.wait_for(proc.wait(), 60)
    assert status == 0
    assert not _valkey_dirs(tmp_path)  # removed at exit


def _valkey_dirs(directory: Path) -> list[str]:
    """The test servers' temporary directories (TestServer's ``qm-test-*``) in `directory`."""
    return [p.name for p in directory.iterdir() if p.name.startswith("qm-test-")]


def test_qm_test_server_refuses_bad_flags(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        qm_main(["test-server", "--lease-ms", "0"])
    assert caught.value.code == 2
    assert "positive number of ms" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        qm_main(["clock", "advance", "soon"])
    assert "must be a duration" in capsys.readouterr().err


def test_qm_test_server_on_a_busy_port_names_the_flag_it_reads(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        address = f"127.0.0.1:{busy.getsockname()[1]}"
        assert qm_main(["test-server", "--listen", address]) == 2
    err = capsys.readouterr().err
    # It reads no QM_* variable, so the advice names only the flag.
    assert "the address is in use" in err and "choose another port with --listen" in err, err
    assert "QM_LISTEN" not in err, err


async def test_grpcurl_lists_the_service_and_moves_the_clock(redis_url: str, prefix: str) -> None:
    """The documented grpcurl line works: reflection lists TestClockService and AdvanceClock takes JSON."""
    async with TestServer(redis_url=redis_url, key_prefix=prefix) as server:
        assert "queue_manager.v1.TestClockService" in (await grpcurl(server.address, "list")).split()
        answer = json.loads(
            await grpcurl(
                "-d", '{"amount": "3600s"}', server.address, "queue_manager.v1.TestClockService/AdvanceClock"
            )
        )
        assert answer["offset"] == "3600s"
        assert await server.clock.offset() == HOUR
