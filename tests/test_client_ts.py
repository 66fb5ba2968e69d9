"""The TypeScript client (clients/ts) against a live server: each test starts a server with the settings
its node:test file needs and runs that file with node, which must pass (its output is shown otherwise).

`make dev` installs the client's packages (npm ci) and compiles it; the fixture here compiles again
(incremental: about a second when nothing changed), so edits to clients/ts are always what is tested.
"""

from __future__ import annotations

import asyncio
import base64
import os
import shutil
import subprocess
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from queue_manager import EncodedPayload, JobContext, JobState, QueueManager, codecs_from_env
from queue_manager_server.embedded import free_port
from tests.conftest import RunningServer, ServerFactory, stop_server_timeouts, time_out_now
from tests.security_kit import make_pki, token_file
from tests.split_proxy import SplitProxy

ROOT = Path(__file__).resolve().parent.parent
TS = ROOT / "clients" / "ts"
TSC = TS / "node_modules" / ".bin" / "tsc"
# Each node run's own limit, under pytest's 120 s per test.
NODE_TIMEOUT_S = 100.0


@pytest.fixture(scope="session")
def ts_built() -> Path:
    """The compiled tests' directory, after an incremental compile of the client and its tests."""
    if shutil.which("node") is None:
        pytest.fail("node is not installed: the TypeScript client needs Node 20 or newer")
    if not TSC.exists():
        pytest.fail(f"{TSC} is missing: run `make dev` (it runs npm ci in clients/ts)")
    done = subprocess.run([str(TSC), "-p", str(TS)], capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        pytest.fail(f"tsc failed:\n{done.stdout}{done.stderr}")
    return TS / "dist" / "test"


async def run_node_tests(
    built: Path,
    name: str,
    address: str,
    env: dict[str, str] | None = None,
    on_line: Callable[[str], Awaitable[None]] | None = None,
) -> str:
    """Runs one compiled node:test file against `address`; fails with node's output unless it passes.

    With `on_line`, the file runs in node's own process (not in a child of `node --test`, which holds a
    file's output back), so each line it prints (a step it asks of this test) is handed over at once.
    """
    path = str(built / f"{name}.test.js")
    args = (
        ["node", "--test-reporter=spec", path]
        if on_line
        else ["node", "--test", "--test-reporter=spec", path]
    )
    proc = await asyncio.create_subprocess_exec(
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        cwd=TS,
        env={**os.environ, "QM_TEST_ADDRESS": address, **(env or {})},
    )
    lines: list[str] = []

    async def read() -> None:
        assert proc.stdout is not None
        async for raw in proc.stdout:
            lines.append(raw.decode(errors="replace"))
            if on_line is not None:
                await on_line(lines[-1])
        await proc.wait()

    try:
        await asyncio.wait_for(read(), NODE_TIMEOUT_S)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        pytest.fail(f"node tests {name} did not finish in {NODE_TIMEOUT_S:.0f}s:\n{''.join(lines)}")
    text = "".join(lines)
    assert proc.returncode == 0, f"node tests {name} failed (exit {proc.returncode}):\n{text}"
    assert "ℹ fail 0" in text, text
    return text


async def test_producer_and_admin_api(ts_built: Path, server: RunningServer) -> None:
    await run_node_tests(ts_built, "producer", server.address)


async def test_priority_bounds_and_levels(ts_built: Path, server: RunningServer) -> None:
    await run_node_tests(ts_built, "priorities", server.address)


async def test_fairness_groups(ts_built: Path, server: RunningServer) -> None:
    await run_node_tests(ts_built, "groups", server.address)


async def test_timed_pauses(ts_built: Path, server: RunningServer) -> None:
    await run_node_tests(ts_built, "pauses", server.address)


async def test_lifo_and_max_size(ts_built: Path, server: RunningServer) -> None:
    await run_node_tests(ts_built, "backpressure", server.address)


async def test_worker_labels(ts_built: Path, server: RunningServer) -> None:
    await run_node_tests(ts_built, "worker-labels", server.address)


async def test_children_added_at_run_time(ts_built: Path, server: RunningServer) -> None:
    await run_node_tests(ts_built, "children", server.address)


async def test_test_clock(ts_built: Path, server_factory: ServerFactory) -> None:
    # A server on the test clock alone on its key prefix (its moves shift only its own clock key), and one on
    # real time that refuses to move.
    clock = await server_factory(test_clock=True, key_prefix=f"clock-{uuid.uuid4().hex[:8]}")
    real_time = await server_factory()
    await run_node_tests(
        ts_built, "test-clock", clock.address, env={"QM_TEST_REALTIME_ADDRESS": real_time.address}
    )


async def test_external_events(ts_built: Path, server: RunningServer) -> None:
    await run_node_tests(ts_built, "external-events", server.address)


async def test_runs_parked_through_another_server_free_their_leases(
    ts_built: Path, server_factory: ServerFactory
) -> None:
    # The worker's stream on a server bounding its credits below the jobs parked, its calls on another
    # (tests/split_proxy.py): it must name the runs it parked in its reports' `parked`, or it stalls.
    streams = await server_factory(max_worker_credits=4)
    calls = await server_factory()
    proxy = SplitProxy(streams=streams.address, calls=calls.address)
    try:
        await run_node_tests(ts_built, "parked-elsewhere", await proxy.start())
    finally:
        await proxy.stop()


async def test_tracing(ts_built: Path, server: RunningServer) -> None:
    await run_node_tests(ts_built, "tracing", server.address)


async def test_tracing_across_languages(ts_built: Path, server: RunningServer) -> None:
    # Each side traces with its own SDK; the trace context crosses in the jobs' metadata attributes.
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    async with QueueManager(address=server.address, tracer_provider=provider) as qm:
        await qm.register_queue("py-to-ts")
        await qm.register_queue("ts-to-py")
        # Python adds, the TypeScript worker runs (interop.test.ts checks its span's parent).
        job = await qm.add_job("py-to-ts", "from-python", {"n": 1})
        [publish] = [s for s in exporter.get_finished_spans() if s.name == "py-to-ts publish"]
        assert publish.context is not None
        printed: list[list[str]] = []

        async def on_line(line: str) -> None:
            if line.startswith("QM-TRACE "):
                printed.append(line.split()[1:])

        env = {
            "QM_TEST_PY_QUEUE": "py-to-ts",
            "QM_TEST_PY_JOB": job.id,
            "QM_TEST_PY_TRACE_ID": f"{publish.context.trace_id:032x}",
            "QM_TEST_PY_SPAN_ID": f"{publish.context.span_id:016x}",
            "QM_TEST_TS_QUEUE": "ts-to-py",
        }
        await run_node_tests(ts_built, "interop", server.address, env, on_line=on_line)
        assert (await qm.get_job("py-to-ts", job.id)).result == "ran in node"

        # TypeScript added, the Python worker runs: its span is a child of the TypeScript publish span.
        [[queue, job_id, trace_id, span_id]] = printed

        @qm.processor(queue)
        async def run(ctx: JobContext) -> None:
            return None

        await qm.start_workers()
        assert (await qm.wait_for_job(queue, job_id, timeout=20)).state == JobState.COMPLETED
        await qm.shutdown()  # the run's span has ended once its worker stopped
        [span] = [s for s in exporter.get_finished_spans() if s.name == "ts-to-py process"]
        assert span.kind == SpanKind.CONSUMER and span.context is not None and span.parent is not None
        assert f"{span.context.trace_id:032x}" == trace_id and f"{span.parent.span_id:016x}" == span_id
        assert span.parent.is_remote and (span.attributes or {})["messaging.message.id"] == job_id


async def test_payload_codecs(ts_built: Path, server: RunningServer) -> None:
    await run_node_tests(ts_built, "codecs", server.address)


async def test_payload_codecs_across_languages(ts_built: Path, server: RunningServer) -> None:
    """Python encrypts a job that the TypeScript worker decodes and answers with an encrypted result the
    Python client reads; TypeScript encrypts a job the Python worker decodes. Both sides take the keys as
    the CLI and workers do, from QM_CODEC_KEYS; the server only ever holds the encoded bytes."""
    key = base64.b64encode(os.urandom(32)).decode()
    codecs = codecs_from_env({"QM_CODEC_KEYS": f"k7:{key}", "QM_CODEC_GZIP_MIN_SIZE": "0"})
    async with (
        QueueManager(address=server.address, codecs=codecs) as qm,
        QueueManager(address=server.address, codecs=[]) as plain,
    ):
        await qm.register_queue("py-to-ts-sealed")
        await qm.register_queue("ts-to-py-sealed")
        job = await qm.add_job("py-to-ts-sealed", "from-python", {"from": "python", "secret": "s3cret"})
        printed: list[list[str]] = []

        async def on_line(line: str) -> None:
            if line.startswith("QM-CODEC "):
                printed.append(line.split()[1:])

        env = {
            "QM_CODEC_KEYS": f"k7:{key}",
            "QM_TEST_CODEC_PY_QUEUE": "py-to-ts-sealed",
            "QM_TEST_CODEC_PY_JOB": job.id,
            "QM_TEST_CODEC_TS_QUEUE": "ts-to-py-sealed",
        }
        await run_node_tests(ts_built, "codecs", server.address, env, on_line=on_line)
        done = await qm.get_job("py-to-ts-sealed", job.id)
        assert done.result == {"from": "node", "echo": {"from": "python", "secret": "s3cret"}}
        stored = (await plain.get_job("py-to-ts-sealed", job.id)).result
        assert isinstance(stored, EncodedPayload) and stored.key_id == "k7"

        [[queue, job_id]] = printed
        assert isinstance((await plain.get_job(queue, job_id)).data, EncodedPayload)
        seen: list[object] = []

        @qm.processor(queue)
        async def run(ctx: JobContext) -> None:
            seen.append(ctx.data)

        await qm.start_workers()
        assert (await qm.wait_for_job(queue, job_id, timeout=20)).state == JobState.COMPLETED
        assert seen == [{"from": "node", "secret": "s3cret"}]


async def test_worker(ts_built: Path, server: RunningServer) -> None:
    await run_node_tests(ts_built, "worker", server.address)


async def test_worker_timeout_is_recorded_as_timed_out(ts_built: Path, server: RunningServer) -> None:
    """The worker's own timeout ends the run (this server, alone on the test's key prefix, leaves timeouts to
    the workers): reported with timed_out, recorded and counted as timed out."""
    await stop_server_timeouts(server)
    await run_node_tests(ts_built, "worker-timeout", server.address)


async def test_server_timeout_ends_the_run_as_the_workers_own(ts_built: Path, server: RunningServer) -> None:
    """The server times the run out first (time_out_now, when server-timeout.test.ts asks: the job's own
    timeout is 30 s away): the TypeScript worker ends it as at its own timeout, a failure that timed out."""

    async def step(line: str) -> None:
        if line.startswith("QM-STEP time-out "):
            queue, job_id = line.split()[2:]
            await time_out_now(server, queue, job_id)

    await run_node_tests(ts_built, "server-timeout", server.address, on_line=step)


async def test_worker_control(ts_built: Path, server: RunningServer) -> None:
    """quietWorker, resumeWorker, stopWorker and setWorkerConcurrency (ControlWorker) reach the TypeScript
    worker, which obeys each; listWorkers shows its state."""
    await run_node_tests(ts_built, "control", server.address)


async def test_queue_shares(ts_built: Path, server: RunningServer) -> None:
    """queueOrder and queueWeights go in the hello and share the worker's slots; bad ones are refused."""
    await run_node_tests(ts_built, "shares", server.address)


async def test_worker_killed_mid_job(ts_built: Path, server: RunningServer) -> None:
    await run_node_tests(ts_built, "crash", server.address)


async def test_lost_lease(ts_built: Path, server_factory: ServerFactory) -> None:
    # A 600 ms lease (heartbeats every 200 ms) that the processor's blocked event loop outlasts.
    short = await server_factory(lease_ms=600)
    await run_node_tests(ts_built, "lease", short.address)


async def test_auth_token(ts_built: Path, server_factory: ServerFactory, tmp_path: Path) -> None:
    tokens = token_file(
        tmp_path / "tokens.toml", {"admin": ("admin", ["*"]), "producer": ("producer", ["ts-auth-*"])}
    )
    secured = await server_factory(auth_file=str(tmp_path / "tokens.toml"))
    env = {f"QM_TEST_TOKEN_{name.upper()}": value for name, value in tokens.items()}
    await run_node_tests(ts_built, "auth", secured.address, env)


async def test_drain_and_reconnect(ts_built: Path, server_factory: ServerFactory) -> None:
    # A 3 s grace: drain.test.ts checks that the drained worker half-closes well before it ends.
    listen = f"127.0.0.1:{free_port()}"
    first = await server_factory(listen=listen, shutdown_grace_ms=3_000)

    async def step(line: str) -> None:
        if line.strip() == "QM-STEP stop-server":
            await first.stop()  # DRAIN to the workers; the idle one half-closes, the busy one outlasts it
            await server_factory(listen=listen, shutdown_grace_ms=3_000)

    await run_node_tests(ts_built, "drain", listen, on_line=step)


async def test_mutual_tls(ts_built: Path, server_factory: ServerFactory, tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki")
    secured = await server_factory(
        tls_cert=str(pki.server_cert), tls_key=str(pki.server_key), tls_client_ca=str(pki.ca)
    )
    plain = await server_factory()  # TLS to a plaintext port is refused naming the setting
    env = {
        "QM_TEST_TLS_CA": str(pki.ca),
        "QM_TEST_TLS_CERT": str(pki.client_cert),
        "QM_TEST_TLS_KEY": str(pki.client_key),
        "QM_TEST_TLS_OTHER_CA": str(pki.other_ca),
        "QM_TEST_TLS_ROGUE_CERT": str(pki.rogue_cert),
        "QM_TEST_TLS_ROGUE_KEY": str(pki.rogue_key),
        "QM_TEST_PLAIN_ADDRESS": plain.address,
    }
    await run_node_tests(ts_built, "tls", secured.address, env)


async def test_concurrent_adds_share_a_stream(ts_built: Path, server: RunningServer) -> None:
    await run_node_tests(ts_built, "adds", server.address)


async def test_adds_through_a_server_restart(ts_built: Path, server_factory: ServerFactory) -> None:
    # A short grace: the add stream is cut while adds are on it.
    listen = f"127.0.0.1:{free_port()}"
    first = await server_factory(listen=listen, shutdown_grace_ms=300)

    async def step(line: str) -> None:
        if line.strip() == "QM-STEP stop-server":
            await first.stop()
            await server_factory(listen=listen, shutdown_grace_ms=300)

    await run_node_tests(ts_built, "adds-restart", listen, on_line=step)


async def test_job_events(ts_built: Path, server: RunningServer) -> None:
    await run_node_tests(ts_built, "events", server.address)


async def test_job_events_watcher_that_falls_behind(ts_built: Path, server_factory: ServerFactory) -> None:
    small = await server_factory(events_buffer=20)
    await run_node_tests(ts_built, "events-buffer", small.address)


async def test_job_filters_and_bulk_actions(ts_built: Path, server: RunningServer) -> None:
    await run_node_tests(ts_built, "filters", server.address)


async def test_redrive_dead_letters(ts_built: Path, server: RunningServer) -> None:
    await run_node_tests(ts_built, "redrive", server.address)


async def test_pull_workers(ts_built: Path, server: RunningServer) -> None:
    await run_node_tests(ts_built, "pull", server.address)
