"""The server's HTTP port: one aiohttp application on ``--http-listen`` (``QM_HTTP_LISTEN``, default
``127.0.0.1:3010``; ``off`` turns it off) beside the gRPC port.

Each area mounts its routes with a setup function listed in `ROUTES`, which receives the application
(before it starts) and the `HttpContext`: ``/metrics`` (Prometheus, http/metrics.py), ``/api``
(the JSON API, http/api.py) and ``/`` (the web dashboard, http/dashboard.py). The app starts the
port after gRPC (a route may call the server's own gRPC port) and stops it before Redis closes.
"""

from __future__ import annotations

import errno
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from queue_manager_server.auth import Authenticator
from queue_manager_server.config import Settings
from queue_manager_server.engine import Engine
from queue_manager_server.engine.metrics import MetricsReader
from queue_manager_server.grpc_metrics import GrpcMetrics
from queue_manager_server.http.api import setup as setup_api
from queue_manager_server.http.dashboard import setup as setup_dashboard
from queue_manager_server.http.metrics import setup as setup_metrics
from queue_manager_server.services.exemplars import Exemplars

# A scrape or request in progress when the server stops gets this long to finish.
SHUTDOWN_TIMEOUT_S = 2.0


@dataclass(slots=True)
class HttpContext:
    """What routes may use: the server's settings, storage and its own counters."""

    settings: Settings
    engine: Engine
    metrics: MetricsReader
    grpc_metrics: GrpcMetrics
    # The address this server's gRPC port answers on (known once it is bound).
    grpc_address: Callable[[], str]
    # The token file's authenticator; None when the server runs without authentication (http/guard.py).
    auth: Authenticator | None = None
    # The processing-time histogram's exemplars from the traced runs this server delivered.
    exemplars: Exemplars | None = None


CONTEXT = web.AppKey("context", HttpContext)

RouteSetup = Callable[[web.Application, HttpContext], None]
# Every area's routes; add yours here.
ROUTES: list[RouteSetup] = [setup_metrics, setup_api, setup_dashboard]


class HttpBindError(Exception):
    """The HTTP port cannot listen on the address; the message says why."""


def build_app(ctx: HttpContext) -> web.Application:
    """The application with every area's routes mounted."""
    app = web.Application(client_max_size=ctx.settings.max_message_bytes)
    app[CONTEXT] = ctx
    for setup in ROUTES:
        setup(app, ctx)
    return app


def split_listen(listen: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:PORT`` for IPv6) as a host and a port; raises ValueError when malformed."""
    host, sep, port = listen.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"{listen!r} is not HOST:PORT")
    return host.strip("[]"), int(port)


def check_bindable(listen: str) -> None:
    """Raises `HttpBindError` now if the address cannot be bound (so start-up fails before Valkey starts)."""
    host, port = split_listen(listen)
    try:
        for family, kind, proto, _, address in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM):
            with socket.socket(family, kind, proto) as sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as aiohttp binds it
                sock.bind(address)
    except OSError as exc:
        raise _bind_error(exc) from None


def _bind_error(exc: OSError) -> HttpBindError:
    reason = exc.strerror or str(exc)
    if exc.errno == errno.EADDRINUSE:
        reason = "the address is in use (is another server running there?)"
    return HttpBindError(
        f"{reason}; choose another with --http-listen HOST:PORT (QM_HTTP_LISTEN), or turn the HTTP "
        "port off with --http-listen off"
    )


log = logging.getLogger("queue_manager_server.http")


class _UnreadableRequests(logging.Filter):
    """Turns aiohttp's error-with-traceback for a request it cannot parse into one warning line.

    Such a request is the client's mistake, not the server's: most often a gRPC client (HTTP/2) dialled
    the HTTP port instead of the gRPC one. aiohttp answers it 400 and logs the parser's traceback at error
    level; here the line says what came in and where gRPC is served. Errors of our own routes still log
    their tracebacks.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if record.levelno < logging.ERROR or not isinstance(error, HttpProcessingError):
            return True
        # "Error handling request from %s": its one argument is the peer.
        peer = record.args[0] if isinstance(record.args, tuple) and record.args else "?"
        problem = " ".join(str(error).split())[:200]
        if "Pause on PRI/Upgrade" in problem:  # aiohttp's words for HTTP/2's "PRI * HTTP/2.0" preface
            problem = "an HTTP/2 connection preface: a gRPC client? gRPC is served on --listen (QM_LISTEN)"
        log.warning("unreadable request on the HTTP port", extra={"peer": str(peer), "problem": problem})
        return False


# aiohttp's request handlers log here (not to aiohttp.server, which other applications in a process share).
_HANDLER_LOG = logging.getLogger("queue_manager_server.http.requests")
_HANDLER_LOG.addFilter(_UnreadableRequests())


class HttpServer:
    """Serves an application on one address; `port` is the bound port (useful with port 0)."""

    def __init__(self, app: web.Application, listen: str) -> None:
        self.app = app
        self.listen = listen
        self.port = 0
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        host, port = split_listen(self.listen)
        # handler_cancellation: a caller that hangs up cancels its handler, and with it the handler's loopback
        # gRPC call, as a gRPC caller's cancel does: a long poll (FetchJobs) whose caller left then claims
        # nothing for nobody, and an AddBulk stream cut before its commit adds nothing.
        runner = web.AppRunner(
            self.app,
            access_log=None,
            shutdown_timeout=SHUTDOWN_TIMEOUT_S,
            logger=_HANDLER_LOG,
            handler_cancellation=True,
        )
        await runner.setup()
        try:
            await web.TCPSite(runner, host, port).start()
        except OSError as exc:
            await runner.cleanup()
            raise _bind_error(exc) from None
        self._runner = runner
        self.port = int(runner.addresses[0][1])

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
