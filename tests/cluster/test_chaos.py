"""Churn while work flows in: 1,200 tasks are submitted while a worker is killed -9 every 10 s (and
started again, as a supervisor would) and the master is killed -9 once; every accepted task must end,
SUCCEED, with one result, and none may be lost."""

from __future__ import annotations

import random
import threading
import time

import httpx
import pytest

from shoal.testing import TestNode

from .conftest import Cluster

pytestmark = [pytest.mark.cluster, pytest.mark.e2e]

TASKS = 1200  # about 30 s of feed at 40 tasks/s: three kills, the second one the master's


def submit_all(cluster: Cluster, accepted: list[str], refused: list[str], done: threading.Event) -> None:
    """Submit TASKS echo tasks through whichever nodes are alive, as a client with failover would."""
    i = 0
    client = httpx.Client(timeout=5, trust_env=False)
    while i < TASKS:
        live = cluster.live()
        node = random.choice(live)
        body = {"name": "churn", "type": "echo", "target": f"c-{i}", "params": {"delay_s": 0.2}}
        try:
            response = client.post(f"{node.http_url}/api/v1/tasks", json=body, headers=node.headers())
        except httpx.HTTPError:
            continue  # the node died under the request: try another (it was not accepted)
        if response.status_code == 201:
            accepted.append(response.json()["id"])
            i += 1
        else:
            refused.append(f"{response.status_code} {response.text[:200]}")
            i += 1
        time.sleep(0.02)  # about 40 tasks/s: the feed lasts long enough for several kills
    client.close()
    done.set()


def master_of(cluster: Cluster) -> str:
    view = cluster.wait_agreed(cluster.live(), timeout=30)
    return str(view["master"])


@pytest.mark.timeout(420)
def test_no_task_lost_while_workers_and_the_master_are_killed(cluster: Cluster) -> None:
    cluster.start(4)
    cluster.wait_agreed()
    accepted: list[str] = []
    refused: list[str] = []
    done = threading.Event()
    feeder = threading.Thread(target=submit_all, args=(cluster, accepted, refused, done), daemon=True)
    feeder.start()

    kills = 0
    master_killed = False
    while not done.wait(10):
        master = master_of(cluster)
        if not master_killed and kills == 1:
            victim: TestNode = cluster.nodes[master]
            master_killed = True
        else:
            victim = random.choice([n for n in cluster.live() if n.name != master])
        victim.kill()
        kills += 1
        victim.start(ready=True, timeout=30)  # back as a new incarnation, as systemd would restart it
    feeder.join(60)

    assert master_killed, "the feed ended before the master could be killed; raise TASKS"
    assert not refused, refused[:5]
    assert len(accepted) == TASKS
    via = cluster.live()[0]
    tasks = cluster.wait_all_ended(via, accepted, timeout=180)
    states = {t["state"] for t in tasks}
    assert states == {"SUCCEED"}, {s: sum(t["state"] == s for t in tasks) for s in states}
    for task in random.sample(tasks, 100):
        result = cluster.result(via, task["id"])
        assert result["code"] == task["target"] and result["attempt"] == task["attempts"]
