"""SIGTERM on a node of a real two-node cluster while it runs tasks: it stops taking work, hands the master
role over at once, lets running tasks finish within the grace period (still beating, so the others do not
take it for dead and run its tasks a second time), hands back what did not finish, and exits 0; a second
SIGTERM cuts the grace short and still loses nothing. Every task ends SUCCEED exactly once.

Short heartbeats (0.3 s, dead after 4) make "declared dead" come within 3.6 s, so a drain of 5 seconds
would show the old bug of a draining node going silent.
"""

from __future__ import annotations

import dataclasses
import signal
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from shoal.keys import Keys
from shoal.models import TaskSpec
from shoal.store.nodes import NodeRecord, NodeRegistry
from shoal.store.tasks import TaskStore
from shoal.testing import TestNode, multiplier, wait_for

FAST_BEATS = ["--heartbeat-interval", "0.3", "--dead-after", "4", "--slots", "2"]
TASK_S = 5.0


class Pair:
    """Two nodes on one Redis; the calls the tests make on them."""

    def __init__(self, node_factory: Callable[..., TestNode], grace: float) -> None:
        args = [*FAST_BEATS, "--shutdown-grace", str(grace)]
        self.nodes = [node_factory(name=name, args=args, ready=False) for name in ("node-a", "node-b")]
        for node in self.nodes:  # started together: one start-up's wait instead of two
            node.wait_ready(30)
        self.http = {n.name: httpx.Client(base_url=n.http_url, headers=n.headers(), timeout=10, trust_env=False)
                     for n in self.nodes}  # fmt: skip

    def view(self, via: TestNode) -> dict[str, Any]:
        body: dict[str, Any] = self.http[via.name].get("/api/v1/cluster").json()
        return body

    def settled(self) -> tuple[TestNode, TestNode, int]:
        """(master, other, epoch) once both nodes are alive and agree."""

        def agreed() -> tuple[TestNode, TestNode, int] | None:
            views = [self.view(n) for n in self.nodes]
            master = views[0]["master"]
            if master is None or any(v["master"] != master for v in views):
                return None
            if sorted(i["name"] for i in views[0]["nodes"] if i["state"] == "alive") != ["node-a", "node-b"]:
                return None
            first, second = self.nodes if self.nodes[0].name == master else self.nodes[::-1]
            return first, second, int(views[0]["epoch"])

        found = wait_for(agreed, 20, "both nodes alive under one master")
        assert found is not None
        return found

    def submit(self, via: TestNode, target: str, delay_s: float) -> str:
        body = {"name": "echo", "type": "echo", "target": target, "params": {"delay_s": delay_s}}
        response = self.http[via.name].post("/api/v1/tasks", json=body)
        assert response.status_code == 201, response.text
        return str(response.json()["id"])

    def task(self, via: TestNode, task_id: str) -> dict[str, Any]:
        body: dict[str, Any] = self.http[via.name].get(f"/api/v1/tasks/{task_id}").json()
        return body

    def running_on(self, via: TestNode, ids: list[str]) -> dict[str, list[str]]:
        where: dict[str, list[str]] = {}
        for task_id in ids:
            task = self.task(via, task_id)
            if task["state"] == "RUNNING":
                where.setdefault(task["node"], []).append(task_id)
        return where

    def all_succeed_once(self, via: TestNode, ids: list[str]) -> list[dict[str, Any]]:
        """Wait for every task to end; each must be SUCCEED, finished once, with no late duplicate."""
        terminal = ("SUCCEED", "RUNTIME_ERROR", "KILLED")
        wait_for(lambda: all(self.task(via, i)["state"] in terminal for i in ids), 30, "every task to end", 0.1)
        tasks = [self.task(via, i) for i in ids]
        for task in tasks:
            outcomes = [a["outcome"] for a in task["history"]]
            assert task["state"] == "SUCCEED" and outcomes.count("succeeded") == 1, (task["id"], outcomes)
            result = self.http[via.name].get(f"/api/v1/tasks/{task['id']}/result").json()
            assert result["code"] == task["target"] and result["duplicates"] == 0, result
        return tasks

    def events(self, via: TestNode, kind: str, node: str) -> list[dict[str, Any]]:
        events = self.http[via.name].get("/api/v1/cluster/timeline", params={"limit": 200}).json()["events"]
        return [e for e in events if e["kind"] == kind and e["node"] == node]

    def close(self) -> None:
        for client in self.http.values():
            client.close()


@pytest.fixture
def pair(node_factory: Callable[..., TestNode]) -> Callable[[float], Pair]:
    made: list[Pair] = []

    def make(grace: float) -> Pair:
        made.append(Pair(node_factory, grace))
        return made[-1]

    yield make  # type: ignore[misc]
    for p in made:
        p.close()


@pytest.mark.e2e
def test_sigterm_on_a_busy_master_hands_over_at_once_and_finishes_its_tasks(pair: Callable[[float], Pair]) -> None:
    cluster = pair(20.0)
    master, other, epoch = cluster.settled()
    running = [cluster.submit(other, f"long-{i}", TASK_S) for i in range(4)]  # two slots on each node
    where = wait_for(lambda: (w := cluster.running_on(other, running)) and sorted(map(len, w.values())) == [2, 2]
                     and w, 10, "two tasks running on each node")  # fmt: skip
    queued = [cluster.submit(other, f"queued-{i}", 0.2) for i in range(2)]  # no free slot: they wait

    stopped_at = time.monotonic()
    master.proc.signal(signal.SIGTERM)
    # The master role moves at once, while the old master still runs its tasks.
    wait_for(lambda: cluster.view(other)["master"] == other.name and cluster.view(other)["epoch"] > epoch, 2.0,
             "the other node to be master within 2 s", interval=0.02)  # fmt: skip
    handed_over = time.monotonic() - stopped_at
    assert cluster.task(other, where[master.name][0])["state"] == "RUNNING"

    code = master.proc.wait(20 * multiplier())
    exited = time.monotonic() - stopped_at
    assert code == 0, master.log()[-3000:]
    assert exited < TASK_S + 3, f"exited {exited:.1f}s after SIGTERM"  # when its tasks were done, not at grace end

    tasks = {t["id"]: t for t in cluster.all_succeed_once(other, running + queued)}
    for task_id in where[master.name]:  # finished on the draining master, in their first and only attempt
        assert (tasks[task_id]["node"], tasks[task_id]["attempts"]) == (master.name, 1), tasks[task_id]
    for task_id in queued:  # nothing new went to the draining node
        assert tasks[task_id]["node"] == other.name, tasks[task_id]
    # It kept beating while it drained: never declared dead, its tasks never re-placed.
    for kind in ("dead", "re-placed"):
        assert not cluster.events(other, kind, master.name), cluster.events(other, kind, master.name)
    print(f"handover {handed_over:.2f}s after SIGTERM, exit after {exited:.2f}s")


@pytest.mark.e2e
def test_second_sigterm_hurries_and_hands_running_tasks_back(pair: Callable[[float], Pair]) -> None:
    cluster = pair(30.0)
    master, worker, _ = cluster.settled()
    ids = [cluster.submit(master, f"t-{i}", 2.0) for i in range(4)]
    where = wait_for(lambda: (w := cluster.running_on(master, ids)) and sorted(map(len, w.values())) == [2, 2]
                     and w, 10, "two tasks running on each node")  # fmt: skip

    worker.proc.signal(signal.SIGTERM)
    wait_for(lambda: "waiting up to 30s for 2 running task(s)" in worker.log(), 5, "the worker to start draining")
    hurried_at = time.monotonic()
    worker.proc.signal(signal.SIGTERM)
    code = worker.proc.wait(10 * multiplier())
    took = time.monotonic() - hurried_at
    assert code == 0, worker.log()[-3000:]
    assert took < 3.0 * multiplier(), f"exited {took:.1f}s after the second SIGTERM"
    assert "handed back 2 unfinished task(s)" in worker.log()

    tasks = {t["id"]: t for t in cluster.all_succeed_once(master, ids)}
    for task_id in where[worker.name]:  # cut short, handed back, run again to the end on the master
        task = tasks[task_id]
        assert task["node"] == master.name and [a["outcome"] for a in task["history"]] == ["handed back", "succeeded"]


async def test_a_leaving_node_gets_no_task_from_a_master_with_an_older_list_of_nodes(redis_admin_url: str) -> None:
    """The master places from a list of nodes read a moment ago; place.lua must refuse a node that has since
    begun to leave, or left, since nobody would ever run or hand back what lands there."""
    redis = Redis.from_url(redis_admin_url)  # TTL is not a command of shoal's
    keys = Keys("graceful")
    store, registry = TaskStore(redis, keys, result_max_bytes=4096), NodeRegistry(redis, keys)
    try:
        epoch = (await registry.take_lease("master", 30)).epoch
        addresses = {"host": "127.0.0.1", "http": "127.0.0.1:1", "grpc": "127.0.0.1:2"}
        record = NodeRecord(name="n1", **addresses, slots=4, running=0, pid=1, types=("echo",), run_tasks=True,
                            last_beat=0.0, incarnation=1)  # fmt: skip
        await registry.beat(record)
        first, second = await store.create([TaskSpec(name=n, type="echo", target="x") for n in ("a", "b")])

        await registry.beat(dataclasses.replace(record, draining=True))  # it begins to leave
        assert await store.place(epoch, "n1", 4, [first.id]) == [-1]
        await registry.forget("n1")  # it has left
        assert await registry.all() == []
        assert await store.place(epoch, "n1", 4, [first.id]) == [-1]
        assert (await store.get(first.id)).state.name == "WAITING"

        await registry.beat(dataclasses.replace(record, incarnation=2))  # back within the minute: work again
        assert await redis.ttl(keys.node("n1")) == -1
        assert await store.place(epoch, "n1", 4, [first.id, second.id]) == [1, 1]
    finally:
        await redis.aclose()
