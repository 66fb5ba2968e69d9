"""The engine's periodic loops. Each script they run is atomic and idempotent, so any number of server
processes may run them at once: a second server only repeats a no-op."""

from __future__ import annotations

import time

from grpc_health.v1 import health_pb2
from grpc_health.v1.health import aio as health_aio

from queue_manager_server.components.base import IDLE_LOOKS, Component, Looks, error_text
from queue_manager_server.engine import Engine
from queue_manager_server.engine.bulk import BulkStreams
from queue_manager_server.engine.records import Housekeeping
from queue_manager_server.engine.redrive import DeadLetters
from queue_manager_server.errors import QueueObliterating
from queue_manager_server.services.event_pushes import ClusterPushes
from queue_manager_server.services.flows import Flows
from queue_manager_server.services.long_pushes import LongPushes
from queue_manager_server.services.workflows import Workflows


class Reaper(Component):
    """Recovers jobs whose lease expired: the backstop for workers and servers that died.

    A queue that held no lease at its last look is looked at again after `idle` (up to IDLE_LOOKS ticks, never
    more than a lease): a lease taken meanwhile, by any server, expires no sooner than a lease after that
    look, so no recovery comes later, and an idle server with thousands of queues visits each a fifth as
    often. A queue holding leases is looked at every tick."""

    name = "reaper"

    def __init__(self, engine: Engine, interval: float, lease_ms: int) -> None:
        super().__init__(interval)
        self.engine = engine
        self.looks = Looks(min(IDLE_LOOKS * interval, lease_ms / 1000))

    async def tick(self) -> None:
        now = time.monotonic()
        due = self.looks.due(await self.engine.queue_names(), now)
        for queue, result in zip(due, await self.engine.reap_all(due), strict=True):
            if isinstance(result, Exception):
                self.log.warning("reap failed", extra={"queue": queue, "error": error_text(result)})
                continue
            back, lost, next_expiry = result
            self.looks.seen(queue, next_expiry >= 0, now)  # busy while it holds a lease
            if back or lost:
                self.log.info(
                    "recovered stalled jobs", extra={"queue": queue, "requeued": back, "failed": lost}
                )


class Janitor(Component):
    """Applies age-based retention to finished jobs, finishes interrupted dead-letter and flow hand-offs,
    redrives of dead-letter copies, pushes of external events (on a Cluster, or in batches on one server) and
    obliterates (a registered name with no queue behind it), and resolves bulk streams whose writer is gone
    (publishes committed ones, rolls back idle ones)."""

    name = "janitor"

    def __init__(
        self,
        engine: Engine,
        flows: Flows,
        workflows: Workflows,
        interval: float,
        bulk_idle_ms: int,
        event_pushes: ClusterPushes | LongPushes | None = None,
    ) -> None:
        super().__init__(interval)
        self.engine = engine
        self.flows = flows
        self.event_pushes = event_pushes
        self.workflows = workflows
        self.bulk = BulkStreams(engine)
        self.dead_letters = DeadLetters(engine)
        self.bulk_idle_ms = bulk_idle_ms

    async def clock_moved(self) -> None:
        await self.tick()  # age-based retention; idle bulk streams too

    async def tick(self) -> None:
        resumed = await self.workflows.resume_starting()
        if resumed:
            self.log.info("started the first steps of workflow runs left behind", extra={"runs": resumed})
        if self.event_pushes is not None:
            pushed = await self.event_pushes.replay()
            if pushed:
                self.log.info("carried out event pushes left behind", extra={"pushes": pushed})
        if isinstance(self.event_pushes, ClusterPushes):
            swept = await self.event_pushes.sweep_index()
            if swept:
                self.log.info("dropped queues with no event waiters left", extra={"entries": swept})
        queues = await self.engine.queue_names()
        for queue, due in zip(queues, await self.engine.housekeeping_due(queues), strict=True):
            if not (due.bulk or due.retention or due.dead_letters or due.flows or due.redrives or due.gone):
                continue
            try:
                await self._housekeep(queue, due)
            except Exception as exc:  # one queue's failure holds up no other: the next tick retries it
                self.log.warning("housekeeping failed", extra={"queue": queue, "error": error_text(exc)})

    async def _housekeep(self, queue: str, due: Housekeeping) -> None:
        if due.gone:  # an obliterate a lost server left: every other task went with the queue's keys
            try:
                removed = await self.engine.finish_obliterate(queue)
            except QueueObliterating:
                return  # a live obliterate, between its calls: it finishes itself
            self.log.info(
                "finished the removal of an obliterated queue", extra={"queue": queue, "removed": removed}
            )
            return
        published = rolled_back = removed = moved = handed = redriven = 0
        if due.bulk:
            published, rolled_back = await self.bulk.resolve(queue, self.bulk_idle_ms)
        if due.retention:
            removed = await self.engine.apply_retention(queue)
        if due.dead_letters:
            moved = await self.engine.hand_off_dead_letters(queue)
        if due.flows:
            handed = await self.flows.hand_off(queue)
        if due.redrives:
            redriven = await self.dead_letters.resume(queue)
        if removed or moved or published or rolled_back or handed or redriven:
            self.log.info(
                "housekeeping",
                extra={
                    "queue": queue,
                    "removed": removed,
                    "dead_lettered": moved,
                    "bulk_published": published,
                    "bulk_rolled_back": rolled_back,
                    "flows": handed,
                    "redrives_resumed": redriven,
                },
            )


class HealthMonitor(Component):
    """Reports SERVING while Redis answers, NOT_SERVING otherwise (grpc.health.v1)."""

    name = "health"

    def __init__(
        self, engine: Engine, health: health_aio.HealthServicer, services: list[str], interval: float
    ) -> None:
        super().__init__(interval)
        self.engine = engine
        self.health = health
        self.services = services
        self.serving: bool | None = None

    async def tick(self) -> None:
        try:
            ok = await self.engine.ping()
        except Exception:
            ok = False
        await self.set(ok)

    async def set(self, ok: bool) -> None:
        if ok != self.serving:
            self.serving = ok
            status = (
                health_pb2.HealthCheckResponse.SERVING if ok else health_pb2.HealthCheckResponse.NOT_SERVING
            )
            for name in ["", *self.services]:
                await self.health.set(name, status)
            self.log.info("health changed", extra={"serving": ok})
