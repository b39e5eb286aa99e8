"""Named schedules across master failures on a real cluster: two ``@every 1s`` schedules fire for about twenty
seconds while the master is killed twice (once at once, once after it froze and its lease ran out). Each tick
fires at most once (no two tasks of a schedule share a tick), every task's tick is a real tick of the
schedule, and the ticks missed while no master was up follow the schedule's catch_up: with "skip" no task is
fired late (and the missed ticks are not fired), with "run_once" each gap yields one late task at most (and
the frozen master's gap makes one)."""

from __future__ import annotations

import signal
import time
from typing import Any

import pytest

from shoal.schedules import MISFIRE_GRACE_S

from .conftest import Cluster, until

pytestmark = [pytest.mark.cluster, pytest.mark.e2e]

#: How late after its tick a task may be stored and still count as fired on time: the grace the master
#: holds ticks to, plus the time between its look at the clock and the task's store.
ON_TIME_S = MISFIRE_GRACE_S + 0.5
#: Ticks each master fires before it is killed (and the last one after the second kill).
RUN_TICKS = 4


def fired(cluster: Cluster, via: Any, name: str) -> list[dict[str, Any]]:
    tasks = cluster.http(via).get("/api/v1/tasks", params={"limit": 1000}).json()["tasks"]
    return sorted((t for t in tasks if t.get("schedule") == name), key=lambda t: t["tick"])


def kill_master(cluster: Cluster, *, frozen: bool) -> None:
    """Kill the master once it fired a few ticks, and wait until the survivors agree on the next one.
    ``frozen``: stop it first (SIGSTOP) and kill it only once the next master is elected, so that its lease
    runs out while nobody fires: the ticks of that gap are missed for sure."""
    view = cluster.wait_agreed(timeout=30)
    master = cluster.nodes[view["master"]]
    survivors = cluster.live(but=[master])
    since = time.time()
    until(lambda: sum(t["created_at"] > since for t in fired(cluster, survivors[0], "skip")) >= RUN_TICKS or None,
          RUN_TICKS + 15, "ticks fired under this master")  # fmt: skip
    if frozen:
        master.proc.signal(signal.SIGSTOP)
    else:
        master.kill()
    after = cluster.wait_agreed(survivors, timeout=30)
    assert after["master"] != master.name and after["epoch"] > view["epoch"]
    if frozen:
        master.kill()


def test_each_tick_fires_once_across_two_master_kills_and_catch_up_is_kept(cluster: Cluster) -> None:
    cluster.start(3)
    cluster.wait_agreed()
    api = cluster.http(cluster.live()[0])
    for name, catch_up in (("skip", "skip"), ("once", "run_once")):
        body = {"name": name, "cron": "@every 1s", "catch_up": catch_up, "task": {"type": "echo", "target": name}}
        response = api.post("/api/v1/schedules", json=body)
        assert response.status_code == 201, response.text
    started = time.time()

    kill_master(cluster, frozen=False)
    kill_master(cluster, frozen=True)
    [last] = cluster.live()
    ended = time.time()
    until(lambda: any(t["tick"] >= ended + RUN_TICKS for t in fired(cluster, last, "once")) or None, 15,
          "ticks fired by the last master")  # fmt: skip

    for name in ("skip", "once"):
        tasks = fired(cluster, last, name)
        ticks = [t["tick"] for t in tasks]
        assert len(ticks) == len(set(ticks)), f"{name}: a tick fired twice: {ticks}"
        assert all(t == int(t) and t > started - 1 for t in ticks), f"{name}: not ticks of @every 1s: {ticks}"
        late = [t["tick"] for t in tasks if t["created_at"] - t["tick"] > ON_TIME_S]
        holes = [(a, b) for a, b in zip(ticks, ticks[1:], strict=False) if b - a > 1]  # ticks not fired
        runs = cluster.http(last).get(f"/api/v1/schedules/{name}").json()["runs"]
        caught_up = [r["tick"] for r in runs if r.get("catch_up")]
        if name == "skip":
            assert not late, f"skip fired missed ticks late: {late}"
            assert holes and not caught_up, (holes, runs)  # the frozen master's gap was missed, and not fired
            assert any(r.get("skipped") == "missed" for r in runs), runs  # the newest missed tick, recorded
        else:
            assert caught_up, runs  # the frozen master's gap left ticks for the next master to catch up
            on_time = [t for t in ticks if t not in late]
            for a, b in zip(on_time, on_time[1:], strict=False):  # one catch-up at most between two on-time runs
                assert sum(a < t < b for t in late) <= 1, (a, b, late)
            regular = [t for t in ticks if t not in caught_up]
            for a, b in zip(regular, regular[1:], strict=False):  # a gap: one catch-up, for its newest tick
                assert sum(a < t < b for t in caught_up) <= 1, (a, b, caught_up)
                assert all(t == b - 1 for t in caught_up if a < t < b), (a, b, caught_up)
