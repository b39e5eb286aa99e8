"""Losing the master: killed -9 (a follower finds its port dead and takes over well before the lease
runs out), stopped gracefully (it hands over at once), or paused past its lease (a new master takes over,
and the old one, resumed, steps down without a single write landing under its old epoch)."""

from __future__ import annotations

import signal
import threading
import time
from typing import Any

import httpx
import pytest

from shoal.testing import TestNode, multiplier, wait_for

from .conftest import Cluster, until

pytestmark = [pytest.mark.cluster, pytest.mark.e2e]

#: The master lease with default settings: dead_after (5) x heartbeat_interval (1 s).
LEASE_S = 5.0


def new_master(cluster: Cluster, via: TestNode, old: str, old_epoch: int) -> dict[str, Any] | None:
    view = cluster.view(via)
    if view["master"] not in (None, old) and view["epoch"] > old_epoch:
        return view
    return None


def test_kill_9_of_the_master_elects_a_new_one_and_tasks_keep_flowing(cluster: Cluster) -> None:
    cluster.start(3)
    before = cluster.wait_agreed()
    master = cluster.nodes[before["master"]]
    survivors = cluster.live(but=[master])

    killed_at = time.monotonic()
    master.kill()
    # A gone master's port refuses connections: the next in line breaks its lease instead of waiting it out.
    view = until(lambda: new_master(cluster, survivors[0], master.name, before["epoch"]), LEASE_S,
                 "a new master before the old lease could run out")  # fmt: skip
    took = time.monotonic() - killed_at
    assert view["master"] in {n.name for n in survivors}
    assert cluster.events("master lost", master.name), cluster.timeline()
    after = cluster.wait_agreed(survivors)
    assert after["epoch"] > before["epoch"]

    ids = cluster.submit_across(survivors, 20, delay_s=0.1)
    tasks = cluster.wait_all_ended(survivors[0], ids, timeout=30)
    assert [t["state"] for t in tasks] == ["SUCCEED"] * len(ids)
    assert {t["node"] for t in tasks} <= {n.name for n in survivors}
    for task_id in ids:
        assert int(cluster.task_hash(task_id)["epoch"]) == after["epoch"]
    print(f"failover after kill -9: {took:.2f}s")


def test_graceful_stop_of_the_master_hands_over_at_once(cluster: Cluster) -> None:
    cluster.start(3)
    before = cluster.wait_agreed()
    master = cluster.nodes[before["master"]]
    survivors = cluster.live(but=[master])

    submitted: list[str] = []
    errors: list[str] = []
    stop_submitting = threading.Event()

    def submit_all_along() -> None:
        """Tasks submitted through the survivors before, during and after the handover (own connections)."""
        clients = [httpx.Client(base_url=n.http_url, headers=n.headers(), timeout=10, trust_env=False)
                   for n in survivors]  # fmt: skip
        i = 0
        while not stop_submitting.is_set() and i < 400:
            body = {"name": "echo", "type": "echo", "target": f"handover-{i}", "params": {"delay_s": 0.05}}
            try:
                response = clients[i % len(clients)].post("/api/v1/tasks", json=body)
                if response.status_code == 201:
                    submitted.append(response.json()["id"])
                else:
                    errors.append(f"{response.status_code} {response.text}")
            except httpx.HTTPError as exc:
                errors.append(repr(exc))
            i += 1
        for client in clients:
            client.close()

    thread = threading.Thread(target=submit_all_along, daemon=True)
    thread.start()
    wait_for(lambda: len(submitted) >= 10, 10, "the first tasks to be submitted")
    stopped_at = time.monotonic()
    master.proc.signal(signal.SIGTERM)
    view = until(lambda: new_master(cluster, survivors[0], master.name, before["epoch"]), 2.0,
                 "a new master within 2 s of SIGTERM", interval=0.02)  # fmt: skip
    took = time.monotonic() - stopped_at
    assert master.proc.wait(20 * multiplier()) == 0, master.log()[-2000:]
    wait_for(lambda: len(submitted) >= 60, 20, "more tasks to be submitted after the handover")
    stop_submitting.set()
    thread.join(30)
    assert not errors, errors[:5]

    tasks = cluster.wait_all_ended(survivors[0], submitted, timeout=60)
    assert [t["state"] for t in tasks].count("SUCCEED") == len(submitted), [
        (t["id"], t["state"], t["error"]) for t in tasks if t["state"] != "SUCCEED"
    ][:5]
    assert view["master"] in {n.name for n in survivors}
    after = cluster.wait_agreed(survivors)
    assert after["master"] == view["master"] and after["epoch"] > before["epoch"]
    assert master.name not in {i["name"] for i in after["nodes"]}  # it left; it was not declared dead
    assert not cluster.events("dead", master.name)
    print(f"handover after SIGTERM: {took:.2f}s")


def is_master_metric(cluster: Cluster, node: TestNode) -> float:
    """The node's own ``shoal_is_master`` gauge: whether it acts as master, not what the store says."""
    response = cluster.http(node).get("/metrics")
    assert response.status_code == 200, response.text
    for line in response.text.splitlines():
        if line.startswith("shoal_is_master "):
            return float(line.split()[1])
    raise AssertionError("no shoal_is_master in /metrics")


def test_a_master_paused_past_its_lease_steps_down_and_none_of_its_writes_land(cluster: Cluster) -> None:
    cluster.start(3)
    before = cluster.wait_agreed()
    old, old_epoch = cluster.nodes[before["master"]], before["epoch"]
    others = cluster.live(but=[old])
    assert is_master_metric(cluster, old) == 1
    # More than the 24 slots: some run on the old master when it stops, some wait in its scheduler.
    first = cluster.submit_across(cluster.live(), 40, delay_s=5, prefix="first")
    wait_for(lambda: cluster.running_on(others[0], old.name) >= 2, 15, f"{old.name} to run tasks", interval=0.05)

    old.proc.signal(signal.SIGSTOP)
    paused_at = time.monotonic()
    view = until(lambda: new_master(cluster, others[0], old.name, old_epoch), 15,
                 "a new master after the paused master's lease")  # fmt: skip
    took = time.monotonic() - paused_at
    # A paused master's port still accepts connections: its lease is not broken, it runs out.
    assert took >= LEASE_S - 1.5, f"new master {took:.2f}s after the pause: the lease was not waited out"
    new, new_epoch = cluster.nodes[view["master"]], view["epoch"]
    assert new_epoch > old_epoch
    takeover_at = cluster.events("elected", new.name)[-1]["at"]
    stamped = {i: cluster.task_hash(i).get("epoch") for i in first}  # what the old term had placed

    during = cluster.submit_across(others, 20, delay_s=0.2, prefix="during")
    old.proc.signal(signal.SIGCONT)
    after = cluster.submit_across([old, *others], 30, delay_s=0.2, prefix="after")

    # It finds the lease held by another and steps down: one master, the new one, on every node.
    wait_for(lambda: is_master_metric(cluster, old) == 0, 10, f"{old.name} to step down")
    agreed = cluster.wait_agreed(timeout=30)
    assert (agreed["master"], agreed["epoch"]) == (new.name, new_epoch)

    ids = first + during + after
    tasks = cluster.wait_all_ended(others[0], ids, timeout=60)
    assert [t["state"] for t in tasks].count("SUCCEED") == len(ids), [
        (t["id"], t["state"], t["error"]) for t in tasks if t["state"] != "SUCCEED"
    ][:5]
    for task in tasks:
        result = cluster.result(others[0], task["id"])
        assert (result["node"], result["attempt"]) == (task["node"], task["attempts"]), (task, result)
    # Fencing: after the takeover no placement carries the old epoch. A task may keep the old epoch only
    # if the old term had placed it before the pause, and ran it where it was placed then.
    epochs = {i: int(cluster.task_hash(i)["epoch"]) for i in ids}
    for task_id in during + after:
        assert epochs[task_id] == new_epoch, (task_id, epochs[task_id])
    for task_id in first:
        if epochs[task_id] == old_epoch:
            assert stamped[task_id] == str(old_epoch), task_id
    late = [e for e in cluster.timeline() if e["epoch"] == old_epoch and e["at"] > takeover_at]
    assert not late, late
    assert len(cluster.events("elected")) == 2
    print(f"new master {took:.2f}s after the master was paused")
