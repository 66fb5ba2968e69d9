"""Binding the gRPC port with one clear error, and without the gRPC core's own line on stderr.

When a bind fails, the gRPC core writes its reason (``E… add_port.cc:83] Failed to add port…``) straight to
file descriptor 2 and raises a RuntimeError that only says to set GRPC_VERBOSITY. A person starting a
second ``qm serve`` on a busy port should read one line that says what is wrong and what to do. So fd 2 is
pointed at a temporary file for the duration of the (synchronous, millisecond) call: on failure the core's
reason becomes part of our message; on success whatever was written meanwhile (a partial-bind warning, or
a line another thread logged) is copied back to stderr unchanged.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile

import grpc

# What the core says (the OS's words) and what a person should read instead.
_REASONS = {
    "Address already in use": (
        "the address is in use (is another server running there?); choose another port with --listen or "
        "QM_LISTEN"
    ),
    "Cannot assign requested address": "no network interface of this machine has that address",
    "Domain name not found": "the host name does not resolve",
    "Permission denied": "permission denied (ports below 1024 need privileges)",
}
# "Error in bind for address '[::]:50051': Address already in use" (several may be glued together; the
# EventEngine listener's words), "Unable to configure socket (bind: Address already in use (98))" (the polling
# listener's, queue_manager/_grpc_io.py), or "address lookup failed for host:port: Domain name not found".
_CORE_REASON = re.compile(
    r"(?:Error in bind for address '[^']*': |address lookup failed for \S+: |\(bind: )"
    r"([A-Za-z ]+?)(?= \(\d+\)|Error in bind|[)\n]|$)"
)


class BindError(Exception):
    """The gRPC server cannot listen on the address; the message says why."""


def add_insecure_port(server: grpc.aio.Server, address: str) -> int:
    """``server.add_insecure_port(address)``, raising `BindError` with a readable reason.

    Returns:
        The bound port.
    """
    return add_port(server, address, None)


def add_port(server: grpc.aio.Server, address: str, credentials: grpc.ServerCredentials | None) -> int:
    """``add_secure_port`` with TLS credentials, else ``add_insecure_port``; `BindError` as above.

    Returns:
        The bound port.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            if credentials is None:
                port = server.add_insecure_port(address)
            else:
                port = server.add_secure_port(address, credentials)
        except RuntimeError:
            port = 0
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        captured.seek(0)
        core_said = captured.read().decode("utf-8", "replace")
    if port:
        if core_said:
            sys.stderr.write(core_said)
            sys.stderr.flush()
        return int(port)
    raise BindError(explain(core_said))


def explain(core_said: str) -> str:
    """A person's reason for a failed bind, from the gRPC core's log line."""
    reasons = list(dict.fromkeys(m[1].strip() for m in _CORE_REASON.finditer(core_said)))
    if not reasons:
        return "address in use or invalid"
    return "; ".join(_REASONS.get(r, r[:1].lower() + r[1:]) for r in reasons)
