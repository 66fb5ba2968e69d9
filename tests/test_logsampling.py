"""The log sampler (queue_manager/logsampling.py) on its own, with a clock the tests move."""

from __future__ import annotations

from collections.abc import Hashable

import pytest

from queue_manager import logsampling
from queue_manager.logsampling import BURST, WINDOW_S, Sampler


class Clock:
    """Monotonic seconds that move only when a test moves them."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def told() -> list[tuple[Hashable, int, float]]:
    return []


@pytest.fixture
def sampler(clock: Clock, told: list[tuple[Hashable, int, float]]) -> Sampler:
    return Sampler(lambda key, count, seconds: told.append((key, count, seconds)), clock=clock)


def test_a_trickle_is_logged_in_full(sampler: Sampler, clock: Clock, told: list[object]) -> None:
    for _ in range(3):
        assert all(sampler.admit("q") for _ in range(BURST))
        clock.now += WINDOW_S
    sampler.flush(final=True)
    assert told == []


def test_a_storm_is_its_first_few_then_one_count_per_window(
    sampler: Sampler, clock: Clock, told: list[tuple[Hashable, int, float]]
) -> None:
    admitted = [sampler.admit("q") for _ in range(BURST + 15)]
    assert admitted == [True] * BURST + [False] * 15
    clock.now += 0.4
    sampler.flush()  # the window has not ended: nothing told yet
    assert told == []
    clock.now += WINDOW_S  # the next record of the kind tells the count, then starts a window of its own
    assert sampler.admit("q")
    assert told == [("q", 15, WINDOW_S)]
    assert [sampler.admit("q") for _ in range(BURST)] == [True] * (BURST - 1) + [False]


def test_flush_tells_a_storm_that_stopped(
    sampler: Sampler, clock: Clock, told: list[tuple[Hashable, int, float]]
) -> None:
    for _ in range(BURST + 2):
        sampler.admit("q")
    clock.now += 5.0
    sampler.flush()
    sampler.flush()  # told once
    assert told == [("q", 2, WINDOW_S)]


def test_the_final_flush_tells_a_window_under_way(
    sampler: Sampler, clock: Clock, told: list[tuple[Hashable, int, float]]
) -> None:
    for _ in range(BURST + 4):
        sampler.admit(("q", "ValueError"))
    clock.now += 0.25
    sampler.flush(final=True)
    assert told == [(("q", "ValueError"), 4, 0.25)]


def test_kinds_are_sampled_apart(sampler: Sampler, told: list[tuple[Hashable, int, float]]) -> None:
    for _ in range(BURST + 1):
        sampler.admit("a")
    assert all(sampler.admit("b") for _ in range(BURST))
    sampler.flush(final=True)
    assert told == [("a", 1, 0.0)]


def test_the_table_of_kinds_is_bounded(
    sampler: Sampler, told: list[tuple[Hashable, int, float]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(logsampling, "MAX_KEYS", 4)
    for _ in range(BURST + 3):
        sampler.admit("first")
    for key in range(10):
        sampler.admit(key)
    assert told == [("first", 3, 0.0)]  # the oldest window made room, and its count was not lost
    sampler.flush(final=True)
    assert len(told) == 1
