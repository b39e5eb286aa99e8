"""Waiting tasks on a real cluster. A delayed task lives in the store, not in a master's memory: the master
that saw it submitted dies before it is due, and the next one places it once, after its time. A task whose
type no live node runs says so, and runs once such a node joins."""

from __future__ import annotations

import pytest

from .conftest import Cluster, until

pytestmark = [pytest.mark.cluster, pytest.mark.e2e]


def test_a_delayed_task_runs_once_after_its_time_across_a_master_kill(cluster: Cluster) -> None:
    cluster.start(3)
    before = cluster.wait_agreed()
    master = cluster.nodes[before["master"]]
    survivors = cluster.live(but=[master])
    body = {"name": "later", "type": "echo", "target": "x", "delay_s": 3}
    response = cluster.http(survivors[0]).post("/api/v1/tasks", json=body)
    assert response.status_code == 201, response.text
    task = response.json()
    assert task["state"] == "WAITING" and task["waiting_for"].startswith("due at ")

    master.kill()
    [done] = cluster.wait_all_ended(survivors[1], [task["id"]], timeout=60)
    assert done["state"] == "SUCCEED", done
    assert done["started_at"] >= task["run_at"], "placed after its time, not before"
    assert done["attempts"] == 1 and len(done["history"]) == 1, "placed once"
    assert done["node"] in {n.name for n in survivors}
    assert int(cluster.task_hash(task["id"])["epoch"]) > before["epoch"], "by the new master"


def test_a_task_no_live_node_can_run_says_so_then_runs_when_one_joins(cluster: Cluster) -> None:
    [api_only] = cluster.start(1, args=["--no-run-tasks"])
    [runner] = cluster.start(1, args=["--slots", "1"])
    cluster.wait_agreed()
    busy = cluster.submit(api_only, "busy", delay_s=60)  # holds the runner's only slot
    queued = cluster.submit(api_only, "queued")
    assert cluster.task(api_only, queued)["waiting_for"] is None, "it waits for a slot only"

    runner.kill()
    waiting = until(lambda: (t := cluster.task(api_only, queued))["waiting_for"] and t, 30,
                    "the waiting task to say why")  # fmt: skip
    assert waiting["state"] == "WAITING" and waiting["waiting_for"] == "no live node runs type echo"
    listed = cluster.http(api_only).get("/api/v1/tasks", params={"state": "WAITING"}).json()["tasks"]
    assert {t["id"]: t["waiting_for"] for t in listed}[queued] == "no live node runs type echo"

    cluster.start(1)
    [done] = cluster.wait_all_ended(api_only, [queued], timeout=60)
    assert done["state"] == "SUCCEED" and done["waiting_for"] is None
    cluster.http(api_only).post(f"/api/v1/tasks/{busy}/kill")
