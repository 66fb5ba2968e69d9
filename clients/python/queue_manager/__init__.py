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

`WorkerManager("myapp.jobs:qm", min_workers=1, max_workers=8)` runs those processors in 1 to 8 processes,
sized by the queues' depth (``qm worker myapp.jobs --autoscale 1:8``).
"""

# First, before anything imports grpc: how its sockets are read (_grpc_io.py).
import queue_manager._grpc_io  # noqa: F401

# isort: split
from queue_manager.batching import BatchProcessor, batch
from queue_manager.child_jobs import ChildSpec
from queue_manager.client import QueueManager
from queue_manager.client_workers import WorkerControlResult
from queue_manager.codecs import AesGcmCodec, GzipCodec, PayloadCodecError, codecs_from_env
from queue_manager.conditions import Condition, when
from queue_manager.context import JobContext
from queue_manager.convert import (
    ChildJob,
    EventWait,
    ExternalEvent,
    Job,
    JobError,
    JobLogLine,
    JobRef,
    ParentJob,
    Queue,
    WorkflowStepRef,
)
from queue_manager.dead_letters import KEEP_DATA, DeadLetter, RedrivenQueue, RedriveResult
from queue_manager.enums import DedupMode, JobErrorKind, JobPriority, JobState, WorkerState
from queue_manager.errors import (
    AlreadyExistsError,
    DelayedError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
    QueueFullError,
    QueueManagerError,
    RateLimitedError,
    ResourceExhaustedError,
    UnauthenticatedError,
    UnavailableError,
    UnrecoverableError,
    WaitingForChildren,
    WaitingForEvent,
)
from queue_manager.event_triggers import EventTrigger
from queue_manager.events import JobEvent, JobEventStream, JobEventType
from queue_manager.external_events import PushedEvent
from queue_manager.groups import GroupInfo
from queue_manager.maintenance import MaintenanceWindow
from queue_manager.metrics import LevelMetrics, MetricsBucket, MetricsSnapshot, QueueMetrics, WorkerInfo
from queue_manager.options import (
    Backoff,
    ChainLink,
    Dedup,
    GroupLimits,
    JobMetadata,
    JobOptions,
    KeepJobs,
    QueueConfig,
    RateLimit,
)
from queue_manager.payload_format import EncodedPayload
from queue_manager.pool import PoolEvent, WorkerManager
from queue_manager.pull import FailOutcome, PulledJob, SyncPulledJob
from queue_manager.requests import BulkJob
from queue_manager.schedules import Schedule
from queue_manager.search import BulkResult, JobCount
from queue_manager.sync import SyncQueueManager
from queue_manager.worker import Worker
from queue_manager.workflows import WorkflowRun, WorkflowState, WorkflowStepRun, WorkflowStepState

__all__ = [
    "KEEP_DATA",
    "AesGcmCodec",
    "AlreadyExistsError",
    "Backoff",
    "BatchProcessor",
    "BulkJob",
    "BulkResult",
    "ChainLink",
    "ChildJob",
    "ChildSpec",
    "Condition",
    "DeadLetter",
    "Dedup",
    "DedupMode",
    "DelayedError",
    "EncodedPayload",
    "EventTrigger",
    "EventWait",
    "ExternalEvent",
    "FailOutcome",
    "FailedPreconditionError",
    "GroupInfo",
    "GroupLimits",
    "GzipCodec",
    "InvalidArgumentError",
    "Job",
    "JobContext",
    "JobCount",
    "JobError",
    "JobErrorKind",
    "JobEvent",
    "JobEventStream",
    "JobEventType",
    "JobLogLine",
    "JobMetadata",
    "JobOptions",
    "JobPriority",
    "JobRef",
    "JobState",
    "KeepJobs",
    "LevelMetrics",
    "MaintenanceWindow",
    "MetricsBucket",
    "MetricsSnapshot",
    "NotFoundError",
    "ParentJob",
    "PayloadCodecError",
    "PermissionDeniedError",
    "PoolEvent",
    "PulledJob",
    "PushedEvent",
    "Queue",
    "QueueConfig",
    "QueueFullError",
    "QueueManager",
    "QueueManagerError",
    "QueueMetrics",
    "RateLimit",
    "RateLimitedError",
    "RedriveResult",
    "RedrivenQueue",
    "ResourceExhaustedError",
    "Schedule",
    "SyncPulledJob",
    "SyncQueueManager",
    "UnauthenticatedError",
    "UnavailableError",
    "UnrecoverableError",
    "WaitingForChildren",
    "WaitingForEvent",
    "Worker",
    "WorkerControlResult",
    "WorkerInfo",
    "WorkerManager",
    "WorkerState",
    "WorkflowRun",
    "WorkflowState",
    "WorkflowStepRef",
    "WorkflowStepRun",
    "WorkflowStepState",
    "batch",
    "codecs_from_env",
    "when",
]
