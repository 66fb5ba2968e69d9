"""The authentication and authorization interceptor: one wrapper per RPC shape around the real handler.

For every call of a guarded service (all but health and reflection, `access.OPEN_PREFIXES`):

1. The ``authorization`` metadata must hold a token of the token file (`auth.Authenticator`), else the call
   ends ``UNAUTHENTICATED``. The real handler is not run; the request is not even parsed.
2. The token's roles must grant the RPC's permission (`access.RULES`), else ``PERMISSION_DENIED``, also
   without running the handler. An RPC a lease also opens (`access.Rule.leased`: UpdateJobData) lets in a
   token with that permission, and then refuses its request unless it carries a lease token.
3. The queues the request names must match the token's patterns. Unary and server-streaming requests are
   checked before the handler runs; a request of independent items (AddJobBatch) is checked item by item by
   its handler (`access.add_item_denials`), and an item out of reach is refused alone. Client streams
   (AddBulk) and the worker stream are checked message by message as the handler reads them: a message
   naming a foreign queue ends the call ``PERMISSION_DENIED`` (AddBulk reads the whole stream before its
   first write, so nothing is written; the worker stream's leases are released as when it is cut).
4. Answers spanning queues are trimmed to the token's queues, or refused (`access.Rule`).

Tokens never reach a log line: a refusal logs the method, the peer, the token's name when it is known and
the reason.

The calls that change what is there (every admin RPC, and retries, promotions, priority and data changes,
schedule changes: `access.audited`) are written to the ``queue_manager_server.audit`` logger once they end:
the method, the token's name, the peer, the queues and ids the request names, and the status (``OK`` or the
refusal's code). Never the data.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any

import grpc
import grpc.aio

from queue_manager_server.access import (
    ITEM_CHECK,
    Named,
    Rule,
    audited,
    denial,
    lease_denial,
    queue_denial,
    rule_for,
)
from queue_manager_server.auth import Authenticator, AuthError, Principal
from queue_manager_server.errors import PermissionDenied

log = logging.getLogger("queue_manager_server.auth")
audit_log = logging.getLogger("queue_manager_server.audit")
# The request fields an audit line names, when the request has them (ids and names, never data), and their
# keys in the line (a queue's RPCs name it "name", which a log record holds already).
_AUDIT_FIELDS = {
    "queue_name": "queue",
    "name": "queue",
    "job_id": "job_id",
    "group": "group",
    "schedule_id": "schedule_id",
    "run_id": "run_id",
    "state": "state",
}

# Reads the queues of a stored workflow run (None when it cannot be read: the handler then answers).
RunQueues = Callable[[str], Awaitable[Iterable[str] | None]]
Behavior = Callable[..., Any]


def metadata_value(metadata: Iterable[tuple[str, Any]] | None, key: str) -> str | None:
    for k, v in metadata or ():
        if k == key:
            return v.decode("latin-1") if isinstance(v, bytes) else str(v)
    return None


def _shape(handler: grpc.RpcMethodHandler) -> str:
    return {
        (False, False): "unary",
        (True, False): "client_stream",
        (False, True): "server_stream",
        (True, True): "bidi_stream",
    }[(handler.request_streaming, handler.response_streaming)]


_MAKERS = {
    "unary": (grpc.unary_unary_rpc_method_handler, "unary_unary"),
    "client_stream": (grpc.stream_unary_rpc_method_handler, "stream_unary"),
    "server_stream": (grpc.unary_stream_rpc_method_handler, "unary_stream"),
    "bidi_stream": (grpc.stream_stream_rpc_method_handler, "stream_stream"),
}


class AuthInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Guards every RPC of QueueService and WorkerService with bearer tokens, roles and queue patterns."""

    def __init__(self, authenticator: Authenticator, run_queues: RunQueues | None = None) -> None:
        self.auth = authenticator
        self.run_queues = run_queues

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None:
            return None
        method: str = details.method
        rule = rule_for(method)
        if rule is None:
            return handler
        shape = _shape(handler)
        try:
            principal = self.auth.from_header(metadata_value(details.invocation_metadata, "authorization"))
        except AuthError as exc:
            return _refusal(handler, shape, method, grpc.StatusCode.UNAUTHENTICATED, str(exc), None)
        why = denial(principal, rule, method)
        if why is not None:
            return _refusal(handler, shape, method, grpc.StatusCode.PERMISSION_DENIED, why, principal)
        make, attr = _MAKERS[shape]
        guard = _Guard(principal, rule, method, self.run_queues)
        wrap = {
            "unary": guard.unary,
            "client_stream": guard.client_stream,
            "server_stream": guard.server_stream,
            "bidi_stream": guard.bidi_stream,
        }[shape]
        return make(
            wrap(getattr(handler, attr)),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


def _refused(method: str, code: grpc.StatusCode, why: str, principal: Principal | None, peer: str) -> None:
    log.warning(
        "request refused",
        extra={
            "method": method,
            "status": code.name,
            "token": principal.name if principal else "",
            "peer": peer,
            "reason": why,
        },
    )


def _refusal(
    handler: grpc.RpcMethodHandler,
    shape: str,
    method: str,
    code: grpc.StatusCode,
    why: str,
    principal: Principal | None,
) -> grpc.RpcMethodHandler:
    """A handler of the same shape that ends the call with `code`; the request is left unparsed."""

    async def refuse(request: Any, context: grpc.aio.ServicerContext) -> Any:
        _refused(method, code, why, principal, context.peer())
        await context.abort(code, why)

    async def refuse_stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        _refused(method, code, why, principal, context.peer())
        await context.abort(code, why)
        yield  # pragma: no cover - abort raises; the yield makes this a generator

    make, _ = _MAKERS[shape]
    behavior = refuse_stream if handler.response_streaming else refuse
    return make(behavior, request_deserializer=None, response_serializer=handler.response_serializer)


class _Guard:
    """The checks of one call, wrapped around its real behavior."""

    def __init__(self, principal: Principal, rule: Rule, method: str, run_queues: RunQueues | None) -> None:
        self.principal = principal
        self.rule = rule
        self.method = method
        self.run_queues = run_queues
        # Why a streamed message was refused (the handler may swallow the error; the call still ends so).
        self.refused: str | None = None

    async def _deny(self, context: grpc.aio.ServicerContext, why: str) -> None:
        _refused(self.method, grpc.StatusCode.PERMISSION_DENIED, why, self.principal, context.peer())
        await context.abort(grpc.StatusCode.PERMISSION_DENIED, why)

    async def _check_request(self, request: Any, context: grpc.aio.ServicerContext) -> None:
        if why := lease_denial(self.principal, self.rule, self.method, request):
            await self._deny(context, why)
        if self.rule.queues is not None and (why := queue_denial(self.principal, self.rule.queues(request))):
            await self._deny(context, why)
        if self.rule.run_queues and not self.principal.all_queues and self.run_queues is not None:
            queues = await self.run_queues(getattr(request, "run_id", ""))
            named = [("run_id", q) for q in queues or ()]
            if why := queue_denial(self.principal, named):
                await self._deny(context, f"the workflow run has a step in a queue out of reach ({why})")

    async def _answer(self, response: Any, context: grpc.aio.ServicerContext) -> Any:
        if self.principal.all_queues:
            return response
        if self.rule.check_answer is not None and (why := self.rule.check_answer(self.principal, response)):
            await self._deny(context, why)
        if self.rule.filter is not None:
            return self.rule.filter(self.principal, response)
        return response

    async def _checked(self, requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
        """A client stream, each message checked as the handler reads it."""
        named = self.rule.queues
        async for message in requests:
            if named is not None and (why := queue_denial(self.principal, named(message))):
                self.refused = why
                raise PermissionDenied(why)
            yield message

    async def _end_refused(self, context: grpc.aio.ServicerContext) -> None:
        if self.refused is not None:
            await self._deny(context, self.refused)

    def _item_check(self, context: grpc.aio.ServicerContext) -> Callable[[Named], str | None]:
        """The check of one item's queues (access.add_item_denials) for a call whose rule checks per item."""

        def check(named: Named) -> str | None:
            why = queue_denial(self.principal, named)
            if why is not None:
                _refused(self.method, grpc.StatusCode.PERMISSION_DENIED, why, self.principal, context.peer())
            return why

        return check

    def _audit(self, request: Any, context: grpc.aio.ServicerContext, status: str) -> None:
        named: dict[str, Any] = {}
        for field, key in _AUDIT_FIELDS.items():
            value = getattr(request, field, None)
            if value and isinstance(value, str | int):
                named[key] = value
        schedule = getattr(request, "schedule", None)
        if schedule is not None and schedule.id:
            named["queue"], named["schedule_id"] = schedule.queue_name, schedule.id
        audit_log.info(
            "admin action",
            extra={
                "method": self.method.rsplit("/", 1)[-1],
                "token": self.principal.name,
                "peer": context.peer(),
                "status": status,
                **named,
            },
        )

    def unary(self, behavior: Behavior) -> Behavior:
        if audited(self.method, self.rule):
            return self._audited(self._unary(behavior))
        return self._unary(behavior)

    def _audited(self, behavior: Behavior) -> Behavior:
        async def handle(request: Any, context: grpc.aio.ServicerContext) -> Any:
            if getattr(request, "lease_token", ""):
                return await behavior(request, context)  # a processor's own checkpoint
            try:
                response = await behavior(request, context)
            except BaseException:
                code = context.code()
                self._audit(request, context, code.name if isinstance(code, grpc.StatusCode) else "ERROR")
                raise
            self._audit(request, context, "OK")
            return response

        return handle

    def _unary(self, behavior: Behavior) -> Behavior:
        async def handle(request: Any, context: grpc.aio.ServicerContext) -> Any:
            await self._check_request(request, context)
            if not self.rule.per_item:
                return await self._answer(await behavior(request, context), context)
            checking = ITEM_CHECK.set(self._item_check(context))
            try:
                response = await behavior(request, context)
            finally:
                ITEM_CHECK.reset(checking)
            return await self._answer(response, context)

        return handle

    def client_stream(self, behavior: Behavior) -> Behavior:
        async def handle(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> Any:
            response = await behavior(self._checked(requests), context)
            await self._end_refused(context)
            return await self._answer(response, context)

        return handle

    def server_stream(self, behavior: Behavior) -> Behavior:
        async def handle(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            await self._check_request(request, context)
            async for response in behavior(request, context):
                yield await self._answer(response, context)

        return handle

    def bidi_stream(self, behavior: Behavior) -> Behavior:
        async def handle(
            requests: AsyncIterator[Any], context: grpc.aio.ServicerContext
        ) -> AsyncIterator[Any]:
            # A stream of independent items (AddJobStream) is checked item by item by its handler, in the
            # tasks it starts (they inherit the check); the stream goes on past a refused item.
            checking = ITEM_CHECK.set(self._item_check(context)) if self.rule.per_item else None
            try:
                async for response in behavior(self._checked(requests), context):
                    yield await self._answer(response, context)
            finally:
                if checking is not None:
                    # A generator closed from elsewhere runs this in another context: nothing to undo there.
                    with contextlib.suppress(ValueError):
                        ITEM_CHECK.reset(checking)
            await self._end_refused(context)

        return handle
