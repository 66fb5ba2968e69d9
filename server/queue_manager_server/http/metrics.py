"""``GET /metrics``: Prometheus metrics of every queue, read from Redis at scrape time, and this process's
gRPC server metrics.

Decision: the queue metrics are not counters in this process's memory but a custom collector over one
snapshot read from Redis per scrape (as asynq's exporter does): Redis holds the totals and the all-time
duration histogram (written by the scripts, engine/stats.py), so a scrape shows the same figures whichever
server process answers, survives restarts, and any one server is a complete scrape target for the queues.
The ``grpc_server_*`` metrics describe the calls one process served, so they are per process: scrape every
server (and sum) for those.

Labels are ``queue`` (and ``state`` on ``queue_jobs``, ``priority`` on the per-level families): bounded by the
number of queues, never a job id. The store's memory (``queue_store_memory_*``) is labelled ``node``, one per
primary (one INFO each per scrape, beside the snapshot), so an alert can fire before maxmemory refuses adds.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.samples import Exemplar as PromExemplar
from redis.exceptions import NoPermissionError

from queue_manager_server.engine.metrics import Snapshot
from queue_manager_server.engine.records import Metrics, NodeMemory
from queue_manager_server.engine.stats import DURATION_BOUNDS_MS
from queue_manager_server.grpc_metrics import go_float
from queue_manager_server.http.guard import HttpGuard, forbidden
from queue_manager_server.services.errors import status_for
from queue_manager_server.services.exemplars import Exemplar, Exemplars

if TYPE_CHECKING:
    from queue_manager_server.http import HttpContext

log = logging.getLogger("queue_manager_server.http")

# Job states of the queue_jobs gauge; disjoint, so sum() over state is the number of jobs kept.
STATES = ("waiting", "paused", "delayed", "active", "completed", "failed", "cancelled")
# The ``priority`` label of the per-level families, by level (metrics.lua's order).
PRIORITIES = ("critical", "high", "normal", "low", "background")


def setup(app: web.Application, ctx: HttpContext) -> None:
    app.router.add_get("/metrics", _Scrape(ctx).handle)


class _Scrape:
    def __init__(self, ctx: HttpContext) -> None:
        self.ctx = ctx
        self.guard = HttpGuard(ctx.auth)
        # Whether the refusal of INFO by the server's Redis user was logged: said once, not every scrape.
        self.info_refused = False

    async def handle(self, request: web.Request) -> web.Response:
        # With a token file: a token that may read, and only its queues are shown (http/guard.py).
        principal = self.guard.principal(request)
        if principal is not None and not principal.can("read"):
            raise forbidden(
                f"token {principal.name!r} may not read metrics: it needs viewer, producer, admin"
            )
        try:
            snap = await self.ctx.metrics.snapshot()
            if principal is not None and not principal.all_queues:
                snap = dataclasses.replace(snap, queues=[m for m in snap.queues if principal.allows(m.queue)])
        except Exception as exc:
            code, message = status_for(exc)
            return web.Response(status=503, text=f"{code.name}: {message}\n")
        registry = CollectorRegistry(auto_describe=False)
        registry.register(QueueCollector(snap, await self._memory(), self.ctx.exemplars))
        registry.register(self.ctx.grpc_metrics)
        encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
        return web.Response(body=encoder(registry), headers={"Content-Type": content_type})

    async def _memory(self) -> list[NodeMemory]:
        """The store's memory, or none when Redis refuses INFO (a managed service's ACL may): the queue
        metrics are still served."""
        try:
            return await self.ctx.metrics.memory()
        except NoPermissionError:
            # The least-privilege ACL user of docs/security.md has no INFO: an expected state, not a fault.
            if not self.info_refused:
                self.info_refused = True
                log.warning(
                    "the server's Redis user may not run INFO (its ACL): /metrics leaves out "
                    "queue_store_memory_used_bytes and queue_store_memory_max_bytes"
                )
            return []
        except Exception as exc:
            log.warning(f"cannot read the store's memory (INFO memory): {status_for(exc)[1]}")
            return []


def _memory_families(nodes: list[NodeMemory]) -> Iterator[Metric]:
    used = GaugeMetricFamily(
        "queue_store_memory_used_bytes",
        "Memory the Redis/Valkey primary uses (INFO used_memory), per primary.",
        labels=["node"],
    )
    limit = GaugeMetricFamily(
        "queue_store_memory_max_bytes",
        "The primary's maxmemory: past it, adds are refused RESOURCE_EXHAUSTED; 0 when unbounded.",
        labels=["node"],
    )
    for m in nodes:
        used.add_metric([m.node], m.used)
        limit.add_metric([m.node], m.max)
    yield used
    yield limit


def _histogram(
    name: str, doc: str, queues: list[Metrics], per_ms: int, unit: str, exemplars: Exemplars | None
) -> HistogramMetricFamily:
    """The all-time duration histogram in a unit (per_ms: milliseconds per unit), each bucket with the latest
    traced run this server saw fall in it as its exemplar (shown in the OpenMetrics format only)."""
    family = HistogramMetricFamily(name, f"{doc} ({unit}).", labels=["queue"])
    bounds = [*(b / per_ms for b in DURATION_BOUNDS_MS), float("inf")]
    for m in queues:
        if not m.all_runs:
            continue
        seen = exemplars.of(m.queue) if exemplars is not None else {}
        cumulative, buckets = 0, []
        for i, (bound, count) in enumerate(zip(bounds, m.all_runs, strict=True)):
            cumulative += count
            e = seen.get(i)
            if e is None:
                buckets.append((go_float(bound), cumulative))
            else:
                buckets.append((go_float(bound), cumulative, _exemplar(e, per_ms)))  # type: ignore[arg-type]
        family.add_metric([m.queue], buckets, m.all_run_us / 1000 / per_ms)
    return family


def _exemplar(e: Exemplar, per_ms: int) -> PromExemplar:
    labels = {"trace_id": e.trace_id, "span_id": e.span_id}
    return PromExemplar(labels, e.duration_us / 1000 / per_ms, e.unix_s)


def _levels(queues: list[Metrics]) -> Iterator[Metric]:
    """Ready jobs and the oldest one's wait per priority level (a queue's priority bounds show here)."""
    waiting = GaugeMetricFamily(
        "queue_priority_jobs_waiting",
        "Jobs of a priority ready to run (waiting or paused), those a priority bound moved ahead among them.",
        labels=["queue", "priority"],
    )
    oldest = GaugeMetricFamily(
        "queue_priority_oldest_waiting_age_seconds",
        "How long the longest-waiting ready job of a priority has waited; 0 when none waits.",
        labels=["queue", "priority"],
    )
    for m in queues:
        for name, (count, since) in zip(PRIORITIES, m.levels, strict=False):
            waiting.add_metric([m.queue, name], count)
            oldest.add_metric([m.queue, name], max(m.sample_ms - since, 0) / 1000 if since >= 0 else 0)
    yield waiting
    yield oldest


class QueueCollector:
    """The queue metric families of one snapshot (a collector made per scrape)."""

    def __init__(
        self, snap: Snapshot, memory: list[NodeMemory] | None = None, exemplars: Exemplars | None = None
    ) -> None:
        self.snap = snap
        self.memory = memory or []
        self.exemplars = exemplars

    def collect(self) -> Iterator[Metric]:
        queues = self.snap.queues
        counters = (
            ("queue_jobs_added", "Jobs added since the queue was registered.", "added_total"),
            ("queue_jobs_completed", "Jobs completed since the queue was registered.", "completed_total"),
            ("queue_jobs_failed", "Jobs failed for good since the queue was registered.", "failed_total"),
            ("queue_jobs_stalled", "Stalled runs recovered since the queue was registered.", "stalled_total"),
            ("queue_jobs_expired", "Jobs expired unstarted since the queue was registered.", "expired_total"),
            (
                "queue_job_runs_timed_out",
                "Runs ended by a timeout (the server's or the worker's) since the queue was registered.",
                "timed_out_total",
            ),
            (
                "queue_job_runs_raised",
                "Runs that raised an error since the queue was registered (retried or not).",
                "raised_total",
            ),
        )
        for name, doc, attr in counters:
            counter = CounterMetricFamily(name, doc, labels=["queue"])
            for m in queues:
                counter.add_metric([m.queue], getattr(m, attr))
            yield counter
        gauges: tuple[tuple[str, str, Callable[[Metrics], float]], ...] = (
            ("queue_jobs_processing", "Jobs running now (leased to workers).", lambda m: m.active),
            (
                "queue_oldest_waiting_age_seconds",
                "How long the longest-waiting ready job has waited; 0 when none waits.",
                lambda m: max(m.sample_ms - m.oldest_ready_ms, 0) / 1000 if m.oldest_ready_ms >= 0 else 0,
            ),
            ("queue_workers_connected", "Workers connected for the queue, any server.", lambda m: m.workers),
            (
                "queue_workers_free_capacity",
                "Jobs the connected workers could take now (concurrency minus jobs in flight).",
                lambda m: m.free_capacity,
            ),
            ("queue_paused", "1 while the queue is paused.", lambda m: 1 if m.is_paused else 0),
            (
                "queue_groups",
                "Fairness groups with jobs waiting or active, limits of their own, or paused.",
                lambda m: m.groups,
            ),
            (
                "queue_groups_paused",
                "Fairness groups paused (their jobs start once resumed).",
                lambda m: m.groups_paused,
            ),
            (
                "queue_memory_bytes",
                "Estimated bytes of the store the queue's keys hold (its jobs sampled; refreshed every 30 s "
                "by default): which queue fills Redis.",
                lambda m: m.memory_bytes,
            ),
            (
                "queue_rate_limit_tokens",
                "Job starts available in the rate-limit bucket now; 0 without a rate limit.",
                lambda m: m.rate_limit_tokens,
            ),
        )
        for name, doc, value in gauges:
            gauge = GaugeMetricFamily(name, doc, labels=["queue"])
            for m in queues:
                gauge.add_metric([m.queue], value(m))
            yield gauge
        targets = {m.dead_letter_queue for m in queues}
        gauge = GaugeMetricFamily(
            "queue_dead_letter",
            "1 for a queue that a registered queue hands its jobs failing for good to (a dead-letter queue).",
            labels=["queue"],
        )
        for m in queues:
            gauge.add_metric([m.queue], 1 if m.queue in targets else 0)
        yield gauge
        jobs = GaugeMetricFamily(
            "queue_jobs", "Jobs by state (finished ones while retained).", labels=["queue", "state"]
        )
        for m in queues:
            for state in STATES:
                jobs.add_metric([m.queue, state], getattr(m, state))
        yield jobs
        yield from _levels(queues)
        doc = "Processing time of runs reported with their duration, since the queue was registered"
        exemplars = self.exemplars
        yield _histogram("queue_job_processing_duration_ms", doc, queues, 1, "milliseconds", exemplars)
        yield _histogram("queue_job_processing_duration_seconds", doc, queues, 1000, "seconds", exemplars)
        if self.memory:
            yield from _memory_families(self.memory)
