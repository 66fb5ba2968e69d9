"""The pool's scaling rule (queue_manager.autoscale.decide): a table of cases, and sequences in time."""

from __future__ import annotations

from datetime import timedelta

import pytest

from queue_manager.autoscale import PoolLoad, QueueLoad, ScalingPolicy, ScalingState, decide

POLICY = ScalingPolicy(
    min_workers=1,
    max_workers=6,
    concurrency=10,
    target_wait={"slo": timedelta(seconds=5)},
    max_cpu=90.0,
    max_memory=80.0,
    scale_up_cooldown=5.0,
    scale_down_delay=30.0,
)


def load(
    workers: int,
    *queues: QueueLoad,
    cpu: float | None = 20.0,
    memory: float | None = 30.0,
    others: int = 0,
) -> PoolLoad:
    return PoolLoad(tuple(queues), workers, cpu, memory, others)


def q(
    waiting: int = 0, active: int = 0, age: float | None = None, name: str = "q", blocked: bool = False
) -> QueueLoad:
    return QueueLoad(name, waiting, active, None if age is None else timedelta(seconds=age), blocked)


@pytest.mark.parametrize(
    ("pool_load", "desired", "reason"),
    [
        # Depth: waiting and running jobs over the concurrency of one process, rounded up.
        (load(1, q(waiting=25, active=10)), 4, "35 job(s) waiting or running need 4"),
        (load(2, q(waiting=5), q(active=6, name="other")), 2, "11 job(s)"),
        (load(1, q(waiting=1)), 1, "1 job(s)"),
        # Capped by max, and no growth at all while the machine is busy.
        (load(2, q(waiting=500)), 6, "capped at max 6"),
        (load(2, q(waiting=500), cpu=95.0), 2, "not growing: CPU 95% >= 90%"),
        (load(1, q(waiting=500), memory=80.0), 1, "not growing: memory 80% >= 80%"),
        (load(0, q(waiting=500), cpu=99.0), 1, "not growing: CPU 99%"),
        # Unknown machine use (no psutil) sets no limit.
        (load(2, q(waiting=50), cpu=None, memory=None), 5, "need 5"),
        # A paused or held queue's waiting jobs cannot be started by more processes; its running ones count.
        (load(1, q(waiting=100, active=12, blocked=True)), 2, "12 job(s)"),
        # Age: a queue past its target wait asks for one more process even when depth is met.
        (
            load(2, q(waiting=3, active=17, age=9.0, name="slo")),
            3,
            "slo: oldest waiting job 9.0s > target 5s",
        ),
        (load(2, q(waiting=3, active=17, age=4.0, name="slo")), 2, "20 job(s)"),
        (load(2, q(waiting=3, active=17, age=60.0, name="no-target")), 2, "20 job(s)"),
        (load(6, q(waiting=3, active=57, age=9.0, name="slo")), 6, "capped at max 6"),
        # Other workers on the same queues: the pool takes its share of the jobs by slots. 100 jobs, 2
        # processes of 10 here and 20 slots elsewhere: 50 jobs, 5 processes (the whole would ask for 10).
        (load(2, q(waiting=100), others=20), 5, "share beside 20 other slot(s) needs 5 process(es)"),
        # Two like pools that share 60 jobs, 3 processes each: 3 each, stable (each alone would ask for 6).
        (load(3, q(waiting=30, active=30), others=30), 3, "60 job(s) waiting or running; this pool's"),
        # A large fixed worker takes most of it: the pool stays small.
        (load(1, q(waiting=40), others=500), 1, "needs 1 process(es)"),
        # A pool at zero counts one process's slots, so it still starts one beside others.
        (load(0, q(waiting=40), others=500), 1, "needs 1 process(es)"),
        # Nothing to do at the minimum: stay.
        (load(1), 1, "0 job(s) waiting or running need 0"),
    ],
)
def test_first_decision(pool_load: PoolLoad, desired: int, reason: str) -> None:
    decision = decide(POLICY, pool_load, ScalingState(), now=100.0)
    assert decision.desired == desired, decision.reason
    assert reason in decision.reason


def test_growth_waits_for_the_cooldown_after_growing() -> None:
    first = decide(POLICY, load(1, q(waiting=25)), ScalingState(), now=0.0)
    assert first.desired == 3
    # The age rule would add a process on every look while the new ones start: held for the cooldown.
    held = decide(POLICY, load(3, q(waiting=5, active=25, age=9.0, name="slo")), first.state, now=4.9)
    assert held.desired == 3 and "growing again in 0.1s" in held.reason
    grown = decide(POLICY, load(3, q(waiting=5, active=25, age=9.0, name="slo")), held.state, now=5.0)
    assert grown.desired == 4


def test_idle_shrinks_to_min_after_the_delay_and_not_before() -> None:
    state = ScalingState()
    for now in (0.0, 10.0, 29.9):
        decision = decide(POLICY, load(5), state, now)
        assert decision.desired == 5 and "shrinking in" in decision.reason
        state = decision.state
    decision = decide(POLICY, load(5), state, now=30.0)
    assert decision.desired == 1
    assert decision.state.low_since is None


def test_shrinks_to_the_highest_need_seen_during_the_delay() -> None:
    state = ScalingState()
    for now, waiting in ((0.0, 0), (10.0, 35), (20.0, 0)):
        decision = decide(POLICY, load(6, q(waiting=waiting)), state, now)
        assert decision.desired == 6
        state = decision.state
    assert decide(POLICY, load(6), state, now=30.0).desired == 4


def test_a_need_that_wavers_never_flaps() -> None:
    """Need moving between 2 and 3 around a pool of 3: a look at 3 restarts the delay, so it never shrinks,
    and it never grows past 3."""
    state, desired = ScalingState(), 3
    for step in range(100):
        waiting = 25 if step % 7 == 0 else 15  # need 3 every seventh look (every 7 s), else 2
        decision = decide(POLICY, load(desired, q(waiting=waiting)), state, now=float(step))
        desired, state = decision.desired, decision.state
        assert desired == 3, (step, decision.reason)


def test_growth_cancels_a_pending_shrink() -> None:
    low = decide(POLICY, load(4, q(waiting=5)), ScalingState(), now=0.0)
    assert low.desired == 4 and low.state.low_since == 0.0
    up = decide(POLICY, load(4, q(waiting=60)), low.state, now=20.0)
    assert up.desired == 6 and up.state.low_since is None
    again = decide(POLICY, load(6, q(waiting=5)), up.state, now=35.0)
    assert again.desired == 6  # a new delay starts at 35, not at 0


def test_memory_at_its_limit_sheds_one_process_per_cooldown_down_to_min() -> None:
    busy = q(waiting=500)
    first = decide(POLICY, load(4, busy, memory=85.0), ScalingState(), now=0.0)
    assert first.desired == 3 and "memory 85% >= 80%; one process fewer" in first.reason
    held = decide(POLICY, load(3, busy, memory=85.0), first.state, now=4.0)
    assert held.desired == 3 and "shedding again in 1.0s" in held.reason
    second = decide(POLICY, load(3, busy, memory=85.0), held.state, now=5.0)
    assert second.desired == 2
    third = decide(POLICY, load(2, busy, memory=85.0), second.state, now=10.0)
    assert third.desired == 1
    at_min = decide(POLICY, load(1, busy, memory=99.0), third.state, now=20.0)
    assert at_min.desired == 1 and "not growing: memory 99%" in at_min.reason
    # Memory back under its limit: the backlog grows the pool again.
    relieved = decide(POLICY, load(1, busy, memory=50.0), at_min.state, now=30.0)
    assert relieved.desired == 6


def test_scale_to_zero_and_back() -> None:
    policy = ScalingPolicy(min_workers=0, max_workers=3, concurrency=5, scale_down_delay=10.0)
    idle = decide(policy, load(1), ScalingState(), now=0.0)
    assert idle.desired == 1
    idle = decide(policy, load(1), idle.state, now=10.0)
    assert idle.desired == 0
    assert decide(policy, load(0, q(waiting=1)), idle.state, now=11.0).desired == 1


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"min_workers": -1}, "min_workers must be 0 or more, got -1"),
        ({"max_workers": 0, "min_workers": 0}, "max_workers must be at least 1, got 0"),
        ({"min_workers": 5, "max_workers": 2}, "min_workers (5) must not be more than max_workers (2)"),
        ({"concurrency": 0}, "concurrency must be at least 1, got 0"),
        ({"max_cpu": 0.0}, "max_cpu must be a percentage above 0 and at most 100, got 0.0"),
        ({"max_memory": 150.0}, "max_memory must be a percentage above 0 and at most 100, got 150.0"),
        ({"scale_down_delay": -1.0}, "scale_down_delay must be a finite number of seconds"),
        ({"scale_up_cooldown": float("inf")}, "scale_up_cooldown must be a finite number of seconds"),
        ({"target_wait": {"q": timedelta(0)}}, "the target wait of queue 'q' must be more than 0"),
    ],
)
def test_policy_refuses_bad_bounds(kwargs: dict[str, object], message: str) -> None:
    settings: dict[str, object] = {"min_workers": 1, "max_workers": 4, "concurrency": 2, **kwargs}
    with pytest.raises(ValueError) as refused:
        ScalingPolicy(**settings)  # type: ignore[arg-type]
    assert message in str(refused.value)
