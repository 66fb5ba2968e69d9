"""The worker-stream delivery of claimed jobs (server convert.job_delivery), field by field."""

from __future__ import annotations

import pytest
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from queue_manager.v1 import types_pb2
from queue_manager_server.convert import job_delivery
from queue_manager_server.engine.records import ClaimedJob


def _claimed(**changes: object) -> ClaimedJob:
    fields: dict[str, object] = {
        "id": "abcdefabcdef1234",
        "name": "resize",
        "data": b'{"i":12345}',
        "content_type": "application/json",
        "priority": 2,
        "max_attempts": 3,
        "attempts_made": 1,
        "attempts_started": 2,
        "stalled_count": 0,
        "created_ms": 1_796_322_584_807,
        "metadata": b"",
        "timeout_ms": 0,
        "lease_expiry_ms": 1_796_322_614_009,
    }
    fields.update(changes)
    return ClaimedJob(**fields)  # type: ignore[arg-type]


def _ts(ms: int) -> Timestamp:
    t = Timestamp()
    t.FromMilliseconds(ms)
    return t


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"created_ms": 0, "lease_expiry_ms": 999},
        {"attempts_started": 4},  # a lost start before this one: a redelivery
        {"data": b"\x00\xff", "content_type": "application/octet-stream", "priority": 5},
        {
            "metadata": types_pb2.JobMetadata(correlation_id="c-1", tags=["a"]).SerializeToString(),
            "timeout_ms": 2_500,
            "flow": types_pb2.Job(
                chain_root=types_pb2.JobRef(queue_name="q", job_id="root")
            ).SerializeToString(),
        },
    ],
)
def test_a_leased_job_carries_every_field_of_the_claim(changes: dict[str, object]) -> None:
    c = _claimed(**changes)
    [leased] = job_delivery("images", [c], "tok-1").delivery.jobs

    want = types_pb2.Job(
        id=c.id,
        queue_name="images",
        name=c.name,
        data=types_pb2.Payload(raw=c.data, content_type=c.content_type),
        state=types_pb2.JOB_STATE_ACTIVE,
        priority=c.priority,  # type: ignore[arg-type]
        attempts_made=c.attempts_made,
        max_attempts=c.max_attempts,
        stalled_count=c.stalled_count,
        create_time=_ts(c.created_ms),
    )
    if c.metadata:
        want.metadata.MergeFromString(c.metadata)
    if c.timeout_ms:
        want.options.timeout.CopyFrom(
            Duration(seconds=c.timeout_ms // 1000, nanos=c.timeout_ms % 1000 * 1_000_000)
        )
    if c.flow:
        want.MergeFromString(c.flow)
    assert leased.job == want
    assert leased.job.HasField("create_time")
    assert leased.lease_token == "tok-1"
    assert leased.lease_expire_time == _ts(c.lease_expiry_ms)
    assert leased.redelivery is c.redelivery


def test_a_delivery_of_several_jobs_gives_each_its_own_fields_in_order() -> None:
    plain = _claimed(id="a")
    extras = _claimed(
        id="b",
        timeout_ms=1_000,
        metadata=types_pb2.JobMetadata(tags=["t"]).SerializeToString(),
        flow=types_pb2.Job(chain_failure="stopped").SerializeToString(),
    )
    # A lease of its own expiry (a delivery builds the first job's Timestamp once, for those sharing it).
    redelivered = _claimed(id="c", attempts_started=3, lease_expiry_ms=1_796_322_699_123)
    jobs = [plain, extras, redelivered, plain]
    delivery = job_delivery("images", jobs, "tok-2").delivery
    assert list(delivery.jobs) == [job_delivery("images", [c], "tok-2").delivery.jobs[0] for c in jobs]
    assert [j.job.id for j in delivery.jobs] == ["a", "b", "c", "a"]
    assert delivery.jobs[1].job.options.timeout.seconds == 1
    assert not delivery.jobs[0].job.HasField("metadata") and delivery.jobs[1].job.metadata.tags == ["t"]
    assert [j.redelivery for j in delivery.jobs] == [False, False, True, False]
    assert [j.lease_expire_time.ToMilliseconds() for j in delivery.jobs] == [c.lease_expiry_ms for c in jobs]


def test_each_job_of_a_delivery_has_its_own_value_of_every_field_the_first_one_has() -> None:
    """A delivery's jobs are copies of the first one's fields with what differs set: a later job whose
    fields all differ from the first's (either way: set where the first had none, none where it had one)
    reads exactly as when delivered alone."""
    full = _claimed(
        id="full",
        attempts_made=2,
        attempts_started=5,  # a redelivery
        stalled_count=2,
        content_type="application/octet-stream",
        data=b"\x01",
        timeout_ms=700,
    )
    bare = _claimed(
        id="bare",
        name="other",
        data=b"",
        priority=0,
        max_attempts=0,
        attempts_made=0,
        attempts_started=1,
        created_ms=0,
        lease_expiry_ms=1,
    )
    for jobs in ([full, bare, full], [bare, full, bare]):
        delivery = job_delivery("images", jobs, "tok-3").delivery
        assert list(delivery.jobs) == [job_delivery("images", [c], "tok-3").delivery.jobs[0] for c in jobs]
    assert job_delivery("images", [], "tok-4").HasField("delivery")
