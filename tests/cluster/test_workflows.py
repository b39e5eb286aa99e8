"""Workflows across a master failure on a real cluster: a chain of three function tasks and a diamond-shaped
DAG run in order with their values passed along while the master is killed between their steps. A child is
released by the script that ends its last parent, not by the master, so the children released while no
master is up wait in their queue and the next master places each of them once: every task runs exactly one
attempt, and no report of one is taken twice."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

import shoal
from shoal.client import Client

from .conftest import Cluster, until

PLUGINS = Path(__file__).resolve().parents[1] / "plugins"
MODULE = "shoal_workflow_tasks"
sys.path.insert(0, str(PLUGINS))  # the plug-in module, imported here as the nodes import it
from shoal_workflow_tasks import add, mul  # type: ignore[import-not-found]  # noqa: E402

pytestmark = [pytest.mark.cluster, pytest.mark.e2e]

#: Seconds each slow step takes: long enough that the master is killed while a workflow is half done.
STEP_S = 1.5


def test_a_chain_and_a_diamond_run_once_each_in_order_across_a_master_kill(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in (str(PLUGINS), os.environ.get("PYTHONPATH")) if p))
    # the masters run no task (a killed master takes no attempt down with it); the workers never stand
    # the master starts alone (ready: it has taken the role), so that it is the master whatever the others' timing
    master = cluster.add("node-a", args=["--no-run-tasks", "--priority", "10"])
    standby = cluster.add("node-b", args=["--no-run-tasks", "--priority", "5"], ready=False)
    workers = [cluster.add(n, args=["--no-master-eligible", "--task-modules", MODULE], ready=False)
               for n in ("node-c", "node-d")]  # fmt: skip
    for node in (standby, *workers):
        node.wait_ready(30.0)
    before = cluster.wait_agreed(timeout=30)
    assert before["master"] == master.name

    with Client(workers[0].http_url, workers[0].token, timeout_s=30) as client:
        chain = shoal.chain(add.s(1, 2, delay_s=STEP_S), add.s(10, delay_s=STEP_S), mul.s(100)).submit(client)
        wf = shoal.Workflow()
        a = wf.add(add.s(1, 2, delay_s=STEP_S))
        b = wf.add(add.s(a, 10, delay_s=STEP_S))
        c = wf.add(mul.s(a, 20))
        d = wf.add(add.s(b, c))
        diamond = wf.submit(client)
        ids = [h.id for h in (*chain, *diamond)]

        # the first steps have ended and released their children: the master goes now
        until(lambda: client.get(chain[0].id).state.name == "SUCCEED" or None, 30, "the chain's first step")
        until(lambda: client.get(diamond[a].id).state.name == "SUCCEED" or None, 30, "the diamond's root")
        assert client.get(chain[2].id).state.name == "WAITING"
        master.kill()
        after = cluster.wait_agreed([standby, *workers], timeout=30)
        assert after["master"] == standby.name and after["epoch"] > before["epoch"]

        assert chain.result(timeout=60) == 1300  # ((1 + 2) + 10) * 100
        assert diamond[d].result(timeout=60) == 73  # (3 + 10) + (3 * 20)
        tasks = {i: client.get(i) for i in ids}

    for task_id, task in tasks.items():
        assert task.state.name == "SUCCEED", task
        assert task.attempts == 1 and len(task.history) == 1, f"{task.name} ran {task.attempts} attempt(s)"
        assert cluster.dupes(task_id) == [], f"{task.name}: a report taken twice"
    chain_tasks = [tasks[h.id] for h in chain]
    for parent, child in zip(chain_tasks, chain_tasks[1:], strict=False):
        assert parent.finished_at is not None and child.started_at is not None
        assert parent.finished_at <= child.started_at, "a step ran before the one it depends on ended"
    last = tasks[chain[2].id]
    assert int(cluster.task_hash(last.id)["epoch"]) > before["epoch"], "placed by the next master"
    joined = tasks[diamond[d].id]
    assert joined.started_at is not None
    assert all((tasks[diamond[p].id].finished_at or 0) <= joined.started_at for p in (b, c))
