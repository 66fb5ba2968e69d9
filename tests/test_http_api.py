"""The HTTP JSON API (/api) against a real server: routes, the status mapping, and the docs' curl examples."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest
from aiohttp import web

from queue_manager_server.embedded import free_port
from queue_manager_server.http import api
from tests.conftest import RunningServer, ServerFactory

DOC = Path(__file__).resolve().parent.parent / "docs" / "http-api.md"


@dataclass
class Api:
    """The API of one server: its base URL and a session to call it."""

    base: str
    session: aiohttp.ClientSession

    async def call(
        self, method: str, path: str, body: Any = None, raw: bytes | None = None
    ) -> tuple[int, Any]:
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        async with self.session.request(method, self.base + path, data=data) as response:
            text = await response.text()
            assert response.content_type == "application/json", text
            return response.status, json.loads(text)


async def serve_api(grpc_address: str, max_bytes: int = 1 << 20) -> tuple[web.AppRunner, str]:
    """The API on its own aiohttp application and loopback port, in front of a gRPC address."""
    app = web.Application()
    api.add_api(app, lambda: grpc_address, max_bytes)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, f"http://127.0.0.1:{port}"


@pytest.fixture
async def web_server(server_factory: ServerFactory) -> RunningServer:
    """A real server with its HTTP port (/api, /, /metrics) on a free loopback port."""
    return await server_factory(http_listen="127.0.0.1:0")


@pytest.fixture
async def http(web_server: RunningServer) -> AsyncIterator[Api]:
    async with aiohttp.ClientSession() as session:
        yield Api(f"http://{web_server.app.http_address}", session)


async def test_queues_and_jobs_round_trip(http: Api) -> None:
    status, body = await http.call("PUT", "/api/v1/queues/mail", {"config": {"concurrency": 2}})
    assert status == 201 and body["created"] is True and body["queue"]["name"] == "mail"
    status, body = await http.call("PUT", "/api/v1/queues/mail", {})
    assert status == 200 and body["created"] is False

    new_job = {"job": {"name": "send", "data": {"json": {"to": "a@b.c"}}, "options": {"job_id": "m-1"}}}
    status, added = await http.call("POST", "/api/v1/queues/mail/jobs", new_job)
    assert status == 201 and added["created"] is True
    job = added["job"]
    assert (job["id"], job["queue_name"], job["state"]) == ("m-1", "mail", "JOB_STATE_WAITING")
    assert job["data"] == {"json": {"to": "a@b.c"}, "content_type": "application/json"}
    status, again = await http.call("POST", "/api/v1/queues/mail/jobs", {"jobName": "x"} | new_job)
    assert status == 400  # an unknown field is refused, not ignored
    status, again = await http.call("POST", "/api/v1/queues/mail/jobs", new_job)
    assert (status, again["created"], again["job"]["id"]) == (200, False, "m-1")

    status, got = await http.call("GET", "/api/v1/queues/mail/jobs/m-1")
    assert status == 200 and got["job"]["name"] == "send"
    bulk = {"jobs": [{"name": f"b{i}", "data": {"json": i}} for i in range(2500)]}
    status, added_bulk = await http.call("POST", "/api/v1/queues/mail/jobs:bulk", bulk)
    assert status == 200 and len(added_bulk["job_ids"]) == 2500 and added_bulk["created_count"] == "2500"
    status, page = await http.call("GET", "/api/v1/queues/mail/jobs?state=waiting&page_size=2")
    assert status == 200 and page["jobs"][0]["id"] == "m-1" and len(page["jobs"]) == 2
    assert page["total_size"] == "2501" and page["next_page_token"]
    status, same = await http.call("GET", "/api/v1/queues/mail/jobs?state=JOB_STATE_WAITING&pageSize=2")
    assert same["jobs"] == page["jobs"]

    status, metrics = await http.call("GET", "/api/v1/queues/mail/metrics")
    assert status == 200 and metrics["metrics"]["waiting"] == "2501"
    status, paused = await http.call("POST", "/api/v1/queues/mail:pause")
    assert status == 200 and paused["queue"]["paused"] is True
    status, resumed = await http.call("POST", "/api/v1/queues/mail:resume", {})
    assert resumed["queue"]["paused"] is False
    status, listed = await http.call("GET", "/api/v1/queues")
    assert "mail" in [q["name"] for q in listed["queues"]]
    status, every = await http.call("GET", "/api/v1/metrics?include_history=true")
    [mail] = [m for m in every["metrics"] if m["queue_name"] == "mail"]
    assert status == 200 and mail["waiting"] == "2501" and len(mail["history"]) >= 60
    status, workers = await http.call("GET", "/api/v1/workers?queue_name=mail")
    assert (status, workers) == (200, {"workers": []})

    status, cancelled = await http.call("POST", "/api/v1/queues/mail/jobs/m-1:cancel", {"reason": "test"})
    assert status == 200 and cancelled["job"]["state"] == "JOB_STATE_CANCELLED"
    status, retried = await http.call("POST", "/api/v1/queues/mail/jobs/m-1:retry")
    assert status == 200 and retried["job"]["state"] == "JOB_STATE_WAITING"
    status, error = await http.call("POST", "/api/v1/queues/mail/jobs/m-1:retry")
    assert (status, error["code"]) == (409, "FAILED_PRECONDITION")
    status, none = await http.call("POST", "/api/v1/queues/mail/jobs:retryFailed", {})
    assert (status, none) == (200, {"count": "0", "next_page_token": ""})
    status, logs = await http.call("GET", "/api/v1/queues/mail/jobs/m-1/logs")
    assert (status, logs["lines"]) == (200, [])
    status, removed = await http.call("DELETE", "/api/v1/queues/mail/jobs/m-1")
    assert (status, removed) == (200, {"previous_state": "JOB_STATE_WAITING"})
    status, cleaned = await http.call("POST", "/api/v1/queues/mail:clean", {"state": "JOB_STATE_WAITING"})
    assert (status, cleaned) == (200, {"removed": "2500"})


async def test_filters_in_the_query_string_and_bulk_actions_in_the_body(http: Api) -> None:
    await http.call("PUT", "/api/v1/queues/flt", {})
    for i, name in enumerate(["send-email", "send-sms", "report"]):
        job = {"name": name, "options": {"job_id": f"j{i}", "metadata": {"tags": ["vip"] if i else []}}}
        await http.call("POST", "/api/v1/queues/flt/jobs", {"job": job})
    status, page = await http.call("GET", "/api/v1/queues/flt/jobs?state=waiting&filter.name=send-*")
    assert status == 200 and [j["id"] for j in page["jobs"]] == ["j0", "j1"] and page["next_page_token"] == ""
    query = "state=waiting&filter.tag=vip&filter.createdAfter=2000-01-01T00:00:00Z&filter.created_before="
    status, page = await http.call("GET", f"/api/v1/queues/flt/jobs?{query}2999-01-01T00:00:00Z")
    assert status == 200 and [j["id"] for j in page["jobs"]] == ["j1", "j2"]
    status, error = await http.call("GET", "/api/v1/queues/flt/jobs?state=waiting&filter.nme=x")
    assert status == 400 and "filter.name, filter.group, filter.tag" in error["message"], error
    status, error = await http.call("GET", "/api/v1/queues/flt/jobs?state=waiting&filter.name=*x")
    assert status == 400 and "filter.name" in error["message"], error
    body = {"state": "JOB_STATE_WAITING", "filter": {"tag": "vip"}, "reason": "no longer needed"}
    status, cancelled = await http.call("POST", "/api/v1/queues/flt/jobs:cancel", body)
    assert (status, cancelled) == (200, {"count": "2", "requested_count": "0", "next_page_token": ""})
    body = {"state": "JOB_STATE_CANCELLED", "filter": {"name": "send-sms"}}
    status, removed = await http.call("POST", "/api/v1/queues/flt/jobs:remove", body)
    assert (status, removed) == (200, {"count": "1", "next_page_token": ""})
    body = {"state": "JOB_STATE_CANCELLED", "filter": {"name": "report"}, "limit": 10}
    status, retried = await http.call("POST", "/api/v1/queues/flt/jobs:retryFailed", body)
    assert (status, retried) == (200, {"count": "1", "next_page_token": ""})


async def test_bodies_take_enum_values_by_their_short_names_as_query_strings_do(http: Api) -> None:
    await http.call("PUT", "/api/v1/queues/short", {})
    job = {"name": "n", "options": {"job_id": "s1", "priority": "high"}}  # a nested enum, short and lower
    status, added = await http.call("POST", "/api/v1/queues/short/jobs", {"job": job})
    assert (status, added["job"]["priority"]) == (201, "JOB_PRIORITY_HIGH"), added
    status, cleaned = await http.call("POST", "/api/v1/queues/short:clean", {"state": "Waiting"})
    assert (status, cleaned) == (200, {"removed": "1"})
    status, error = await http.call("POST", "/api/v1/queues/short:clean", {"state": "gone"})
    assert status == 400 and error["code"] == "INVALID_ARGUMENT", error
    assert "field 'state' must be one of waiting, active, " in error["message"], error
    job = {"name": "n", "options": {"priority": "urgent"}}
    status, error = await http.call("POST", "/api/v1/queues/short/jobs", {"job": job})
    assert status == 400 and "field 'job.options.priority' must be one of critical, high" in error["message"]
    # Full names and numbers pass as before; a JSON payload's strings are never touched.
    job = {"name": "n", "options": {"priority": "JOB_PRIORITY_LOW"}, "data": {"json": {"state": "failed"}}}
    status, added = await http.call("POST", "/api/v1/queues/short/jobs", {"job": job})
    assert status == 201 and added["job"]["data"]["json"] == {"state": "failed"}, added


async def test_payloads_that_json_format_would_misread_are_refused_by_name(http: Api) -> None:
    await http.call("PUT", "/api/v1/queues/pay", {})
    cases: list[tuple[str, Any, str]] = [
        ("/api/v1/queues/pay/jobs", {"job": {"name": "x", "data": "hello"}}, "field 'job.data' must be a"),
        ("/api/v1/queues/pay/jobs", {"job": {"name": "x", "data": [1]}}, '{"json": <any JSON value>} or'),
        ("/api/v1/queues/pay/jobs", {"job": "x"}, "field 'job' must be a NewJob object"),
        ("/api/v1/queues/pay/jobs:bulk", {"jobs": [{"name": "a"}, 7]}, "field 'jobs[1]' must be a NewJob"),
        ("/api/v1/queues/pay/jobs", {"job": {"name": "x", "data": {"raw": "!!!"}}}, "'job.data.raw' must"),
        ("/api/v1/queues/pay/jobs", {"job": {"name": "x", "data": {"raw": "a b"}}}, "must be base64"),
        ("/api/v1/events", {"key": "k", "data": {"raw": "%%%"}}, "field 'data.raw' must be base64"),
    ]
    for path, body, want in cases:
        status, error = await http.call("POST", path, body)
        assert (status, error["code"]) == (400, "INVALID_ARGUMENT"), (body, error)
        assert want in error["message"], (body, error)
    status, page = await http.call("GET", "/api/v1/queues/pay/jobs?state=waiting")
    assert (status, page["jobs"]) == (200, []), page  # nothing was added, not even with empty bytes
    # Base64 as protobuf JSON takes it: standard or URL-safe, with or without its padding.
    for raw in ("aGk/Pz8=", "aGk_Pz8", ""):
        status, added = await http.call(
            "POST", "/api/v1/queues/pay/jobs", {"job": {"name": "b", "data": {"raw": raw}}}
        )
        assert status == 201, (raw, added)


async def test_whole_numbers_in_json_data_come_back_as_integers(http: Api) -> None:
    await http.call("PUT", "/api/v1/queues/num", {})
    data = {"n": 3, "f": 1.5, "list": [0, -2], "big": 2**60}
    job = {"name": "n", "data": {"json": data}, "options": {"job_id": "n1"}}
    status, added = await http.call("POST", "/api/v1/queues/num/jobs", {"job": job})
    assert status == 201, added
    status, got = await http.call("GET", "/api/v1/queues/num/jobs/n1")
    back = got["job"]["data"]["json"]
    assert (back["n"], back["f"], back["list"]) == (3, 1.5, [0, -2]), back
    assert type(back["n"]) is int and type(back["list"][1]) is int, back  # 3, not 3.0, to a Python reader
    assert type(back["big"]) is float, back  # past 2^53 a double is not an exact integer: it stays one


async def test_job_ids_with_colons_and_workflows(http: Api) -> None:
    await http.call("PUT", "/api/v1/queues/wf", {})
    job = {"job": {"name": "n", "options": {"job_id": "order:7:cancel", "delay": "60s"}}}
    status, _ = await http.call("POST", "/api/v1/queues/wf/jobs", job)
    assert status == 201
    status, got = await http.call("GET", "/api/v1/queues/wf/jobs/order:7:cancel")
    assert (status, got["job"]["state"]) == (200, "JOB_STATE_DELAYED")
    status, promoted = await http.call("POST", "/api/v1/queues/wf/jobs/order:7:cancel:promote")
    assert (status, promoted["job"]["id"], promoted["job"]["state"]) == (
        200,
        "order:7:cancel",
        "JOB_STATE_WAITING",
    )

    workflow = {
        "run_id": "run-1",
        "workflow": {"name": "etl", "steps": [{"key": "extract", "queue_name": "wf", "job_name": "extract"}]},
    }
    status, started = await http.call("POST", "/api/v1/workflows", workflow)
    assert (status, started) == (201, {"run_id": "run-1", "created": True})
    status, again = await http.call("POST", "/api/v1/workflows", workflow)
    assert (status, again["created"]) == (200, False)
    status, run = await http.call("GET", "/api/v1/workflows/run-1")
    assert status == 200 and run["run"]["state"] == "WORKFLOW_STATE_RUNNING"
    assert [s["key"] for s in run["run"]["steps"]] == ["extract"]
    status, runs = await http.call("GET", "/api/v1/workflows?page_size=10")
    assert "run-1" in [r["run_id"] for r in runs["runs"]]
    status, cancelled = await http.call("POST", "/api/v1/workflows/run-1:cancel", {"reason": "enough"})
    assert (status, cancelled["run"]["state"]) == (200, "WORKFLOW_STATE_CANCELLED")
    status, refused = await http.call("POST", "/api/v1/workflows/run-1:retry")
    assert status == 409 and "cancelled with CancelWorkflow" in str(refused), refused
    status, _ = await http.call("POST", "/api/v1/workflows/no-such-run:retry")
    assert status == 404


async def test_bad_requests_name_the_problem(http: Api) -> None:
    await http.call("PUT", "/api/v1/queues/bad", {})
    cases: list[tuple[str, str, bytes, int, str]] = [
        ("POST", "/api/v1/queues/bad/jobs", b'{"job": {"name": "x",}}', 400, "is not valid JSON: Expecting"),
        ("POST", "/api/v1/queues/bad/jobs", b"[1, 2]", 400, "must be a JSON object, not list"),
        ("POST", "/api/v1/queues/bad/jobs", b"\xff\xfe", 400, "is not UTF-8"),
        ("POST", "/api/v1/queues/bad/jobs", b'{"job": {"nmae": "x"}}', 400, 'no field named "nmae"'),
        ("POST", "/api/v1/queues/bad/jobs", b'{"queue_name": "other"}', 400, "queue_name is 'other' in"),
        ("POST", "/api/v1/queues/bad/jobs", b'{"job": {"name": 5}}', 400, "Failed to parse name field"),
        ("POST", "/api/v1/queues/bad/jobs", b"{}", 400, "job: is required"),  # the server's own check
        ("GET", "/api/v1/queues/bad/jobs?stat=waiting", b"", 400, "unknown query parameter 'stat'"),
        ("GET", "/api/v1/queues/bad/jobs?state=sleeping", b"", 400, "must be one of waiting, active"),
        ("GET", "/api/v1/queues/bad/jobs?state=waiting&page_size=many", b"", 400, "must be an integer"),
        ("GET", "/api/v1/queues/bad/metrics?include_history=maybe", b"", 400, "must be true or false"),
        ("GET", "/api/v1/queues/bad/jobs/nope", b"", 404, "job 'nope' not found in queue 'bad'"),
        ("GET", "/api/v1/nowhere", b"", 404, "no API route GET /api/v1/nowhere"),
        ("DELETE", "/api/v1/queues/bad", b"", 405, "DELETE is not allowed on /api/v1/queues/bad"),
        # A POST's query string was ignored, so this fetch was refused as asking for 0 jobs.
        ("POST", "/api/v1/queues/bad/jobs:fetch?max_jobs=1", b"", 400, "give max_jobs in the body"),
    ]
    for method, path, raw, want_status, want_text in cases:
        status, body = await http.call(method, path, raw=raw)
        assert status == want_status, (path, raw, body)
        assert want_text in body["message"], (path, raw, body)
        assert set(body) == {"code", "message"}
    status, body = await http.call("POST", "/api/v1/queues/nope/jobs", {"job": {"name": "x"}})
    assert (status, body) == (
        404,
        {
            "code": "NOT_FOUND",
            "message": "queue 'nope' is not registered; register it first (PUT /api/v1/queues/nope)",
        },
    )
    async with http.session.delete(http.base + "/api/v1/queues/bad") as response:
        assert response.headers["Allow"] == "GET, PUT"


async def test_body_over_the_message_limit_is_refused(server: RunningServer) -> None:
    runner, base = await serve_api(server.address, max_bytes=1000)
    try:
        async with aiohttp.ClientSession() as session:
            body = json.dumps({"job": {"name": "x", "data": {"json": "y" * 2000}}})
            async with session.post(f"{base}/api/v1/queues/any/jobs", data=body) as response:
                assert response.status == 413
                assert await response.json() == {
                    "code": "RESOURCE_EXHAUSTED",
                    "message": "the request body is over the server's limit of 1000 bytes",
                }

            async def chunked() -> AsyncIterator[bytes]:  # no Content-Length: counted while read
                for _ in range(20):
                    yield b" " * 100

            async with session.post(f"{base}/api/v1/queues/any/jobs", data=chunked()) as response:
                assert response.status == 413
    finally:
        await runner.cleanup()


async def test_grpc_statuses_become_http_statuses(monkeypatch: pytest.MonkeyPatch) -> None:
    expected = {
        grpc.StatusCode.INVALID_ARGUMENT: 400,
        grpc.StatusCode.UNAUTHENTICATED: 401,
        grpc.StatusCode.PERMISSION_DENIED: 403,
        grpc.StatusCode.NOT_FOUND: 404,
        grpc.StatusCode.ALREADY_EXISTS: 409,
        grpc.StatusCode.FAILED_PRECONDITION: 409,
        grpc.StatusCode.RESOURCE_EXHAUSTED: 507,
        grpc.StatusCode.UNIMPLEMENTED: 501,
        grpc.StatusCode.UNAVAILABLE: 503,
        grpc.StatusCode.DEADLINE_EXCEEDED: 504,
        grpc.StatusCode.INTERNAL: 500,
        grpc.StatusCode.UNKNOWN: 500,
        grpc.StatusCode.DATA_LOSS: 500,
    }
    for code, status in expected.items():
        error = grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details="why")
        response = api._rpc_error(error)
        assert response.status == status, code
        assert json.loads(response.text or "") == {"code": code.name, "message": "why"}


async def test_unreachable_server_is_503_and_a_silent_one_504(monkeypatch: pytest.MonkeyPatch) -> None:
    held: list[asyncio.StreamWriter] = []
    # Accepts connections and never answers.
    silent = await asyncio.start_server(lambda _r, w: held.append(w), "127.0.0.1", 0)
    silent_port = silent.sockets[0].getsockname()[1]
    dead, base_dead = await serve_api(f"127.0.0.1:{free_port()}")
    hung, base_hung = await serve_api(f"127.0.0.1:{silent_port}")
    monkeypatch.setattr(api, "CALL_TIMEOUT", 0.3)
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{base_dead}/api/v1/queues") as response:
                assert (response.status, (await response.json())["code"]) == (503, "UNAVAILABLE")
            async with session.get(f"{base_hung}/api/v1/queues") as response:
                assert (response.status, (await response.json())["code"]) == (504, "DEADLINE_EXCEEDED")
    finally:
        await dead.cleanup()
        await hung.cleanup()
        for writer in held:
            writer.close()
        silent.close()
        await silent.wait_closed()


async def test_a_bug_is_500_without_a_stack_trace(
    http: Api, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(*args: Any) -> Any:
        raise RuntimeError("secret detail")

    monkeypatch.setattr(api, "build_request", broken)
    status, body = await http.call("GET", "/api/v1/queues")
    assert status == 500 and body["code"] == "INTERNAL"
    assert re.fullmatch(r"internal error \(reference [0-9a-f]{12}\); see the server log", body["message"])
    assert "secret detail" in caplog.text  # in the log, with its traceback; never in the answer


async def test_a_grpc_client_on_the_http_port_logs_one_warning_without_a_traceback(
    web_server: RunningServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A gRPC client given the HTTP port's address: aiohttp cannot parse its HTTP/2 preface. That is the
    client's mistake: a warning line naming the gRPC port, not an error with the parser's traceback."""
    caplog.set_level("INFO")
    async with grpc.aio.insecure_channel(web_server.app.http_address) as channel:
        check = channel.unary_unary("/grpc.health.v1.Health/Check")
        with pytest.raises(grpc.aio.AioRpcError):
            await check(b"", timeout=10)
    lines = [r for r in caplog.records if r.name.startswith(("aiohttp", "queue_manager_server.http"))]
    assert lines, "nothing logged"
    assert all(r.levelname == "WARNING" and not r.exc_info for r in lines), [r.getMessage() for r in lines]
    assert lines[0].getMessage() == "unreadable request on the HTTP port"
    assert "gRPC is served on --listen" in lines[0].problem  # type: ignore[attr-defined]


# ----------------------------------------------------------------- the curl examples of docs/http-api.md

_BLOCK = re.compile(r"```(\w*)\n(.*?)```", re.DOTALL)


def doc_examples() -> list[tuple[str, Any]]:
    """(command, expected JSON or None) for each ```sh block of the doc, with the ```json block after it."""
    blocks = _BLOCK.findall(DOC.read_text())
    examples: list[tuple[str, Any]] = []
    for i, (lang, text) in enumerate(blocks):
        if lang != "sh" or "curl " not in text:
            continue
        expected = (
            json.loads(blocks[i + 1][1]) if i + 1 < len(blocks) and blocks[i + 1][0] == "json" else None
        )
        examples.append((text.strip(), expected))
    return examples


def matches(expected: Any, actual: Any) -> bool:
    """The doc's JSON is a pattern: objects need the keys shown (more are fine), "…" stands for anything."""
    if expected == "…":
        return True
    if isinstance(expected, dict):
        return isinstance(actual, dict) and all(
            k in actual and matches(v, actual[k]) for k, v in expected.items()
        )
    if isinstance(expected, list):
        if expected[-1:] == ["…"]:
            return isinstance(actual, list) and all(map(matches, expected[:-1], actual))
        return (
            isinstance(actual, list) and len(expected) == len(actual) and all(map(matches, expected, actual))
        )
    return bool(expected == actual)


async def test_doc_curl_examples_run(http: Api) -> None:
    examples = doc_examples()
    assert len(examples) >= 10
    host = http.base.removeprefix("http://")
    for command, expected in examples:
        script = command.replace("localhost:3010", host)
        proc = await asyncio.create_subprocess_exec(
            "bash",
            "-euo",
            "pipefail",
            "-c",
            script,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await proc.communicate()
        assert proc.returncode == 0, (command, err.decode())
        if expected is not None:
            actual = json.loads(out)
            assert matches(expected, actual), f"{command}\nexpected {expected}\ngot {actual}"


async def test_a_full_queue_is_429_and_says_when_to_come_back(http: Api) -> None:
    status, _ = await http.call("PUT", "/api/v1/queues/small", {"config": {"maxSize": 1}})
    assert status in (200, 201)
    status, _ = await http.call("POST", "/api/v1/queues/small/jobs", {"job": {"name": "a"}})
    assert status in (200, 201)
    async with http.session.post(http.base + "/api/v1/queues/small/jobs", json={"job": {"name": "b"}}) as r:
        body = await r.json()
        assert (r.status, r.headers.get("Retry-After")) == (429, "1")
    assert body["code"] == "RESOURCE_EXHAUSTED" and "queue 'small' is full" in body["message"]


async def test_schedules_priorities_and_obliterate(http: Api) -> None:
    await http.call("PUT", "/api/v1/queues/sched", {})
    schedule = {"id": "nightly", "queue_name": "sched", "cron": "0 2 * * *", "timezone": "Europe/Paris"}
    status, stored = await http.call(
        "POST", "/api/v1/schedules", {"schedule": {**schedule, "job": {"name": "b"}}}
    )
    assert status == 201 and stored["created"] and stored["schedule"]["next_run_time"]
    status, replaced = await http.call(
        "POST", "/api/v1/schedules", {"schedule": {**schedule, "job": {"name": "build"}}}
    )
    assert (status, replaced.get("created", False)) == (200, False)
    status, one = await http.call("GET", "/api/v1/queues/sched/schedules/nightly")
    assert (status, one["schedule"]["cron"], one["schedule"]["timezone"]) == (
        200,
        "0 2 * * *",
        "Europe/Paris",
    )
    for path in ("/api/v1/schedules?queue_name=sched", "/api/v1/queues/sched/schedules"):
        status, listed = await http.call("GET", path)
        assert (status, [s["id"] for s in listed["schedules"]]) == (200, ["nightly"]), path
    status, bad = await http.call(
        "POST", "/api/v1/schedules", {"schedule": {**schedule, "cron": "61 * * * *"}}
    )
    assert status == 400 and bad["code"] == "INVALID_ARGUMENT", bad
    status, gone = await http.call("DELETE", "/api/v1/queues/sched/schedules/nightly")
    assert (status, gone["schedule"]["id"]) == (200, "nightly")
    status, missing = await http.call("GET", "/api/v1/queues/sched/schedules/nightly")
    assert (status, missing["code"]) == (404, "NOT_FOUND")

    status, added = await http.call("POST", "/api/v1/queues/sched/jobs", {"job": {"name": "n"}})
    job_id = added["job"]["id"]
    path = f"/api/v1/queues/sched/jobs/{job_id}:changePriority"
    status, changed = await http.call("POST", path, {"priority": "JOB_PRIORITY_HIGH"})
    assert (status, changed["job"]["priority"]) == (200, "JOB_PRIORITY_HIGH")
    status, bad = await http.call("POST", path, {})
    assert status == 400 and bad["code"] == "INVALID_ARGUMENT", bad

    status, removed = await http.call("POST", "/api/v1/queues/sched:obliterate", {})
    assert (status, removed) == (200, {"removed": "1"})
    status, missing = await http.call("GET", "/api/v1/queues/sched")
    assert (status, missing["code"]) == (404, "NOT_FOUND")
