"""TLS and bearer tokens for client channels, given as arguments or taken from the environment.

Environment (used when the client is given none; the ``qm`` flags of the same names set them):

- ``QM_TOKEN``: the bearer token sent as ``authorization: Bearer <token>`` on every call;
  ``QM_TOKEN_FILE``: a file holding it (keeps it out of the environment of child processes).
- ``QM_TLS_CA``: PEM bundle of the CA that signed the server's certificate (turns TLS on);
  ``QM_TLS=1``: TLS with the system's CA bundle instead.
- ``QM_TLS_CERT`` and ``QM_TLS_KEY``: this client's certificate and key, for servers that require mutual TLS.
- ``QM_TLS_SERVER_NAME``: the name to expect in the server's certificate when it differs from the host
  dialled (an IP address, a tunnel).

The token travels in call metadata, added by an interceptor on each channel (gRPC's own call credentials
refuse plaintext channels, and a loopback or unix-socket server may run without TLS).
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import grpc.aio

__all__ = ["ClientSecurity", "resolve_security", "tls_credentials"]

_TRUE = {"1", "true", "yes", "on"}


def _read(path: str, what: str) -> bytes:
    try:
        return Path(path).expanduser().read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read the {what} {path}: {exc.strerror or exc}") from None


def _pem(path: str, what: str, kind: str) -> bytes:
    # grpc-core takes any bytes here and fails later, at the first call, with "Failed to create security
    # handshaker" and its own log lines: a file of the wrong kind (a key given as the CA) is named now.
    # The kind ends every header of it: BEGIN CERTIFICATE, BEGIN TRUSTED CERTIFICATE, BEGIN EC PRIVATE KEY…
    data = _read(path, what)
    if b"-----BEGIN " not in data or f"{kind}-----".encode() not in data:
        raise ValueError(f"the {what} {path} holds no PEM {kind.lower()} (-----BEGIN … {kind}-----)")
    return data


def tls_credentials(
    ca: str | None = None, cert: str | None = None, key: str | None = None
) -> grpc.ChannelCredentials:
    """TLS channel credentials from PEM files.

    Args:
        ca: CA bundle that signed the server's certificate; None for the system's bundle.
        cert: This client's certificate chain (mutual TLS); needs `key`.
        key: This client's private key.
    """
    if bool(cert) != bool(key):
        raise ValueError("a client certificate and its key go together (QM_TLS_CERT and QM_TLS_KEY)")
    return grpc.ssl_channel_credentials(
        root_certificates=_pem(ca, "CA bundle (QM_TLS_CA)", "CERTIFICATE") if ca else None,
        private_key=_pem(key, "client key (QM_TLS_KEY)", "PRIVATE KEY") if key else None,
        certificate_chain=_pem(cert, "client certificate (QM_TLS_CERT)", "CERTIFICATE") if cert else None,
    )


@dataclass(slots=True)
class ClientSecurity:
    """What a channel needs: TLS credentials (None: plaintext), a token (None: none), channel options."""

    credentials: grpc.ChannelCredentials | None = None
    token: str | None = None
    options: list[tuple[str, Any]] = field(default_factory=list)


def resolve_security(
    credentials: grpc.ChannelCredentials | None = None,
    token: str | None = None,
    env: Mapping[str, str] | None = None,
) -> ClientSecurity:
    """The given credentials and token, else those the environment names (see the module docstring)."""
    env = os.environ if env is None else env
    if token is None:
        token = env.get("QM_TOKEN") or None
        if token is None and env.get("QM_TOKEN_FILE"):
            token = _read(env["QM_TOKEN_FILE"], "token file (QM_TOKEN_FILE)").decode().strip() or None
    if token is not None and (not token.isprintable() or " " in token):
        raise ValueError("the token must be one printable word (check QM_TOKEN / QM_TOKEN_FILE)")
    options: list[tuple[str, Any]] = []
    if credentials is None:
        ca, cert, key = env.get("QM_TLS_CA"), env.get("QM_TLS_CERT"), env.get("QM_TLS_KEY")
        if ca or cert or env.get("QM_TLS", "").strip().lower() in _TRUE:
            credentials = tls_credentials(ca or None, cert or None, key or None)
    if credentials is not None and env.get("QM_TLS_SERVER_NAME"):
        options.append(("grpc.ssl_target_name_override", env["QM_TLS_SERVER_NAME"]))
    return ClientSecurity(credentials, token, options)


# ---- the token in every call's metadata ------------------------------------------------------------


def _with_token(details: grpc.aio.ClientCallDetails, header: str) -> grpc.aio.ClientCallDetails:
    metadata = grpc.aio.Metadata()
    for key, value in details.metadata or ():
        if key != "authorization":
            metadata.add(key, value)
    metadata.add("authorization", header)
    return details._replace(metadata=metadata)


class _Token:
    """Adds the bearer token to a call; one subclass per RPC shape, since grpc.aio files each interceptor
    under one shape only (grpc calls each shape's method positionally, so one body serves all four)."""

    def __init__(self, header: str) -> None:
        self.header = header

    async def _forward(
        self, continuation: Callable[..., Awaitable[Any]], details: grpc.aio.ClientCallDetails, request: Any
    ) -> Any:
        return await continuation(_with_token(details, self.header), request)


class _UnaryUnary(_Token, grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    intercept_unary_unary = _Token._forward


class _UnaryStream(_Token, grpc.aio.UnaryStreamClientInterceptor):  # type: ignore[misc]
    intercept_unary_stream = _Token._forward


class _StreamUnary(_Token, grpc.aio.StreamUnaryClientInterceptor):  # type: ignore[misc]
    intercept_stream_unary = _Token._forward


class _StreamStream(_Token, grpc.aio.StreamStreamClientInterceptor):  # type: ignore[misc]
    intercept_stream_stream = _Token._forward


def aio_token_interceptors(token: str) -> list[grpc.aio.ClientInterceptor]:
    """One interceptor per RPC shape (grpc.aio files each interceptor under one shape only)."""
    header = f"Bearer {token}"
    return [_UnaryUnary(header), _UnaryStream(header), _StreamUnary(header), _StreamStream(header)]


class _SyncToken(
    grpc.UnaryUnaryClientInterceptor,  # type: ignore[misc]
    grpc.UnaryStreamClientInterceptor,  # type: ignore[misc]
    grpc.StreamUnaryClientInterceptor,  # type: ignore[misc]
    grpc.StreamStreamClientInterceptor,  # type: ignore[misc]
):
    def __init__(self, token: str) -> None:
        self.header = ("authorization", f"Bearer {token}")

    def _details(self, details: Any) -> Any:
        metadata = [(k, v) for k, v in (details.metadata or ()) if k != "authorization"]
        return _SyncDetails(
            details.method,
            details.timeout,
            [*metadata, self.header],
            details.credentials,
            getattr(details, "wait_for_ready", None),
            getattr(details, "compression", None),
        )

    def intercept_unary_unary(self, continuation: Callable[..., Any], details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)

    def intercept_unary_stream(self, continuation: Callable[..., Any], details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)

    def intercept_stream_unary(self, continuation: Callable[..., Any], details: Any, requests: Any) -> Any:
        return continuation(self._details(details), requests)

    def intercept_stream_stream(self, continuation: Callable[..., Any], details: Any, requests: Any) -> Any:
        return continuation(self._details(details), requests)


class _SyncDetails(grpc.ClientCallDetails):  # type: ignore[misc]
    def __init__(
        self,
        method: str,
        timeout: float | None,
        metadata: Any,
        credentials: Any,
        wait_for_ready: Any,
        compression: Any,
    ) -> None:
        self.method = method
        self.timeout = timeout
        self.metadata = metadata
        self.credentials = credentials
        self.wait_for_ready = wait_for_ready
        self.compression = compression


def sync_with_token(channel: grpc.Channel, token: str) -> grpc.Channel:
    """A blocking channel whose every call carries the token."""
    return grpc.intercept_channel(channel, _SyncToken(token))
