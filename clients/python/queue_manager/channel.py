"""Server address resolution and the gRPC channel settings every client channel uses."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import grpc
import grpc.aio

from queue_manager._grpc_io import hint_if_late
from queue_manager.credentials import aio_token_interceptors, resolve_security, sync_with_token

__all__ = [
    "CHANNEL_OPTIONS",
    "DEFAULT_ADDRESS",
    "MAX_MESSAGE_BYTES",
    "aio_channel",
    "check_address",
    "resolve_address",
    "sync_channel",
]

DEFAULT_ADDRESS = "localhost:50051"
MAX_MESSAGE_BYTES = 16 * 1024 * 1024

# Keepalive pings every 20 s keep idle worker streams open through proxies and NATs and detect a dead
# server within ~30 s; the server must permit pings without calls at this rate (it does: see the server app).
CHANNEL_OPTIONS: tuple[tuple[str, Any], ...] = (
    ("grpc.keepalive_time_ms", 20_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
)


def resolve_address(address: str | None) -> str:
    """The address to use: the given one, else ``QM_SERVER``, else ``localhost:50051``; checked by
    `check_address` (raises ValueError or TypeError naming the parameter or the variable)."""
    if address is not None and address != "":
        return check_address(address, "address")
    env = os.environ.get("QM_SERVER")
    return check_address(env, "QM_SERVER") if env else DEFAULT_ADDRESS


# gRPC targets that name no TCP port; passed on as they are.
_NO_PORT_SCHEMES = ("unix:", "unix-abstract:", "vsock:")


def check_address(address: str, what: str = "address") -> str:
    """A gRPC target: ``host:port`` (``[v6]:port`` for IPv6), or ``dns:``, ``ipv4:``, ``ipv6:``, ``unix:``
    targets. A port given must be 1 to 65535: gRPC itself reads 99999 as 34463 and connects there."""
    if not isinstance(address, str):
        raise TypeError(f"{what} must be a str such as 'localhost:50051', not {type(address).__name__}")
    if not address.strip() or not address.isprintable() or address != address.strip():
        raise ValueError(f"{what} must be host:port such as 'localhost:50051', got {address!r:.100}")
    lower = address.lower()
    if lower.startswith(_NO_PORT_SCHEMES):
        return address
    if lower.startswith(("ipv4:", "ipv6:")):
        parts = address.split(":", 1)[1].split(",")
    elif lower.startswith("dns:"):
        parts = [address[4:].rsplit("/", 1)[-1]]  # dns:host:port, dns:///host:port, dns://server/host:port
    else:
        parts = [address]
    for part in parts:
        if part.startswith("[") and "]" not in part:
            raise ValueError(
                f"{what} {address!r:.100}: write an IPv6 address as [address]:port ('[::1]:50051')"
            )
        port = _port(part)
        if port is not None and not (port.isascii() and port.isdigit() and 1 <= int(port) <= 65535):
            raise ValueError(
                f"{what} {address!r:.100}: the port must be a number from 1 to 65535, got {port!r:.20}"
            )
    return address


def _port(host_port: str) -> str | None:
    """The port of ``host:port`` or ``[v6]:port``; None when there is none (gRPC then uses 443)."""
    if host_port.startswith("["):
        rest = host_port.partition("]")[2]
        if rest and not rest.startswith(":"):
            return rest  # "[::1]x": reported as a bad port
        return rest[1:] if rest else None
    if host_port.count(":") != 1:
        return None  # no port, or a bare IPv6 address
    return host_port.rsplit(":", 1)[1]


def _options(extra: Sequence[tuple[str, Any]] | None) -> list[tuple[str, Any]]:
    merged = dict(CHANNEL_OPTIONS)
    merged.update(extra or ())
    # grpc-core waits for a ping's answer grpc.http2.ping_timeout_ms (60 s by default), whatever
    # keepalive_timeout_ms says: without this, a connection gone silent took 20 + 60 s to be noticed.
    merged.setdefault("grpc.http2.ping_timeout_ms", merged["grpc.keepalive_timeout_ms"])
    return list(merged.items())


def aio_channel(
    address: str,
    credentials: grpc.ChannelCredentials | None = None,
    options: Sequence[tuple[str, Any]] | None = None,
    token: str | None = None,
) -> grpc.aio.Channel:
    """An asyncio channel with the standard options: TLS with the given credentials, else those QM_TLS_*
    name (plaintext when none); every call carries the token, else QM_TOKEN's (queue_manager.credentials)."""
    hint_if_late()
    sec = resolve_security(credentials, token)
    interceptors = aio_token_interceptors(sec.token) if sec.token else None
    merged = _options([*sec.options, *(options or ())])
    if sec.credentials is not None:
        return grpc.aio.secure_channel(address, sec.credentials, options=merged, interceptors=interceptors)
    return grpc.aio.insecure_channel(address, options=merged, interceptors=interceptors)


def sync_channel(
    address: str,
    credentials: grpc.ChannelCredentials | None = None,
    options: Sequence[tuple[str, Any]] | None = None,
    token: str | None = None,
) -> grpc.Channel:
    """A blocking channel, with TLS and the token as `aio_channel` resolves them."""
    hint_if_late()
    sec = resolve_security(credentials, token)
    merged = _options([*sec.options, *(options or ())])
    if sec.credentials is not None:
        channel = grpc.secure_channel(address, sec.credentials, options=merged)
    else:
        channel = grpc.insecure_channel(address, options=merged)
    return sync_with_token(channel, sec.token) if sec.token else channel
