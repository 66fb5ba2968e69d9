"""Who may call what: the RPC → permission table, the queues each request names, and the filters that
trim answers spanning several queues to the caller's queue patterns.

Permissions come from roles (`queue_manager_server.auth.ROLE_PERMISSIONS`): ``read`` (viewer, producer,
admin), ``produce`` (producer, admin), ``work`` (worker, admin) and ``admin`` (admin). Every queue a request
names must match one of the token's patterns, including the queues a request names indirectly (chain links,
workflow steps, a schedule's queue, the dead-letter queue a registration creates). Requests that name no
queue either have their answer filtered (ListQueues, GetAllMetrics, WatchMetrics without names,
ListWorkers, ListSchedules without a queue), are checked against the answer (GetWorkflow), the stored
run (CancelWorkflow, RetryWorkflow), or need a token for every queue (ListWorkflows: its page carries no
steps to check).
UpdateJobData needs ``produce``, or ``work`` with a lease token: a processor saving its own job's data
(`Rule.leased`; the handler then checks the lease). docs/security.md shows the same table for people;
`test_every_rpc_has_a_rule` keeps it complete.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from google.protobuf.message import Message

from queue_manager.v1 import (
    external_events_pb2,
    jobs_pb2,
    metrics_pb2,
    queue_service_pb2,
    schedules_pb2,
    types_pb2,
    worker_service_pb2,
    workflows_pb2,
)
from queue_manager_server.auth import ROLE_PERMISSIONS, Principal
from queue_manager_server.engine.engine import DEFAULT_DLQ

QUEUE_SERVICE = "/queue_manager.v1.QueueService/"
WORKER_SERVICE = "/queue_manager.v1.WorkerService/"
TEST_CLOCK_SERVICE = "/queue_manager.v1.TestClockService/"
# Services anyone may call without a token: health checks (load balancers, `qm health`) and reflection
# (the schema is public; every call it describes is still guarded).
OPEN_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")

Named = Iterable[tuple[str, str]]  # (field path, queue name) pairs a request names


@dataclass(frozen=True, slots=True)
class Rule:
    """How one RPC is guarded."""

    permission: str
    # The queues a request (each message, for a client stream) names.
    queues: Callable[[Any], Named] | None = None
    # Trims an answer (each message of a server stream) to the caller's queues.
    filter: Callable[[Principal, Any], Any] | None = None
    # Refuses an answer that shows a queue outside the caller's patterns (returns why, or None).
    check_answer: Callable[[Principal, Any], str | None] | None = None
    # Needs a token for every queue ("*").
    all_queues: bool = False
    # The stored run's queues are checked before the call (CancelWorkflow, RetryWorkflow).
    run_queues: bool = False
    # The request holds independent items whose queues the handler checks one by one (`add_item_denials`): an
    # item out of reach is refused alone, as its own call would be (AddJobBatch).
    per_item: bool = False
    # A request carrying a lease token (its `lease_token` field set) may be made with this permission instead:
    # the run holding the lease changes its own job (UpdateJobData from a processor, on a worker's token). The
    # token still has to cover the queue, and the handler checks the lease itself.
    leased: str | None = None


# Checks one item's queues against the caller's token during a call whose rule checks per item; set by the
# auth interceptor (services/auth_interceptor.py) around the handler. Unset: the server checks no tokens.
ITEM_CHECK: ContextVar[Callable[[Named], str | None] | None] = ContextVar("item_check", default=None)


def add_item_denials() -> Callable[[jobs_pb2.AddJobRequest, int], str | None] | None:
    """For this call's batch of adds: a function telling why the add at items[index] names a queue out of the
    caller's reach (the refusal is logged), or None. None when the call checks no tokens: then no add's
    queues are listed (1 µs per add otherwise spent)."""
    check = ITEM_CHECK.get()
    if check is None:
        return None

    def denial(item: jobs_pb2.AddJobRequest, index: int) -> str | None:
        return check(add_job_queues(item, f"items[{index}]."))

    return denial


def _field(name: str) -> Callable[[Any], Named]:
    def named(request: Any) -> Named:
        return [(name, getattr(request, name))]

    return named


def _chain(options: types_pb2.JobOptions, at: str) -> Iterator[tuple[str, str]]:
    for i, link in enumerate(options.chain_to):
        yield f"{at}.chain_to[{i}].queue_name", link.queue_name


def add_job_queues(r: jobs_pb2.AddJobRequest, at: str = "") -> Named:
    """The queues one add names: its own and its chain's (at: the add's place in a larger request)."""
    return [(f"{at}queue_name", r.queue_name), *_chain(r.job.options, f"{at}job.options")]


def _add_bulk(r: jobs_pb2.AddBulkRequest) -> Named:
    yield "queue_name", r.queue_name
    for i, job in enumerate(r.jobs):
        yield from _chain(job.options, f"jobs[{i}].options")


def _register(r: queue_service_pb2.RegisterQueueRequest) -> Named:
    yield "name", r.name
    if not r.config.disable_dead_letter:  # registering a queue also registers its dead-letter queue
        yield "config.dead_letter_queue", r.config.dead_letter_queue or DEFAULT_DLQ


def _redrive(r: queue_service_pb2.RedriveDeadLettersRequest) -> Named:
    """The dead-letter queue and the original queues its copies go back to: the one named, those of the copy
    ids named, or with neither every queue ("*": a token for every queue)."""
    yield "queue_name", r.queue_name
    if r.original_queue:
        yield "original_queue", r.original_queue
    for i, copy_id in enumerate(r.job_ids):
        yield f"job_ids[{i}]", copy_id.partition(":")[0]
    if not r.original_queue and not r.job_ids:
        yield "original_queue (unset: every queue)", "*"


def _steps(steps: Iterable[workflows_pb2.WorkflowStep], at: str) -> Iterator[tuple[str, str]]:
    for i, step in enumerate(steps):
        here = f"{at}[{i}]"
        yield f"{here}.queue_name", step.queue_name
        yield from _chain(step.options, f"{here}.options")
        yield from _steps(step.on_success, f"{here}.on_success")
        yield from _steps(step.on_failure, f"{here}.on_failure")


def _workflow(r: workflows_pb2.ExecuteWorkflowRequest) -> Named:
    return _steps(r.workflow.steps, "workflow.steps")


def _schedule(r: schedules_pb2.UpsertScheduleRequest) -> Named:
    return [("schedule.queue_name", r.schedule.queue_name), *_chain(r.schedule.job.options, "schedule.job")]


def _children(r: jobs_pb2.WaitForChildrenRequest) -> Named:
    yield "queue_name", r.queue_name
    for i, child in enumerate(r.children):
        yield f"children[{i}].queue_name", child.queue_name


def _watch(r: metrics_pb2.WatchMetricsRequest) -> Named:
    return [(f"queue_names[{i}]", q) for i, q in enumerate(r.queue_names)]


def _leases(report: worker_service_pb2.WorkerReport) -> Iterator[tuple[str, str]]:
    for name in ("completions", "failures", "extensions", "releases", "abandoned", "cancelled", "parked"):
        for i, item in enumerate(getattr(report, name)):
            yield f"report.{name}[{i}].queue_name", item.queue_name
    for name in ("progress", "logs"):
        for i, item in enumerate(getattr(report, name)):
            yield f"report.{name}[{i}].lease.queue_name", item.lease.queue_name


def _connect(r: worker_service_pb2.ConnectRequest) -> Named:
    kind = r.WhichOneof("kind")
    if kind == "hello":
        return [(f"hello.queues[{i}]", q) for i, q in enumerate(r.hello.queues)]
    if kind == "report":
        return _leases(r.report)
    return []


# ---- answers spanning queues ---------------------------------------------------------------------


def _copy(message: Message) -> Any:
    out = type(message)()
    out.CopyFrom(message)
    return out


def _keep(items: Any, keep: Callable[[Any], bool]) -> None:
    kept = [_copy(x) for x in items if keep(x)]
    del items[:]
    items.extend(kept)


def _workers(p: Principal, workers: Any) -> None:
    """Workers of the caller's queues, each showing only those of its queues the caller may see."""
    _keep(workers, lambda w: any(p.allows(q) for q in w.queues))
    for w in workers:
        shown = [q for q in w.queues if p.allows(q)]
        del w.queues[:]
        w.queues.extend(shown)


def _filter_queues(p: Principal, r: queue_service_pb2.ListQueuesResponse) -> Any:
    out = _copy(r)
    _keep(out.queues, lambda q: p.allows(q.name))
    return out


def _filter_metrics(p: Principal, r: Any) -> Any:  # GetAllMetricsResponse, WatchMetricsResponse
    out = _copy(r)
    _keep(out.metrics, lambda m: p.allows(m.queue_name))
    if isinstance(out, metrics_pb2.WatchMetricsResponse):
        _workers(p, out.workers)
    return out


def _filter_workers(p: Principal, r: metrics_pb2.ListWorkersResponse) -> Any:
    out = _copy(r)
    _workers(p, out.workers)
    return out


def _filter_schedules(p: Principal, r: schedules_pb2.ListSchedulesResponse) -> Any:
    out = _copy(r)
    _keep(out.schedules, lambda s: p.allows(s.queue_name))
    return out


def _trigger(r: external_events_pb2.UpsertEventTriggerRequest) -> Named:
    return [("trigger.queue_name", r.trigger.queue_name)]


def _filter_triggers(p: Principal, r: external_events_pb2.ListEventTriggersResponse) -> Any:
    out = _copy(r)
    _keep(out.triggers, lambda t: p.allows(t.queue_name))
    return out


def _check_run(p: Principal, r: workflows_pb2.GetWorkflowResponse) -> str | None:
    outside = sorted({s.queue_name for s in r.run.steps if not p.allows(s.queue_name)})
    if outside:
        return f"the workflow run has steps in queue(s) outside this token's patterns: {', '.join(outside)}"
    return None


_READ_QUEUE = Rule("read", _field("queue_name"))
_READ_NAME = Rule("read", _field("name"))
_ADMIN_NAME = Rule("admin", _field("name"))
_WORK_QUEUE = Rule("work", _field("queue_name"))

RULES: dict[str, Rule] = {
    QUEUE_SERVICE + name: rule
    for name, rule in {
        "RegisterQueue": Rule("admin", _register),
        "GetQueue": _READ_NAME,
        "ListQueues": Rule("read", filter=_filter_queues),
        "PauseQueue": _ADMIN_NAME,
        "ResumeQueue": _ADMIN_NAME,
        "CleanQueue": _ADMIN_NAME,
        "DrainQueue": _ADMIN_NAME,
        "ObliterateQueue": _ADMIN_NAME,
        "ListGroups": _READ_QUEUE,
        "SetGroupLimits": Rule("admin", _field("queue_name")),
        "PauseGroup": Rule("admin", _field("queue_name")),
        "ResumeGroup": Rule("admin", _field("queue_name")),
        "GetQueueMetrics": _READ_NAME,
        "GetAllMetrics": Rule("read", filter=_filter_metrics),
        "WatchMetrics": Rule("read", _watch, filter=_filter_metrics),
        "ListWorkers": Rule("read", _field("queue_name"), filter=_filter_workers),
        "AddJob": Rule("produce", add_job_queues),
        "AddBulk": Rule("produce", _add_bulk),
        "AddJobBatch": Rule("produce", per_item=True),
        "AddJobStream": Rule("produce", per_item=True),
        "GetJob": _READ_QUEUE,
        "ListJobs": _READ_QUEUE,
        "RemoveJob": Rule("admin", _field("queue_name")),
        "GetJobLogs": _READ_QUEUE,
        "WaitForJob": _READ_QUEUE,
        "CancelJob": Rule("admin", _field("queue_name")),
        "RetryJob": Rule("produce", _field("queue_name")),
        "RetryFailedJobs": Rule("admin", _field("queue_name")),
        "PromoteJob": Rule("produce", _field("queue_name")),
        "ChangeJobPriority": Rule("produce", _field("queue_name")),
        "UpdateJobData": Rule("produce", _field("queue_name"), leased="work"),
        "RescheduleJob": Rule("produce", _field("queue_name")),
        "ExecuteWorkflow": Rule("produce", _workflow),
        "GetWorkflow": Rule("read", check_answer=_check_run),
        "ListWorkflows": Rule("read", all_queues=True),
        "CancelWorkflow": Rule("admin", run_queues=True),
        "RetryWorkflow": Rule("produce", run_queues=True),
        "UpsertSchedule": Rule("produce", _schedule),
        "GetSchedule": _READ_QUEUE,
        "ListSchedules": Rule("read", _field("queue_name"), filter=_filter_schedules),
        "DeleteSchedule": Rule("produce", _field("queue_name")),
        "WatchJobEvents": _READ_QUEUE,
        "RedriveDeadLetters": Rule("admin", _redrive),
        "CancelJobs": Rule("admin", _field("queue_name")),
        "RemoveJobs": Rule("admin", _field("queue_name")),
        # A worker may take jobs of many queues: only an admin of every queue controls one.
        "ControlWorker": Rule("admin", all_queues=True),
        # A running job adds its children: its worker's role, on its queue and on theirs.
        "WaitForChildren": Rule("work", _children),
        # Pull workers (no stream): a worker's role on the queue, as for a stream worker's claims and reports.
        "FetchJobs": _WORK_QUEUE,
        "CompleteJob": _WORK_QUEUE,
        "FailJob": _WORK_QUEUE,
        "ExtendJobLease": _WORK_QUEUE,
        "ReportJobProgress": _WORK_QUEUE,
        # A push may wake jobs of any queue (and, with triggers, add some): a producer of every queue.
        "PushEvent": Rule("produce", all_queues=True),
        "WaitForEvent": Rule("work", _field("queue_name")),
        "UpsertEventTrigger": Rule("produce", _trigger),
        "ListEventTriggers": Rule("read", _field("queue_name"), filter=_filter_triggers),
        # The request names only the trigger's id, whose queue may be any.
        "DeleteEventTrigger": Rule("produce", all_queues=True),
    }.items()
} | {
    WORKER_SERVICE + "Connect": Rule("work", _connect),
    # The clock of a server for tests moves every queue's time: an admin of every queue moves it.
    TEST_CLOCK_SERVICE + "AdvanceClock": Rule("admin", all_queues=True),
    TEST_CLOCK_SERVICE + "GetClock": Rule("read"),
}

# The calls that change queues, jobs, schedules or runs already there, besides the admin ones: each is written
# to the audit log (services/auth_interceptor.py) with the token's name. Adds are not (producers' volume), nor
# a processor's own checkpoint (UpdateJobData carrying its lease).
AUDITED = frozenset(
    QUEUE_SERVICE + name
    for name in (
        "RetryJob",
        "PromoteJob",
        "ChangeJobPriority",
        "UpdateJobData",
        "UpsertSchedule",
        "DeleteSchedule",
    )
)


def audited(method: str, rule: Rule) -> bool:
    """Whether calls of an RPC go to the audit log: every admin one, and the changes of `AUDITED`."""
    return rule.permission == "admin" or method in AUDITED


# The admin rule applies to an RPC missing from the table (one added to the contract later): only an
# admin token for every queue may call it until the table says otherwise.
UNLISTED = Rule("admin", all_queues=True)


def rule_for(method: str) -> Rule | None:
    """The rule of a full method name (``/package.Service/Method``); None for the open services."""
    if method.startswith(OPEN_PREFIXES):
        return None
    return RULES.get(method, UNLISTED)


def denial(principal: Principal, rule: Rule, method: str) -> str | None:
    """Why the principal may not call the method at all (role or all-queues), or None."""
    short = method.rsplit("/", 1)[-1]
    if not principal.can(rule.permission) and not (rule.leased and principal.can(rule.leased)):
        roles = ", ".join(sorted(principal.roles))
        return f"token {principal.name!r} ({roles}) may not call {short}: it needs the role {_needs(rule)}"
    if rule.all_queues and not principal.all_queues:
        return f"{short} spans every queue: it needs a token whose queues include '*'"
    return None


def lease_denial(principal: Principal, rule: Rule, method: str, request: Any) -> str | None:
    """Why a request of an RPC a lease also opens (`Rule.leased`) is refused to a principal that got in on
    that permission alone: it carries no lease token. None otherwise."""
    if rule.leased is None or principal.can(rule.permission) or bool(getattr(request, "lease_token", "")):
        return None
    roles = ", ".join(sorted(principal.roles))
    short = method.rsplit("/", 1)[-1]
    return (
        f"token {principal.name!r} ({roles}) may call {short} only with the lease_token of a job it runs; "
        f"without one it needs the role {_needs(Rule(rule.permission))}"
    )


def _needs(rule: Rule) -> str:
    """The roles that grant a rule's permission (or its lease permission), as a message names them."""
    needed = [
        r
        for r in ("admin", "producer", "worker", "viewer")
        if _grants(r, rule.permission) or (rule.leased is not None and _grants(r, rule.leased))
    ]
    return " or ".join(needed)


def _grants(role: str, permission: str) -> bool:
    return permission in ROLE_PERMISSIONS[role]


def queue_denial(principal: Principal, named: Named) -> str | None:
    """Why a request's queues are out of the principal's reach, or None. Empty names are left to the
    handler (which answers INVALID_ARGUMENT, or treats them as "every queue" where the contract says so)."""
    if principal.all_queues:
        return None
    for field, queue in named:
        if queue and not principal.allows(queue):
            return (
                f"{field}: queue {queue[:120]!r} is outside the queues of token {principal.name!r} "
                f"({', '.join(principal.patterns)})"
            )
    return None
