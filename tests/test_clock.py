"""A node's clock against the store's: the refusal rule, and the test switch that sets a node's clock off."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from shoal.clock import CLOCK_REFUSAL, MAX_SKEW_S, OFFSET_FILE_VAR, NodeClock, skew_refusal


@pytest.mark.parametrize("skew", [None, 0.0, 29.9, -30.0, MAX_SKEW_S])
def test_a_clock_within_the_limit_or_not_yet_measured_is_not_refused(skew: float | None) -> None:
    assert skew_refusal(skew) is None


@pytest.mark.parametrize(("skew", "shown"), [(30.5, "+30.5 s"), (-120.0, "-120.0 s")])
def test_a_clock_past_the_limit_is_refused_saying_by_how_much(skew: float, shown: str) -> None:
    reason = skew_refusal(skew)
    assert reason is not None and reason.startswith(CLOCK_REFUSAL)
    assert shown in reason and "±30 s" in reason and "store's" in reason


def test_store_time_takes_off_the_measured_skew() -> None:
    clock = NodeClock(offset=lambda: 100.0)
    assert clock.wall() == pytest.approx(time.time() + 100.0, abs=1.0)
    assert clock.store_time() == pytest.approx(clock.wall(), abs=1.0)  # not measured yet: its own clock
    clock.observe(100.0)
    assert clock.store_time() == pytest.approx(time.time(), abs=1.0)


def test_without_the_test_switch_the_clock_is_the_machines() -> None:
    clock = NodeClock.from_environ({"SHOAL_CLOCK_OFFSET_FILE": "/nonexistent"})
    assert clock.wall() == pytest.approx(time.time(), abs=1.0)


def test_the_test_switch_reads_its_file_again_when_it_changes(tmp_path: Path) -> None:
    path = tmp_path / "offset"
    clock = NodeClock.from_environ({OFFSET_FILE_VAR: str(path)})
    assert clock.wall() == pytest.approx(time.time(), abs=1.0)  # no file yet: no offset
    path.write_text("-45.5\n")
    assert clock.wall() == pytest.approx(time.time() - 45.5, abs=1.0)
    partial = tmp_path / "offset.new"
    partial.write_text("0\n")
    os.replace(partial, path)
    assert clock.wall() == pytest.approx(time.time(), abs=1.0)
    path.write_text("not a number")
    assert clock.wall() == pytest.approx(time.time(), abs=1.0)
