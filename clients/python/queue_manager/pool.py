"""`WorkerManager`: an autoscaling pool of local worker processes (``qm worker IMPORT_PATH --autoscale``).

How it runs:

1. Each worker is a child process, ``python -m queue_manager.cli worker IMPORT_PATH --queue … --concurrency
   C --grace G``: one stream and one interpreter each, so CPU-bound processors use more than one core.
   A child runs in its own session, so a Ctrl-C at the terminal reaches the pool alone, which then stops
   the children in order. Its stdin is a pipe from the pool: if the pool dies without stopping it (a
   SIGKILL), the pipe closes and the child shuts down gracefully instead of running on unwatched.
2. The pool follows the server's metrics stream (``WatchMetrics`` with the workers) of its queues. On each
   snapshot it samples the machine's CPU and memory (psutil) and asks `queue_manager.autoscale.decide` how
   many processes it wants; a change is logged and sent to the event subscribers. While the stream is
   broken the pool keeps its count and reconnects with backoff.
3. One supervisor task makes the children match the wanted count. It starts missing ones. It stops extra
   ones with SIGTERM, choosing those holding the fewest jobs (the workers' in-flight counts from the
   snapshots, matched by their ``pid`` and ``host`` labels): a stopped child takes no new jobs and
   finishes its running ones within the grace, so a scale-down loses nothing.
4. A child that exits cleanly (status 0) without being asked was stopped on purpose: an operator's
   ``qm workers stop`` (ControlWorker STOP), or a SIGTERM sent to it directly. It is not replaced at once:
   the pool counts it as a scale-down (it wants one process fewer) and grows again only as its rule says,
   after ``scale_up_cooldown``, if the queues (or ``min_workers``) still ask for more.
   Any other child that exits without being asked is logged with its pid, exit status and run time, and
   replaced.
   Its jobs go back to waiting when its stream ends (the server's lease is the backstop). A child that
   dies young is replaced after a delay that doubles with each such death in a row (``restart_delay`` up
   to ``max_restart_delay``); one that ran at least ``max_restart_delay`` is replaced at once.
5. `shutdown` stops following the metrics, sends SIGTERM to every child, waits for them up to the grace
   plus the time a worker takes to close its stream, then kills (SIGKILL) those still running.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import socket
import sys
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Literal, TypeAlias

from queue_manager.autoscale import PoolLoad, QueueLoad, ScalingPolicy, ScalingState, decide
from queue_manager.checks import check_queue_shares, check_tier
from queue_manager.children import Child, RestartPacer, describe_exit
from queue_manager.errors import QueueManagerError
from queue_manager.lifecycle import RunsUntilShutdown
from queue_manager.loader import load_queue_manager
from queue_manager.metrics import MetricsSnapshot, QueueMetrics, WorkerInfo
from queue_manager.stats import MachineStats
from queue_manager.worker import default_concurrency

__all__ = ["PoolEvent", "PoolEventKind", "WorkerManager"]

logger = logging.getLogger("queue_manager.pool")

PoolEventKind: TypeAlias = Literal["desired", "started", "stopping", "exited"]
SecondsLike: TypeAlias = float | timedelta

# After the grace, a stopping worker still sends its last outcomes and waits up to 10 s for the server to
# end its stream (worker_stream.py _CLOSE_TIMEOUT), then up to 5 s more for its tasks: only past that is it
# stuck.
_KILL_MARGIN = 15.0
# A broken metrics stream is followed again after 0.5 s, doubling up to 10 s.
_WATCH_RETRY_FIRST = 0.5
_WATCH_RETRY_MAX = 10.0


@dataclass(frozen=True, slots=True)
class PoolEvent:
    """Something the pool did (`WorkerManager.events`, ``on_event``).

    Attributes:
        kind: ``"desired"`` (the wanted count changed), ``"started"`` (a child process started),
            ``"stopping"`` (a child was sent SIGTERM) or ``"exited"`` (a child process ended).
        workers: Processes the pool runs after the event (stopping ones not counted).
        desired: Processes the pool wants after the event.
        pid: The child's process id (not for ``"desired"``).
        returncode: How the child ended (``"exited"``): its exit status, or minus the signal that ended it.
        expected: False for a child that exited without being asked (it is replaced); True also for one that
            ended cleanly on its own (stopped on purpose: not replaced at once).
        reason: Why, in words.
    """

    kind: PoolEventKind
    workers: int
    desired: int
    pid: int | None = None
    returncode: int | None = None
    expected: bool = True
    reason: str = ""


class WorkerManager(RunsUntilShutdown):
    """Runs between ``min_workers`` and ``max_workers`` worker processes, sized by the queues' depth, their
    oldest job's wait, and the machine's CPU and memory.

    Args:
        app: Import path of the `QueueManager` whose processors the workers run (``package.module:attr``
            or ``package.module``, as for ``qm worker``). The pool imports it too: it follows the metrics
            with that client's address, credentials and token.
        queues: Queues to work and watch; default every queue with a registered processor.
        queue_weights: How each process shares its slots among the queues when several have jobs ready
            (`Worker`'s ``queue_weights``).
        queue_order: Strict priority instead, every queue highest first (`Worker`'s ``queue_order``).
        tier: Each process's preference among the queues' workers, 0 (the first) to 100 (`Worker`'s
            ``tier``): a pool of burst workers at tier 1 beside steady ones at 0.
        min_workers: Fewest processes (0: an idle pool stops them all, and starts one when jobs come).
        max_workers: Most processes; default the number of CPUs.
        concurrency: Jobs each process runs at once; default the QueueManager's, else
            ``WORKER_CONCURRENCY`` or 10.
        target_wait: Longest a job should wait before the pool adds a process: seconds or a timedelta for
            every queue, or a mapping of queue name to one; None for no target (depth alone).
        max_cpu: The pool does not grow while the machine's CPU use is at or above this percent of all
            cores; None for no limit (also when psutil is not installed).
        max_memory: Likewise for the machine's memory use, in percent.
        scale_up_cooldown: Seconds after growing before the pool grows again.
        scale_down_delay: Seconds the queues must need fewer processes before the pool stops some.
        grace: Seconds a stopping process lets its running jobs finish.
        server: Server ``host:port`` for the pool and its processes; default the QueueManager's.
        interval: Seconds between metrics snapshots (0.1 to 60).
        restart_delay: Seconds before replacing a process that died young, doubled for each such death
            in a row.
        max_restart_delay: Longest such wait; a process that ran at least this long is replaced at once.
        env: Extra environment variables for the processes.
        cwd: Working directory of the processes (where ``app`` is importable from); default the pool's.
        on_event: Called with every `PoolEvent` (in the event loop; keep it quick).
    """

    def __init__(
        self,
        app: str,
        *,
        queues: Iterable[str] | None = None,
        queue_weights: Mapping[str, int] | None = None,
        queue_order: Sequence[str] | None = None,
        tier: int = 0,
        min_workers: int = 1,
        max_workers: int | None = None,
        concurrency: int | None = None,
        target_wait: SecondsLike | Mapping[str, SecondsLike] | None = None,
        max_cpu: float | None = 90.0,
        max_memory: float | None = 90.0,
        scale_up_cooldown: float = 5.0,
        scale_down_delay: float = 30.0,
        grace: float = 30.0,
        server: str | None = None,
        interval: float = 1.0,
        restart_delay: float = 1.0,
        max_restart_delay: float = 30.0,
        env: Mapping[str, str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
        on_event: Callable[[PoolEvent], None] | None = None,
    ) -> None:
        self.app = app
        self._qm = load_queue_manager(app)
        if server:
            self._qm.address = server
        self.server = server
        processors = self._qm.processors
        self.queues = sorted(set(queues)) if queues is not None else sorted(processors)
        missing = [q for q in self.queues if q not in processors]
        if missing:
            raise ValueError(f"{app!r} has no processor for queue(s) {', '.join(missing)}")
        if not self.queues:
            raise ValueError(f"{app!r} has no processors; register them with @qm.processor(queue_name)")
        # How each worker process shares its slots among the queues (Worker queue_weights / queue_order).
        self.queue_weights, order = check_queue_shares(queue_weights, queue_order, self.queues)
        self.queues = order if order is not None else self.queues
        self.strict = order is not None
        self.tier = check_tier(tier)
        self.concurrency = concurrency or self._qm.concurrency or default_concurrency()
        self.policy = ScalingPolicy(
            min_workers=min_workers,
            max_workers=max_workers if max_workers is not None else os.cpu_count() or 1,
            concurrency=self.concurrency,
            target_wait=_target_waits(target_wait, self.queues),
            max_cpu=max_cpu,
            max_memory=max_memory,
            scale_up_cooldown=_seconds("scale_up_cooldown", scale_up_cooldown),
            scale_down_delay=_seconds("scale_down_delay", scale_down_delay),
        )
        self.grace = _seconds("grace", grace)
        self.interval = _seconds("interval", interval)
        if not 0.1 <= self.interval <= 60:
            raise ValueError(f"interval must be 0.1 to 60 seconds, got {interval}")
        self._restarts = RestartPacer(
            _seconds("restart_delay", restart_delay), _seconds("max_restart_delay", max_restart_delay)
        )
        self._env = {**os.environ, **(env or {})}
        self._cwd = cwd
        self._on_event = on_event
        self._host = socket.gethostname()
        self._machine = MachineStats()
        self._children: dict[Child, asyncio.Task[None]] = {}  # each with the task awaiting its end
        self._desired = self.policy.min_workers
        self._scaling = ScalingState()
        self._reason = f"starting at min {self.policy.min_workers}"
        self._retry_spawn: asyncio.TimerHandle | None = None
        self._subscribers: set[asyncio.Queue[PoolEvent | None]] = set()
        self._wake = asyncio.Event()
        self._closing = False
        self._closed = asyncio.Event()
        self._supervisor: asyncio.Task[None] | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._shutdown_task: asyncio.Task[None] | None = None

    # ----------------------------------------------------------------- state

    @property
    def workers(self) -> int:
        """Processes running and not stopping (those starting included)."""
        return sum(1 for c in self._children if not c.stopping)

    @property
    def desired_workers(self) -> int:
        """Processes the pool wants now: the figure to export for KEDA or an HPA."""
        return self._desired

    @property
    def reason(self) -> str:
        """Why the pool wants that many, from its last look at the queues."""
        return self._reason

    @property
    def pids(self) -> list[int]:
        """Process ids of every child still running, stopping ones included."""
        return [c.pid for c in self._children]

    def events(self) -> AsyncIterator[PoolEvent]:
        """Every event from now on, until the pool has shut down (subscribes at the call)."""
        queue: asyncio.Queue[PoolEvent | None] = asyncio.Queue()
        if self._closed.is_set():
            queue.put_nowait(None)
        else:
            self._subscribers.add(queue)
        return self._drain(queue)

    async def _drain(self, queue: asyncio.Queue[PoolEvent | None]) -> AsyncIterator[PoolEvent]:
        try:
            while (event := await queue.get()) is not None:
                yield event
        finally:
            self._subscribers.discard(queue)

    # ----------------------------------------------------------------- lifecycle

    _log = logger

    def _description(self) -> str:
        return "the pool"

    async def start(self) -> None:
        """Starts ``min_workers`` processes and the scaling in the background (returns at once)."""
        if self._supervisor is not None:
            return
        logger.info(
            "pool of %s for %s: %d to %d process(es) of concurrency %d",
            self.app,
            ", ".join(self.queues),
            self.policy.min_workers,
            self.policy.max_workers,
            self.concurrency,
        )
        if not self._machine.available and (self.policy.max_cpu or self.policy.max_memory):
            logger.warning("psutil is not installed: the pool grows without looking at CPU and memory")
        self._supervisor = asyncio.create_task(self._supervise(), name="qm-pool-supervisor")
        self._watcher = asyncio.create_task(self._watch(), name="qm-pool-metrics")
        self._wake.set()

    async def shutdown(self, grace: float | None = None) -> None:
        """Stops scaling, stops every process gracefully, and kills those still running after the grace.

        Args:
            grace: Seconds the processes let their running jobs finish; default ``grace``. A process still
                running 15 s after that (the time a worker takes to close its stream) is killed.
        """
        if self._closing:
            await self._closed.wait()
            return
        self._closing = True
        grace = self.grace if grace is None else grace
        if self._retry_spawn is not None:
            self._retry_spawn.cancel()
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
        if self._supervisor is not None:
            self._wake.set()  # it finishes the start it may be in, then sees _closing
            await self._supervisor
        self._set_desired(0, "shutting down")
        for child in list(self._children):
            if not child.stopping:
                self._stop(child, "shutting down")
        if self._children:
            _, overrun = await asyncio.wait(self._children.values(), timeout=grace + _KILL_MARGIN)
            if overrun:
                for child in self._children:
                    logger.warning(
                        "worker process %d still running %.0fs after SIGTERM; killing it",
                        child.pid,
                        grace + _KILL_MARGIN,
                    )
                    child.kill()
                await asyncio.wait(overrun)
        await self._qm.shutdown()
        for queue in self._subscribers:
            queue.put_nowait(None)
        self._subscribers.clear()
        self._closed.set()

    # ----------------------------------------------------------------- scaling

    async def _watch(self) -> None:
        """Follows the metrics stream and decides on every snapshot; reconnects with backoff."""
        retry = _WATCH_RETRY_FIRST
        while True:
            try:
                async for snapshot in self._qm.watch_metrics(
                    self.queues, interval=self.interval, include_workers=True
                ):
                    retry = _WATCH_RETRY_FIRST
                    self._on_snapshot(snapshot)
                problem = "the server ended the stream"
            except QueueManagerError as exc:
                problem = str(exc)
            logger.warning(
                "metrics of %s: %s; keeping %d process(es), following again in %.1fs",
                ", ".join(self.queues),
                problem,
                self._desired,
                retry,
            )
            await asyncio.sleep(retry)
            retry = min(retry * 2, _WATCH_RETRY_MAX)

    def _on_snapshot(self, snapshot: MetricsSnapshot) -> None:
        by_name = {m.queue_name: m for m in snapshot.metrics}
        loads = tuple(_queue_load(by_name[q]) for q in self.queues if q in by_name)
        self._note_in_flight(snapshot.workers)
        cpu, memory = self._machine.sample()
        load = PoolLoad(loads, self._desired, cpu, memory, self._other_slots(snapshot.workers))
        decision = decide(self.policy, load, self._scaling, asyncio.get_running_loop().time())
        self._scaling = decision.state
        if decision.desired != self._desired:
            logger.info("scaling %d -> %d: %s", self._desired, decision.desired, decision.reason)
            self._set_desired(decision.desired, decision.reason)
            self._wake.set()
        self._reason = decision.reason

    def _note_in_flight(self, workers: list[WorkerInfo]) -> None:
        """Each child's in-flight count, from the workers it appears as (its ``pid`` and ``host`` labels)."""
        held = {w.labels.get("pid"): w.in_flight for w in workers if w.labels.get("host") == self._host}
        for child in self._children:
            child.in_flight = held.get(str(child.pid), 0)

    def _other_slots(self, workers: list[WorkerInfo]) -> int:
        """The slots of workers outside this pool that take jobs from its queues (another pool, a fixed
        worker): the pool sizes itself for its share of the jobs beside them."""
        mine = {str(child.pid) for child in self._children}
        watched = set(self.queues)
        return sum(
            w.concurrency
            for w in workers
            if not (w.labels.get("host") == self._host and w.labels.get("pid") in mine)
            and watched.intersection(w.queues)
        )

    def _set_desired(self, desired: int, reason: str) -> None:
        self._desired = desired
        self._reason = reason
        self._emit(PoolEvent("desired", self.workers, desired, reason=reason))

    # ----------------------------------------------------------------- processes

    async def _supervise(self) -> None:
        """Makes the children match the wanted count whenever something changes."""
        while not self._closing:
            await self._wake.wait()
            self._wake.clear()
            if not self._closing:
                await self._reconcile()

    async def _reconcile(self) -> None:
        live = [c for c in self._children if not c.stopping]
        if len(live) > self._desired:
            extra = sorted(live, key=lambda c: (c.in_flight, -c.started))[: len(live) - self._desired]
            for child in extra:
                self._stop(child, self._reason)
            return
        for _ in range(self._desired - len(live)):
            if (wait := self._restarts.wait()) > 0:
                if self._retry_spawn is not None:
                    self._retry_spawn.cancel()
                self._retry_spawn = asyncio.get_running_loop().call_later(wait, self._wake.set)
                return
            await self._spawn()
            if self._closing:
                return

    async def _spawn(self) -> None:
        try:
            child = await Child.start(self._argv(), self._env, self._cwd)
        except OSError as exc:
            delay = self._restarts.died(None)
            logger.error("cannot start a worker process: %s; trying again in %.1fs", exc, delay)
            return
        self._children[child] = asyncio.create_task(
            self._wait_child(child), name=f"qm-pool-child-{child.pid}"
        )
        logger.info("started worker process %d (%d of %d)", child.pid, self.workers, self._desired)
        self._emit(PoolEvent("started", self.workers, self._desired, pid=child.pid))

    def _argv(self) -> list[str]:
        argv = [sys.executable, "-m", "queue_manager.cli"]
        if self.server:
            argv += ["--server", self.server]
        argv += ["worker", self.app, "--concurrency", str(self.concurrency), "--grace", f"{self.grace:g}"]
        for queue in self.queues:
            argv += ["--queue", queue]
        for queue, weight in self.queue_weights.items():
            argv += ["--weight", f"{queue}={weight}"]
        if self.strict:
            argv.append("--strict")
        if self.tier:
            argv += ["--tier", str(self.tier)]
        return [*argv, "--stop-on-stdin-eof"]

    def _stop(self, child: Child, reason: str) -> None:
        child.stop()
        logger.info("stopping worker process %d (%d job(s) running): %s", child.pid, child.in_flight, reason)
        self._emit(PoolEvent("stopping", self.workers, self._desired, pid=child.pid, reason=reason))

    async def _wait_child(self, child: Child) -> None:
        returncode, ran = await child.wait()
        del self._children[child]
        ended = describe_exit(returncode)
        expected = child.stopping
        if child.stopping:
            logger.info("worker process %d stopped (%s) after %.1fs", child.pid, ended, ran)
            reason = "stopped"
        elif returncode == 0:
            expected = True
            reason = "stopped on purpose (qm workers stop, or a SIGTERM from outside the pool); not replaced"
            logger.info("worker process %d %s after %.1fs", child.pid, reason, ran)
            self._scaling = ScalingState(last_up=asyncio.get_running_loop().time())
            self._set_desired(max(self._desired - 1, 0), f"worker process {child.pid} {reason}")
        else:
            delay = self._restarts.died(ran)
            logger.warning(
                "worker process %d exited unexpectedly (%s) after %.1fs; replacing it in %.1fs",
                child.pid,
                ended,
                ran,
                delay,
            )
            reason = f"exited unexpectedly ({ended}) after {ran:.1f}s"
        event = PoolEvent(
            "exited",
            self.workers,
            self._desired,
            pid=child.pid,
            returncode=returncode,
            expected=expected,
            reason=reason,
        )
        self._emit(event)
        self._wake.set()

    def _emit(self, event: PoolEvent) -> None:
        for queue in self._subscribers:
            queue.put_nowait(event)
        if self._on_event is not None:
            try:
                self._on_event(event)
            except Exception:
                logger.exception("on_event callback failed on %s", event)


def _queue_load(m: QueueMetrics) -> QueueLoad:
    held = m.held_until is not None and (m.sample_time is None or m.held_until > m.sample_time)
    return QueueLoad(m.queue_name, m.waiting, m.active, m.oldest_waiting_age, m.is_paused or held)


def _seconds(name: str, value: SecondsLike) -> float:
    seconds = value.total_seconds() if isinstance(value, timedelta) else float(value)
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"{name} must be a finite number of seconds, 0 or more, got {value}")
    return seconds


def _target_waits(
    target_wait: SecondsLike | Mapping[str, SecondsLike] | None, queues: list[str]
) -> dict[str, timedelta]:
    if target_wait is None:
        return {}
    if not isinstance(target_wait, Mapping):
        return {q: timedelta(seconds=_seconds("target_wait", target_wait)) for q in queues}
    unknown = sorted(set(target_wait) - set(queues))
    if unknown:
        raise ValueError(f"target_wait names queue(s) the pool does not work: {', '.join(unknown)}")
    return {q: timedelta(seconds=_seconds(f"target_wait[{q!r}]", w)) for q, w in target_wait.items()}
