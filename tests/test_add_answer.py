"""An add answers with the job as stored, built from what its script wrote (no read-back): every option and
every queue default shows in the answer exactly as a later GetJob shows it; and the JSON converters that
replace json_format's on the add path give what json_format gives."""

from __future__ import annotations

import asyncio
import json
import math
from typing import Any

import grpc
import pytest
from google.protobuf import json_format, struct_pb2
from hypothesis import given, settings
from hypothesis import strategies as st

from queue_manager import JobPriority, QueueManager
from queue_manager.convert import created_job, job_from_proto
from queue_manager.v1 import jobs_pb2 as jpb
from queue_manager.v1 import queue_service_pb2 as qpb
from queue_manager.v1 import queue_service_pb2_grpc as qrpc
from queue_manager.v1 import types_pb2 as tpb
from queue_manager_server import convert
from queue_manager_server.services.adds import MAX_BATCH
from queue_manager_server.services.jobs import JobHandlers
from tests.conftest import RunningServer


def _value(obj: object) -> struct_pb2.Value:
    v = struct_pb2.Value()
    json_format.ParseDict(obj, v)
    return v


def _every_option() -> tpb.JobOptions:
    o = tpb.JobOptions(
        priority=tpb.JOB_PRIORITY_HIGH,
        attempts=4,
        backoff=tpb.Backoff(type=tpb.BACKOFF_TYPE_EXPONENTIAL, jitter=0.25),
        metadata=tpb.JobMetadata(correlation_id="c-1", tags=["a", "b"], attributes={"k": "v"}),
        remove_on_complete=tpb.KeepJobs(count=5),
        remove_on_fail=tpb.KeepJobs(remove=True),
        max_stalled=3,
        dedup=tpb.Dedup(key="order-7"),
        chain_to=[tpb.ChainLink(queue_name="answers", job_name="next", data=tpb.Payload(json=_value([1])))],
    )
    o.backoff.delay.FromMilliseconds(250)
    o.backoff.max_delay.FromMilliseconds(9_000)
    o.timeout.FromMilliseconds(30_000)
    o.dedup.ttl.FromMilliseconds(60_000)
    return o


async def _added_and_read(stub: qrpc.QueueServiceStub, job: jpb.NewJob) -> tuple[tpb.Job, tpb.Job]:
    added = await stub.AddJob(jpb.AddJobRequest(queue_name="answers", job=job))
    assert added.created
    read = await stub.GetJob(jpb.GetJobRequest(queue_name="answers", job_id=added.job.id))
    return added.job, read.job


async def test_the_answer_of_an_add_is_the_stored_job(server: RunningServer) -> None:
    defaults = tpb.JobOptions(priority=tpb.JOB_PRIORITY_LOW, attempts=2, max_stalled=2)
    defaults.timeout.FromMilliseconds(5_000)
    defaults.backoff.type = tpb.BACKOFF_TYPE_FIXED
    defaults.backoff.delay.FromMilliseconds(100)
    async with grpc.aio.insecure_channel(server.address) as channel:
        stub = qrpc.QueueServiceStub(channel)
        config = tpb.QueueConfig(default_job_options=defaults)
        await stub.RegisterQueue(qpb.RegisterQueueRequest(name="answers", config=config))
        data = {"i": 1, "s": "x", "l": [True, None, {"f": 1.5}], "e": {}}
        jobs = [
            jpb.NewJob(name="plain", data=tpb.Payload(json=_value(data))),  # the queue's defaults
            jpb.NewJob(name="every", data=tpb.Payload(json=_value(data)), options=_every_option()),
            jpb.NewJob(name="bytes", data=tpb.Payload(raw=b"\x00\xff", content_type="application/x-mine")),
            jpb.NewJob(name="none"),  # no data: JSON null
        ]
        delayed = tpb.JobOptions()
        delayed.delay.FromMilliseconds(3_600_000)
        jobs.append(jpb.NewJob(name="later", data=tpb.Payload(json=_value("s")), options=delayed))
        for job in jobs:
            answer, stored = await _added_and_read(stub, job)
            assert answer == stored, job.name
        answer, _ = await _added_and_read(stub, jobs[0])
        assert answer.priority == tpb.JOB_PRIORITY_LOW and answer.max_attempts == 2  # the defaults show
        assert answer.options.timeout.ToMilliseconds() == 5_000

        await stub.PauseQueue(qpb.PauseQueueRequest(name="answers"))
        answer, stored = await _added_and_read(stub, jobs[0])
        assert answer == stored and answer.state == tpb.JOB_STATE_PAUSED

        # The same through AddJobBatch, and an item whose dedup key is held answers with the holder.
        batch = jpb.AddJobBatchRequest(
            items=[jpb.AddJobRequest(queue_name="answers", job=j) for j in (jobs[1], jobs[0], jobs[1])]
        )
        outcomes = (await stub.AddJobBatch(batch)).outcomes
        holder = await stub.GetJob(jpb.GetJobRequest(queue_name="answers", job_id=outcomes[0].added.job.id))
        assert [o.added.created for o in outcomes] == [False, True, False]  # "order-7" was taken above
        for o in outcomes:
            stored = await stub.GetJob(jpb.GetJobRequest(queue_name="answers", job_id=o.added.job.id))
            assert o.added.job == stored.job
        assert outcomes[2].added.job == holder.job


async def _stream_answers(
    stub: qrpc.QueueServiceStub, items: list[jpb.AddJobRequest]
) -> list[jpb.AddJobOutcome]:
    call = stub.AddJobStream()
    await call.write(jpb.AddJobStreamRequest(batch_id=1, items=items, brief=True))
    answer = await call.read()
    await call.done_writing()
    assert answer.batch_id == 1
    return list(answer.outcomes)


async def test_a_brief_answer_stands_for_the_stored_job(server: RunningServer) -> None:
    """AddJobStreamRequest.brief: a job created as its request says is answered with its id, state and time,
    from which the client's job equals what GetJob reads; any other add is answered with the whole job."""
    async with grpc.aio.insecure_channel(server.address) as channel:
        stub = qrpc.QueueServiceStub(channel)
        await stub.RegisterQueue(qpb.RegisterQueueRequest(name="brief"))
        defaults = tpb.QueueConfig(default_job_options=tpb.JobOptions(attempts=3))
        await stub.RegisterQueue(qpb.RegisterQueueRequest(name="brief-defaults", config=defaults))
        await stub.RegisterQueue(qpb.RegisterQueueRequest(name="brief-paused"))
        await stub.PauseQueue(qpb.PauseQueueRequest(name="brief-paused"))
        sent_json = tpb.Payload(raw=b'{"i": 1}', content_type="application/json")  # as the Python client
        cases = [
            ("brief", jpb.NewJob(name="raw-json", data=sent_json), "created"),
            ("brief", jpb.NewJob(name="value", data=tpb.Payload(json=_value({"a": [1, None]}))), "created"),
            (
                "brief",
                jpb.NewJob(name="own-id", data=sent_json, options=tpb.JobOptions(job_id="b-1")),
                "created",
            ),
            (
                "brief",
                jpb.NewJob(name="own-id", data=sent_json, options=tpb.JobOptions(job_id="b-1")),
                "added",
            ),
            (
                "brief",
                jpb.NewJob(name="high", options=tpb.JobOptions(priority=tpb.JOB_PRIORITY_HIGH)),
                "added",
            ),
            ("brief", jpb.NewJob(name="bytes", data=tpb.Payload(raw=b"\x00", content_type="x/y")), "added"),
            ("brief", jpb.NewJob(name="none"), "created"),  # no data: JSON null, as the client reads none
            ("brief-defaults", jpb.NewJob(name="defaulted", data=sent_json), "added"),
            ("brief-paused", jpb.NewJob(name="paused", data=sent_json), "created"),
        ]
        items = [jpb.AddJobRequest(queue_name=q, job=j) for q, j, _ in cases]
        outcomes = await _stream_answers(stub, items)
        assert [o.WhichOneof("outcome") for o in outcomes] == [kind for _, _, kind in cases]
        for item, outcome in zip(items, outcomes, strict=True):
            if outcome.HasField("created"):
                built = created_job(item, outcome.created)
                job_id = outcome.created.id
            else:
                built = job_from_proto(outcome.added.job)
                job_id = outcome.added.job.id
            read = await stub.GetJob(jpb.GetJobRequest(queue_name=item.queue_name, job_id=job_id))
            assert built == job_from_proto(read.job), item.job.name
        assert outcomes[2].created.id == "b-1" and not outcomes[3].added.created
        assert outcomes[-1].created.state == tpb.JOB_STATE_PAUSED
        assert outcomes[-2].added.job.max_attempts == 3


async def test_the_adds_of_one_message_written_apart_each_have_their_own_time(
    server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A message of more adds than one write takes is written in two; each brief answer carries the time of
    its own write (an answer is a copy of the one before with its id set while their time is the same)."""
    assert server.app.queue_service is not None
    engine = server.app.queue_service.adds.engine
    real = engine.add_jobs_many
    writes = 0

    async def later_second(*args: Any, **kwargs: Any) -> Any:
        nonlocal writes
        writes += 1
        if writes == 2:
            await asyncio.sleep(0.01)  # the second write's time differs from the first's
        return await real(*args, **kwargs)

    monkeypatch.setattr(engine, "add_jobs_many", later_second)
    async with grpc.aio.insecure_channel(server.address) as channel:
        stub = qrpc.QueueServiceStub(channel)
        await stub.RegisterQueue(qpb.RegisterQueueRequest(name="two-writes"))
        sent = tpb.Payload(raw=b"{}", content_type="application/json")
        job = jpb.NewJob(name="n", data=sent)
        items = [jpb.AddJobRequest(queue_name="two-writes", job=job) for _ in range(MAX_BATCH + 2)]
        outcomes = await _stream_answers(stub, items)
        assert writes == 2
        times = [o.created.create_time.ToMilliseconds() for o in outcomes]
        assert times[0] < times[-1] and len(set(times[:MAX_BATCH])) == 1 and times[-1] == times[-2]
        for outcome in outcomes[MAX_BATCH - 1 :]:
            read = await stub.GetJob(jpb.GetJobRequest(queue_name="two-writes", job_id=outcome.created.id))
            assert read.job.create_time == outcome.created.create_time


async def test_add_job_asks_for_brief_answers(server: RunningServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """The client's concurrent add_job calls ask for brief answers and return the stored job either way."""
    asked: list[bool] = []
    real = JobHandlers._answered

    def answered(self: JobHandlers, *args: Any) -> None:
        asked.append(len(args) == 5 and args[4])  # into, items, checks, added, brief
        real(self, *args)

    monkeypatch.setattr(JobHandlers, "_answered", answered)
    async with QueueManager(server.address) as qm:
        await qm.register_queue("brief-client")
        await qm.register_queue("brief-client-3", default_job_options={"attempts": 3})
        added = await asyncio.gather(
            *(qm.add_job("brief-client", "n", {"i": i}) for i in range(20)),
            qm.add_job("brief-client-3", "n", {"i": 20}),
            qm.add_job("brief-client", "n", {"i": 21}, {"priority": "high"}),
        )
        for job in added:
            assert job == await qm.get_job(job.queue_name, job.id)
    assert asked and all(asked)
    assert added[-2].max_attempts == 3 and added[-1].priority is JobPriority.HIGH


async def test_a_created_jobs_data_is_the_value_added_and_reads_back_equal(server: RunningServer) -> None:
    """add_job does not decode the data it just encoded: a job it created holds the caller's value itself
    (bytes-like as bytes), equal to what a later read decodes; a job found by its id holds what is stored."""
    async with QueueManager(server.address) as qm:
        await qm.register_queue("data-back")
        data = {"to": ["a@b.c"], "n": 1.5, "nested": {"ok": True, "none": None}}
        job = await qm.add_job("data-back", "n", data)
        assert job.data is data
        assert (await qm.get_job("data-back", job.id)).data == data
        raw = await qm.add_job("data-back", "n", bytearray(b"\x00\x01"))
        assert raw.data == b"\x00\x01" and type(raw.data) is bytes
        assert (await qm.get_job("data-back", raw.id)).data == b"\x00\x01"
        assert (await qm.add_job("data-back", "n")).data is None
        first = await qm.add_job("data-back", "n", {"v": 1}, {"job_id": "same"})
        again = await qm.add_job("data-back", "n", {"v": 2}, {"job_id": "same"})
        assert first.data == again.data == {"v": 1}


def test_created_jobs_each_read_their_own_creation_time() -> None:
    """created_job reuses the datetime of the creation time it converted last (the adds of one message
    share it); a different time is converted afresh."""
    request = jpb.AddJobRequest(queue_name="q", job=jpb.NewJob(name="n"))
    times = [(1_764_864_000, 5_000_000), (1_764_864_000, 5_000_000), (1_764_864_000, 6_000_000), (7, 0)]
    for seconds, nanos in [*times, *times]:
        created = jpb.CreatedJob(id="j", state=tpb.JOB_STATE_WAITING)
        created.create_time.seconds, created.create_time.nanos = seconds, nanos
        at = created_job(request, created).created_at
        assert at is not None and at.timestamp() == seconds + nanos / 1e9


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.integers(-(2**53), 2**53)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_json_conversions_agree_with_json_format(obj: object) -> None:
    v = _value(obj)
    # The same JSON as json_format's, but whole numbers written as integers ("50", not "50.0").
    assert json.loads(convert.value_json(v)) == json_format.MessageToDict(v)
    assert convert.value_json(v) == json.dumps(_integral(json_format.MessageToDict(v)), separators=(",", ":"))
    decoded = json.loads(convert.value_json(v))
    ours, theirs = struct_pb2.Value(), struct_pb2.Value()
    convert.json_into_value(decoded, ours)
    json_format.ParseDict(decoded, theirs)
    assert ours == theirs


def _integral(obj: object) -> object:
    """obj with its whole-number floats (below 2**53) as ints."""
    if isinstance(obj, dict):
        return {k: _integral(x) for k, x in obj.items()}
    if isinstance(obj, list):
        return [_integral(x) for x in obj]
    if isinstance(obj, float) and obj.is_integer() and abs(obj) < 2**53:
        return int(obj)
    return obj


def test_whole_numbers_are_written_as_integers() -> None:
    v = _value([50.0, 2.0**60, 0.5, [1.0, -3.0], {"pct": 75.0}])
    assert convert.value_json(v) == '[50,1.152921504606847e+18,0.5,[1,-3],{"pct":75}]'
    assert convert.value_json(struct_pb2.Value(number_value=50.0)) == "50"


def test_a_json_number_beyond_a_double_reads_as_infinity() -> None:
    v = struct_pb2.Value()
    convert.json_into_value(json.loads("[-1" + "0" * 400 + "]"), v)
    assert v.list_value.values[0].number_value == -math.inf
