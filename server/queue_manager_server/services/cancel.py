"""QueueService handler for cancelling jobs (engine/control.py does the work, the worker stream tells)."""

from __future__ import annotations

import grpc

from queue_manager.v1 import jobs_pb2 as pb
from queue_manager.v1 import types_pb2
from queue_manager_server import convert, validate
from queue_manager_server.engine import Engine
from queue_manager_server.engine.control import Control
from queue_manager_server.errors import JobNotFound
from queue_manager_server.services.errors import unary

# Longest cancel reason kept with the job.
MAX_REASON = 1000


class CancelHandlers:
    """Cancelling jobs (part of `QueueService`)."""

    engine: Engine

    @unary
    async def CancelJob(
        self, request: pb.CancelJobRequest, context: grpc.aio.ServicerContext
    ) -> pb.CancelJobResponse:
        queue = validate.queue_name(request.queue_name)
        job_id = validate.job_id(request.job_id)
        reason = validate.text(request.reason, "reason", MAX_REASON, required=False)
        await Control(self.engine).cancel_job(queue, job_id, reason)
        try:
            record = await self.engine.get_job(queue, job_id)
        except JobNotFound:
            # Ended cancelled and removed at once by its retention (remove_on_fail: remove).
            job = types_pb2.Job(
                id=job_id, queue_name=queue, state=types_pb2.JOB_STATE_CANCELLED, cancel_reason=reason
            )
            return pb.CancelJobResponse(job=job)
        return pb.CancelJobResponse(job=convert.job_out(record))
