"""``/metrics`` on the HTTP port: the seed's names exactly, the same queue totals from any server (read from
Redis at scrape time), and this process's grpc_server_* metrics for every RPC shape."""

from __future__ import annotations

import re
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import grpc
import pytest
import redis.asyncio as aioredis
from prometheus_client.parser import text_string_to_metric_families

from queue_manager.v1 import jobs_pb2 as jpb
from queue_manager.v1 import metrics_pb2 as mpb
from queue_manager.v1 import queue_service_pb2 as qpb
from queue_manager.v1 import queue_service_pb2_grpc as qrpc
from queue_manager.v1 import types_pb2 as tpb
from queue_manager.v1 import worker_service_pb2 as pb
from queue_manager_server.app import App, StartupError
from queue_manager_server.config import DEFAULT_HTTP_LISTEN, Settings, parse_args
from queue_manager_server.embedded import free_port
from queue_manager_server.engine.records import ClaimedJob
from queue_manager_server.engine.stats import DURATION_BOUNDS_MS
from queue_manager_server.services.exemplars import MAX_IN_FLIGHT, Exemplars
from tests.conftest import RunningServer, ServerFactory
from tests.metrics_workload import ADDED, COMPLETED, COMPLETED_MS, FAILED, FAILED_MS, known_workload, ms
from tests.rawworker import RawWorker, eventually

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]
# The queue families and the labels of their samples ("le" on histogram buckets).
QUEUE_FAMILIES = {
    "queue_jobs_added_total": {"queue"},
    "queue_jobs_processing": {"queue"},
    "queue_jobs_completed_total": {"queue"},
    "queue_jobs_failed_total": {"queue"},
    "queue_job_processing_duration_ms": {"queue"},
    "queue_job_processing_duration_seconds": {"queue"},
    "queue_jobs": {"queue", "state"},
    "queue_oldest_waiting_age_seconds": {"queue"},
    "queue_priority_jobs_waiting": {"queue", "priority"},
    "queue_priority_oldest_waiting_age_seconds": {"queue", "priority"},
    "queue_workers_connected": {"queue"},
    "queue_paused": {"queue"},
    "queue_dead_letter": {"queue"},
    "queue_memory_bytes": {"queue"},
}


async def scrape(server: RunningServer) -> tuple[str, Samples]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://{server.app.http_address}/metrics") as response,
    ):
        assert response.status == 200 and response.headers["Content-Type"].startswith("text/plain")
        text = await response.text()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return text, samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


async def test_every_server_shows_the_same_queue_totals_under_the_seed_names(
    server_factory: ServerFactory,
) -> None:
    a = await server_factory(http_listen="127.0.0.1:0")
    b = await server_factory(http_listen="127.0.0.1:0")
    await known_workload(add_via=b.address, work_via=a.address)
    text_a, at_a = await scrape(a)
    _, at_b = await scrape(b)
    queue_samples = {k: v for k, v in at_a.items() if k[0].startswith("queue_")}

    def steady(samples: Samples) -> Samples:
        """Ages grow between two scrapes and the store's memory moves; everything else is equal."""
        return {
            k: v
            for k, v in samples.items()
            if k[0].startswith("queue_") and "age" not in k[0] and not k[0].startswith("queue_store_memory")
        }

    assert steady(at_a) == steady(at_b)
    for name, labels in QUEUE_FAMILIES.items():
        assert f"# TYPE {name} " in text_a
        parts = {name, f"{name}_bucket", f"{name}_count", f"{name}_sum"}
        names = {k for k in queue_samples if k[0] in parts}
        assert names, name
        for sample_name, sample_labels in names:
            assert {k for k, _ in sample_labels} - {"le"} == labels, sample_name
    q = {"queue": "work"}
    assert value(at_a, "queue_jobs_added_total", **q) == ADDED
    assert value(at_a, "queue_jobs_completed_total", **q) == COMPLETED
    assert value(at_a, "queue_jobs_failed_total", **q) == FAILED
    assert value(at_a, "queue_jobs_processing", **q) == 0
    assert value(at_a, "queue_jobs", queue="work", state="completed") == COMPLETED
    assert value(at_a, "queue_jobs", queue="work", state="failed") == FAILED
    assert value(at_a, "queue_oldest_waiting_age_seconds", **q) == 0
    for level in ("critical", "high", "normal", "low", "background"):
        assert value(at_a, "queue_priority_jobs_waiting", queue="work", priority=level) == 0
        assert value(at_a, "queue_priority_oldest_waiting_age_seconds", queue="work", priority=level) == 0
    assert value(at_a, "queue_workers_connected", **q) == 0
    assert value(at_a, "queue_paused", **q) == 0
    assert value(at_a, "queue_jobs_added_total", queue="dead-letter-queue") == FAILED
    assert value(at_a, "queue_dead_letter", queue="dead-letter-queue") == 1
    assert value(at_a, "queue_dead_letter", **q) == 0
    # The duration histograms: 90 runs of 20 ms in (10, 25] ms, 10 of 300 ms in (250, 500] ms.
    ms, s = "queue_job_processing_duration_ms", "queue_job_processing_duration_seconds"
    assert value(at_a, f"{ms}_bucket", le="10.0", **q) == 0
    assert value(at_a, f"{ms}_bucket", le="25.0", **q) == COMPLETED
    assert value(at_a, f"{ms}_bucket", le="250.0", **q) == COMPLETED
    assert value(at_a, f"{ms}_bucket", le="500.0", **q) == ADDED
    assert value(at_a, f"{ms}_bucket", le="+Inf", **q) == ADDED
    assert value(at_a, f"{ms}_count", **q) == ADDED
    assert value(at_a, f"{ms}_sum", **q) == COMPLETED * COMPLETED_MS + FAILED * FAILED_MS
    assert value(at_a, f"{s}_bucket", le="0.025", **q) == COMPLETED
    assert value(at_a, f"{s}_bucket", le="0.5", **q) == ADDED
    assert value(at_a, f"{s}_sum", **q) == pytest.approx(
        (COMPLETED * COMPLETED_MS + FAILED * FAILED_MS) / 1000
    )
    assert "_created" not in text_a
    # Every queue metric the shipped alert rules read is one the server exports.
    rules = (Path(__file__).parent.parent / "docs" / "prometheus-alerts.yml").read_text()
    read = set(re.findall(r"\b(queue_[a-z_]+)", rules))
    assert read and read <= {name for name, _ in at_a}, read - {name for name, _ in at_a}


async def test_the_store_memory_and_its_limit_are_exported_per_primary(
    server_factory: ServerFactory, redis_url: str
) -> None:
    """What the StoreMemory* alerts divide: used_memory and maxmemory of the primary, labelled host:port."""
    server = await server_factory(http_listen="127.0.0.1:0")
    limit = 3 << 30
    async with aioredis.from_url(redis_url) as r:
        before = (await r.config_get("maxmemory"))["maxmemory"]
        await r.config_set("maxmemory", limit)
        try:
            _, samples = await scrape(server)
            used_now = int((await r.info("memory"))["used_memory"])
        finally:
            await r.config_set("maxmemory", before)
        kw = r.connection_pool.connection_kwargs
    node = f"{kw['host']}:{kw['port']}"
    assert value(samples, "queue_store_memory_max_bytes", node=node) == limit
    used = value(samples, "queue_store_memory_used_bytes", node=node)
    assert 0.5 * used_now < used < 2 * used_now
    assert [k for k in samples if k[0].startswith("queue_store_memory")] == [
        ("queue_store_memory_used_bytes", (("node", node),)),
        ("queue_store_memory_max_bytes", (("node", node),)),
    ]


async def test_grpc_server_metrics_count_every_rpc_shape(server_factory: ServerFactory) -> None:
    server = await server_factory(http_listen="127.0.0.1:0")
    service = "queue_manager.v1.QueueService"
    async with grpc.aio.insecure_channel(server.address) as channel:
        stub = qrpc.QueueServiceStub(channel)
        await stub.RegisterQueue(qpb.RegisterQueueRequest(name="shapes"))
        await stub.GetQueue(qpb.GetQueueRequest(name="shapes"))
        with pytest.raises(grpc.aio.AioRpcError):
            await stub.GetQueue(qpb.GetQueueRequest(name="missing"))

        async def bulk() -> AsyncIterator[jpb.AddBulkRequest]:
            for i in range(3):
                yield jpb.AddBulkRequest(queue_name="shapes", jobs=[jpb.NewJob(name=f"b{i}")])

        await stub.AddBulk(bulk())
        watch = stub.WatchMetrics(mpb.WatchMetricsRequest(queue_names=["shapes"]))
        for _ in range(2):
            await watch.read()
        watch.cancel()
    worker = RawWorker(server.address, ["shapes"], "shapes-worker")
    try:
        await worker.connect()
        worker.report(pb.WorkerReport(credits=0))
        worker.half_close()
        await worker.wait_end()
    finally:
        await worker.close()

    async def watch_counted() -> bool:
        _, samples = await scrape(server)
        labels = {"grpc_type": "server_stream", "grpc_service": service, "grpc_method": "WatchMetrics"}
        return samples.get(("grpc_server_handled_total", _key(**labels, grpc_code="Canceled"))) == 1

    await eventually(watch_counted)
    _, got = await scrape(server)

    def rpc(kind: str, method: str, svc: str = service) -> dict[str, str]:
        return {"grpc_type": kind, "grpc_service": svc, "grpc_method": method}

    unary = rpc("unary", "GetQueue")
    assert value(got, "grpc_server_started_total", **unary) == 2
    assert value(got, "grpc_server_handled_total", **unary, grpc_code="OK") == 1
    assert value(got, "grpc_server_handled_total", **unary, grpc_code="NotFound") == 1
    assert value(got, "grpc_server_handling_seconds_count", **unary) == 2
    client_stream = rpc("client_stream", "AddBulk")
    assert value(got, "grpc_server_msg_received_total", **client_stream) == 3
    assert value(got, "grpc_server_handled_total", **client_stream, grpc_code="OK") == 1
    server_stream = rpc("server_stream", "WatchMetrics")
    assert value(got, "grpc_server_started_total", **server_stream) == 1
    assert value(got, "grpc_server_msg_sent_total", **server_stream) >= 2
    bidi = rpc("bidi_stream", "Connect", "queue_manager.v1.WorkerService")
    assert value(got, "grpc_server_started_total", **bidi) == 1
    assert value(got, "grpc_server_msg_received_total", **bidi) == 2  # the hello and one report
    assert value(got, "grpc_server_msg_sent_total", **bidi) == 1  # the welcome
    assert value(got, "grpc_server_handled_total", **bidi, grpc_code="OK") == 1
    assert value(got, "grpc_server_handling_seconds_count", **bidi) == 1


def _key(**labels: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(labels.items()))


def test_http_listen_setting() -> None:
    assert parse_args([], env={}).http_listen == DEFAULT_HTTP_LISTEN == "127.0.0.1:3010"
    assert parse_args([], env={"QM_HTTP_LISTEN": "0.0.0.0:9100"}).http_listen == "0.0.0.0:9100"
    for off in ("off", "", "none"):
        assert parse_args(["--http-listen", off], env={}).http_listen == ""
    with pytest.raises(SystemExit):
        parse_args(["--http-listen", "localhost"], env={})


async def test_a_busy_http_port_is_a_clear_startup_error(redis_url: str, prefix: str) -> None:
    port = free_port()
    app = App(
        Settings(
            listen="127.0.0.1:0", redis_url=redis_url, key_prefix=prefix, http_listen=f"127.0.0.1:{port}"
        )
    )
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", port))
        busy.listen()
        try:
            with pytest.raises(
                StartupError, match=f"cannot serve HTTP on 127.0.0.1:{port}: the address is in use"
            ):
                await app.start()
        finally:
            await app.stop()  # as qm serve does after a failed start


async def scrape_openmetrics(server: RunningServer) -> str:
    headers = {"Accept": "application/openmetrics-text; version=1.0.0"}
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://{server.app.http_address}/metrics", headers=headers) as response,
    ):
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("application/openmetrics-text")
        return await response.text()


TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN = "00f067aa0ba902b7"


async def test_traced_runs_are_the_duration_buckets_exemplars(server_factory: ServerFactory) -> None:
    """A job added with a W3C traceparent (as the clients' tracing adds it) is its bucket's exemplar once its
    run ends, in the OpenMetrics format: 20 ms completed in (10, 25] ms, 300 ms failed in (250, 500] ms; a
    job without one is none, nor is a traced job with an all-zero trace id."""
    server = await server_factory(http_listen="127.0.0.1:0")
    async with grpc.aio.insecure_channel(server.address) as channel:
        stub = qrpc.QueueServiceStub(channel)
        await stub.RegisterQueue(qpb.RegisterQueueRequest(name="traced"))
        for name, traceparent in (
            ("ok", f"00-{TRACE}-{SPAN}-01"),
            ("boom", f"00-{TRACE.replace('4', '5')}-{SPAN}-01"),
            ("plain", ""),
            ("zero", f"00-{'0' * 32}-{SPAN}-01"),
        ):
            job = jpb.NewJob(name=name)
            if traceparent:
                job.options.metadata.attributes["traceparent"] = traceparent
            await stub.AddJob(jpb.AddJobRequest(queue_name="traced", job=job))
    worker = RawWorker(server.address, ["traced"])
    try:
        await worker.connect(credits=4)
        by_name = {j.job.name: j for j in await worker.jobs(4)}
        done = [
            pb.JobCompletion(queue_name="traced", job_id=j.job.id, lease_token=j.lease_token, duration=ms(20))
            for name, j in by_name.items()
            if name != "boom"
        ]
        boom = by_name["boom"]
        failed = pb.JobFailure(
            queue_name="traced",
            job_id=boom.job.id,
            lease_token=boom.lease_token,
            message="boom",
            do_not_retry=True,
            duration=ms(300),
        )
        worker.report(pb.WorkerReport(completions=done, failures=[failed]))
        worker.half_close()
        await worker.wait_end()
    finally:
        await worker.close()
    text = await scrape_openmetrics(server)
    lines = [line for line in text.splitlines() if line.startswith("queue_job_processing_duration_ms_bucket")]
    with_exemplar = [line for line in lines if " # {" in line]
    assert len(with_exemplar) == 2, with_exemplar
    ok, failed_run = sorted(with_exemplar, key=lambda line: "500.0" in line)
    assert 'le="25.0"' in ok and f'trace_id="{TRACE}"' in ok and f'span_id="{SPAN}"' in ok
    assert re.search(r"\} 20(\.0)? \d+(\.\d+)?$", ok), ok
    assert 'le="500.0"' in failed_run and f'trace_id="{TRACE.replace("4", "5")}"' in failed_run
    seconds = [
        line
        for line in text.splitlines()
        if line.startswith('queue_job_processing_duration_seconds_bucket{le="0.025",queue="traced"}')
    ]
    assert len(seconds) == 1 and re.search(r"\} 0\.02 \d", seconds[0]), seconds
    # Exemplars are OpenMetrics only: the text format a plain scrape gets has none.
    plain, _ = await scrape(server)
    assert "trace_id" not in plain
    assert server.app.dispatcher is not None and not server.app.dispatcher.exemplars.in_flight


def _traced(job_id: str, trace: str = TRACE) -> ClaimedJob:
    md = tpb.JobMetadata(attributes={"traceparent": f"00-{trace}-{SPAN}-01"}).SerializeToString()
    return ClaimedJob(job_id, "n", b"", "", 3, 1, 0, 1, 0, 0, md, 0, 0)


def test_traced_runs_whose_end_never_comes_back_are_forgotten_oldest_first() -> None:
    """A traced run lost to this server (its worker died, another server recovered it) is not remembered
    for ever: past MAX_IN_FLIGHT the oldest goes; a redelivered job counts as the newest."""
    ex = Exemplars()
    for i in range(MAX_IN_FLIGHT):
        ex.delivered("q", _traced(str(i)))
    ex.delivered("q", _traced("0"))  # redelivered: to the back
    ex.delivered("q", _traced("new"))
    assert len(ex.in_flight) == MAX_IN_FLIGHT
    assert ("q", "1") not in ex.in_flight and ("q", "0") in ex.in_flight and ("q", "new") in ex.in_flight
    ex.ended("q", ["new", "0", "2"], [3_000, 7_000_000_000, -1])  # 3 ms; past the last bound; unreported
    assert {b: e.duration_us for b, e in ex.of("q").items()} == {
        1: 3_000,
        len(DURATION_BOUNDS_MS): 7_000_000_000,
    }
    assert ("q", "2") not in ex.in_flight  # a run reported without a duration is forgotten all the same
    ex.delivered("q", _traced("bad", trace="xyz"))
    assert ("q", "bad") not in ex.in_flight
