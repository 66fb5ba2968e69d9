"""The HTTP port's side of authentication: the same tokens as gRPC, from the same token file.

- ``/api`` forwards the request's ``Authorization`` header to the gRPC call it makes, so the gRPC
  interceptor decides (http/api.py); ``Authorization: Bearer <token>`` or HTTP Basic with the token as the
  password (any user name).
- ``/metrics`` needs a token with the ``read`` permission (viewer, producer, admin); the queue families
  show only the token's queues (http/metrics.py).
- The web dashboard (``/``) asks the browser for the token with HTTP Basic (the password field), then
  keeps a session cookie (HttpOnly, SameSite=Strict, random, held in memory only) so its websocket and
  downloads need no header. Each dashboard session process gets a token of its own, minted for the
  browser's principal and revoked when the session ends, through its environment (never its command line).
"""

from __future__ import annotations

import secrets
import time

from aiohttp import web

from queue_manager_server.auth import Authenticator, AuthError, Principal

COOKIE = "qm_session"
# A dashboard login lasts this long (the cookie is a session cookie too: closing the browser ends it).
SESSION_S = 12 * 3600
REALM = 'Basic realm="Queue Manager", charset="UTF-8"'


def unauthorized(message: str, scheme: str = "Bearer") -> web.HTTPUnauthorized:
    return web.HTTPUnauthorized(
        text=f"UNAUTHENTICATED: {message}\n",
        headers={"WWW-Authenticate": REALM if scheme == "Basic" else 'Bearer realm="Queue Manager"'},
    )


def forbidden(message: str) -> web.HTTPForbidden:
    return web.HTTPForbidden(text=f"PERMISSION_DENIED: {message}\n")


class HttpGuard:
    """Checks HTTP requests against the token file; `auth` None means the server runs without auth."""

    def __init__(self, auth: Authenticator | None) -> None:
        self.auth = auth
        self._sessions: dict[str, tuple[Principal, float]] = {}

    def principal(
        self, request: web.Request, cookie: bool = False, scheme: str = "Bearer"
    ) -> Principal | None:
        """The caller (None without auth); raises 401 when the request carries no valid credentials.

        Args:
            request: The HTTP request.
            cookie: Whether the dashboard's session cookie may stand in for the header.
            scheme: The challenge of the 401 answer (Basic makes a browser ask for the token).
        """
        if self.auth is None:
            return None
        header = request.headers.get("Authorization")
        if header is None and cookie and (found := self._session(request.cookies.get(COOKIE, ""))):
            return found
        try:
            return self.auth.from_header(header)
        except AuthError as exc:
            raise unauthorized(str(exc), scheme) from None

    def login(self, response: web.StreamResponse, principal: Principal, secure: bool) -> None:
        """Gives the browser a session cookie for this principal."""
        now = time.monotonic()
        for key, (_, expiry) in list(self._sessions.items()):
            if expiry < now:
                del self._sessions[key]
        key = secrets.token_urlsafe(32)
        self._sessions[key] = (principal, now + SESSION_S)
        response.set_cookie(COOKIE, key, httponly=True, samesite="Strict", secure=secure, path="/")

    def _session(self, key: str) -> Principal | None:
        found = self._sessions.get(key) if key else None
        if found is None or found[1] < time.monotonic():
            return None
        return found[0]


def same_origin(request: web.Request) -> bool:
    """Whether a browser request comes from a page of this server (a websocket from another site's page
    would otherwise ride on the session cookie)."""
    origin = request.headers.get("Origin")
    if origin is None:
        return True  # not a browser, or a same-origin navigation
    return origin == str(request.url.origin())
