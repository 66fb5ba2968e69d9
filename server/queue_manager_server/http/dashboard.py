"""The web dashboard at ``/``: the Textual dashboard (``qm dash``) in a browser, on the HTTP port.

textual-serve does the work: each browser session opens a websocket, and textual-serve runs one
``qm dash --server <this server's gRPC address>`` process for it, relaying the terminal both ways. Its
`Server` class is a whole aiohttp server of its own; we reuse its handlers on our application instead, so
``/``, ``/api`` and ``/metrics`` share one port and one lifecycle:

- ``GET /`` renders textual-serve's page template, with URLs built from the request (textual-serve builds
  them from a configured public URL, which a server on port 0 or behind a proxy does not know).
- ``GET /dashboard/ws`` runs a session: textual-serve's process relay (`AppService`) and its loop over
  the browser's messages, in a handler of ours that bounds sessions to `MAX_SESSIONS` (each is a Python
  process of about 60 MB) and always reaps the process (`Session`).
- ``/dashboard/static/`` serves textual-serve's scripts, styles and fonts; ``GET /download/{key}`` is its
  download handler (its script asks for that path at the root).

On shutdown every session's websocket is closed, and each session tells its process to quit (killed if
it has not within STOP_TIMEOUT). The dashboard has its controls (pause, clean, retry…) unless the server
runs with ``QM_READ_ONLY=1``, which the session processes inherit (``qm dash --read-only``).
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import os
import shlex
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

import jinja2
from aiohttp import web
from textual_serve.app_service import AppService
from textual_serve.server import Server, to_int

from queue_manager_server.auth import Authenticator, Principal
from queue_manager_server.http.api import dial_address
from queue_manager_server.http.guard import HttpGuard, forbidden, same_origin

if TYPE_CHECKING:
    from queue_manager_server.http import HttpContext

log = logging.getLogger("queue_manager_server.http.dashboard")

# Browser sessions at once; each runs a dashboard process.
MAX_SESSIONS = 8
# How long shutdown waits for the sessions' processes to quit.
STOP_TIMEOUT = 2.0
TITLE = "Queue Manager"
WS_PATH = "/dashboard/ws"
STATIC_PATH = "/dashboard/static"


def setup(app: web.Application, ctx: HttpContext) -> None:
    """Mounts the dashboard (an entry of `queue_manager_server.http.ROUTES`)."""
    add_dashboard(app, lambda: dial_address(ctx.grpc_address()), ctx.auth)


def add_dashboard(
    app: web.Application, grpc_address: Callable[[], str], auth: Authenticator | None = None
) -> None:
    """Adds ``/`` and the dashboard's other routes to ``app``.

    Args:
        app: The HTTP server's application, not yet started.
        grpc_address: Returns the address of this server's gRPC port (known once it is bound).
        auth: The token file's authenticator; None without authentication (http/guard.py).
    """
    dashboard = WebDashboard(grpc_address, auth)
    app.router.add_get("/", dashboard.index)
    app.router.add_get(WS_PATH, dashboard.websocket)
    app.router.add_get("/download/{key}", dashboard.download)
    app.router.add_static(STATIC_PATH, dashboard.statics_path)
    app.on_shutdown.append(dashboard.stop_sessions)


def dashboard_command(grpc_address: str) -> str:
    """The shell command of one session: this interpreter's ``qm dash``, exec'd so it gets our signals."""
    argv = [sys.executable, "-m", "queue_manager.cli", "dash", "--server", grpc_address]
    return "exec " + shlex.join(argv)


class WebDashboard(Server):
    """textual-serve's `Server`, used for its handlers only (it never runs its own web server here)."""

    def __init__(self, grpc_address: Callable[[], str], auth: Authenticator | None = None) -> None:
        super().__init__(command="", title=TITLE)
        self._grpc_address = grpc_address
        self.guard = HttpGuard(auth)
        # Live sessions and their websockets; _idle is set while there are none.
        self._sessions: dict[Session, web.WebSocketResponse] = {}
        self._idle = asyncio.Event()
        self._idle.set()
        self._templates = jinja2.Environment(
            loader=jinja2.FileSystemLoader(self.templates_path), autoescape=True
        )
        self.installed = importlib.util.find_spec("queue_manager_tui") is not None

    async def index(self, request: web.Request) -> web.Response:
        principal = self.guard.principal(request, cookie=True, scheme="Basic")
        if not self.installed:
            return web.Response(
                status=503,
                text="The dashboard is not installed on this server: install the queue-manager-tui "
                "package (`make install`, or pip install -e tui/ in a checkout). /api and /metrics work "
                "without it.\n",
            )
        if len(self._sessions) >= MAX_SESSIONS:
            return _busy()
        origin = request.url.origin()
        ws_scheme = "wss" if origin.scheme == "https" else "ws"
        context = {
            "font_size": to_int(request.query.get("fontsize", "16"), 16),
            "app_websocket_url": str(origin.with_scheme(ws_scheme).with_path(WS_PATH)),
            "config": {"static": {"url": f"{origin}{STATIC_PATH}/"}},
            "application": {"name": TITLE},
        }
        html = self._templates.get_template("app_index.html").render(context)
        response = web.Response(text=html, content_type="text/html")
        if principal is not None:
            self.guard.login(response, principal, secure=origin.scheme == "https")
        return response

    async def download(self, request: web.Request) -> web.StreamResponse:
        self.guard.principal(request, cookie=True, scheme="Basic")
        return await self.handle_download(request)

    async def websocket(self, request: web.Request) -> web.StreamResponse:
        """One browser session: textual-serve's handler, with our process wrapper and session bound."""
        if not same_origin(request):
            raise forbidden("the dashboard's websocket accepts pages of this server only")
        principal = self.guard.principal(request, cookie=True, scheme="Basic")
        if len(self._sessions) >= MAX_SESSIONS:
            return _busy()
        socket = web.WebSocketResponse(heartbeat=15)
        await socket.prepare(request)

        async def close() -> None:  # the process ended the session (the user quit the dashboard)
            await socket.close()

        session = Session(
            dashboard_command(self._grpc_address()),
            write_bytes=socket.send_bytes,
            write_str=socket.send_str,
            close=close,
            download_manager=self.download_manager,
        )
        token = self._session_env(session, principal)
        self._sessions[session] = socket
        self._idle.clear()
        try:
            width = to_int(request.query.get("width", "80"), 80)
            height = to_int(request.query.get("height", "24"), 24)
            await session.start(width, height)
            await self._process_messages(socket, session)  # until the browser (or stop_sessions) closes
        finally:
            await session.stop()
            if token and self.guard.auth is not None:
                self.guard.auth.revoke(token)
            await socket.close()
            del self._sessions[session]
            if not self._sessions:
                self._idle.set()
        return socket

    def _session_env(self, session: Session, principal: Principal | None) -> str:
        """The session process's connection settings, through its environment (a command line is visible
        to every user of the machine): a token of its own for the browser's principal, no TLS files (it
        dials the server's internal address), read-only unless the principal is an admin. Returns the
        token ("" without auth)."""
        token = ""
        env = {k: "" for k in os.environ if k.startswith("QM_TLS") or k == "QM_TOKEN"}
        if principal is not None and self.guard.auth is not None:
            token = self.guard.auth.mint(principal)
            env["QM_TOKEN"] = token
            if not principal.can("admin"):
                env["QM_READ_ONLY"] = "1"
        session.extra_env = env
        return token

    async def stop_sessions(self, _app: web.Application) -> None:
        """Closes every session's websocket; each handler then stops its process (`Session.stop`)."""
        await asyncio.gather(*(socket.close() for socket in list(self._sessions.values())))
        try:
            await asyncio.wait_for(self._idle.wait(), 2 * STOP_TIMEOUT)
        except TimeoutError:
            log.warning("dashboard sessions still stopping", extra={"sessions": len(self._sessions)})


class Session(AppService):
    """textual-serve's process for one session, always reaped: textual-serve sends "quit" and reads the
    process's output to its end but never waits for the process, so its pipes would stay open; and a
    process that ignores "quit" is killed after STOP_TIMEOUT."""

    extra_env: dict[str, str] | None = None

    def _build_environment(self, width: int = 80, height: int = 24) -> dict[str, str]:
        env = super()._build_environment(width=width, height=height)
        for key, value in (self.extra_env or {}).items():
            if value:
                env[key] = value
            else:
                env.pop(key, None)
        return env

    async def stop(self) -> None:
        process = self._process
        try:
            async with asyncio.timeout(STOP_TIMEOUT):
                await super().stop()
                if process is not None:
                    await process.wait()
        except TimeoutError:
            if process is not None:
                log.warning("dashboard session did not quit; killing it", extra={"pid": process.pid})
                process.kill()
                await process.wait()


def _busy() -> web.Response:
    return web.Response(
        status=503,
        text=f"The web dashboard has {MAX_SESSIONS} sessions open, its limit; close one, or run `qm dash`.\n",
    )
