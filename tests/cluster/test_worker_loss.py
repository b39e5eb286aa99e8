"""Losing a worker: killed -9 in the middle of 200 running tasks (every task still ends SUCCEED, with
one result each), or paused until it is declared dead and then resumed (it rejoins as a new
incarnation, and what it ran before is recorded as a late duplicate, never as the task's result)."""

from __future__ import annotations

import re
import signal
import time
from typing import Any

import pytest

from shoal.testing import TestNode, wait_for

from .conftest import PREFIX, Cluster, until

pytestmark = [pytest.mark.cluster, pytest.mark.e2e]

STATES = ("WAITING", "INQUEUE", "RUNNING", "RUNTIME_ERROR", "SUCCEED", "KILLED")
#: The rule of a death found by the failure detector (not by a node that left on its own).
DEATH_RULE = re.compile(r"\d+ beats missed, direct probe and \d+ indirect probe\(s\) failed")


def running_ids(cluster: Cluster, via: TestNode, name: str) -> set[str]:
    response = cluster.http(via).get("/api/v1/tasks", params={"state": "RUNNING", "limit": 1000})
    assert response.status_code == 200, response.text
    return {t["id"] for t in response.json()["tasks"] if t["node"] == name}


def wait_running(cluster: Cluster, via: TestNode, victim: TestNode, at_least: int) -> set[str]:
    """The ids of the tasks ``victim`` runs, once it runs ``at_least`` of them."""

    def running() -> set[str] | None:
        ids = running_ids(cluster, via, victim.name)
        return ids if len(ids) >= at_least else None

    return until(running, 20, f"{victim.name} to run {at_least} of the tasks")


def a_worker(cluster: Cluster) -> tuple[TestNode, list[TestNode]]:
    """A node that is not the master, and the others."""
    view = cluster.wait_agreed()
    victim = next(n for n in cluster.nodes.values() if n.name != view["master"])
    return victim, cluster.live(but=[victim])


def check_one_result_each(cluster: Cluster, via: TestNode, tasks: list[dict[str, Any]]) -> None:
    """Every task SUCCEED, in exactly one state index, and its result is its final attempt's."""
    assert [t["state"] for t in tasks].count("SUCCEED") == len(tasks), [
        (t["id"], t["state"], t["error"]) for t in tasks if t["state"] != "SUCCEED"
    ][:5]
    for task in tasks:
        result = cluster.result(via, task["id"])
        assert (result["node"], result["attempt"]) == (task["node"], task["attempts"]), (task, result)
        assert result["code"] == task["target"]
        final = task["history"][-1]
        assert (final["node"], final["number"], final["outcome"]) == (task["node"], task["attempts"], "succeeded")
        with cluster.redis.pipeline(transaction=False) as pipe:
            for state in STATES:
                pipe.zscore(f"{PREFIX}index:{state}", task["id"])
            scores = pipe.execute()
        assert [s for s, score in zip(STATES, scores, strict=True) if score is not None] == ["SUCCEED"], task["id"]


def test_kill_9_of_a_worker_in_the_middle_of_200_tasks_loses_none(cluster: Cluster) -> None:
    nodes = cluster.start(3)
    victim, survivors = a_worker(cluster)
    delays = [1.0 + (i % 5) / 4 for i in range(200)]  # 1 to 2 s each
    ids = cluster.submit_across(nodes, 200, delays, prefix="w")

    held = wait_running(cluster, survivors[0], victim, 4)
    assert cluster.count(survivors[0], "SUCCEED") < 150, "the tasks ended before the worker could be killed"
    killed_at = time.monotonic()
    victim.kill()

    # Its tasks go back to WAITING once it is found dead, within 8 s with default settings.
    replaced = wait_for(lambda: cluster.events("re-placed", victim.name), 8.0, f"{victim.name}'s tasks re-placed",
                        interval=0.05)  # fmt: skip
    replaced_after = time.monotonic() - killed_at
    info = cluster.node_info(survivors[0], victim.name)
    assert info is not None and info["state"] == "dead", info
    assert DEATH_RULE.search(info["reason"]), info["reason"]
    assert DEATH_RULE.search(replaced[-1]["rule"]), replaced[-1]
    dead = cluster.events("dead", victim.name)
    assert len(dead) == 1 and dead[0]["rule"] == info["reason"]

    tasks = cluster.wait_all_ended(survivors[0], ids, timeout=90)
    assert len({t["id"] for t in tasks}) == 200
    check_one_result_each(cluster, survivors[0], tasks)
    by_id = {t["id"]: t for t in tasks}
    for task_id in held:  # running on the victim when it died: run again elsewhere, the lost attempt closed
        task = by_id[task_id]
        assert task["node"] != victim.name and task["attempts"] >= 2, task
        lost = [a for a in task["history"] if a["node"] == victim.name]
        assert lost and lost[-1]["outcome"] == "node lost", task["history"]
    for task_id in ids:
        assert cluster.result(survivors[0], task_id)["duplicates"] == 0  # the victim never reported again
    assert victim.proc.process is not None and victim.proc.process.returncode == -signal.SIGKILL
    print(f"tasks of a worker killed -9 re-placed after {replaced_after:.2f}s")


def test_a_worker_declared_dead_rejoins_as_a_new_incarnation_and_runs_nothing_twice(cluster: Cluster) -> None:
    nodes = cluster.start(3)
    victim, survivors = a_worker(cluster)
    before = cluster.node_info(survivors[0], victim.name)
    assert before is not None and before["state"] == "alive"
    ids = cluster.submit_across(nodes, 24, delay_s=3, prefix="p")
    held = wait_running(cluster, survivors[0], victim, 2)

    victim.proc.signal(signal.SIGSTOP)
    paused_at = time.monotonic()

    def declared_dead() -> dict[str, Any] | None:
        info = cluster.node_info(survivors[0], victim.name)
        return info if info and info["state"] == "dead" else None

    dead = until(declared_dead, 20, f"{victim.name} to be declared dead")
    assert DEATH_RULE.search(dead["reason"]), dead["reason"]
    replaced = wait_for(lambda: cluster.events("re-placed", victim.name), 5, f"{victim.name}'s tasks re-placed")
    assert held <= set(replaced[-1]["extra"]["tasks"])

    def moved_on() -> bool:
        """Paused past 8 s in all, and what it held is running or done elsewhere."""
        tasks = [cluster.task(survivors[0], i) for i in held]
        elsewhere = all(t["state"] in ("RUNNING", "SUCCEED") and t["node"] != victim.name for t in tasks)
        return elsewhere and time.monotonic() - paused_at > 8.0

    wait_for(moved_on, 15, "the re-placed tasks to run elsewhere", interval=0.1)
    victim.proc.signal(signal.SIGCONT)

    def rejoined() -> dict[str, Any] | None:
        """Alive again by the master's verdict on its new incarnation (not only by its beats)."""
        info = cluster.node_info(survivors[0], victim.name)
        if not info or info["incarnation"] <= before["incarnation"] or info["state"] != "alive":
            return None
        return info if f"joined (incarnation {info['incarnation']})" in info["reason"] else None

    wait_for(rejoined, 15, f"{victim.name} to be admitted again as a new incarnation")
    cluster.wait_agreed()

    tasks = cluster.wait_all_ended(survivors[0], ids, timeout=60)
    check_one_result_each(cluster, survivors[0], tasks)
    for task in tasks:
        if task["id"] in held:
            assert task["attempts"] >= 2 and task["node"] != victim.name, task
            old = [a for a in task["history"] if a["node"] == victim.name]
            assert old and old[0]["outcome"] == "node lost", task["history"]
            # What the paused node finished after it woke up is a duplicate beside the result, if anything.
            late = cluster.dupes(task["id"])
            assert all(f'"node":"{victim.name}"' in d.replace(" ", "") for d in late), late
    assert cluster.view(survivors[0])["master"] != victim.name
