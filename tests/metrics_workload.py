"""A workload whose every metric is known: 100 jobs added, 90 completed in 20 ms, 10 failed for good in
300 ms, reported by a raw worker with exact durations (tests/test_metrics.py, tests/test_prometheus.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
from google.protobuf.duration_pb2 import Duration

from queue_manager.v1 import jobs_pb2 as jpb
from queue_manager.v1 import queue_service_pb2 as qpb
from queue_manager.v1 import queue_service_pb2_grpc as qrpc
from queue_manager.v1 import worker_service_pb2 as pb
from tests.rawworker import RawWorker

ADDED, COMPLETED, FAILED = 100, 90, 10
COMPLETED_MS, FAILED_MS = 20, 300
# (90 * 20 + 10 * 300) / 100
MEAN_MS = 48
# The 95th of 100 runs is the 5th of the 10 in the (250, 500] ms bucket: 250 + 250 * 5 / 10.
P95_MS = 375


def ms(n: int) -> Duration:
    d = Duration()
    d.FromMilliseconds(n)
    return d


async def known_workload(add_via: str, work_via: str, queue: str = "work") -> None:
    """Adds the jobs through one server (60 in a bulk stream, 40 one by one) and works them through
    another; returns once every outcome is recorded (the worker half-closes after its last report)."""
    async with grpc.aio.insecure_channel(add_via) as channel:
        stub = qrpc.QueueServiceStub(channel)
        await stub.RegisterQueue(qpb.RegisterQueueRequest(name=queue))

        async def bulk() -> AsyncIterator[jpb.AddBulkRequest]:
            for start in (0, 30):
                yield jpb.AddBulkRequest(
                    queue_name=queue, jobs=[jpb.NewJob(name=f"b{i}") for i in range(start, start + 30)]
                )

        await stub.AddBulk(bulk())
        for i in range(ADDED - 60):
            await stub.AddJob(jpb.AddJobRequest(queue_name=queue, job=jpb.NewJob(name=f"j{i}")))
    worker = RawWorker(work_via, [queue], worker_id="known-workload")
    try:
        await worker.connect(credits=ADDED)
        jobs = await worker.jobs(ADDED)
        refs = [(j.job.queue_name, j.job.id, j.lease_token) for j in jobs]
        for start in range(0, COMPLETED, 30):  # three reports: three script calls
            worker.report(
                pb.WorkerReport(
                    completions=[
                        pb.JobCompletion(queue_name=q, job_id=i, lease_token=t, duration=ms(COMPLETED_MS))
                        for q, i, t in refs[start : start + 30]
                    ]
                )
            )
        worker.report(
            pb.WorkerReport(
                failures=[
                    pb.JobFailure(
                        queue_name=q,
                        job_id=i,
                        lease_token=t,
                        message="boom",
                        do_not_retry=True,
                        duration=ms(FAILED_MS),
                    )
                    for q, i, t in refs[COMPLETED:]
                ]
            )
        )
        worker.half_close()
        await worker.wait_end()
    finally:
        await worker.close()
