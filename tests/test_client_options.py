"""Client-side option parsing, validation and conversion (no server needed)."""

from __future__ import annotations

import json
import math
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from google.protobuf import struct_pb2

from queue_manager import (
    Backoff,
    BulkJob,
    JobMetadata,
    JobOptions,
    JobPriority,
    JobState,
    KeepJobs,
    NotFoundError,
    QueueManager,
    QueueManagerError,
    SyncQueueManager,
    UnavailableError,
    Worker,
)
from queue_manager.cli import _health_request, _health_status
from queue_manager.cli import plain as _plain
from queue_manager.convert import (
    decode_payload,
    encode_payload,
    job_from_proto,
    job_options_from_proto,
    python_to_value,
    value_to_python,
)
from queue_manager.errors import error_from_rpc
from queue_manager.options import job_options_to_proto, parse_priority, parse_state, queue_config_to_proto
from queue_manager.requests import add_job_request, bulk_requests, clean_queue_request, list_jobs_request
from queue_manager.schedules import upsert_schedule_request
from queue_manager.v1 import types_pb2


def test_full_mapping_converts_to_proto() -> None:
    when = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    msg = job_options_to_proto(
        {
            "priority": JobPriority.HIGH,
            "scheduled_at": when,
            "attempts": 3,
            "backoff": {
                "type": "exponential",
                "delay": 2000,
                "jitter": 0.2,
                "max_delay": timedelta(minutes=1),
            },
            "job_id": "order-42:v1",
            "metadata": {
                "correlation_id": "c-1",
                "tags": ["a", "b"],
                "tenant": "acme",
                "attributes": {"x": "y"},
            },
            "remove_on_complete": True,
            "remove_on_fail": {"age": timedelta(days=1), "count": 10},
            "timeout": 1500,
            "max_stalled": 2,
        }
    )
    assert msg.priority == types_pb2.JOB_PRIORITY_HIGH
    assert msg.schedule_time.ToDatetime(tzinfo=UTC) == when
    assert not msg.HasField("delay")
    assert msg.attempts == 3
    assert msg.backoff.type == types_pb2.BACKOFF_TYPE_EXPONENTIAL
    assert msg.backoff.delay.ToMilliseconds() == 2000
    assert msg.backoff.jitter == pytest.approx(0.2)
    assert msg.backoff.max_delay.ToSeconds() == 60
    assert msg.job_id == "order-42:v1"
    assert msg.metadata.correlation_id == "c-1"
    assert list(msg.metadata.tags) == ["a", "b"]
    assert dict(msg.metadata.attributes) == {"tenant": "acme", "x": "y"}
    assert msg.remove_on_complete.remove is True
    assert msg.remove_on_fail.age.ToSeconds() == 86_400
    assert msg.remove_on_fail.count == 10
    assert msg.timeout.ToMilliseconds() == 1500
    assert msg.max_stalled == 2


def test_dataclass_options_equal_mapping_options() -> None:
    from_dataclass = job_options_to_proto(
        JobOptions(
            priority="low",
            delay=timedelta(seconds=5),
            backoff=Backoff(type="fixed", delay=100),
            metadata=JobMetadata(correlation_id="c", tags=["t"], attributes={"k": "v"}),
            remove_on_complete=KeepJobs(count=5),
        )
    )
    from_mapping = job_options_to_proto(
        {
            "priority": 4,
            "delay": 5000,
            "backoff": 100,
            "metadata": {"correlation_id": "c", "tags": ["t"], "k": "v"},
            "remove_on_complete": 5,
        }
    )
    assert from_dataclass == from_mapping


def test_empty_and_none_options_leave_everything_unset() -> None:
    assert job_options_to_proto(None) == types_pb2.JobOptions()
    assert job_options_to_proto({}) == types_pb2.JobOptions()
    assert job_options_to_proto({"remove_on_fail": False}) == types_pb2.JobOptions()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"prioritty": 1}, "unknown job option 'prioritty'"),
        ({"priority": 0}, "priority must be between 1"),
        ({"priority": 6}, "priority must be between 1"),
        ({"priority": "urgent"}, "priority 'urgent' is not one of"),
        ({"delay": -1}, "delay must be at least 0 ms"),
        ({"delay": float("nan")}, "delay must be at least 0 ms"),
        ({"delay": 10, "scheduled_at": datetime.now(UTC)}, "exclusive"),
        ({"attempts": 0}, "attempts must be between 1"),
        ({"attempts": 2**32}, "attempts must be between 1"),
        ({"backoff": {"type": "linear", "delay": 1}}, "backoff type 'linear'"),
        ({"backoff": {"type": "fixed", "delay": 1, "jitter": 1.5}}, "jitter must be a number from 0 to 1"),
        ({"backoff": {"typ": "fixed"}}, "unknown backoff option 'typ'"),
        ({"job_id": ""}, "job_id '' must be 1 to 200"),
        ({"job_id": "a b"}, "job_id 'a b' must be"),
        ({"job_id": "x" * 201}, "must be 1 to 200"),
        ({"remove_on_complete": {"ages": 1}}, "unknown remove_on_complete key 'ages'"),
        ({"timeout": 0}, "timeout must be more than 0 ms"),
        ({"max_stalled": -1}, "max_stalled must be between 0"),
    ],
)
def test_bad_options_raise_value_error(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        job_options_to_proto(options)


@pytest.mark.parametrize(
    "options",
    [
        {"priority": True},
        {"delay": "10"},
        {"scheduled_at": "2030-01-01"},
        {"attempts": 1.5},
        {"metadata": {"tags": "a"}},
        {"metadata": {"tenant": 5}},
        {"backoff": [1]},
    ],
)
def test_wrong_kinds_raise_type_error(options: dict[str, Any]) -> None:
    with pytest.raises(TypeError):
        job_options_to_proto(options)


def test_priority_and_state_parsing() -> None:
    assert parse_priority("HIGH") is JobPriority.HIGH
    assert parse_priority("2") is JobPriority.HIGH
    assert parse_priority(5) is JobPriority.BACKGROUND
    assert parse_state("Completed") is JobState.COMPLETED
    assert str(JobState.WAITING) == "waiting"
    with pytest.raises(ValueError, match="state 'done' is not one of"):
        parse_state("done")


def test_naive_datetime_is_local_time() -> None:
    naive = datetime(2031, 5, 6, 7, 8, 9)
    msg = job_options_to_proto({"scheduled_at": naive})
    assert msg.schedule_time.ToSeconds() == int(naive.timestamp())


def test_queue_config() -> None:
    config = queue_config_to_proto(
        rate_limit={"max": 100, "duration": 60_000},
        default_job_options={"attempts": 5},
        dead_letter_queue="dlq",
        completed_retention={"age": 3_600_000},
        failed_retention=1000,
    )
    assert config.rate_limit.max == 100
    assert config.rate_limit.duration.ToSeconds() == 60
    assert config.default_job_options.attempts == 5
    assert config.dead_letter_queue == "dlq"
    assert config.completed_retention.age.ToSeconds() == 3600
    assert config.failed_retention.count == 1000
    with pytest.raises(ValueError, match="needs both"):
        queue_config_to_proto(rate_limit={"max": 1})
    with pytest.raises(ValueError, match="duration must be more than 0"):
        queue_config_to_proto(rate_limit={"max": 1, "duration": 0})
    with pytest.raises(ValueError, match="dead_letter_queue 'a:b'"):
        queue_config_to_proto(dead_letter_queue="a:b")


def test_payload_json_fast_path_and_bytes() -> None:
    payload = types_pb2.Payload()
    encode_payload({"to": "ü@example.com", "n": [1, 2.5, None]}, payload)
    assert payload.WhichOneof("body") == "raw"
    assert payload.content_type == "application/json"
    assert payload.raw == '{"to":"ü@example.com","n":[1,2.5,null]}'.encode()
    assert decode_payload(payload) == {"to": "ü@example.com", "n": [1, 2.5, None]}

    raw = types_pb2.Payload()
    encode_payload(b"\x00\x01", raw)
    assert raw.content_type == "application/octet-stream"
    assert decode_payload(raw) == b"\x00\x01"

    unset = types_pb2.Payload()
    encode_payload(None, unset)
    assert decode_payload(unset) is None

    with pytest.raises(TypeError, match="JSON-serialisable"):
        encode_payload({"x": object()}, types_pb2.Payload())


def test_payload_json_value_is_decoded_with_ints() -> None:
    value = struct_pb2.Value()
    value.struct_value.update({"user_id": 5, "ratio": 0.5, "tags": ["a"], "ok": True, "none": None})
    payload = types_pb2.Payload(json=value, content_type="application/json")
    assert decode_payload(payload) == {"user_id": 5, "ratio": 0.5, "tags": ["a"], "ok": True, "none": None}
    assert isinstance(decode_payload(payload)["user_id"], int)
    assert value_to_python(python_to_value({"p": 50})) == {"p": 50}


def _with(setter: Any) -> types_pb2.Job:
    msg = types_pb2.Job(id="1", queue_name="q", name="n", state=types_pb2.JOB_STATE_WAITING, max_attempts=1)
    msg.create_time.FromSeconds(1_700_000_000)
    setter(msg)
    return msg


# Each field only a job that ran, or one in a flow or workflow, has: set alone, job_from_proto still reads it
# (a job without any of them is read the short way: a field missing here would be dropped).
_RARE_FIELDS: list[tuple[str, Any, Any]] = [
    ("attempts_made", lambda m: setattr(m, "attempts_made", 2), 2),
    ("stalled_count", lambda m: setattr(m, "stalled_count", 1), 1),
    ("failed_reason", lambda m: setattr(m, "failed_reason", "boom"), "boom"),
    ("stacktrace", lambda m: setattr(m, "stacktrace", "tb"), "tb"),
    ("worker_id", lambda m: setattr(m, "worker_id", "w1"), "w1"),
    ("log_count", lambda m: setattr(m, "log_count", 3), 3),
    ("cancel_requested", lambda m: setattr(m, "cancel_requested", True), True),
    ("cancel_reason", lambda m: setattr(m, "cancel_reason", "stop"), "stop"),
    ("chain_failure", lambda m: setattr(m, "chain_failure", "link 2 failed"), "link 2 failed"),
    ("result", lambda m: setattr(m.result, "raw", b"ok"), b"ok"),
    ("progress", lambda m: setattr(m.progress, "number_value", 50), 50),
    (
        "processed_at",
        lambda m: m.process_time.FromSeconds(1_700_000_001),
        datetime.fromtimestamp(1_700_000_001, UTC),
    ),
    (
        "finished_at",
        lambda m: m.finish_time.FromSeconds(1_700_000_002),
        datetime.fromtimestamp(1_700_000_002, UTC),
    ),
    ("run_at", lambda m: m.run_time.FromSeconds(1_700_000_003), datetime.fromtimestamp(1_700_000_003, UTC)),
    ("metadata", lambda m: m.metadata.tags.append("t"), ["t"]),
    ("parents", lambda m: m.parents.add(job=types_pb2.JobRef(queue_name="q", job_id="p")), ["p"]),
    ("children", lambda m: m.children.add(queue_name="q", job_id="c"), ["c"]),
    ("chain_root", lambda m: m.chain_root.MergeFrom(types_pb2.JobRef(queue_name="q", job_id="r")), "r"),
    ("workflow", lambda m: setattr(m.workflow, "run_id", "run-1"), "run-1"),
    ("logs", lambda m: m.logs.add(message="hello"), ["hello"]),
]


@pytest.mark.parametrize(("attribute", "setter", "expected"), _RARE_FIELDS, ids=[f[0] for f in _RARE_FIELDS])
def test_job_from_proto_reads_what_only_run_or_linked_jobs_have(
    attribute: str, setter: Any, expected: Any
) -> None:
    job = job_from_proto(_with(setter))
    value = getattr(job, attribute)
    if attribute == "metadata":
        value = value.tags
    elif attribute in ("parents", "children"):
        value = [p.job_id for p in value]
    elif attribute == "chain_root":
        value = value.job_id
    elif attribute == "workflow":
        value = value.run_id
    elif attribute == "logs":
        value = [line.message for line in value]
    assert value == expected
    assert job.created_at == datetime.fromtimestamp(1_700_000_000, UTC) and job.max_attempts == 1


def test_job_from_proto_returns_plain_values() -> None:
    msg = types_pb2.Job(
        id="1",
        queue_name="q",
        name="n",
        state=types_pb2.JOB_STATE_COMPLETED,
        priority=types_pb2.JOB_PRIORITY_LOW,
        attempts_made=1,
        max_attempts=3,
        failed_reason="boom",
    )
    msg.data.raw = b'{"a":1}'
    msg.data.content_type = "application/json"
    msg.result.json.string_value = "done"
    msg.create_time.FromSeconds(1_700_000_000)
    msg.options.backoff.type = types_pb2.BACKOFF_TYPE_EXPONENTIAL
    msg.options.backoff.delay.FromMilliseconds(2000)
    msg.metadata.tags.append("t")
    job = job_from_proto(msg)
    assert job.data == {"a": 1}
    assert job.state is JobState.COMPLETED
    assert job.priority is JobPriority.LOW
    assert job.result == "done"
    assert job.progress is None
    assert job.created_at == datetime.fromtimestamp(1_700_000_000, UTC)
    assert job.finished_at is None
    assert job.metadata.tags == ["t"]
    assert job.options.backoff == Backoff(type="exponential", delay=timedelta(seconds=2), jitter=0.0)
    assert job_options_from_proto(types_pb2.JobOptions()) == JobOptions()
    assert json.loads(json.dumps(_plain(job)))["priority"] == "low"


def test_add_job_request_validates_names() -> None:
    request = add_job_request("emails", "send", {"a": 1}, {"priority": "high"})
    assert request.job.options.priority == types_pb2.JOB_PRIORITY_HIGH
    with pytest.raises(ValueError, match=re.escape("queue name 'bad{name}'")):
        add_job_request("bad{name}", "send", None, None)
    with pytest.raises(ValueError, match="job name must be 1 to 200"):
        add_job_request("q", "", None, None)


def test_bulk_requests_chunk_in_order_and_share_options() -> None:
    options = {"attempts": 2}
    jobs: list[Any] = [{"name": "n", "data": {"i": i}, "options": options} for i in range(1200)]
    jobs.append(BulkJob(name="last", data=b"x"))
    chunks = list(bulk_requests("q", jobs))
    assert [len(c.jobs) for c in chunks] == [500, 500, 201]
    assert all(c.queue_name == "q" for c in chunks)
    flat = [job for chunk in chunks for job in chunk.jobs]
    assert [json.loads(j.data.raw)["i"] for j in flat[:-1]] == list(range(1200))
    assert all(j.options.attempts == 2 for j in flat[:-1])
    assert flat[-1].data.raw == b"x"
    assert not flat[-1].HasField("options")


def test_bulk_requests_bound_bytes_and_name_bad_jobs() -> None:
    big = "x" * 100_000
    chunks = list(bulk_requests("q", [{"name": "n", "data": big} for _ in range(100)]))
    assert len(chunks) > 1
    assert sum(len(c.jobs) for c in chunks) == 100
    with pytest.raises(ValueError, match="job 1: 'name' is required"):
        list(bulk_requests("q", [{"name": "ok"}, {"data": 1}]))
    with pytest.raises(ValueError, match="job 0: unknown key 'job_id'"):
        list(bulk_requests("q", [{"name": "n", "job_id": "x"}]))
    with pytest.raises(ValueError, match="job 0: attempts must be"):
        list(bulk_requests("q", [{"name": "n", "options": {"attempts": 0}}]))


def test_clean_and_list_requests() -> None:
    clean = clean_queue_request("q", timedelta(hours=1), "completed", limit=10)
    assert clean.grace.ToSeconds() == 3600
    assert clean.state == types_pb2.JOB_STATE_COMPLETED
    assert clean.limit == 10
    listing = list_jobs_request("q", JobState.FAILED, 50, "tok")
    assert (listing.state, listing.page_size, listing.page_token) == (types_pb2.JOB_STATE_FAILED, 50, "tok")
    with pytest.raises(ValueError, match="page_size"):
        list_jobs_request("q", "failed", 5000, "")


class _FakeRpcError(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        self._code, self._details = code, details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details


def test_error_mapping() -> None:
    error = error_from_rpc(_FakeRpcError(grpc.StatusCode.NOT_FOUND, "queue 'x' is not registered"))
    assert isinstance(error, NotFoundError)
    assert error.code is grpc.StatusCode.NOT_FOUND
    assert error.message == "queue 'x' is not registered"
    assert str(error) == "NOT_FOUND: queue 'x' is not registered"
    assert isinstance(error_from_rpc(_FakeRpcError(grpc.StatusCode.UNAVAILABLE, "")), UnavailableError)
    other = error_from_rpc(_FakeRpcError(grpc.StatusCode.DATA_LOSS, "x"))
    assert type(other) is QueueManagerError
    # grpc-core's own words for a connection lost mid-stream: what a unary call would say, UNAVAILABLE.
    lost = error_from_rpc(_FakeRpcError(grpc.StatusCode.INTERNAL, "Internal error from Core"))
    assert isinstance(lost, UnavailableError) and "connection to the server was lost" in lost.message
    assert error_from_rpc(_FakeRpcError(grpc.StatusCode.INTERNAL, "internal error (reference 1)")).code is (
        grpc.StatusCode.INTERNAL
    )


def test_health_wire_helpers() -> None:
    assert _health_request("") == b""
    assert _health_request("queue_manager.v1.QueueService")[:2] == b"\x0a\x1d"
    assert _health_status(b"\x08\x01") == 1
    assert _health_status(b"") == 0


def test_bulk_streams_stay_under_the_server_limit() -> None:
    from queue_manager.requests import bulk_requests, split_streams

    requests = list(bulk_requests("q", [{"name": "n", "data": i} for i in range(2_300)], chunk_jobs=500))
    streams = split_streams(requests, max_jobs=1_000)
    assert [sum(len(r.jobs) for r in s) for s in streams] == [1_000, 1_000, 300]
    assert [j.data.raw for s in streams for r in s for j in r.jobs] == [str(i).encode() for i in range(2_300)]


def test_nan_is_not_json() -> None:
    from queue_manager.convert import encode_payload
    from queue_manager.v1 import types_pb2

    # The message says what was refused: json's own ("Out of range float values…") named no argument.
    with pytest.raises(ValueError, match=r"^data must be JSON \(no NaN or infinity, no circular reference\)"):
        encode_payload({"x": float("nan")}, types_pb2.Payload())
    looped: list[object] = []
    looped.append(looped)
    with pytest.raises(ValueError, match=r"^data must be JSON .*Circular reference"):
        encode_payload(looped, types_pb2.Payload())


def test_jobs_with_the_same_plain_options_share_one_converted_copy() -> None:
    plain = job_options_to_proto(
        {"priority": "high", "attempts": 3, "backoff": 500, "timeout": timedelta(seconds=2)}
    )
    first, second = (
        job_options_from_proto(plain),
        job_options_from_proto(types_pb2.JobOptions.FromString(plain.SerializeToString())),
    )
    assert first is second  # converted once
    assert first == JobOptions(
        priority=JobPriority.HIGH,
        attempts=3,
        backoff=Backoff(type="fixed", delay=timedelta(milliseconds=500), jitter=0.0),
        timeout=timedelta(seconds=2),
    )
    other = job_options_from_proto(job_options_to_proto({"priority": "low"}))
    assert other is not first and other.priority == JobPriority.LOW


def test_options_holding_mutable_parts_are_converted_afresh_for_each_job() -> None:
    # Metadata (its tags and attributes) and chain links are lists and dicts a caller could change: two
    # jobs never share them.
    for raw in (
        {"metadata": {"tags": ["a"]}},
        {"chain_to": [{"queue_name": "q", "job_name": "next", "data": {"x": 1}}]},
    ):
        msg = job_options_to_proto(raw)
        first, second = job_options_from_proto(msg), job_options_from_proto(msg)
        assert first == second and first is not second
    a, b = (job_options_from_proto(job_options_to_proto({"metadata": {"tags": ["a"]}})) for _ in range(2))
    assert a.metadata is not None and b.metadata is not None
    a.metadata.tags.append("changed")
    assert b.metadata.tags == ["a"]


@pytest.mark.parametrize("every", [-1000, 999, float("nan"), timedelta(seconds=-1)])
def test_a_schedule_interval_below_the_minimum_states_the_minimum(every: Any) -> None:
    with pytest.raises(ValueError, match=r"^every must be at least 1 s \(1000 ms\), got "):
        upsert_schedule_request(
            "q",
            "s",
            cron=None,
            every=every,
            timezone=None,
            job_name="j",
            data=None,
            options=None,
            start=None,
            end=None,
            limit=None,
            catch_up="skip",
        )


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"concurrency": "5"}, TypeError, "concurrency must be a whole number from 1 to 100,000"),
        ({"concurrency": 0}, ValueError, "concurrency must be a whole number from 1 to 100,000.*got 0"),
        ({"concurrency": True}, TypeError, "concurrency must be"),
        ({"timeout": -1}, ValueError, "timeout must be seconds more than 0 .*got -1"),
        ({"timeout": 0}, ValueError, "timeout must be seconds more than 0"),
        ({"timeout": math.nan}, ValueError, "timeout must be .*got nan"),
        ({"timeout": math.inf}, ValueError, r"timeout must be .*at most 31,536,000 \(365 days\)"),
        ({"timeout": 1e10}, ValueError, "timeout must be"),  # gRPC wrapped it: every call failed at once
        ({"timeout": "5"}, TypeError, "timeout must be seconds"),
        (
            {"shutdown_grace": -0.5},
            ValueError,
            "shutdown_grace must be a finite number of seconds, at least 0",
        ),
        ({"shutdown_grace": math.nan}, ValueError, "shutdown_grace must be"),
        ({"shutdown_grace": math.inf}, ValueError, "shutdown_grace must be"),
        ({"shutdown_grace": None}, TypeError, "shutdown_grace must be"),
        (
            {"address": "127.0.0.1:99999"},
            ValueError,
            "address '127.0.0.1:99999': the port must be .*1 to 65535",
        ),
        ({"address": "localhost:0"}, ValueError, "the port must be a number from 1 to 65535, got '0'"),
        ({"address": "localhost:-1"}, ValueError, "the port must be"),
        ({"address": "ipv4:127.0.0.1:1,127.0.0.1:70000"}, ValueError, "got '70000'"),
        ({"address": "[::1"}, ValueError, r"write an IPv6 address as \[address\]:port"),
        ({"address": 50051}, TypeError, "address must be a str"),
        ({"token": b"secret"}, TypeError, "token must be a str or None, not bytes"),
        ({"credentials": "tls"}, TypeError, "credentials must be grpc.ChannelCredentials"),
        (
            {"channel_options": {"a": 1}},
            TypeError,
            r"channel_options must be a list of \(name, value\) pairs",
        ),
        (
            {"channel_options": [("a", 1, 2)]},
            TypeError,
            r"channel_options\[0\] must be a \(name, value\) pair",
        ),
        ({"worker_labels": {"zone": 1}}, TypeError, "worker_labels must map str to str"),
        ({"worker_labels": ["zone"]}, TypeError, "worker_labels must be a mapping"),
    ],
)
def test_queue_manager_checks_its_arguments(
    kwargs: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        QueueManager(**kwargs)
    sync_kwargs = {
        k: v for k, v in kwargs.items() if k not in ("concurrency", "shutdown_grace", "worker_labels")
    }
    if sync_kwargs:
        with pytest.raises(error, match=message):
            SyncQueueManager(**sync_kwargs)


def test_queue_manager_accepts_every_form_of_its_arguments() -> None:
    for address in (
        "localhost:50051",
        "[::1]:5",
        "dns:///example.com:443",
        "unix:/tmp/qm.sock",
        "example.com",
    ):
        assert QueueManager(address).address == address
    qm = QueueManager(
        "ipv4:127.0.0.1:5001,127.0.0.1:5002",
        concurrency=100_000,
        timeout=0.5,
        shutdown_grace=0,
        worker_labels={"zone": "a"},
        channel_options=[("grpc.enable_retries", 0)],
        token="t0k",
    )
    assert (qm.concurrency, qm.timeout, qm.shutdown_grace) == (100_000, 0.5, 0.0)
    SyncQueueManager("localhost:1", timeout=2).close()


def test_the_server_address_from_the_environment_is_checked_and_named(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("QM_SERVER", "localhost:65536")
    with pytest.raises(ValueError, match="QM_SERVER 'localhost:65536': the port must be"):
        QueueManager()
    assert QueueManager("localhost:1").address == "localhost:1"


def test_worker_checks_its_arguments() -> None:
    def noop(job: Any) -> None:
        return None

    with pytest.raises(TypeError, match="concurrency must be a whole number"):
        Worker("localhost:1", {"q": noop}, concurrency="5")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="shutdown_grace must be"):
        Worker("localhost:1", {"q": noop}, shutdown_grace=-1)
    with pytest.raises(TypeError, match="labels must map str to str"):
        Worker("localhost:1", {"q": noop}, labels={"k": 2})  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="the port must be"):
        Worker("localhost:99999", {"q": noop})
    # As register_processor: a processor that is not callable failed every job it took, and a queue name the
    # server refuses had the worker retry its hello for ever.
    with pytest.raises(TypeError, match="processor for 'q' must be callable, not int"):
        Worker("localhost:1", {"q": 5})  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="queue name 'a:b' must be 1 to 100 letters"):
        Worker("localhost:1", {"a:b": noop})


async def test_add_bulk_of_one_mapping_says_it_wants_a_list_of_jobs() -> None:
    """A dict passed as the jobs was iterated for its keys (job 0: must be a mapping or BulkJob, not str)."""
    qm = QueueManager("localhost:1")
    expected = r"jobs must be a list \(or other iterable\) of BulkJob or dicts \{'name', 'data', 'options'\}"
    with pytest.raises(
        TypeError, match=f"{expected}, not one dict; to add one job, pass \\[job\\] or use add_job"
    ):
        await qm.add_bulk("q", {"name": "n", "data": 1})
    with pytest.raises(TypeError, match=f"{expected}, not one BulkJob"):
        await qm.add_bulk("q", BulkJob("n"))
    with pytest.raises(TypeError, match=f"{expected}, not str"):
        await qm.add_bulk("q", "name")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=f"{expected}, not int"):
        await qm.add_bulk("q", 5)  # type: ignore[arg-type]
    with SyncQueueManager("localhost:1") as sync, pytest.raises(TypeError, match=f"{expected}, not one dict"):
        sync.add_bulk("q", {"name": "n"})
    await qm.shutdown()
