"""Queue Manager client: add jobs, administer queues and run processors against a Queue Manager server.

```python
from queue_manager import QueueManager, JobPriority

qm = QueueManager()  # QM_SERVER or localhost:50051

@qm.processor("emails")
async def send(job):
    return {"sent": True}

await qm.start_workers()
await qm.add_job("emails", "welcome", {"to": "u@example.com"}, {"priority": JobPriority.HIGH})
```
"""

from queue_manager.client import QueueManager
from queue_manager.context import JobContext
from queue_manager.convert import Job, Queue, QueueMetrics
from queue_manager.enums import JobPriority, JobState
from queue_manager.errors import (
    AlreadyExistsError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    QueueManagerError,
    ResourceExhaustedError,
    UnavailableError,
    UnrecoverableError,
)
from queue_manager.options import Backoff, JobMetadata, JobOptions, KeepJobs, QueueConfig, RateLimit
from queue_manager.requests import BulkJob
from queue_manager.sync import SyncQueueManager
from queue_manager.worker import Worker

__all__ = [
    "AlreadyExistsError",
    "Backoff",
    "BulkJob",
    "FailedPreconditionError",
    "InvalidArgumentError",
    "Job",
    "JobContext",
    "JobMetadata",
    "JobOptions",
    "JobPriority",
    "JobState",
    "KeepJobs",
    "NotFoundError",
    "Queue",
    "QueueConfig",
    "QueueManager",
    "QueueManagerError",
    "QueueMetrics",
    "RateLimit",
    "ResourceExhaustedError",
    "SyncQueueManager",
    "UnavailableError",
    "UnrecoverableError",
    "Worker",
]
