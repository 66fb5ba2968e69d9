"""Random and extreme field values never produce INTERNAL/UNKNOWN, and rejected requests write nothing."""

from __future__ import annotations

import ast
import math
import os
import pickle
import random
import re
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from google.protobuf import duration_pb2, struct_pb2, timestamp_pb2

from queue_manager.v1 import jobs_pb2 as jpb
from queue_manager.v1 import queue_service_pb2 as qpb
from queue_manager.v1 import queue_service_pb2_grpc as jrpc
from queue_manager.v1 import queue_service_pb2_grpc as qrpc
from queue_manager.v1 import types_pb2 as t
from queue_manager.v1 import worker_service_pb2 as wpb
from tests.conftest import RunningServer
from tests.rawworker import RawWorker, eventually

ALLOWED = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND, grpc.StatusCode.FAILED_PRECONDITION}
INTS = [0, 1, -1, 2, 5, 6, 999, 1000, 10_000, 2**31 - 1, -(2**31), 2**32 - 1, 2**53 + 1, 2**62]
FLOATS = [0.0, 0.5, 1.0, -0.1, 1.5, math.nan, math.inf, -math.inf, 1e308]
STRINGS = ["", "a", "x" * 201, "x" * 10_000, "a b", "a\x00b", "é✓𝄞", "{q}", "a:b", "../../etc", "\n", "queue"]


def pick(rng: random.Random, values: list[object]) -> object:
    return rng.choice(values)


def duration(rng: random.Random) -> duration_pb2.Duration:
    seconds = int(pick(rng, [0, 1, -1, 60, 10**9, 315_360_001, 2**40, -(2**40)]))  # type: ignore[call-overload]
    nanos = int(pick(rng, [0, 1, -1, 999_999_999, 500_000_000, -(10**9) + 1]))  # type: ignore[call-overload]
    if (seconds > 0 and nanos < 0) or (seconds < 0 and nanos > 0):
        nanos = -nanos
    return duration_pb2.Duration(seconds=max(min(seconds, 315_576_000_000), -315_576_000_000), nanos=nanos)


def timestamp(rng: random.Random) -> timestamp_pb2.Timestamp:
    seconds = int(pick(rng, [0, -1, 1, 1_800_000_000, 253_402_300_799, -62_135_596_800]))  # type: ignore[call-overload]
    return timestamp_pb2.Timestamp(seconds=seconds, nanos=int(pick(rng, [0, 999_999_999])))  # type: ignore[call-overload]


def options(rng: random.Random) -> t.JobOptions:
    o = t.JobOptions()
    for name in rng.sample(
        [
            "priority",
            "delay",
            "schedule",
            "attempts",
            "backoff",
            "job_id",
            "metadata",
            "keep",
            "timeout",
            "stall",
        ],
        k=rng.randint(0, 5),
    ):
        if name == "priority":
            o.priority = int(pick(rng, [0, 1, 3, 5, 6, -1, 2**31 - 1]))  # type: ignore[call-overload, assignment]
        elif name == "delay":
            o.delay.CopyFrom(duration(rng))
        elif name == "schedule":
            o.schedule_time.CopyFrom(timestamp(rng))
        elif name == "attempts":
            o.attempts = int(pick(rng, [0, 1, 3, 10_000, 10_001, 2**32 - 1]))  # type: ignore[call-overload]
        elif name == "backoff":
            o.backoff.type = int(pick(rng, [0, 1, 2, 3, -5]))  # type: ignore[call-overload, assignment]
            o.backoff.delay.CopyFrom(duration(rng))
            o.backoff.jitter = float(pick(rng, FLOATS))  # type: ignore[arg-type]
            o.backoff.max_delay.CopyFrom(duration(rng))
        elif name == "job_id":
            o.job_id = str(pick(rng, [*STRINGS, "ok-id", "x" * 200]))
        elif name == "metadata":
            o.metadata.correlation_id = str(pick(rng, STRINGS))
            o.metadata.tags.extend([str(pick(rng, STRINGS)) for _ in range(rng.choice([0, 3, 101]))])
            o.metadata.attributes.update(
                {f"k{i}": str(pick(rng, STRINGS)) for i in range(rng.choice([0, 2, 101]))}
            )
        elif name == "keep":
            target = o.remove_on_complete if rng.random() < 0.5 else o.remove_on_fail
            target.remove = rng.random() < 0.3
            target.age.CopyFrom(duration(rng))
            target.count = int(pick(rng, [0, 1, 2**32 - 1]))  # type: ignore[call-overload]
        elif name == "timeout":
            o.timeout.CopyFrom(duration(rng))
        elif name == "stall":
            o.max_stalled = int(pick(rng, [0, 1, 1000, 1001, 2**32 - 1]))  # type: ignore[call-overload]
    return o


def payload(rng: random.Random) -> t.Payload:
    kind = rng.randrange(4)
    if kind == 0:
        v = struct_pb2.Value()
        v.struct_value.update({"a": [1, 2.5, None, "s"], "n": float(pick(rng, [1.0, 1e300, -0.0]))})  # type: ignore[arg-type]
        return t.Payload(json=v)
    if kind == 1:
        return t.Payload(raw=rng.randbytes(rng.choice([0, 10, 2000])), content_type=str(pick(rng, STRINGS)))
    if kind == 2:
        return t.Payload(
            raw=str(pick(rng, ['{"a":1}', "[", "nul", "1e999", '"\\ud800"'])).encode(),
            content_type="application/json",
        )
    return t.Payload()


@pytest.fixture
async def stubs(server: RunningServer) -> AsyncIterator[tuple[qrpc.QueueServiceStub, jrpc.QueueServiceStub]]:
    async with grpc.aio.insecure_channel(server.address) as ch:
        q = qrpc.QueueServiceStub(ch)
        await q.RegisterQueue(qpb.RegisterQueueRequest(name="queue"))
        yield q, jrpc.QueueServiceStub(ch)


async def call(rpc: object, request: object) -> grpc.StatusCode:
    try:
        await rpc(request)  # type: ignore[operator]
    except grpc.aio.AioRpcError as exc:
        assert exc.code() in ALLOWED, (exc.code(), exc.details(), request)
        assert "Traceback" not in (exc.details() or "")
        return exc.code()  # type: ignore[no-any-return]
    return grpc.StatusCode.OK


async def test_random_add_job_requests(stubs: tuple[qrpc.QueueServiceStub, jrpc.QueueServiceStub]) -> None:
    queues, jobs = stubs
    rng = random.Random(20261127)
    created = 0
    for _ in range(400):
        request = jpb.AddJobRequest(
            queue_name=str(pick(rng, ["queue", "queue", "queue", *STRINGS])),
            job=jpb.NewJob(
                name=str(pick(rng, ["n", "n", *STRINGS])), data=payload(rng), options=options(rng)
            ),
        )
        before = (await queues.GetQueueMetrics(qpb.GetQueueMetricsRequest(name="queue"))).metrics
        code = await call(jobs.AddJob, request)
        after = (await queues.GetQueueMetrics(qpb.GetQueueMetricsRequest(name="queue"))).metrics
        added = (after.waiting + after.delayed) - (before.waiting + before.delayed)
        if code != grpc.StatusCode.OK:
            assert added == 0, request  # a rejected request writes nothing
        created += added
    assert created > 10  # the generator also produces valid requests


async def test_random_admin_requests(stubs: tuple[qrpc.QueueServiceStub, jrpc.QueueServiceStub]) -> None:
    queues, jobs = stubs
    rng = random.Random(7)
    for _ in range(200):
        cfg = t.QueueConfig(
            dead_letter_queue=str(pick(rng, ["", "dlq", *STRINGS])),
            disable_dead_letter=rng.random() < 0.2,
            default_job_options=options(rng),
        )
        if rng.random() < 0.5:
            cfg.rate_limit.max = int(pick(rng, [0, 1, 100, 2**32 - 1]))  # type: ignore[call-overload]
            cfg.rate_limit.duration.CopyFrom(duration(rng))
        if rng.random() < 0.5:
            cfg.completed_retention.age.CopyFrom(duration(rng))
            cfg.completed_retention.count = int(pick(rng, [0, 1, 2**32 - 1]))  # type: ignore[call-overload]
        await call(
            queues.RegisterQueue, qpb.RegisterQueueRequest(name=str(pick(rng, ["q2", *STRINGS])), config=cfg)
        )
        await call(
            queues.CleanQueue,
            qpb.CleanQueueRequest(
                name=str(pick(rng, ["queue", *STRINGS])),
                grace=duration(rng),
                state=int(pick(rng, [0, 1, 2, 3, 4, 5, 6, 7, -1])),  # type: ignore[call-overload]
                limit=int(pick(rng, [0, 1, 2**32 - 1])),  # type: ignore[call-overload]
            ),
        )
        await call(
            jobs.ListJobs,
            jpb.ListJobsRequest(
                queue_name=str(pick(rng, ["queue", *STRINGS])),
                state=int(pick(rng, [0, 1, 3, 6, 9])),  # type: ignore[call-overload]
                page_size=int(pick(rng, [0, 1, 1000, 1001, 2**32 - 1])),  # type: ignore[call-overload]
                page_token=str(pick(rng, ["", "bzox", "bzotMQ==", "!!!", "o:9", *STRINGS])),
            ),
        )
        await call(jobs.GetJob, jpb.GetJobRequest(queue_name="queue", job_id=str(pick(rng, STRINGS))))
        await call(jobs.RemoveJob, jpb.RemoveJobRequest(queue_name="queue", job_id=str(pick(rng, STRINGS))))


class _Trap:
    """Unpickling this creates a directory: proof that someone unpickled it."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.mkdir, (str(self.marker),)


async def test_payloads_stay_opaque(server: RunningServer, tmp_path: Path) -> None:
    """Job data and results that would act if unpickled or evaluated travel through add, claim, complete and
    read back byte for byte, and act nowhere."""
    marker = tmp_path / "unpickled"
    evaluated = tmp_path / "evaluated"
    trap = pickle.dumps(_Trap(marker))
    code = f"__import__('os').mkdir({str(evaluated)!r})".encode()
    data = t.Payload(raw=trap, content_type="application/python-pickle")
    async with grpc.aio.insecure_channel(server.address) as ch:
        q = qrpc.QueueServiceStub(ch)
        await q.RegisterQueue(qpb.RegisterQueueRequest(name="opaque"))
        added = await q.AddJob(
            jpb.AddJobRequest(queue_name="opaque", job=jpb.NewJob(name=code.decode(), data=data))
        )
        w = RawWorker(server.address, ["opaque"])
        try:
            await w.connect(credits=1)
            (leased,) = await w.jobs(1)
            assert (leased.job.data.raw, leased.job.data.content_type) == (trap, data.content_type)
            result = t.Payload(raw=code, content_type="text/x-python")
            w.report(
                wpb.WorkerReport(
                    completions=[
                        wpb.JobCompletion(
                            queue_name="opaque",
                            job_id=added.job.id,
                            lease_token=leased.lease_token,
                            result=result,
                        )
                    ]
                )
            )

            async def completed() -> bool:
                job = (await q.GetJob(jpb.GetJobRequest(queue_name="opaque", job_id=added.job.id))).job
                return job.state == t.JOB_STATE_COMPLETED

            await eventually(completed)
        finally:
            await w.close()
        job = (await q.GetJob(jpb.GetJobRequest(queue_name="opaque", job_id=added.job.id))).job
    assert (job.data.raw, job.result.raw, job.result.content_type) == (trap, code, "text/x-python")
    assert not marker.exists() and not evaluated.exists()


# Modules and calls that turn bytes into live objects or run them: none may appear in the server, in Python
# or in its Lua scripts (which decode JSON with cjson, never run what they read).
_UNSAFE_MODULES = {"pickle", "_pickle", "marshal", "shelve", "dill", "cloudpickle", "jsonpickle", "yaml"}
_UNSAFE_CALLS = {"eval", "exec", "compile", "__import__"}
_UNSAFE_LUA = re.compile(r"\b(loadstring|load|dofile|loadfile)\s*\(|cmsgpack")


def test_server_code_never_unpickles_or_evaluates() -> None:
    import queue_manager_server

    root = Path(queue_manager_server.__file__).parent
    found = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [a.name.split(".")[0] for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [(node.module or "").split(".")[0]]
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                names = [node.func.id]
            else:
                continue
            bad = (_UNSAFE_MODULES if not isinstance(node, ast.Call) else _UNSAFE_CALLS).intersection(names)
            found += [f"{path.relative_to(root)}:{node.lineno}: {n}" for n in bad]
    scripts = sorted(root.rglob("*.lua"))
    for path in scripts:
        found += [f"{path.relative_to(root)}: {m[0]}" for m in _UNSAFE_LUA.finditer(path.read_text())]
    assert len(list(root.rglob("*.py"))) > 20 and len(scripts) > 10
    assert not found, found
