"""QueueService: the producers' and operators' service, assembled from one handler class per area."""

from __future__ import annotations

from collections.abc import Callable

from queue_manager.v1 import queue_service_pb2_grpc as pb_grpc
from queue_manager_server.engine import Engine
from queue_manager_server.engine.bulk import BulkStreams
from queue_manager_server.engine.children import Children
from queue_manager_server.engine.event_triggers import EventTriggers
from queue_manager_server.engine.external_events import ExternalEvents
from queue_manager_server.engine.groups import Groups
from queue_manager_server.engine.job_control import JobControl
from queue_manager_server.engine.job_events import JobEvents
from queue_manager_server.engine.metrics import MetricsReader
from queue_manager_server.engine.redrive import DeadLetters
from queue_manager_server.engine.search import JobSearch
from queue_manager_server.engine.workers import WorkerStore
from queue_manager_server.services.adds import AddCoalescer
from queue_manager_server.services.cancel import CancelHandlers
from queue_manager_server.services.children import ChildrenHandlers
from queue_manager_server.services.dead_letters import DeadLetterHandlers
from queue_manager_server.services.event_triggers import EventTriggerHandlers
from queue_manager_server.services.exemplars import Exemplars
from queue_manager_server.services.external_events import ExternalEventHandlers
from queue_manager_server.services.groups import GroupHandlers
from queue_manager_server.services.job_control import JobControlHandlers
from queue_manager_server.services.job_events import EventWatchers, JobEventHandlers
from queue_manager_server.services.jobs import JobHandlers
from queue_manager_server.services.long_pushes import LongPushes
from queue_manager_server.services.metrics import MetricsHandlers, WatchSource
from queue_manager_server.services.pull import PullHandlers, PullWaiters
from queue_manager_server.services.queues import QueueAdmin
from queue_manager_server.services.schedules import ScheduleHandlers
from queue_manager_server.services.search import SearchHandlers
from queue_manager_server.services.waiters import JobWaiters
from queue_manager_server.services.worker_control import WorkerControl, WorkerControlHandlers
from queue_manager_server.services.workflows import WorkflowHandlers, Workflows


class QueueService(
    QueueAdmin,
    GroupHandlers,
    JobHandlers,
    JobControlHandlers,
    CancelHandlers,
    ChildrenHandlers,
    ExternalEventHandlers,
    EventTriggerHandlers,
    DeadLetterHandlers,
    SearchHandlers,
    ScheduleHandlers,
    WorkflowHandlers,
    MetricsHandlers,
    JobEventHandlers,
    WorkerControlHandlers,
    PullHandlers,
    pb_grpc.QueueServiceServicer,
):
    """Queues, jobs, workflows, schedules and metrics; each area's handlers live in their own module."""

    def __init__(self, engine: Engine, max_payload_bytes: int, workflows: Workflows) -> None:
        self.engine = engine
        self.bulk = BulkStreams(engine)
        self.adds = AddCoalescer(engine)
        self.max_payload = max_payload_bytes
        self.workflows = workflows
        self.control = JobControl(engine)
        self.children = Children(engine)
        self.external_events = ExternalEvents(engine)
        self.long_pushes = LongPushes(engine)  # app.py replaces it to pass the test crash point
        self.event_triggers = EventTriggers(engine)
        self.groups = Groups(engine)
        self.dead_letters = DeadLetters(engine)
        self.search = JobSearch(engine)
        # The WaitForJob calls this process serves; app.py hands it to the notifier.
        self.waiters = JobWaiters()
        # The WatchJobEvents calls this process serves; app.py sets their limits and hands them to the
        # notifier.
        self.event_watchers = EventWatchers()
        self.job_events = JobEvents(engine)
        self.metrics_reader = MetricsReader(engine)
        # The metrics stream's sampler (components/metrics_sampler.py); app.py sets it.
        self.watch_source: WatchSource | None = None
        # Quiets, resumes, stops and resizes workers (ControlWorker); app.py sets it.
        self.worker_control: WorkerControl | None = None
        # The FetchJobs calls this process serves, woken by the notifier; app.py sets the lease duration, the
        # server id and the worker registry (named pull workers are listed there).
        self.pulls = PullWaiters()
        self.lease_ms = 30_000
        self.server_id = ""
        self.registry: WorkerStore | None = None
        self.deadline_hook: Callable[[str, int], None] | None = None
        # The dispatcher's `Dispatcher.lease_ended`: a stream worker's run that ends through a call of this
        # service (WaitForChildren, WaitForEvent) rather than a report; app.py sets it.
        self.lease_ended: Callable[[str, str, str], None] | None = None
        # The dispatcher's exemplars (services/exemplars.py), which pulled runs feed too; app.py sets them.
        self.exemplars: Exemplars | None = None
