"""Server address resolution and the gRPC channel settings every client channel uses."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import grpc
import grpc.aio

__all__ = [
    "CHANNEL_OPTIONS",
    "DEFAULT_ADDRESS",
    "MAX_MESSAGE_BYTES",
    "aio_channel",
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
    """The address to use: the given one, else ``QM_SERVER``, else ``localhost:50051``."""
    return address or os.environ.get("QM_SERVER") or DEFAULT_ADDRESS


def _options(extra: Sequence[tuple[str, Any]] | None) -> list[tuple[str, Any]]:
    merged = dict(CHANNEL_OPTIONS)
    merged.update(extra or ())
    return list(merged.items())


def aio_channel(
    address: str,
    credentials: grpc.ChannelCredentials | None = None,
    options: Sequence[tuple[str, Any]] | None = None,
) -> grpc.aio.Channel:
    """An asyncio channel with the standard options (TLS when credentials are given)."""
    if credentials is not None:
        return grpc.aio.secure_channel(address, credentials, options=_options(options))
    return grpc.aio.insecure_channel(address, options=_options(options))


def sync_channel(
    address: str,
    credentials: grpc.ChannelCredentials | None = None,
    options: Sequence[tuple[str, Any]] | None = None,
) -> grpc.Channel:
    """A blocking channel with the standard options (TLS when credentials are given)."""
    if credentials is not None:
        return grpc.secure_channel(address, credentials, options=_options(options))
    return grpc.insecure_channel(address, options=_options(options))
