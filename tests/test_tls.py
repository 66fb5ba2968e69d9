"""TLS and mutual TLS on the gRPC port (client, worker, CLI, HTTP API behind it), and TLS to Redis, with
certificates made by the test (tests/security_kit.py)."""

from __future__ import annotations

import asyncio
import base64
import os
import signal
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import grpc
import pytest

from queue_manager import JobContext, JobState, QueueManager
from queue_manager.credentials import tls_credentials
from queue_manager_server.app import App, StartupError, print_banner
from queue_manager_server.config import Settings
from queue_manager_server.security import SecurityError, server_credentials
from tests.conftest import ServerFactory
from tests.security_kit import Pki, make_pki, tls_proxy, token_file

WAIT = 20.0


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    for key in list(os.environ):
        if key.startswith(("QM_TLS", "QM_TOKEN")):
            monkeypatch.delenv(key)
    yield monkeypatch


async def _refused(client: QueueManager) -> grpc.StatusCode:
    return (await _refusal(client))[0]


async def _refusal(client: QueueManager) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(Exception) as caught:
        await client.list_queues()
    code = getattr(caught.value, "code", None)
    return (code if isinstance(code, grpc.StatusCode) else grpc.StatusCode.UNKNOWN), str(caught.value)


async def test_tls_port_needs_the_right_ca(
    server_factory: ServerFactory, pki: Pki, clean_env: pytest.MonkeyPatch
) -> None:
    server = await server_factory(tls_cert=str(pki.server_cert), tls_key=str(pki.server_key))
    plain = QueueManager(server.address, timeout=5)
    wrong = QueueManager(server.address, timeout=5, credentials=tls_credentials(str(pki.other_ca)))
    named = QueueManager(
        server.address,
        timeout=5,
        credentials=tls_credentials(str(pki.ca)),
        channel_options=[("grpc.ssl_target_name_override", "elsewhere.example")],
    )
    # grpc-core's own words name no setting; each refusal says which one to change.
    try:
        code, message = await _refusal(plain)
        assert code == grpc.StatusCode.UNAVAILABLE and "give the CA bundle that signed" in message
        code, message = await _refusal(wrong)
        assert (
            code == grpc.StatusCode.UNAVAILABLE and "not signed by the CA bundle given (QM_TLS_CA" in message
        )
        assert "set QM_TLS_SERVER_NAME" in (await _refusal(named))[1]
    finally:
        await plain.shutdown()
        await wrong.shutdown()
        await named.shutdown()
    plaintext = await server_factory()
    client = QueueManager(plaintext.address, timeout=5, credentials=tls_credentials(str(pki.ca)))
    try:
        assert "does not use TLS on this port" in (await _refusal(client))[1]
    finally:
        await client.shutdown()
    # A file of the wrong kind is named at once, not at the first call as a failed "security handshaker".
    with pytest.raises(ValueError, match=r"CA bundle \(QM_TLS_CA\) .* holds no PEM certificate"):
        tls_credentials(str(pki.server_key))
    with pytest.raises(ValueError, match=r"client key \(QM_TLS_KEY\) .* holds no PEM private key"):
        tls_credentials(str(pki.ca), str(pki.client_cert), str(pki.client_cert))
    clean_env.setenv("QM_TLS_CA", str(pki.ca))  # the environment is enough
    async with QueueManager(server.address, timeout=5) as client:
        await client.register_queue("tls")
        assert [q.name for q in await client.list_queues()] == ["dead-letter-queue", "tls"]


def test_a_key_that_is_not_the_certificates_is_named(pki: Pki) -> None:
    # grpc-core then only failed to bind, and the start said "cannot listen on …: address in use or invalid".
    with pytest.raises(SecurityError, match=r"--tls-key: .* is not the private key of the certificate"):
        server_credentials(Settings(tls_cert=str(pki.server_cert), tls_key=str(pki.client_key)))
    assert server_credentials(Settings(tls_cert=str(pki.server_cert), tls_key=str(pki.server_key)))


async def test_mutual_tls_needs_a_client_certificate_of_the_client_ca(
    server_factory: ServerFactory,
    pki: Pki,
    clean_env: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    tokens = token_file(tmp_path / "t.toml", {"w": ("admin", ["*"])})
    server = await server_factory(
        tls_cert=str(pki.server_cert),
        tls_key=str(pki.server_key),
        tls_client_ca=str(pki.ca),
        auth_file=str(tmp_path / "t.toml"),
    )
    print_banner(server.app)
    assert "export QM_TLS_CERT=" in capsys.readouterr().err
    for cert, key in ((None, None), (pki.rogue_cert, pki.rogue_key)):
        creds = tls_credentials(str(pki.ca), str(cert) if cert else None, str(key) if key else None)
        client = QueueManager(server.address, timeout=5, credentials=creds, token=tokens["w"])
        try:
            code, message = await _refusal(client)
            assert code == grpc.StatusCode.UNAVAILABLE
            if cert is None:
                assert "a client certificate its CA signed (QM_TLS_CERT and QM_TLS_KEY)" in message
        finally:
            await client.shutdown()
    clean_env.setenv("QM_TLS_CA", str(pki.ca))
    clean_env.setenv("QM_TLS_CERT", str(pki.client_cert))
    clean_env.setenv("QM_TLS_KEY", str(pki.client_key))
    client = QueueManager(server.address, timeout=5)
    try:
        assert await _refused(client) == grpc.StatusCode.UNAUTHENTICATED  # TLS is not a token
    finally:
        await client.shutdown()
    clean_env.setenv("QM_TOKEN", tokens["w"])
    async with QueueManager(server.address, timeout=5, concurrency=2) as client:
        await client.register_queue("mtls")
        done = asyncio.Event()

        @client.processor("mtls")
        async def work(job: JobContext) -> str:
            done.set()
            return "over mTLS"

        job_id = (await client.add_job("mtls", "j")).id
        worker = await client.start_workers(handle_signals=False)
        async with asyncio.timeout(WAIT):
            await done.wait()
            job = await client.wait_for_job("mtls", job_id)
        assert (job.state, job.result) == (JobState.COMPLETED, "over mTLS")
        await worker.shutdown()


async def test_cli_and_http_api_behind_tls(
    server_factory: ServerFactory,
    pki: Pki,
    clean_env: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    tokens = token_file(tmp_path / "t.toml", {"admin": ("admin", ["*"])})
    (tmp_path / "token").write_text(tokens["admin"] + "\n")
    server = await server_factory(
        tls_cert=str(pki.server_cert),
        tls_key=str(pki.server_key),
        auth_file=str(tmp_path / "t.toml"),
        http_listen="127.0.0.1:0",
    )
    assert server.app.internal_address.startswith("unix:")
    # The banner's "Try it" commands say what a client needs here, or they would fail as written.
    print_banner(server.app)
    banner = capsys.readouterr().err
    assert "export QM_TLS_CA=" in banner and "export QM_TOKEN_FILE=" in banner
    assert "QM_TLS_CERT" not in banner and "-plaintext" not in banner
    argv = [
        sys.executable,
        "-m",
        "queue_manager.cli",
        "--server",
        server.address,
        "--tls-ca",
        str(pki.ca),
        "--token-file",
        str(tmp_path / "token"),
        "queues",
        "register",
        "cli-tls",
    ]
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    _, err = await asyncio.wait_for(proc.communicate(), WAIT)
    assert proc.returncode == 0, err.decode()
    # The HTTP API reaches the TLS port's services through the private socket, with the caller's token.
    url = f"http://{server.app.http_address}/api/v1/queues/cli-tls"
    async with aiohttp.ClientSession() as http:
        async with http.get(url) as r:
            assert (r.status, r.headers["WWW-Authenticate"]) == (401, 'Bearer realm="Queue Manager"')
        async with http.get(url, headers={"Authorization": f"Bearer {tokens['admin']}"}) as r:
            assert r.status == 200 and (await r.json())["queue"]["name"] == "cli-tls"
        basic = base64.b64encode(f"anyone:{tokens['admin']}".encode()).decode()
        async with http.get(url, headers={"Authorization": f"Basic {basic}"}) as r:
            assert r.status == 200


async def test_cli_worker_over_mutual_tls_by_flags(
    server_factory: ServerFactory, pki: Pki, clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """`qm --tls-ca --tls-cert --tls-key --token-file worker …`: the flags reach the QueueManager the worker
    module builds (it names no credentials), over mutual TLS with a token."""
    tokens = token_file(tmp_path / "t.toml", {"admin": ("admin", ["*"]), "work": ("worker", ["mtls-*"])})
    (tmp_path / "token").write_text(tokens["work"] + "\n")
    server = await server_factory(
        tls_cert=str(pki.server_cert),
        tls_key=str(pki.server_key),
        tls_client_ca=str(pki.ca),
        auth_file=str(tmp_path / "t.toml"),
    )
    (tmp_path / "mtls_worker_app.py").write_text(
        textwrap.dedent(
            """
            from queue_manager import QueueManager

            qm = QueueManager()

            @qm.processor("mtls-cli")
            async def work(job):
                return "by the CLI worker"
            """
        )
    )
    creds = tls_credentials(str(pki.ca), str(pki.client_cert), str(pki.client_key))
    client = QueueManager(server.address, timeout=5, credentials=creds, token=tokens["admin"])
    await client.register_queue("mtls-cli")
    flags = ["--tls-ca", str(pki.ca), "--tls-cert", str(pki.client_cert), "--tls-key", str(pki.client_key)]
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "queue_manager.cli",
        "--server",
        server.address,
        *flags,
        "--token-file",
        str(tmp_path / "token"),
        "worker",
        "mtls_worker_app",
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        job_id = (await client.add_job("mtls-cli", "j")).id
        async with asyncio.timeout(WAIT):
            job = await client.wait_for_job("mtls-cli", job_id)
        assert (job.state, job.result) == (JobState.COMPLETED, "by the CLI worker")
        process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(WAIT):
            _, stderr = await process.communicate()
        assert process.returncode == 0, stderr.decode()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        await client.shutdown()


async def test_redis_over_tls(redis_url: str, prefix: str, pki: Pki, tmp_path: Path) -> None:
    port = urlsplit(redis_url).port
    assert port is not None
    async with tls_proxy(pki, port, require_client_cert=True) as tls_port:
        url = f"rediss://127.0.0.1:{tls_port}/0"
        base = {"listen": "127.0.0.1:0", "redis_url": url, "key_prefix": prefix, "redis_timeout_ms": 3000}
        # Without the CA the server cannot trust Redis; without a client certificate Redis refuses it.
        for extra in ({}, {"redis_tls_ca": str(pki.ca)}):
            app = App(Settings(**base, **extra))  # type: ignore[arg-type]
            with pytest.raises(StartupError, match="cannot reach Redis"):
                await app.start()
            await app.stop()
        app = App(
            Settings(
                **base,
                redis_tls_ca=str(pki.ca),
                redis_tls_cert=str(pki.client_cert),  # type: ignore[arg-type]
                redis_tls_key=str(pki.client_key),
            )
        )
        await app.start()
        try:
            async with QueueManager(app.address, timeout=5) as client:
                await client.register_queue("over-tls")
                job_id = (await client.add_job("over-tls", "j")).id
                assert (await client.get_job("over-tls", job_id)).state == JobState.WAITING
        finally:
            await app.stop()
    with pytest.raises(StartupError, match="need a rediss:// Redis URL"):
        plain = App(Settings(listen="127.0.0.1:0", redis_url=redis_url, redis_tls_ca=str(pki.ca)))
        try:
            await plain.start()
        finally:
            await plain.stop()
