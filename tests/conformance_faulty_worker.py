"""A conformance-kit worker written from the proto alone, as a worker in a new language would be, that breaks
the protocol on purpose in the way ``QM_FAULT`` names (unset: none), for tests/test_conformance.py.

Unlike the shipped workers it sends its first credits with its hello, without waiting for the welcome (the
protocol allows it). Faults: ``exit_at_start`` (exits 3 before connecting), ``no_hello`` (credits first),
``ignore_cancel`` (CANCEL_JOB changes nothing), ``no_heartbeat`` (never extends a lease), ``no_checkpoint``
(fails the checkpoint job without saving its data) and ``no_progress`` (reports no progress).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import uuid
from collections.abc import AsyncIterator
from typing import Any

import grpc
from google.protobuf import json_format, struct_pb2

from queue_manager.v1 import jobs_pb2, queue_service_pb2_grpc, types_pb2
from queue_manager.v1 import worker_service_pb2 as pb
from queue_manager.v1 import worker_service_pb2_grpc as pb_grpc

FAULT = os.environ.get("QM_FAULT", "")
QUEUE = os.environ.get("QM_CONFORMANCE_QUEUE", "")
CONCURRENCY = int(os.environ.get("QM_CONFORMANCE_CONCURRENCY", "2"))


def _payload(value: Any) -> types_pb2.Payload:
    return types_pb2.Payload(raw=json.dumps(value).encode(), content_type="application/json")


def _data(job: Any) -> Any:
    if job.data.HasField("json"):
        return json_format.MessageToDict(job.data.json)
    return json.loads(job.data.raw) if job.data.raw else {}


def _drained(response: pb.ConnectResponse) -> bool:
    """A DRAIN, or the ack of the worker's stop: finish what runs, then half-close."""
    kind = response.WhichOneof("kind")
    if kind == "command":
        return response.command.type == pb.SERVER_COMMAND_TYPE_DRAIN
    return kind == "ack" and response.ack.delivery_stopped


class Stream:
    """One worker stream: runs what it is sent until the server or a SIGTERM ends it."""

    def __init__(self, channel: grpc.aio.Channel, stopping: asyncio.Event) -> None:
        self.channel = channel
        self.stopping = stopping
        self.out: asyncio.Queue[pb.ConnectRequest | None] = asyncio.Queue()
        self.running: dict[str, tuple[asyncio.Task[None], pb.LeaseRef]] = {}
        self.closing = False

    def report(self, **fields: Any) -> None:
        self.out.put_nowait(pb.ConnectRequest(report=pb.WorkerReport(**fields)))

    async def requests(self) -> AsyncIterator[pb.ConnectRequest]:
        if FAULT != "no_hello":
            hello = pb.WorkerHello(
                worker_id=f"faulty-{uuid.uuid4().hex[:8]}", queues=[QUEUE], concurrency=CONCURRENCY
            )
            yield pb.ConnectRequest(hello=hello)
        yield pb.ConnectRequest(report=pb.WorkerReport(credits=CONCURRENCY))
        while (message := await self.out.get()) is not None:
            yield message

    async def heartbeats(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            if self.running and FAULT != "no_heartbeat":
                self.report(extensions=[ref for _, ref in self.running.values()])

    def close_when_idle(self) -> None:
        self.closing = True
        if not self.running:
            self.out.put_nowait(None)

    async def run(self, leased: pb.LeasedJob, ref: pb.LeaseRef) -> None:
        job, data = leased.job, _data(leased.job) or {}
        try:
            if job.name == "echo":
                result: Any = data
            elif job.name == "fail":
                if "times" not in data or job.attempts_made < data["times"]:
                    raise RuntimeError(data.get("message", "failed"))
                result = {"attempts": job.attempts_made + 1}
            elif job.name == "sleep":
                await asyncio.sleep(data.get("ms", 0) / 1000)
                result = {"slept": data.get("ms", 0)}
            elif job.name == "progress":
                for step in data.get("steps", []) if FAULT != "no_progress" else []:
                    self.report(
                        progress=[pb.JobProgress(lease=ref, progress=struct_pb2.Value(number_value=step))]
                    )
                result = {"steps": len(data.get("steps", []))}
            elif data.get("step", 0) == 0:  # checkpoint
                if FAULT != "no_checkpoint":
                    await queue_service_pb2_grpc.QueueServiceStub(self.channel).UpdateJobData(
                        jobs_pb2.UpdateJobDataRequest(
                            queue_name=job.queue_name,
                            job_id=job.id,
                            data=_payload({"step": 1}),
                            lease_token=leased.lease_token,
                        )
                    )
                raise RuntimeError("checkpointed at step 1")
            else:
                result = {"resumed_at": data["step"]}
            completion = pb.JobCompletion(
                queue_name=job.queue_name,
                job_id=job.id,
                lease_token=leased.lease_token,
                result=_payload(result),
            )
            self.report(completions=[completion], credits=1)
        except asyncio.CancelledError:
            self.report(cancelled=[ref], credits=1)
        except Exception as exc:
            failure = pb.JobFailure(
                queue_name=job.queue_name, job_id=job.id, lease_token=leased.lease_token, message=str(exc)
            )
            self.report(failures=[failure], credits=1)
        finally:
            self.running.pop(job.id, None)
            if self.closing and not self.running:
                self.out.put_nowait(None)

    async def serve(self) -> None:
        call = pb_grpc.WorkerServiceStub(self.channel).Connect(self.requests())
        tasks: list[asyncio.Task[None]] = []
        try:
            async for response in call:
                kind = response.WhichOneof("kind")
                if kind == "welcome":
                    interval = response.welcome.heartbeat_interval.ToTimedelta().total_seconds()
                    tasks += [
                        asyncio.create_task(self.heartbeats(interval)),
                        asyncio.create_task(self.stop()),
                    ]
                elif kind == "delivery":
                    for leased in response.delivery.jobs:
                        ref = pb.LeaseRef(
                            queue_name=leased.job.queue_name,
                            job_id=leased.job.id,
                            lease_token=leased.lease_token,
                        )
                        self.running[leased.job.id] = (asyncio.create_task(self.run(leased, ref)), ref)
                elif kind == "command" and response.command.type == pb.SERVER_COMMAND_TYPE_CANCEL_JOB:
                    running = self.running.get(response.command.job.job_id)
                    if running is not None and FAULT != "ignore_cancel":
                        running[0].cancel()
                elif _drained(response):
                    self.close_when_idle()
        finally:
            for task in tasks:
                task.cancel()

    async def stop(self) -> None:
        await self.stopping.wait()
        self.report(stop=True)


async def main() -> None:
    if FAULT == "exit_at_start":
        print("cannot start: no configuration", flush=True)
        sys.exit(3)
    stopping = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stopping.set)
    while not stopping.is_set():
        async with grpc.aio.insecure_channel(os.environ["QM_CONFORMANCE_ADDRESS"]) as channel:
            try:
                await Stream(channel, stopping).serve()
            except grpc.aio.AioRpcError as exc:
                print(f"stream ended: {exc.code().name}: {exc.details()}", flush=True)
        if not stopping.is_set():
            await asyncio.sleep(0.2)  # the server is away (a drain, a restart): try again


if __name__ == "__main__":
    asyncio.run(main())
