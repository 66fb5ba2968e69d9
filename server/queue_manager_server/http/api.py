"""The HTTP JSON API under ``/api``: a front door to QueueService for clients that cannot speak gRPC.

Each route is one QueueService RPC (table `ROUTES`; docs/http-api.md is the user's version). A handler
turns the HTTP request into the RPC's request message (`api_json.build_request`) and calls the server's
own QueueService over a loopback gRPC channel, then answers with the response message in protobuf JSON,
or with ``{"code": "NOT_FOUND", "message": "..."}`` and the HTTP status of `HTTP_STATUS`.

Why a loopback channel rather than calling the servicer in-process: the call then takes exactly the path
of every gRPC call (validation, error mapping, and every interceptor: the grpc_server_* metrics count it,
and a future authentication interceptor would guard it), with no imitation of grpc.aio's ServicerContext
to keep in step, and client streaming (AddBulk) works unchanged. The price, measured on our 2-core machine
(docs/http-api.md): about 0.8 ms a call (GET of a queue: 1.4 ms over HTTP, where an in-process call would
make it about 0.6 ms). This API serves curl and webhooks; producers at volume use gRPC, and a bulk add
over HTTP pays the hop once for all its jobs.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import grpc
from aiohttp import web
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass

from queue_manager.v1 import jobs_pb2, queue_service_pb2, queue_service_pb2_grpc
from queue_manager_server.auth import Authenticator, AuthError, bearer_token
from queue_manager_server.errors import QUEUE_FULL, REASON_KEY
from queue_manager_server.http.api_json import (
    BadRequest,
    build_request,
    error_response,
    message_response,
    parse_body,
)

if TYPE_CHECKING:
    from queue_manager_server.http import HttpContext

log = logging.getLogger("queue_manager_server.http.api")

PREFIX = "/api"
# Every call gets this deadline (DEADLINE_EXCEEDED → 504): long enough for a large bulk add under load,
# short enough that a stuck call does not hold an HTTP connection forever.
CALL_TIMEOUT = 30.0
# A long poll (FetchJobs) may wait up to 30 s before its claim: its deadline is this much longer.
LONG_POLL_S = 30.0
# Jobs per AddBulkRequest message on the loopback stream (the whole stream is still one atomic add).
BULK_CHUNK = 1000

_SERVICE = queue_service_pb2.DESCRIPTOR.services_by_name["QueueService"]
_Q = "{name:[^/:]+}"  # a queue name never holds "/" or ":" (validate.queue_name)
_QJ = "{queue_name:[^/:]+}"
_ID = "{job_id:[^/]+}"  # job ids may hold ":"; a trailing ":verb" is matched last


@dataclass(frozen=True)
class Route:
    """One RPC behind one HTTP method and path; path parameters are named after request fields."""

    method: str
    path: str
    rpc: str

    @property
    def has_body(self) -> bool:
        return self.method in ("POST", "PUT", "PATCH")


ROUTES = [
    Route("GET", "/v1/queues", "ListQueues"),
    Route("PUT", f"/v1/queues/{_Q}", "RegisterQueue"),
    Route("GET", f"/v1/queues/{_Q}", "GetQueue"),
    Route("POST", f"/v1/queues/{_Q}:pause", "PauseQueue"),
    Route("POST", f"/v1/queues/{_Q}:resume", "ResumeQueue"),
    Route("POST", f"/v1/queues/{_Q}:clean", "CleanQueue"),
    Route("POST", f"/v1/queues/{_Q}:drain", "DrainQueue"),
    Route("POST", f"/v1/queues/{_Q}:obliterate", "ObliterateQueue"),
    Route("GET", f"/v1/queues/{_Q}/metrics", "GetQueueMetrics"),
    Route("GET", f"/v1/queues/{_QJ}/groups", "ListGroups"),
    Route("PUT", f"/v1/queues/{_QJ}/groups/{{group}}", "SetGroupLimits"),
    Route("POST", f"/v1/queues/{_QJ}/groups/{{group}}:pause", "PauseGroup"),
    Route("POST", f"/v1/queues/{_QJ}/groups/{{group}}:resume", "ResumeGroup"),
    Route("GET", "/v1/metrics", "GetAllMetrics"),
    Route("GET", "/v1/workers", "ListWorkers"),
    Route("POST", "/v1/workers/{worker_id:[^/]+}:control", "ControlWorker"),
    Route("POST", f"/v1/queues/{_QJ}/jobs", "AddJob"),
    Route("POST", f"/v1/queues/{_QJ}/jobs:bulk", "AddBulk"),
    Route("POST", f"/v1/queues/{_QJ}/jobs:retryFailed", "RetryFailedJobs"),
    Route("POST", f"/v1/queues/{_QJ}/deadLetters:redrive", "RedriveDeadLetters"),
    Route("POST", f"/v1/queues/{_QJ}/jobs:cancel", "CancelJobs"),
    Route("POST", f"/v1/queues/{_QJ}/jobs:remove", "RemoveJobs"),
    Route("POST", f"/v1/queues/{_QJ}/jobs:fetch", "FetchJobs"),
    Route("GET", f"/v1/queues/{_QJ}/jobs", "ListJobs"),
    Route("GET", f"/v1/queues/{_QJ}/jobs/{_ID}", "GetJob"),
    Route("DELETE", f"/v1/queues/{_QJ}/jobs/{_ID}", "RemoveJob"),
    Route("GET", f"/v1/queues/{_QJ}/jobs/{_ID}/logs", "GetJobLogs"),
    Route("POST", f"/v1/queues/{_QJ}/jobs/{_ID}:retry", "RetryJob"),
    Route("POST", f"/v1/queues/{_QJ}/jobs/{_ID}:cancel", "CancelJob"),
    Route("POST", f"/v1/queues/{_QJ}/jobs/{_ID}:promote", "PromoteJob"),
    Route("POST", f"/v1/queues/{_QJ}/jobs/{_ID}:updateData", "UpdateJobData"),
    Route("POST", f"/v1/queues/{_QJ}/jobs/{_ID}:changePriority", "ChangeJobPriority"),
    Route("POST", f"/v1/queues/{_QJ}/jobs/{_ID}:complete", "CompleteJob"),
    Route("POST", f"/v1/queues/{_QJ}/jobs/{_ID}:fail", "FailJob"),
    Route("POST", f"/v1/queues/{_QJ}/jobs/{_ID}:extendLease", "ExtendJobLease"),
    Route("POST", f"/v1/queues/{_QJ}/jobs/{_ID}:reportProgress", "ReportJobProgress"),
    Route("GET", "/v1/schedules", "ListSchedules"),
    Route("POST", "/v1/schedules", "UpsertSchedule"),
    Route("GET", f"/v1/queues/{_QJ}/schedules", "ListSchedules"),
    Route("GET", f"/v1/queues/{_QJ}/schedules/{{schedule_id}}", "GetSchedule"),
    Route("DELETE", f"/v1/queues/{_QJ}/schedules/{{schedule_id}}", "DeleteSchedule"),
    Route("POST", f"/v1/queues/{_QJ}/jobs/{_ID}:reschedule", "RescheduleJob"),
    Route("POST", "/v1/workflows", "ExecuteWorkflow"),
    Route("GET", "/v1/workflows", "ListWorkflows"),
    Route("GET", "/v1/workflows/{run_id}", "GetWorkflow"),
    Route("POST", "/v1/workflows/{run_id}:cancel", "CancelWorkflow"),
    Route("POST", "/v1/workflows/{run_id}:retry", "RetryWorkflow"),
    Route("POST", "/v1/events", "PushEvent"),
    Route("POST", "/v1/eventTriggers", "UpsertEventTrigger"),
    Route("GET", "/v1/eventTriggers", "ListEventTriggers"),
    Route("DELETE", "/v1/eventTriggers/{trigger_id}", "DeleteEventTrigger"),
]

# gRPC status → HTTP status. FAILED_PRECONDITION is 409 (the resource's state conflicts with the request:
# retrying a job that has not failed, removing an active one); 412 is kept for HTTP's own conditional
# headers. RESOURCE_EXHAUSTED is 507: the server answers it when the job store is out of memory, which no
# client back-off fixes, unlike the rate limiting a 429 announces; a full queue (its max_size, which workers
# taking jobs relieve) carries the reason in its trailing metadata and is 429 (_rpc_error). Anything not
# listed is 500.
HTTP_STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.FAILED_PRECONDITION: 409,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 507,
    grpc.StatusCode.CANCELLED: 503,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}
# The server's hint names the RPC (every gRPC client reads it); HTTP clients get the route instead.
_REGISTER_HINT = re.compile(r"\(QueueService/RegisterQueue\)")


def setup(app: web.Application, ctx: HttpContext) -> None:
    """Mounts /api (an entry of `queue_manager_server.http.ROUTES`)."""
    add_api(app, lambda: dial_address(ctx.grpc_address()), ctx.settings.max_message_bytes, ctx.auth)


def dial_address(listen_address: str) -> str:
    """Where to reach a port listening on ``listen_address``: a wildcard host becomes loopback."""
    host, _, port = listen_address.rpartition(":")
    if host in ("", "0.0.0.0", "*"):
        return f"127.0.0.1:{port}"
    if host in ("[::]", "::"):
        return f"[::1]:{port}"
    return listen_address


def add_api(
    app: web.Application,
    grpc_address: Callable[[], str],
    max_message_bytes: int,
    auth: Authenticator | None = None,
) -> None:
    """Mounts the API at ``/api`` on ``app`` (a sub-application, so its errors are JSON too).

    Args:
        app: The HTTP server's application, not yet started.
        grpc_address: Returns the address this server's gRPC port answers on (known once it is bound).
        max_message_bytes: Largest request body, and the loopback channel's message limit.
        auth: The token file's authenticator (None without auth). The token is checked here before the body
            is read (a caller without one learns nothing about the body); the gRPC interceptor then checks
            its roles and queues.
    """
    api = web.Application(middlewares=[_json_errors])
    front = _FrontDoor(grpc_address, max_message_bytes, auth)
    for route in ROUTES:
        api.router.add_route(route.method, route.path, front.handler(route))
    api.on_cleanup.append(front.close)
    app.add_subapp(PREFIX, api)


class BodyTooLarge(Exception):
    """A request body over the message limit (413); the message says the limit."""


class _FrontDoor:
    """Holds the loopback channel (opened on the first call, in the server's event loop)."""

    def __init__(
        self, grpc_address: Callable[[], str], max_message_bytes: int, auth: Authenticator | None
    ) -> None:
        self._auth = auth
        self._address = grpc_address
        self._max_bytes = max_message_bytes
        self._channel: grpc.aio.Channel | None = None
        self._stub: queue_service_pb2_grpc.QueueServiceStub | None = None

    def stub(self) -> queue_service_pb2_grpc.QueueServiceStub:
        if self._stub is None:
            options = [
                ("grpc.max_receive_message_length", self._max_bytes),
                ("grpc.max_send_message_length", self._max_bytes),
            ]
            self._channel = grpc.aio.insecure_channel(self._address(), options=options)
            self._stub = queue_service_pb2_grpc.QueueServiceStub(self._channel)
        return self._stub

    async def close(self, _app: web.Application) -> None:
        if self._channel is not None:
            await self._channel.close()
            self._channel = self._stub = None

    def handler(self, route: Route) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        method = _SERVICE.methods_by_name[route.rpc]
        request_cls: type[Message] = GetMessageClass(method.input_type)
        streaming = method.client_streaming
        long_poll = LONG_POLL_S if route.rpc == "FetchJobs" else 0.0

        async def handle(request: web.Request) -> web.StreamResponse:
            if self._auth is not None:
                try:
                    self._auth.from_header(request.headers.get("Authorization"))
                except AuthError as exc:
                    return error_response(401, "UNAUTHENTICATED", str(exc), **{"WWW-Authenticate": _REALM})
            try:
                if route.has_body and request.query:
                    # Refused, not ignored: `jobs:fetch?max_jobs=5` was answered "max_jobs ... got 0".
                    fields = ", ".join(dict.fromkeys(request.query))
                    raise BadRequest(
                        f"{request.method} reads its fields from the JSON body, not the query string: "
                        f"give {fields} in the body (curl -d '{{...}}')"
                    )
                body = parse_body(await self._read(request)) if route.has_body else None
                message = build_request(
                    request_cls, request.match_info, body, None if route.has_body else request.query
                )
            except BadRequest as exc:
                return error_response(400, "INVALID_ARGUMENT", str(exc))
            except BodyTooLarge as exc:
                return error_response(413, "RESOURCE_EXHAUSTED", str(exc))
            call = getattr(self.stub(), route.rpc)
            metadata = _credentials(request)  # the gRPC interceptor checks them (http/guard.py)
            timeout = CALL_TIMEOUT + long_poll
            try:
                if streaming:
                    response = await call(_bulk_stream(message), timeout=timeout, metadata=metadata)
                else:
                    response = await call(message, timeout=timeout, metadata=metadata)
            except grpc.aio.AioRpcError as exc:
                return _rpc_error(exc)
            created = "created" in response.DESCRIPTOR.fields_by_name and response.created
            return message_response(response, 201 if created else 200)

        return handle

    async def _read(self, request: web.Request) -> bytes:
        """The body, refused past the message limit (before it is all read when the length is declared)."""
        limit = self._max_bytes
        too_large = BodyTooLarge(f"the request body is over the server's limit of {limit} bytes")
        if (request.content_length or 0) > limit:
            raise too_large
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.content.iter_any():
            size += len(chunk)
            if size > limit:
                raise too_large
            chunks.append(chunk)
        return b"".join(chunks)


def _bulk_stream(message: Message) -> Iterator[jobs_pb2.AddBulkRequest]:
    """One AddBulkRequest body as a stream of messages of at most BULK_CHUNK jobs (at least one message)."""
    assert isinstance(message, jobs_pb2.AddBulkRequest)
    jobs = message.jobs
    for start in range(0, max(len(jobs), 1), BULK_CHUNK):
        yield jobs_pb2.AddBulkRequest(queue_name=message.queue_name, jobs=jobs[start : start + BULK_CHUNK])


def _credentials(request: web.Request) -> tuple[tuple[str, str], ...]:
    """The request's Authorization as gRPC metadata (HTTP Basic with the token as password → Bearer)."""
    header = request.headers.get("Authorization")
    if header is None:
        return ()
    try:
        return (("authorization", f"Bearer {bearer_token(header)}"),)
    except AuthError:
        return (("authorization", header),)  # the interceptor answers why it is malformed


_REALM = 'Bearer realm="Queue Manager"'


def _rpc_error(exc: grpc.aio.AioRpcError) -> web.Response:
    code = exc.code()
    message = exc.details() or code.name.lower().replace("_", " ")
    if code == grpc.StatusCode.UNAUTHENTICATED:
        return error_response(401, code.name, message, **{"WWW-Authenticate": _REALM})
    if code == grpc.StatusCode.NOT_FOUND:
        message = _REGISTER_HINT.sub(_register_route(message), message)
    if (REASON_KEY, QUEUE_FULL) in tuple(exc.trailing_metadata() or ()):
        # A full queue (its max_size): 429 like any "too many, come back later", not the 507 of a full store.
        return error_response(429, code.name, message, **{"Retry-After": "1"})
    return error_response(HTTP_STATUS.get(code, 500), code.name, message)


def _register_route(message: str) -> str:
    queue = re.search(r"queue '([^']*)' is not registered", message)
    return f"(PUT {PREFIX}/v1/queues/{queue[1] if queue else 'NAME'})"


@web.middleware
async def _json_errors(request: web.Request, handler: Callable[[web.Request], Awaitable[Any]]) -> Any:
    """Everything under /api answers in the API's error shape: unknown routes, wrong methods, bugs."""
    try:
        return await handler(request)
    except web.HTTPMethodNotAllowed as exc:
        allowed = ", ".join(sorted(exc.allowed_methods))
        message = f"{request.method} is not allowed on {request.path}; allowed: {allowed}"
        return error_response(405, "UNIMPLEMENTED", message, Allow=allowed)
    except web.HTTPNotFound:
        message = f"no API route {request.method} {request.path}; see docs/http-api.md"
        return error_response(404, "NOT_FOUND", message)
    except web.HTTPException:
        raise
    except Exception as exc:
        ref = uuid.uuid4().hex[:12]
        log.error("unexpected error", exc_info=exc, extra={"error_ref": ref, "path": request.path})
        return error_response(500, "INTERNAL", f"internal error (reference {ref}); see the server log")
