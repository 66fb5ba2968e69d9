"""Exemplars for the processing-time histogram: a traced job's run, per bucket, links Prometheus to its trace.

A job added with W3C trace context (the clients' tracing puts ``traceparent`` in its metadata attributes)
is remembered when this server delivers it, by queue and job id (over a worker stream, or to a pull worker's
FetchJobs); when its worker reports the run's end with a duration (or, a pull worker that reported none, when
this server measures the run from the fetch it served), the run becomes its bucket's exemplar (the latest one
per queue and bucket), and ``GET /metrics``
shows it on the ``queue_job_processing_duration_*`` buckets in the OpenMetrics format (Prometheus keeps
exemplars with ``--enable-feature=exemplar-storage``; Grafana links them to the trace).

Decision: kept in this process, not in Redis. The histogram's counts are all-time figures in Redis (the
same whichever server answers), but an exemplar is only a sample: recording one in Redis would add a write
to the completion path of every traced job, and each server sampling the runs it delivered is enough to
reach a trace from a bucket. A job without metadata costs the delivery one truth test and the outcome one
dict lookup while some traced job is in flight; nothing otherwise.
"""

from __future__ import annotations

import bisect
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass

from queue_manager.v1 import types_pb2
from queue_manager_server.engine.records import ClaimedJob
from queue_manager_server.engine.stats import DURATION_BOUNDS_MS, MEASURE_RUN_US

# Traced runs remembered between their delivery and their end: a run whose end never comes back to this
# server (its worker died, another server recovered it) is dropped once this many newer ones are waiting.
MAX_IN_FLIGHT = 10_000
# W3C traceparent: version, 32 hex digits of trace id (not all zero), 16 of parent span id, flags.
_TRACEPARENT = re.compile(r"[0-9a-f]{2}-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}")
_NO_TRACE = "0" * 32


@dataclass(frozen=True, slots=True)
class Exemplar:
    """A run that fell in a bucket: its trace, its duration and when it ended."""

    trace_id: str
    span_id: str
    duration_us: int
    unix_s: float


class Exemplars:
    """The traced runs in flight through this server, and the latest exemplar per queue and bucket."""

    def __init__(self) -> None:
        # (queue, job id) -> (trace id, span id, monotonic time of a pulled job's fetch, else None), oldest
        # first (dicts keep their insertion order).
        self.in_flight: dict[tuple[str, str], tuple[str, str, float | None]] = {}
        # queue -> bucket index (as includes/stats.lua counts it, from 0) -> the latest run there.
        self.latest: dict[str, dict[int, Exemplar]] = {}

    def delivered(self, queue: str, job: ClaimedJob, fetched_at: float | None = None) -> None:
        """A job leased through this server (the caller checked that it has metadata): remembered when it
        carries a trace context. `fetched_at`: the monotonic time a pull worker's fetch leased it, which
        measures a run whose end comes with no duration (`ended`)."""
        if b"traceparent" not in job.metadata:
            return
        md = types_pb2.JobMetadata.FromString(job.metadata)
        m = _TRACEPARENT.fullmatch(md.attributes.get("traceparent", "").strip().lower())
        if m is None or m[1] == _NO_TRACE:
            return
        in_flight = self.in_flight
        in_flight.pop((queue, job.id), None)  # a redelivery goes to the back
        in_flight[(queue, job.id)] = (m[1], m[2], fetched_at)
        if len(in_flight) > MAX_IN_FLIGHT:
            del in_flight[next(iter(in_flight))]

    def ended(self, queue: str, job_ids: Sequence[str], durations_us: Sequence[int]) -> None:
        """Runs that ended with these durations (µs; MEASURE_RUN_US: a pulled run, measured here from the
        fetch by this process's monotonic clock, where the histogram counts it by the scripts' clock: the two
        agree to a round trip, but not on a test clock moved meanwhile; other negatives: none reported, not
        counted by the histogram either); called only while some traced run is in flight (`in_flight`)."""
        pop = self.in_flight.pop
        for job_id, us in zip(job_ids, durations_us, strict=True):
            traced = pop((queue, job_id), None)
            if traced is not None and us == MEASURE_RUN_US and traced[2] is not None:
                us = round((time.monotonic() - traced[2]) * 1e6)
            if traced is None or us < 0:
                continue
            bucket = bisect.bisect_left(DURATION_BOUNDS_MS, us / 1000)
            self.latest.setdefault(queue, {})[bucket] = Exemplar(traced[0], traced[1], us, time.time())

    def of(self, queue: str) -> dict[int, Exemplar]:
        """The latest exemplar of each bucket of a queue (by bucket index; none for a bucket no traced run
        of this server has fallen in)."""
        return self.latest.get(queue, {})
