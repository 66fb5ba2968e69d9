"""The server's security settings: their flags, the start-up checks, TLS credentials and Redis TLS.

Rules enforced before anything starts (each a one-line error naming the flag):
- A listen address (gRPC or HTTP) that is not loopback needs ``--auth-file``, unless ``--insecure`` says
  that an open port is meant (a trusted network, a proxy that authenticates). Without TLS the token then
  crosses the network in clear: a warning says so (always for a non-loopback HTTP port: it has no TLS).
- ``--tls-cert`` and ``--tls-key`` go together; ``--tls-client-ca`` (mutual TLS) needs them.
- ``--redis-tls-*`` need a ``rediss://`` URL (with Sentinel: ``--redis-sentinel-tls``).

docs/security.md is the user's version.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import grpc

from queue_manager_server.auth import Authenticator, AuthFileError

if TYPE_CHECKING:
    from queue_manager_server.config import Settings

log = logging.getLogger("queue_manager_server.security")

# Environment values that turn a flag on.
TRUE = {"1", "true", "yes", "on"}


class SecurityError(Exception):
    """A security setting is wrong or missing; the message names the flag."""


def add_arguments(
    p: argparse.ArgumentParser,
    e: Callable[[str, object], str],
    ei: Callable[[str, int], int],
    d: Settings,
) -> None:
    """The security and limit flags of ``qm serve`` (defaults from ``QM_*``)."""
    p.add_argument(
        "--auth-file",
        default=e("QM_AUTH_FILE", d.auth_file),
        help="token file (TOML or JSON): bearer tokens by SHA-256 with roles and queue patterns; "
        "unset: no authentication (docs/security.md) [QM_AUTH_FILE]",
    )
    p.add_argument(
        "--insecure",
        action="store_true",
        default=e("QM_INSECURE", "").strip().lower() in TRUE,
        help="allow listening on a non-loopback address without --auth-file [QM_INSECURE]",
    )
    for flag, env, what in (
        ("--tls-cert", "QM_SERVER_TLS_CERT", "PEM certificate chain of the gRPC port (turns TLS on)"),
        ("--tls-key", "QM_SERVER_TLS_KEY", "PEM private key of --tls-cert"),
        (
            "--tls-client-ca",
            "QM_SERVER_TLS_CLIENT_CA",
            "PEM CA bundle: clients must present a certificate it signed (mutual TLS)",
        ),
        ("--redis-tls-ca", "QM_REDIS_TLS_CA", "PEM CA bundle that signed Redis's certificate (rediss://)"),
        ("--redis-tls-cert", "QM_REDIS_TLS_CERT", "PEM client certificate for Redis (rediss://)"),
        ("--redis-tls-key", "QM_REDIS_TLS_KEY", "PEM private key of --redis-tls-cert"),
    ):
        p.add_argument(flag, default=e(env, ""), help=f"{what} [{env}]")
    for flag, env, value, what in (
        ("--max-bulk-bytes", "QM_MAX_BULK_BYTES", d.max_bulk_bytes, "largest AddBulk stream, in bytes"),
        (
            "--max-concurrent-rpcs",
            "QM_MAX_CONCURRENT_RPCS",
            d.max_concurrent_rpcs,
            "calls served at once, worker streams aside; more get RESOURCE_EXHAUSTED",
        ),
        (
            "--max-worker-streams",
            "QM_MAX_WORKER_STREAMS",
            d.max_worker_streams,
            "worker streams open at once; more get RESOURCE_EXHAUSTED",
        ),
        (
            "--max-streams-per-connection",
            "QM_MAX_STREAMS_PER_CONNECTION",
            d.max_streams_per_connection,
            "HTTP/2 streams one connection may open at once (more wait in the client)",
        ),
        (
            "--max-worker-credits",
            "QM_MAX_WORKER_CREDITS",
            d.max_worker_credits,
            "jobs one worker stream may hold or be owed at once (credits beyond are ignored)",
        ),
        (
            "--max-worker-buffer",
            "QM_MAX_WORKER_BUFFER",
            d.max_worker_buffer,
            "messages waiting to be sent on one worker stream; past it the stream is cut",
        ),
        (
            "--worker-stall-ms",
            "QM_WORKER_STALL_MS",
            d.worker_stall_ms,
            "a worker stream that takes no message for this long is cut and its jobs recovered",
        ),
    ):
        p.add_argument(flag, type=int, default=ei(env, value), help=f"{what} [{env}]")


def check_arguments(a: argparse.Namespace, error: Callable[[str], Any]) -> None:
    for name in (
        "max_bulk_bytes",
        "max_concurrent_rpcs",
        "max_worker_streams",
        "max_streams_per_connection",
        "max_worker_credits",
        "max_worker_buffer",
        "worker_stall_ms",
    ):
        if getattr(a, name) <= 0:
            error(f"--{name.replace('_', '-')} must be positive")


def values(a: argparse.Namespace) -> dict[str, Any]:
    """The Settings fields of the parsed security flags."""
    names = (
        "auth_file",
        "insecure",
        "tls_cert",
        "tls_key",
        "tls_client_ca",
        "redis_tls_ca",
        "redis_tls_cert",
        "redis_tls_key",
        "max_bulk_bytes",
        "max_concurrent_rpcs",
        "max_worker_streams",
        "max_streams_per_connection",
        "max_worker_credits",
        "max_worker_buffer",
        "worker_stall_ms",
    )
    return {n: getattr(a, n) for n in names}


# ---- start-up checks ------------------------------------------------------------------------------


def is_loopback(listen: str) -> bool:
    """Whether a HOST:PORT (or unix: path) can only be reached from this machine."""
    if listen.startswith(("unix:", "unix-abstract:")):
        return True
    host = listen.rpartition(":")[0].strip("[]")
    if host in ("", "*", "0.0.0.0", "::"):
        return False
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        found = {str(info[4][0]) for info in socket.getaddrinfo(host, None)}
    except OSError:
        return False  # an unresolvable name fails at bind time with its own message
    return bool(found) and all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in found)


@dataclass
class Prepared:
    """What the checks produced: the authenticator (None: no auth) and the gRPC port's credentials."""

    auth: Authenticator | None
    credentials: grpc.ServerCredentials | None
    mutual: bool


def prepare(s: Settings) -> Prepared:
    """Checks the security settings and loads the token file and certificates; raises `SecurityError`."""
    auth = None
    if s.auth_file:
        try:
            auth = Authenticator(Path(s.auth_file))
        except AuthFileError as exc:
            raise SecurityError(f"--auth-file (QM_AUTH_FILE): {exc}") from None
    for flag, address in (("--listen", s.listen), ("--http-listen", s.http_listen)):
        if address and not is_loopback(address) and auth is None and not s.insecure:
            raise SecurityError(
                f"{flag} {address} is reachable from other machines and no --auth-file (QM_AUTH_FILE) is "
                "set: add a token file, listen on 127.0.0.1, or pass --insecure (QM_INSECURE=1) if an open "
                "port is really meant"
            )
    credentials = server_credentials(s)
    if auth is not None and credentials is None and not is_loopback(s.listen):
        log.warning(
            "tokens cross the network in clear text: set --tls-cert and --tls-key "
            "(QM_SERVER_TLS_CERT, QM_SERVER_TLS_KEY)",
            extra={"listen": s.listen},
        )
    if auth is not None and s.http_listen and not is_loopback(s.http_listen):
        # The HTTP port speaks plain HTTP only; its Authorization headers are tokens too.
        log.warning(
            "the HTTP port has no TLS: tokens sent to /api, /metrics and the dashboard cross the network in "
            "clear text; put it behind a TLS-terminating proxy or keep --http-listen on 127.0.0.1",
            extra={"http_listen": s.http_listen},
        )
    redis_tls_kwargs(s)  # checks the Redis TLS flags now, before anything starts
    return Prepared(auth, credentials, bool(s.tls_client_ca))


def _read(path: str, flag: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise SecurityError(f"{flag}: cannot read {path}: {exc.strerror or exc}") from None


def server_credentials(s: Settings) -> grpc.ServerCredentials | None:
    """TLS credentials of the gRPC port (client certificates required with --tls-client-ca)."""
    if not (s.tls_cert or s.tls_key or s.tls_client_ca):
        return None
    if not (s.tls_cert and s.tls_key):
        raise SecurityError(
            "--tls-cert and --tls-key (QM_SERVER_TLS_CERT, QM_SERVER_TLS_KEY) must be given together"
        )
    chain, key = _read(s.tls_cert, "--tls-cert"), _read(s.tls_key, "--tls-key")
    for data, flag, marker in ((chain, "--tls-cert", b"CERTIFICATE"), (key, "--tls-key", b"PRIVATE KEY")):
        if b"-----BEGIN " not in data or marker not in data:
            raise SecurityError(f"{flag}: not a PEM file with a {marker.decode()}")
    _check_pair(s.tls_cert, s.tls_key)
    ca = _read(s.tls_client_ca, "--tls-client-ca") if s.tls_client_ca else None
    if ca is not None and b"CERTIFICATE" not in ca:
        raise SecurityError("--tls-client-ca: not a PEM file with a CERTIFICATE")
    return grpc.ssl_server_credentials(
        [(key, chain)], root_certificates=ca, require_client_auth=ca is not None
    )


def _check_pair(cert: str, key: str) -> None:
    # grpc-core only fails to bind with a key that is not the certificate's, and the start then said "address
    # in use or invalid"; OpenSSL, as Python loads it, names the mismatch (or a key it cannot read).
    try:
        # No password: gRPC takes no encrypted key, and OpenSSL would otherwise ask for one at the terminal.
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(cert, key, password=lambda: b"")
    except (ssl.SSLError, OSError) as exc:
        mismatch = "KEY_VALUES_MISMATCH" in str(exc)
        why = (
            "is not the private key of the certificate in --tls-cert"
            if mismatch
            else f"cannot be loaded with --tls-cert ({exc}); give its private key in PEM, unencrypted"
        )
        raise SecurityError(f"--tls-key: {key} {why}") from None


def redis_tls_kwargs(s: Settings) -> dict[str, Any]:
    """Connection-pool arguments for a ``rediss://`` URL (or Sentinel's TLS) from the --redis-tls-* flags."""
    given = {
        "ssl_ca_certs": s.redis_tls_ca,
        "ssl_certfile": s.redis_tls_cert,
        "ssl_keyfile": s.redis_tls_key,
    }
    given = {k: v for k, v in given.items() if v}
    if not given:
        return {}
    tls_url = bool(s.redis_url) and urlsplit(s.redis_url or "").scheme == "rediss"
    if not tls_url and not (s.redis_sentinel and s.redis_sentinel_tls):
        raise SecurityError(
            "--redis-tls-ca/--redis-tls-cert/--redis-tls-key (QM_REDIS_TLS_*) need a rediss:// Redis URL "
            "(with --redis-sentinel: --redis-sentinel-tls)"
        )
    if bool(s.redis_tls_cert) != bool(s.redis_tls_key):
        raise SecurityError("--redis-tls-cert and --redis-tls-key must be given together")
    for flag, path in (
        ("--redis-tls-ca", s.redis_tls_ca),
        ("--redis-tls-cert", s.redis_tls_cert),
        ("--redis-tls-key", s.redis_tls_key),
    ):
        if path:
            _read(path, flag)
    return {**given, "ssl_cert_reqs": "required"}


# ---- Redis least privilege ----------------------------------------------------------------------------

# Every command the server sends, from Python and from inside its Lua scripts (Redis checks a script's
# commands against the caller's ACL too); tests/test_redis_acl.py runs a workload touching every area as a
# user holding only these and fails on any denial. CONFIG is left out: without it the start-up checks of
# persistence and maxmemory-policy log that they cannot verify them.
REDIS_COMMANDS = (
    # connection and scripts
    "ping",
    "client|setinfo",
    "evalsha",
    "eval",
    "script|load",
    "script|exists",
    "multi",
    "exec",
    "discard",
    # pub/sub (the events channel)
    "publish",
    "subscribe",
    "unsubscribe",
    # reads and writes inside the key prefix
    "time",
    "exists",
    "del",
    "unlink",
    "get",
    "set",
    "pexpire",
    "expire",
    "pttl",
    "hget",
    "hmget",
    "hgetall",
    "hkeys",
    "hexists",
    "hscan",
    "hset",
    "hsetnx",
    "hdel",
    "hincrby",
    "zadd",
    "zrem",
    "zcard",
    "zcount",
    "zscore",
    "zrange",
    "zrevrange",
    "zrangebyscore",
    "zrangebylex",
    "zremrangebyscore",
    "zpopmin",
    "zrandmember",
    "sadd",
    "srem",
    "smembers",
    "sismember",
    "rpush",
    "lpush",
    "lpop",
    "lrange",
    "lpos",
    "lindex",
    "linsert",
    "lset",
    "llen",
    "lrem",
    "ltrim",
    "type",
    # the per-queue memory estimate (memory_estimate.lua): a key's bytes, keys of the prefix only
    "memory|usage",
)


def redis_acl(user: str, password: str, prefix: str) -> str:
    """The ``ACL SETUSER`` arguments of a least-privilege user for a server with this key prefix."""
    commands = " ".join(f"+{c}" for c in REDIS_COMMANDS)
    return f"{user} on >{password} resetkeys ~{prefix}:* resetchannels &{prefix}:* -@all {commands}"
