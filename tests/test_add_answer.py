"""An add answers with the job as stored, built from what its script wrote (no read-back): every option and
every queue default shows in the answer exactly as a later GetJob shows it; and the JSON converters that
replace json_format's on the add path give what json_format gives."""

from __future__ import annotations

import json
import math

import grpc
from google.protobuf import json_format, struct_pb2
from hypothesis import given, settings
from hypothesis import strategies as st

from queue_manager.v1 import jobs_pb2 as jpb
from queue_manager.v1 import queue_service_pb2 as qpb
from queue_manager.v1 import queue_service_pb2_grpc as qrpc
from queue_manager.v1 import types_pb2 as tpb
from queue_manager_server import convert
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
    assert convert.value_json(v) == json.dumps(json_format.MessageToDict(v), separators=(",", ":"))
    decoded = json.loads(convert.value_json(v))
    ours, theirs = struct_pb2.Value(), struct_pb2.Value()
    convert.json_into_value(decoded, ours)
    json_format.ParseDict(decoded, theirs)
    assert ours == theirs


def test_a_json_number_beyond_a_double_reads_as_infinity() -> None:
    v = struct_pb2.Value()
    convert.json_into_value(json.loads("[-1" + "0" * 400 + "]"), v)
    assert v.list_value.values[0].number_value == -math.inf
