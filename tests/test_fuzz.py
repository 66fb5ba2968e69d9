"""Hypothesis-generated requests against a live server: every RPC shape, built from the contract's own
message descriptors (so a field added to the proto is fuzzed without touching this file).

For each request:
- the status is never INTERNAL, UNKNOWN or any other sign of a server fault (only the statuses a client can
  cause: INVALID_ARGUMENT, NOT_FOUND, FAILED_PRECONDITION, ALREADY_EXISTS, OUT_OF_RANGE, and OK);
- a refused request wrote nothing: Valkey's count of changes since the last save
  (``rdb_changes_since_last_save``, every write counts, even one that changes no value) is the same
  before and after it. The server's background loops are stopped for the run, so any write is the
  request's own.
Afterwards the server still answers, holds no leftover calls or streams, and its memory did not grow past a
bound over the second half of the run. ``QM_FUZZ_EXAMPLES`` (default 10,000) sets the number of requests,
``QM_FUZZ_RANDOM=1`` draws fresh examples instead of the reproducible default.
"""

from __future__ import annotations

import asyncio
import gc
import math
import os
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import psutil
import pytest
from google.protobuf import descriptor as d
from google.protobuf.message import Message
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st
from redis import Redis as SyncRedis

from queue_manager.v1 import jobs_pb2, queue_service_pb2, queue_service_pb2_grpc, worker_service_pb2
from queue_manager.v1 import types_pb2 as t
from queue_manager.v1 import worker_service_pb2_grpc as wrpc
from tests.conftest import RunningServer, ServerFactory
from tests.security_kit import token_file

EXAMPLES = int(os.environ.get("QM_FUZZ_EXAMPLES", "10000"))
# Requests per Hypothesis example: drawing them together costs a third of drawing them one by one.
BATCH = 10
# Hypothesis runs the fuzz requests are drawn in, one after the other (its memory is let go after each).
PARTS = 10
# Statuses a client can cause; anything else is a server fault.
CLIENT_STATUSES = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.OUT_OF_RANGE,
    # A queue full to its max_size (a generated RegisterQueue may give one) refuses adds.
    grpc.StatusCode.RESOURCE_EXHAUSTED,
}
_BY_VALUE = {c.value[0]: c for c in grpc.StatusCode}
QUEUES = ["fz", "fz-paused", "dead-letter-queue"]  # registered before the run
# Strings that have broken parsers, key builders and Lua before.
NASTY = [
    "",
    " ",
    "fz",
    "fz",
    "fz",
    "fz-paused",
    "nope",
    "{fz}",
    "a:b",
    "a}b{",
    "../x",
    "*",
    "?",
    "%s%n",
    "\x00",
    "a\x00b",
    "\n",
    "é✓𝄞",
    "\ud7ff",
    "x" * 101,
    "x" * 201,
    "x" * 1001,
    "o:1",
    "bzox",
    "1e999",
    "NaN",
    "null",
    "[]",
    "{}",
    '{"a":1}',
    "waiting",
    "-1",
    "9" * 30,
]
INTS32 = [0, 1, -1, 2, 3, 5, 6, 100, 1000, 1001, 10_000, 10_001, 100_000, 2**31 - 1, -(2**31)]
INTS64 = [*INTS32, 2**53, 2**53 + 1, 2**62, 2**63 - 1, -(2**63)]
FLOATS = [0.0, -0.0, 0.5, 1.0, 1.5, -0.1, 1e308, -1e308, math.inf, -math.inf, math.nan, 5e-324]

_INT_RANGES = {
    d.FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1, INTS32),
    d.FieldDescriptor.TYPE_SINT32: (-(2**31), 2**31 - 1, INTS32),
    d.FieldDescriptor.TYPE_SFIXED32: (-(2**31), 2**31 - 1, INTS32),
    d.FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1, [0, 1, 2, 5, 100, 1000, 1001, 10_000, 2**31, 2**32 - 1]),
    d.FieldDescriptor.TYPE_FIXED32: (0, 2**32 - 1, [0, 1, 2**32 - 1]),
    d.FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1, INTS64),
    d.FieldDescriptor.TYPE_SINT64: (-(2**63), 2**63 - 1, INTS64),
    d.FieldDescriptor.TYPE_SFIXED64: (-(2**63), 2**63 - 1, INTS64),
    d.FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1, [0, 1, 2**53 + 1, 2**64 - 1]),
    d.FieldDescriptor.TYPE_FIXED64: (0, 2**64 - 1, [0, 1, 2**64 - 1]),
}


def _strings(field: d.FieldDescriptor) -> st.SearchStrategy[str]:
    if "queue" in field.name or field.name == "name":
        return st.one_of(st.sampled_from(QUEUES), st.sampled_from(NASTY), st.text(max_size=12))
    return st.one_of(st.sampled_from(NASTY), st.text(max_size=30))


_SCALARS: dict[str, st.SearchStrategy[Any]] = {}
_MESSAGES: dict[tuple[str, int], st.SearchStrategy[Message]] = {}
_BOOL = st.booleans()
_COUNTS = (st.sampled_from([0, 1, 1, 2, 3]), st.just(0))


def _scalar(field: d.FieldDescriptor) -> st.SearchStrategy[Any]:
    """The strategy of a scalar field, built once per field (building strategies is the costly part)."""
    found = _SCALARS.get(field.full_name)
    if found is None:
        found = _SCALARS[field.full_name] = _make_scalar(field)
    return found


def _make_scalar(field: d.FieldDescriptor) -> st.SearchStrategy[Any]:
    kind = field.type
    if kind in _INT_RANGES:
        low, high, picks = _INT_RANGES[kind]
        return st.one_of(st.sampled_from(picks), st.integers(low, high))
    if kind in (d.FieldDescriptor.TYPE_DOUBLE, d.FieldDescriptor.TYPE_FLOAT):
        return st.one_of(st.sampled_from(FLOATS), st.floats(allow_nan=True, width=32 if kind == 2 else 64))
    if kind == d.FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if kind == d.FieldDescriptor.TYPE_STRING:
        return _strings(field)
    if kind == d.FieldDescriptor.TYPE_BYTES:
        return st.one_of(
            st.sampled_from(
                [b"", b"null", b'{"a":1}', b"[", b"\xff\xfe", b"1e999", b'"\\ud800"', b"x" * 70_000]
            ),
            st.binary(max_size=64),
        )
    if kind == d.FieldDescriptor.TYPE_ENUM:
        known = [v.number for v in field.enum_type.values]
        return st.one_of(st.sampled_from(known), st.sampled_from([-1, max(known) + 1, 2**31 - 1]))
    raise AssertionError(f"no strategy for {field.full_name}")


def _json_value() -> st.SearchStrategy[Any]:
    leaves = st.one_of(
        st.none(), st.booleans(), st.sampled_from(FLOATS), st.floats(allow_nan=False), st.text(max_size=10)
    )
    return st.recursive(
        leaves,
        lambda inner: st.one_of(
            st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=5), inner, max_size=3)
        ),
        max_leaves=6,
    )


_NOW = int(time.time())
_DURATION_S = st.one_of(
    st.sampled_from([0, 1, -1, 60, 3600, 315_360_001, 2**40, -(2**40)]), st.integers(-(10**12), 10**12)
)
_DURATION_NS = st.sampled_from([0, 1, -1, 500_000_000, 999_999_999, -999_999_999, 10**9])
_TIMESTAMP_S = st.one_of(
    st.sampled_from(
        [
            0,
            -1,
            _NOW,
            _NOW + 1,
            _NOW + 3600,
            _NOW - 3600,
            253_402_300_799,
            253_402_300_800,
            -62_135_596_801,
            2**62,
        ]
    ),
    st.integers(-(2**40), 2**40),
)
_TIMESTAMP_NS = st.sampled_from([0, 999_999_999, -1, 10**9])
_JSON = _json_value()


@st.composite
def _special(draw: st.DrawFn, name: str) -> Message:
    from google.protobuf import duration_pb2, struct_pb2, timestamp_pb2

    if name == "google.protobuf.Duration":
        return duration_pb2.Duration(seconds=draw(_DURATION_S), nanos=draw(_DURATION_NS))
    if name == "google.protobuf.Timestamp":
        return timestamp_pb2.Timestamp(seconds=draw(_TIMESTAMP_S), nanos=draw(_TIMESTAMP_NS))
    value = struct_pb2.Value()
    try:
        value.CopyFrom(_to_value(draw(_JSON)))
    except ValueError:
        value.null_value = struct_pb2.NULL_VALUE
    return value


def _to_value(raw: Any) -> Message:
    from google.protobuf import json_format, struct_pb2

    value = struct_pb2.Value()
    if isinstance(raw, float) and not math.isfinite(raw):
        value.number_value = raw  # NaN and infinities: json_format would refuse them
        return value
    json_format.ParseDict(raw, value)
    return value


_SPECIAL = {"google.protobuf.Duration", "google.protobuf.Timestamp", "google.protobuf.Value"}
_SPECIALS = {name: _special(name) for name in _SPECIAL}


def message(desc: d.Descriptor, depth: int = 0) -> st.SearchStrategy[Message]:
    """A message of any type of the contract, each field set or not, recursion bounded."""
    key = (desc.full_name, depth)
    found = _MESSAGES.get(key)
    if found is None:
        found = _MESSAGES[key] = _message(desc, depth)
    return found


@st.composite
def _message(draw: st.DrawFn, desc: d.Descriptor, depth: int = 0) -> Message:
    cls = _message_class(desc)
    if desc.full_name in _SPECIAL:
        return draw(_SPECIALS[desc.full_name])
    out = cls()
    chosen_oneofs: dict[str, str] = {}
    for o in desc.oneofs:
        chosen_oneofs[o.name] = draw(st.sampled_from([f.name for f in o.fields]))
    for field in desc.fields:
        if field.containing_oneof is not None and chosen_oneofs[field.containing_oneof.name] != field.name:
            continue
        if not draw(_BOOL) and field.name not in ("queue_name", "name", "queues", "job", "schedule"):
            continue
        _fill(draw, out, field, depth)
    return out


def _fill(draw: st.DrawFn, out: Message, field: d.FieldDescriptor, depth: int) -> None:
    is_message = field.type == d.FieldDescriptor.TYPE_MESSAGE
    if field.is_repeated:
        if is_message and field.message_type.GetOptions().map_entry:
            key_field, value_field = (
                field.message_type.fields_by_name["key"],
                field.message_type.fields_by_name["value"],
            )
            entries = draw(
                st.dictionaries(_scalar(key_field), _scalar(value_field), max_size=3 if depth < 3 else 0)
            )
            getattr(out, field.name).update(entries)
            return
        count = draw(_COUNTS[0] if depth < 3 else _COUNTS[1])
        items = getattr(out, field.name)
        for _ in range(count):
            if is_message:
                items.add().CopyFrom(draw(message(field.message_type, depth + 1)))
            else:
                items.append(draw(_scalar(field)))
        return
    if is_message:
        if depth >= 4:
            return
        getattr(out, field.name).CopyFrom(draw(message(field.message_type, depth + 1)))
        return
    setattr(out, field.name, draw(_scalar(field)))


def _message_class(desc: d.Descriptor) -> type[Message]:
    from google.protobuf.message_factory import GetMessageClass

    return GetMessageClass(desc)


_SERVICE = queue_service_pb2.DESCRIPTOR.services_by_name["QueueService"]
_UNARY = [m for m in _SERVICE.methods if not m.client_streaming and not m.server_streaming]
_WRITES_LATER = {"CancelJob", "CancelWorkflow", "ExecuteWorkflow"}  # may hand work to tasks


_KINDS = st.sampled_from(["unary"] * 8 + ["bulk", "watch", "wait", "connect"])
_UNARY_CALLS = st.one_of(*[message(m.input_type).map(lambda r, name=m.name: (name, r)) for m in _UNARY])
_BULK = st.lists(message(jobs_pb2.AddBulkRequest.DESCRIPTOR), min_size=0, max_size=3)
_WATCH = message(_SERVICE.methods_by_name["WatchMetrics"].input_type)
_WAIT = message(jobs_pb2.WaitForJobRequest.DESCRIPTOR)
_WAIT_MS = st.sampled_from([0, 1, 5])
_HELLO = message(worker_service_pb2.WorkerHello.DESCRIPTOR)
_CONNECT = message(worker_service_pb2.ConnectRequest.DESCRIPTOR)
_REPORTS = st.lists(_CONNECT, max_size=2)


@st.composite
def calls(draw: st.DrawFn) -> tuple[str, Any]:
    """(RPC name, request or list of stream messages)."""
    kind = draw(_KINDS)
    if kind == "unary":
        return draw(_UNARY_CALLS)  # type: ignore[no-any-return]
    if kind == "bulk":
        return "AddBulk", draw(_BULK)
    if kind == "watch":
        return "WatchMetrics", draw(_WATCH)
    if kind == "wait":
        request = draw(_WAIT)
        request.timeout.FromMilliseconds(draw(_WAIT_MS))
        return "WaitForJob", request
    first = worker_service_pb2.ConnectRequest(hello=draw(_HELLO))
    if draw(_BOOL):
        first = draw(_CONNECT)
    return "Connect", [first, *draw(_REPORTS)]


class Runner:
    """Sends one generated call and checks it (runs in a thread: blocking gRPC and Redis clients)."""

    def __init__(self, address: str, redis_url: str) -> None:
        self.channel = grpc.insecure_channel(address, options=[("grpc.max_send_message_length", 64 << 20)])
        self.queues = queue_service_pb2_grpc.QueueServiceStub(self.channel)
        self.workers = wrpc.WorkerServiceStub(self.channel)
        self.redis = SyncRedis.from_url(redis_url)
        self.codes: Counter[tuple[str, str]] = Counter()
        self.seconds: Counter[str] = Counter()
        self.sent = 0
        self.item_codes: Counter[tuple[str, str]] = Counter()  # refused items of calls that answered OK
        self.answer: Any = None  # the last unary call's answer
        # The last Connect's hello was accepted: the worker was registered (and is unregistered when the
        # stream ends), so a message refused after it ends a stream that has rightly written.
        self.welcomed = False

    def changes(self) -> int:
        return int(self.redis.info("persistence")["rdb_changes_since_last_save"])

    def quiet(self) -> None:
        """Waits until the store has taken no write for a moment (work an accepted call handed to a task)."""
        last = self.changes()
        for _ in range(50):
            time.sleep(0.01)
            now = self.changes()
            if now == last:
                return
            last = now

    def call(self, name: str, request: Any, md: Any) -> grpc.StatusCode:
        try:
            if name == "AddBulk":
                self.queues.AddBulk(iter(request), timeout=10, metadata=md)
            elif name in ("WatchMetrics", "WaitForJob"):
                stream = getattr(self.queues, name)(request, timeout=10, metadata=md)
                next(iter(stream), None)
                stream.cancel()
            elif name == "Connect":
                stream = self.workers.Connect(iter(request), timeout=10, metadata=md)
                for response in stream:
                    self.welcomed = self.welcomed or response.HasField("welcome")
            else:
                self.answer = getattr(self.queues, name)(request, timeout=10, metadata=md)
        except grpc.RpcError as exc:
            return exc.code()  # type: ignore[no-any-return]
        return grpc.StatusCode.OK

    def check_outcomes(self, name: str, request: Any, allowed: set[grpc.StatusCode], before: int) -> None:
        """A call answering one outcome per item (AddJobBatch): each refused item has a status a client can
        cause, and a call whose every item was refused wrote nothing."""
        outcomes = getattr(self.answer, "outcomes", None)
        if outcomes is None:
            return
        errors = [o.error for o in outcomes if o.HasField("error")]
        for e in errors:
            code = _BY_VALUE.get(e.code, grpc.StatusCode.UNKNOWN)
            self.item_codes[(name, code.name)] += 1
            assert code in allowed, (name, code, e.message, request)
        if errors and len(errors) == len(outcomes):
            after = self.changes()
            assert after == before, (
                f"{name} refused every item but wrote {after - before} change(s): {request}"
            )

    def check(
        self, name: str, request: Any, md: Any = None, allowed: set[grpc.StatusCode] = CLIENT_STATUSES
    ) -> None:
        if name in ("ObliterateQueue", "DrainQueue") and request.name in QUEUES:
            request.name = (
                "fz-scratch"  # the queues the run needs stay (obliterated, every call is NOT_FOUND)
            )
        started = time.perf_counter()
        before = self.changes()
        self.answer = None
        self.welcomed = False
        code = self.call(name, request, md)
        self.sent += 1
        self.codes[(name, code.name)] += 1
        assert code in allowed, (name, code, request)
        if code != grpc.StatusCode.OK and name == "Connect" and self.welcomed:
            self.quiet()  # refused after its hello: the registration and its removal were the hello's
        elif code != grpc.StatusCode.OK:
            after = self.changes()
            assert after == before, (
                f"{name} refused with {code.name} but wrote {after - before} change(s): {request}"
            )
        else:
            self.check_outcomes(name, request, allowed, before)
            if name in _WRITES_LATER or name == "Connect":
                self.quiet()
        self.seconds[name] += time.perf_counter() - started


def _server_memory() -> int:
    return int(psutil.Process().memory_info().rss)


@pytest.fixture
async def fuzz_server(server_factory: ServerFactory) -> RunningServer:
    server = await server_factory()
    async with grpc.aio.insecure_channel(server.address) as ch:
        q = queue_service_pb2_grpc.QueueServiceStub(ch)
        for name in QUEUES:
            config = t.QueueConfig(disable_dead_letter=name == "dead-letter-queue")
            await q.RegisterQueue(queue_service_pb2.RegisterQueueRequest(name=name, config=config))
        await q.PauseQueue(queue_service_pb2.PauseQueueRequest(name="fz-paused"))
        await q.AddJob(
            jobs_pb2.AddJobRequest(
                queue_name="fz", job=jobs_pb2.NewJob(name="seed", options=t.JobOptions(job_id="o:1"))
            )
        )
    # Background loops stopped: every write during a call is that call's own.
    for c in server.app.components:
        await c.stop()
    return server


# 10,000 requests take ~45 s alone and ~85 s beside the suite's other process: more than pytest's 120 s only
# when the machine is shared, which is no fault of the server's.
@pytest.mark.timeout(300)
async def test_generated_requests_never_fault_the_server(fuzz_server: RunningServer) -> None:
    runner = Runner(fuzz_server.address, fuzz_server.redis_url)
    memory: list[int] = []
    fresh = os.environ.get("QM_FUZZ_RANDOM") == "1"

    def part(number: int) -> Callable[[], None]:
        """One tenth of the run: a Hypothesis run of its own (seeded by its number unless QM_FUZZ_RANDOM=1),
        whose engine and its cache of the examples it drew are let go when it ends, so the process's memory
        at the middle and at the end differs by what the server kept, not by Hypothesis's bookkeeping."""

        @settings(
            max_examples=max(1, EXAMPLES // BATCH // PARTS),
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(st.lists(calls(), min_size=BATCH, max_size=BATCH))
        def one(batch: list[tuple[str, Any]]) -> None:
            for call in batch:
                runner.check(*call)

        return one if fresh else seed(number)(one)

    started = time.monotonic()
    try:
        for number in range(PARTS):
            await asyncio.to_thread(part(number))
            if number + 1 == PARTS // 2:
                gc.collect()
                memory.append(_server_memory())
        gc.collect()
    finally:
        runner.channel.close()
        runner.redis.close()
    elapsed = time.monotonic() - started
    memory.append(_server_memory())
    assert len(memory) == 2, "the memory sample of the run's middle was never taken"
    refused = sum(n for (_, code), n in runner.codes.items() if code != "OK")
    rate = runner.sent / elapsed
    print(f"\nfuzz: {runner.sent} requests in {elapsed:.1f} s ({rate:.0f}/s), {refused} refused")
    for (name, code), n in sorted(runner.codes.items()):
        print(f"  {name:<20} {code:<20} {n}")
    for (name, code), n in sorted(runner.item_codes.items()):
        print(f"  {name + ' item':<20} {code:<20} {n}")
    print("  seconds in calls:", {k: round(v, 1) for k, v in runner.seconds.most_common(6)})
    print(f"  server process memory over the second half: {(memory[-1] - memory[0]) / 2**20:+.1f} MiB")
    assert runner.sent >= EXAMPLES
    assert refused > EXAMPLES // 4 and refused < runner.sent  # both kinds were exercised
    # Still answering, nothing left in flight, memory flat over the second half.
    async with grpc.aio.insecure_channel(fuzz_server.address) as ch:
        q = queue_service_pb2_grpc.QueueServiceStub(ch)
        assert (await q.GetQueue(queue_service_pb2.GetQueueRequest(name="fz"))).queue.name == "fz"
    app = fuzz_server.app
    for _ in range(100):
        if not app.dispatcher or not app.dispatcher.all_sessions():
            break
        await asyncio.sleep(0.05)
    assert app.dispatcher is not None and not app.dispatcher.all_sessions()
    growth = memory[-1] - memory[0]
    assert growth < 20 * 1024 * 1024, f"memory grew {growth >> 20} MiB over the second half of the requests"


def _every_field(desc: d.Descriptor, seen: set[str]) -> Iterator[d.FieldDescriptor]:
    if desc.full_name in seen or desc.full_name in _SPECIAL:
        return
    seen.add(desc.full_name)
    for field in desc.fields:
        yield field
        if field.type == d.FieldDescriptor.TYPE_MESSAGE:
            yield from _every_field(field.message_type, seen)


def test_the_generator_covers_every_field_type() -> None:
    """A field of a type the generator cannot build would make the fuzz test fail to start; catch it here."""
    seen: set[str] = set()
    fields = [f for m in _SERVICE.methods for f in _every_field(m.input_type, seen)]
    fields += list(_every_field(worker_service_pb2.ConnectRequest.DESCRIPTOR, seen))
    for field in fields:
        if field.type != d.FieldDescriptor.TYPE_MESSAGE:
            _scalar(field)
    assert len(fields) > 100


_ = Callable  # keep the import for annotations in generated helpers


AUTH_EXAMPLES = max(EXAMPLES // 5, 100)


async def test_generated_requests_with_generated_credentials(
    server_factory: ServerFactory, tmp_path: Path
) -> None:
    """The same requests, each with no token, a wrong one, a malformed header or a token of some role and
    queues: only the statuses a client can cause, UNAUTHENTICATED and PERMISSION_DENIED, and a refusal
    writes nothing (the interceptor stops the call before the handler, or the handler before its write)."""
    tokens = token_file(
        tmp_path / "t.toml",
        {
            "admin": ("admin", ["*"]),
            "ops": ("admin", ["fz-*"]),
            "prod": ("producer", ["fz"]),
            "work": ("worker", ["fz"]),
            "view": ("viewer", ["fz*"]),
        },
    )
    server = await server_factory(auth_file=str(tmp_path / "t.toml"))
    admin = (("authorization", f"Bearer {tokens['admin']}"),)
    async with grpc.aio.insecure_channel(server.address) as ch:
        q = queue_service_pb2_grpc.QueueServiceStub(ch)
        for name in QUEUES:
            config = t.QueueConfig(disable_dead_letter=name == "dead-letter-queue")
            await q.RegisterQueue(
                queue_service_pb2.RegisterQueueRequest(name=name, config=config), metadata=admin
            )
    for c in server.app.components:
        await c.stop()
    headers = [
        None,
        ("authorization", "Bearer nope"),
        ("authorization", tokens["admin"]),
        ("authorization", "Basic !!"),
        ("authorization", ""),
        ("x-other", tokens["admin"]),
    ]
    headers += [("authorization", f"Bearer {tokens[n]}") for n in ("ops", "prod", "work", "view", "admin")]
    allowed = CLIENT_STATUSES | {grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED}
    runner = Runner(server.address, server.redis_url)

    @settings(
        max_examples=AUTH_EXAMPLES // BATCH,
        deadline=None,
        database=None,
        derandomize=os.environ.get("QM_FUZZ_RANDOM") != "1",
        suppress_health_check=list(HealthCheck),
    )
    @given(st.lists(st.tuples(calls(), st.sampled_from(headers)), min_size=BATCH, max_size=BATCH))
    def one(batch: list[tuple[tuple[str, Any], Any]]) -> None:
        for (name, request), header in batch:
            runner.check(name, request, None if header is None else (header,), allowed)

    try:
        await asyncio.to_thread(one)
    finally:
        runner.channel.close()
        runner.redis.close()
    codes = Counter(code for (_, code), n in runner.codes.items() for _ in range(n))
    print(f"\nfuzz with credentials: {runner.sent} requests, {dict(codes)}")
    assert runner.sent >= AUTH_EXAMPLES
    assert codes["UNAUTHENTICATED"] and codes["PERMISSION_DENIED"] and codes["OK"]
