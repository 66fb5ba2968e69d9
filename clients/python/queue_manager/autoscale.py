"""The autoscaling rule of `WorkerManager`: how many worker processes a pool wants, as a pure function.

`decide` takes the pool's policy, what the queues and the machine look like now, and what it remembers of
earlier decisions, and returns the number of processes wanted with the reason. It does no I/O and reads
no clock (the caller passes ``now``), so every case is a table row in a test.

The rule, in order:

1. **Depth.** The jobs of the watched queues that want a slot now (waiting, and active on any worker) need
   ``ceil(jobs / concurrency)`` processes. A paused or held queue's waiting jobs do not count: more
   processes could not start them. When other workers take jobs from these queues too (another pool on
   another host, a fixed worker), the pool takes its share of the jobs in proportion to its slots (at least
   one process's) against theirs, so pools that share queues do not each size themselves for all of them.
2. **Age.** A queue whose oldest waiting job has waited longer than its target wait asks for one process
   more than the pool has, even when depth alone is met (long jobs, few of them).
3. **Bounds.** The result is kept between ``min_workers`` and ``max_workers``; while the machine's CPU or
   memory use is at or above its limit the pool does not grow (it keeps what it has). While memory is at or
   above its limit the pool sheds one process (down to ``min_workers``) at once, then one more after each
   ``scale_up_cooldown`` while it stays so: a machine short of memory is not left to its OOM killer.
4. **Up at once, down slowly.** Growing happens at once, then not again for ``scale_up_cooldown`` seconds
   (new processes take a moment to connect and take jobs; the age rule would otherwise add one per look).
   Shrinking waits until the need has stayed below the current count for ``scale_down_delay`` seconds,
   and then goes to the highest need seen in that time, so a need that wavers never makes the pool flap.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import timedelta

__all__ = ["PoolLoad", "QueueLoad", "ScalingDecision", "ScalingPolicy", "ScalingState", "decide"]


@dataclass(frozen=True, slots=True)
class ScalingPolicy:
    """What a pool may do.

    Attributes:
        min_workers: Fewest processes (0 lets an idle pool stop them all).
        max_workers: Most processes.
        concurrency: Jobs each process runs at once.
        target_wait: Longest a job should wait, by queue name; queues not named have no target.
        max_cpu: Machine CPU use, in percent of all cores, at or above which the pool does not grow; None
            for no limit.
        max_memory: Machine memory use, in percent, at or above which the pool does not grow; None for no
            limit.
        scale_up_cooldown: Seconds after growing before the pool grows again.
        scale_down_delay: Seconds the need must stay below the current count before the pool shrinks.
    """

    min_workers: int
    max_workers: int
    concurrency: int
    target_wait: Mapping[str, timedelta] = field(default_factory=dict)
    max_cpu: float | None = 90.0
    max_memory: float | None = 90.0
    scale_up_cooldown: float = 5.0
    scale_down_delay: float = 30.0

    def __post_init__(self) -> None:
        if self.min_workers < 0:
            raise ValueError(f"min_workers must be 0 or more, got {self.min_workers}")
        if self.max_workers < 1:
            raise ValueError(f"max_workers must be at least 1, got {self.max_workers}")
        if self.min_workers > self.max_workers:
            raise ValueError(
                f"min_workers ({self.min_workers}) must not be more than max_workers ({self.max_workers})"
            )
        if self.concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {self.concurrency}")
        for name, limit in (("max_cpu", self.max_cpu), ("max_memory", self.max_memory)):
            if limit is not None and not 0 < limit <= 100:
                raise ValueError(f"{name} must be a percentage above 0 and at most 100, got {limit}")
        for name, seconds in (
            ("scale_up_cooldown", self.scale_up_cooldown),
            ("scale_down_delay", self.scale_down_delay),
        ):
            if not math.isfinite(seconds) or seconds < 0:
                raise ValueError(f"{name} must be a finite number of seconds, 0 or more, got {seconds}")
        for queue, wait in self.target_wait.items():
            if wait <= timedelta(0):
                raise ValueError(f"the target wait of queue {queue!r} must be more than 0, got {wait}")


@dataclass(frozen=True, slots=True)
class QueueLoad:
    """One watched queue as the server last reported it.

    Attributes:
        queue: Queue name.
        waiting: Jobs ready to run.
        active: Jobs leased to workers (any worker, on any host).
        oldest_waiting_age: How long the longest-waiting ready job has waited; None when none waits.
        blocked: The queue is paused or held (a processor's retry-after): more workers cannot start its
            waiting jobs.
    """

    queue: str
    waiting: int = 0
    active: int = 0
    oldest_waiting_age: timedelta | None = None
    blocked: bool = False


@dataclass(frozen=True, slots=True)
class PoolLoad:
    """Everything `decide` looks at besides the policy.

    Attributes:
        queues: The watched queues.
        workers: The processes the pool keeps now (its current target, whether or not each has started).
        cpu_percent: Machine CPU use in percent of all cores; None when unknown (no psutil).
        memory_percent: Machine memory use in percent; None when unknown.
        other_slots: Jobs that workers outside the pool can run at once from the watched queues (the sum of
            their concurrency); 0 when the pool is their only consumer.
    """

    queues: tuple[QueueLoad, ...]
    workers: int
    cpu_percent: float | None = None
    memory_percent: float | None = None
    other_slots: int = 0


@dataclass(frozen=True, slots=True)
class ScalingState:
    """What `decide` remembers between calls (start with ``ScalingState()``).

    Attributes:
        last_up: When the pool last grew or shed a process for memory (the caller's clock); None if never.
        low_since: Since when the need has stayed below the current count; None while it has not.
        low_peak: The highest need seen since ``low_since``.
    """

    last_up: float | None = None
    low_since: float | None = None
    low_peak: int = 0


@dataclass(frozen=True, slots=True)
class ScalingDecision:
    """The outcome of `decide`.

    Attributes:
        desired: Processes wanted now.
        need: What the queues alone ask for, within the bounds (before cooldown and delay).
        reason: Why, in words for a log line.
        state: The memory to pass to the next call.
    """

    desired: int
    need: int
    reason: str
    state: ScalingState


def decide(policy: ScalingPolicy, load: PoolLoad, state: ScalingState, now: float) -> ScalingDecision:
    """Returns how many processes the pool wants now (see the module docstring for the rule).

    Args:
        policy: The pool's bounds, limits and delays.
        load: The queues, the current count and the machine's use.
        state: What the previous call returned in ``state`` (``ScalingState()`` the first time).
        now: The caller's monotonic clock, in seconds.
    """
    need, reason = _need(policy, load)
    current = load.workers
    if current > policy.min_workers and _over(policy.max_memory, load.memory_percent):
        # Memory at its limit: one process fewer now, and one more per cooldown while it stays so.
        short = f"memory {load.memory_percent:.0f}% >= {policy.max_memory:g}%"
        if state.last_up is not None and now - state.last_up < policy.scale_up_cooldown:
            wait = policy.scale_up_cooldown - (now - state.last_up)
            return ScalingDecision(current, need, f"{short}; shedding again in {wait:.1f}s", _steady(state))
        return ScalingDecision(current - 1, need, f"{short}; one process fewer", ScalingState(last_up=now))
    if need > current:
        if state.last_up is not None and now - state.last_up < policy.scale_up_cooldown:
            wait = policy.scale_up_cooldown - (now - state.last_up)
            return ScalingDecision(current, need, f"{reason}; growing again in {wait:.1f}s", _steady(state))
        return ScalingDecision(need, need, reason, ScalingState(last_up=now))
    if need == current:
        return ScalingDecision(current, need, reason, _steady(state))
    low_since = now if state.low_since is None else state.low_since
    peak = need if state.low_since is None else max(state.low_peak, need)
    if now - low_since < policy.scale_down_delay:
        held = replace(state, low_since=low_since, low_peak=peak)
        wait = policy.scale_down_delay - (now - low_since)
        return ScalingDecision(current, need, f"{reason}; shrinking in {wait:.1f}s if it stays so", held)
    return ScalingDecision(peak, need, reason, ScalingState(last_up=state.last_up))


def _steady(state: ScalingState) -> ScalingState:
    return replace(state, low_since=None, low_peak=0)


def _need(policy: ScalingPolicy, load: PoolLoad) -> tuple[int, str]:
    """The processes the queues ask for, within the bounds and the machine's limits, and why."""
    jobs = sum(q.active + (0 if q.blocked else q.waiting) for q in load.queues)
    need = math.ceil(jobs / policy.concurrency)
    reason = f"{jobs} job(s) waiting or running need {need} process(es) of {policy.concurrency}"
    if load.other_slots > 0 and jobs > 0:
        mine = max(load.workers, 1) * policy.concurrency
        share = -(-jobs * mine // (mine + load.other_slots))  # whole jobs, rounded up: a part needs a slot
        need = -(-share // policy.concurrency)
        reason = (
            f"{jobs} job(s) waiting or running; this pool's share beside {load.other_slots} other slot(s) "
            f"needs {need} process(es) of {policy.concurrency}"
        )
    for q in load.queues:
        target = policy.target_wait.get(q.queue)
        age = q.oldest_waiting_age
        if target is None or age is None or q.blocked or age <= target:
            continue
        if need <= load.workers:
            need = load.workers + 1
            reason = (
                f"{q.queue}: oldest waiting job {age.total_seconds():.1f}s > target "
                f"{target.total_seconds():g}s; one process more"
            )
        break
    if need > policy.max_workers:
        need, reason = policy.max_workers, f"{reason}; capped at max {policy.max_workers}"
    if need > load.workers and (busy := _machine_busy(policy, load)):
        need, reason = max(load.workers, policy.min_workers), f"{reason}; not growing: {busy}"
    if need < policy.min_workers:
        need, reason = policy.min_workers, f"{reason}; kept at min {policy.min_workers}"
    return need, reason


def _machine_busy(policy: ScalingPolicy, load: PoolLoad) -> str:
    """Why the machine has no room for another process ('' when it has)."""
    if _over(policy.max_cpu, load.cpu_percent):
        return f"CPU {load.cpu_percent:.0f}% >= {policy.max_cpu:g}%"
    if _over(policy.max_memory, load.memory_percent):
        return f"memory {load.memory_percent:.0f}% >= {policy.max_memory:g}%"
    return ""


def _over(limit: float | None, use: float | None) -> bool:
    """Whether a measured use is at or above its limit (no limit or no measure: never)."""
    return limit is not None and use is not None and use >= limit
