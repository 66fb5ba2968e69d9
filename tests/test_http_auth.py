"""The HTTP port with a token file: /api and /metrics take the gRPC tokens, the web dashboard asks the browser
for one (HTTP Basic), keeps a session cookie, and gives each session process a token through its
environment; the session's process then sees only what the browser's token may."""

from __future__ import annotations

import base64
import logging
import os
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from queue_manager import QueueManager
from queue_manager_server.http import dashboard
from queue_manager_server.http.guard import COOKIE
from tests.conftest import RunningServer, ServerFactory
from tests.security_kit import token_file

ENTRIES: dict[str, tuple[str | list[str], list[str]]] = {
    "admin": ("admin", ["*"]),
    "view": ("viewer", ["billing-*"]),
    "work": ("worker", ["*"]),
}


@pytest.fixture
async def web(
    server_factory: ServerFactory, tmp_path: Path
) -> AsyncIterator[tuple[RunningServer, str, dict[str, str]]]:
    tokens = token_file(tmp_path / "t.toml", ENTRIES)
    server = await server_factory(http_listen="127.0.0.1:0", auth_file=str(tmp_path / "t.toml"))
    async with QueueManager(server.address, token=tokens["admin"]) as qm:
        for name in ("billing-a", "orders"):
            await qm.register_queue(name)
    yield server, f"http://{server.app.http_address}", tokens


def basic(token: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"me:{token}".encode()).decode()}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_metrics_and_api_take_the_tokens(web: tuple[RunningServer, str, dict[str, str]]) -> None:
    _, base, tokens = web
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{base}/metrics") as r:
            assert r.status == 401
        async with http.get(f"{base}/metrics", headers=bearer(tokens["work"])) as r:
            assert r.status == 403
        async with http.get(f"{base}/metrics", headers=bearer(tokens["view"])) as r:
            text = await r.text()
            assert r.status == 200 and 'queue="billing-a"' in text and 'queue="orders"' not in text
        async with http.get(f"{base}/metrics", headers=bearer(tokens["admin"])) as r:
            assert 'queue="orders"' in await r.text()
        async with http.get(f"{base}/api/v1/queues") as r:
            assert (r.status, (await r.json())["code"]) == (401, "UNAUTHENTICATED")
        # The token is checked before the body is read: without one, a bad body is 401 too, not 400.
        async with http.post(f"{base}/api/v1/queues/billing-a/jobs", data=b"{not json") as r:
            assert (r.status, (await r.json())["code"]) == (401, "UNAUTHENTICATED")
            assert r.headers["WWW-Authenticate"].startswith("Bearer")
        async with http.post(
            f"{base}/api/v1/queues/billing-a/jobs", data=b"{not json", headers=bearer(tokens["admin"])
        ) as r:
            assert (r.status, (await r.json())["code"]) == (400, "INVALID_ARGUMENT")
        async with http.get(f"{base}/api/v1/queues", headers=basic(tokens["view"])) as r:
            assert [q["name"] for q in (await r.json())["queues"]] == ["billing-a"]
        async with http.get(f"{base}/api/v1/queues/orders", headers=bearer(tokens["view"])) as r:
            assert (r.status, (await r.json())["code"]) == (403, "PERMISSION_DENIED")
        async with http.post(
            f"{base}/api/v1/queues/billing-a/jobs",
            json={"job": {"name": "n"}},
            headers=bearer(tokens["view"]),
        ) as r:
            assert r.status == 403


async def test_http_tokens_never_reach_the_log(
    web: tuple[RunningServer, str, dict[str, str]], caplog: pytest.LogCaptureFixture
) -> None:
    _, base, tokens = web
    caplog.set_level(logging.DEBUG)
    wrong = "wrong-" + tokens["admin"]
    async with aiohttp.ClientSession() as http:
        for headers in (bearer(tokens["view"]), bearer(wrong), basic(wrong), {"Authorization": wrong}):
            for path in ("/metrics", "/api/v1/queues/orders", "/"):
                async with http.get(f"{base}{path}", headers=headers) as r:
                    await r.read()
        async with http.post(
            f"{base}/api/v1/queues/orders/jobs", json={"job": {"name": "n"}}, headers=bearer(tokens["view"])
        ) as r:
            assert r.status == 403
    assert any(r.getMessage() == "request refused" for r in caplog.records)
    logged = " ".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
    for token in tokens.values():
        assert token not in logged


async def test_dashboard_login_cookie_and_websocket(web: tuple[RunningServer, str, dict[str, str]]) -> None:
    _, base, tokens = web
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{base}/") as r:
            assert r.status == 401 and r.headers["WWW-Authenticate"].startswith('Basic realm="Queue Manager"')
        async with http.get(f"{base}/dashboard/ws") as r:
            assert r.status == 401
        async with http.get(f"{base}/", headers=basic("wrong")) as r:
            assert r.status == 401
        async with http.get(f"{base}/", headers=basic(tokens["view"])) as r:
            assert r.status == 200
            cookie = r.headers["Set-Cookie"]
        assert COOKIE in cookie and "HttpOnly" in cookie and "SameSite=Strict" in cookie
        # Another site's page cannot open a session with the cookie.
        async with http.get(f"{base}/dashboard/ws", headers={"Origin": "http://evil.example"}) as r:
            assert r.status == 403


def test_session_process_gets_its_own_token_through_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from queue_manager_server.auth import Authenticator

    tokens = token_file(tmp_path / "t.toml", ENTRIES)
    auth = Authenticator(tmp_path / "t.toml")
    monkeypatch.setenv("QM_TLS_CERT", "/server/cert.pem")  # the server's own: never the session's
    monkeypatch.setenv("QM_TOKEN", "inherited")
    web = dashboard.WebDashboard(lambda: "unix:/tmp/x/grpc.sock", auth)
    session = dashboard.Session(
        dashboard.dashboard_command("unix:/tmp/x/grpc.sock"),
        write_bytes=None,
        write_str=None,  # type: ignore[arg-type]
        close=None,
        download_manager=web.download_manager,  # type: ignore[arg-type]
    )
    viewer = auth.authenticate(tokens["view"])
    minted = web._session_env(session, viewer)
    env = session._build_environment()
    assert env["QM_TOKEN"] == minted != "inherited"
    assert "QM_TLS_CERT" not in env and env["QM_READ_ONLY"] == "1"
    assert auth.authenticate(minted) is viewer
    assert minted not in dashboard.dashboard_command("unix:/tmp/x/grpc.sock")
    auth.revoke(minted)
    with pytest.raises(Exception, match="invalid token"):
        auth.authenticate(minted)
    assert os.environ["QM_TOKEN"] == "inherited"


async def test_browser_logs_in_and_sees_its_tokens_queues(
    web: tuple[RunningServer, str, dict[str, str]],
) -> None:
    from playwright.async_api import async_playwright

    from tests.test_web_dashboard import CHROMIUM, CHROMIUM_ARGS, READ_TERMINAL, screen_text, wait_for_row

    _, base, tokens = web
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            # The browser answers the Basic challenge with the viewer's token as the password.
            context = await browser.new_context(
                http_credentials={"username": "me", "password": tokens["view"]},
                viewport={"width": 1600, "height": 900},
            )
            page = await context.new_page()
            await page.add_init_script(READ_TERMINAL)
            response = await page.goto(f"{base}/")
            assert response is not None and response.status == 200
            await wait_for_row(page, r"billing-a\s+\S+\s+0\s.*")
            assert "orders" not in await screen_text(page)  # the session's token is the viewer's
        finally:
            await browser.close()
