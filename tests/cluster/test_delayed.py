"""A delayed task lives in the store, not in a master's memory: the master that saw it submitted dies
before it is due, and the next one places it once, after its time."""

from __future__ import annotations

import pytest

from .conftest import Cluster

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
