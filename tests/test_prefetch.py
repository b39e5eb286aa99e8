"""How many tasks a node takes beyond its slots (shoal.worker.prefetch): all it may while its tasks are short,
fewer as they grow, none while one runs long or before it knows anything of them."""

from __future__ import annotations

import pytest

from shoal.worker import prefetch
from shoal.worker.prefetch import Prefetch


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    made = Clock()
    monkeypatch.setattr(prefetch.time, "monotonic", made)
    return made


def run(p: Prefetch, clock: Clock, seconds: float, times: int = 1) -> None:
    for n in range(times):
        p.taken(f"t{n}")
        clock.now += seconds
        p.freed(f"t{n}")


def test_nothing_is_taken_before_an_attempt_has_ended(clock: Clock) -> None:
    assert Prefetch(slots=8, most=8).current() == 0


def test_short_tasks_take_all_it_may_and_longer_ones_fewer(clock: Clock) -> None:
    p = Prefetch(slots=8, most=8)
    run(p, clock, 0.002, times=50)
    assert p.current() == 8
    run(p, clock, 0.2, times=200)  # the running mean follows the tasks: a queued one waits about 0.05 s
    assert p.current() == 2
    run(p, clock, 1.0, times=200)
    assert p.current() == 0


def test_one_attempt_running_long_stops_it_at_once(clock: Clock) -> None:
    p = Prefetch(slots=8, most=8)
    run(p, clock, 0.002, times=50)
    p.taken("long")
    clock.now += 0.5
    assert p.current() == 0
    p.freed("long")
    assert p.current() > 0  # one long attempt moves the mean only a little


def test_most_zero_never_takes_any(clock: Clock) -> None:
    p = Prefetch(slots=8, most=0)
    run(p, clock, 0.001, times=10)
    assert p.current() == 0


def test_a_killed_attempt_says_nothing_of_how_long_tasks_take(clock: Clock) -> None:
    p = Prefetch(slots=8, most=8)
    run(p, clock, 0.002, times=50)
    p.taken("held for a minute, then killed")
    clock.now += 60
    p.freed("held for a minute, then killed", ended=False)
    assert p.current() == 8


def test_it_says_at_once_when_it_goes_from_none_to_some_and_back(clock: Clock) -> None:
    told: list[int] = []
    p = Prefetch(slots=8, most=8)
    p.on_change = lambda: told.append(p.current())
    assert p.current() == 0
    run(p, clock, 0.002)  # the first attempt ended: it may take some now
    assert told == [8]
    run(p, clock, 0.002, times=10)  # no change from some to some
    assert told == [8]
    run(p, clock, 5.0, times=100)
    assert told == [8, 0]
