"""A node that lives on while the store lost what it had placed on it, or a change it made.

A Redis failover with asynchronous replication can drop the last writes: a task's run order in the node's
inbox, or the report that ended it. The store then says a task is INQUEUE or RUNNING on a node that does
not run it, and nothing would ever move it. The tests write the store the way such a loss leaves it (what
place.lua or start.lua writes, minus the run order; or a kill without its kill order) next to a live node,
and check that the node hands the task back (it is placed again and ends SUCCEED, its history saying why)
or stops running a task the store no longer places on it.

Also: a cluster where no node has beaten lately (a store refusing writes refuses the heartbeats too)
answers a submit with 503 ``no_live_node``, not 400 ``unknown_task_type``.

Heartbeats of 0.2 s make the node check every second.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import orjson
import pytest
import redis

from shoal.keys import Keys
from shoal.testing import TestNode, wait_for

FAST = ["--heartbeat-interval", "0.2", "--slots", "2"]
KEYS = Keys("shoal")
NODE = "node-1"


@pytest.fixture
def store(redis_admin_url: str) -> Iterator[redis.Redis]:
    """The store as its administrator sees it: the tests write what a lost write leaves, with commands shoal
    itself never sends (INCRBY)."""
    with redis.Redis.from_url(redis_admin_url) as client:
        yield client


@pytest.fixture
def connect() -> Iterator[Callable[[TestNode], httpx.Client]]:
    """REST clients with the node's token, closed after the test."""
    clients: list[httpx.Client] = []

    def make(node: TestNode) -> httpx.Client:
        clients.append(httpx.Client(base_url=node.http_url, headers=node.headers(), timeout=10, trust_env=False))
        return clients[-1]

    yield make
    for client in clients:
        client.close()


def task(http: httpx.Client, task_id: str) -> dict[str, Any]:
    response = http.get(f"/api/v1/tasks/{task_id}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def placed_without_order(store: redis.Redis, state: str, target: str) -> str:
    """A task INQUEUE (or RUNNING, attempt 1 open) on NODE, as place.lua (and start.lua) leave it, minus the
    run order in the node's inbox: what a store that lost that one write holds."""
    task_id = str(uuid.uuid4())
    now = time.time()
    seq = store.incr(KEYS.seq)
    epoch = store.get(KEYS.epoch) or b"1"
    fields = {"id": task_id, "name": target, "type": "echo", "target": target, "params": "{}", "timeout_s": "",
              "max_retries": 0, "state": state, "node": NODE, "attempts": 0, "created_at": f"{now:.6f}", "seq": seq,
              "epoch": epoch}  # fmt: skip
    with store.pipeline(transaction=True) as pipe:
        if state == "RUNNING":
            fields |= {"attempts": 1, "started_at": f"{now:.6f}"}
            pipe.rpush(KEYS.attempts(task_id), orjson.dumps({"number": 1, "node": NODE, "started_at": now}))
        pipe.hset(KEYS.task(task_id), mapping=fields)
        pipe.zadd(KEYS.state_index(state), {task_id: seq})
        pipe.sadd(KEYS.assigned(NODE), task_id)
        pipe.execute()
    return task_id


def test_tasks_whose_orders_were_lost_are_handed_back_and_run(
    node_factory: Callable[..., TestNode], store: redis.Redis, connect: Callable[[TestNode], httpx.Client]
) -> None:
    node = node_factory(name=NODE, args=FAST)
    http = connect(node)
    queued = placed_without_order(store, "INQUEUE", "lost before it started")
    running = placed_without_order(store, "RUNNING", "lost while it ran")

    def ended() -> bool:
        return all(task(http, i)["state"] == "SUCCEED" for i in (queued, running))

    wait_for(ended, 15, "both tasks handed back, placed again and done")
    first = task(http, queued)
    assert first["attempts"] == 1 and [a["outcome"] for a in first["history"]] == ["succeeded"]
    second = task(http, running)
    assert second["attempts"] == 2
    lost, done = second["history"]
    # the store lost the order, not the task: handed back, not held against it (no lost attempt counted)
    assert lost["outcome"] == "handed back" and lost["node"] == NODE and second["lost_attempts"] == 0
    assert f"no longer running on {NODE}: its run order or its last report was lost" in lost["error"]
    assert done["outcome"] == "succeeded" and done["number"] == 2
    assert http.get(f"/api/v1/tasks/{running}/result").json()["code"] == "lost while it ran"
    log = node.log()
    assert f"task {queued}: handed back for re-placement: INQUEUE here, but its run order was lost" in log
    assert f"task {running}: handed back for re-placement: RUNNING here" in log
    assert store.scard(KEYS.assigned(NODE)) == 0


def test_a_task_the_store_no_longer_places_here_is_stopped(
    node_factory: Callable[..., TestNode], store: redis.Redis, connect: Callable[[TestNode], httpx.Client]
) -> None:
    node = node_factory(name=NODE, args=FAST)
    http = connect(node)
    slow = {"name": "slow", "type": "echo", "target": "x", "params": {"delay_s": 60}}
    created = http.post("/api/v1/tasks", json=slow)
    assert created.status_code == 201, created.text
    task_id = created.json()["id"]
    wait_for(lambda: task(http, task_id)["state"] == "RUNNING", 10, "the task to run")
    # Killed, but the kill order in the node's inbox was lost: what kill.lua writes, minus the XADD.
    seq = store.hget(KEYS.task(task_id), "seq")
    assert seq is not None
    with store.pipeline(transaction=True) as pipe:
        pipe.zrem(KEYS.state_index("RUNNING"), task_id)
        pipe.zadd(KEYS.state_index("KILLED"), {task_id: int(seq)})
        pipe.hset(KEYS.task(task_id), mapping={"state": "KILLED", "finished_at": f"{time.time():.6f}"})
        pipe.srem(KEYS.assigned(NODE), task_id)
        pipe.execute()

    def running_here() -> float:
        lines = http.get("/metrics").text.splitlines()
        return float(next(line.split()[1] for line in lines if line.startswith("shoal_tasks_running ")))

    assert running_here() == 1
    wait_for(lambda: running_here() == 0, 15, "the node to stop the killed task")
    assert f"task {task_id}: stopped here: the store no longer places it on this node (KILLED)" in node.log()
    assert task(http, task_id)["state"] == "KILLED"
    assert store.llen(KEYS.dupes(task_id)) == 0  # stopped like a kill: no report


def test_submit_with_no_live_node_is_503_not_an_unknown_type(
    node_factory: Callable[..., TestNode], store: redis.Redis, connect: Callable[[TestNode], httpx.Client]
) -> None:
    node = node_factory(name=NODE, args=FAST)
    http = connect(node)
    spec = {"name": "n", "type": "echo", "target": "x"}
    store.config_set("min-replicas-to-write", 1)  # no replica: every write, heartbeats too, is refused
    seen: list[tuple[int, str]] = []

    def answer() -> dict[str, Any] | None:
        response = http.post("/api/v1/tasks", json=spec)
        body: dict[str, Any] = response.json()
        seen.append((response.status_code, body.get("error", "")))
        return body if body.get("error") == "no_live_node" else None

    try:
        refused = wait_for(answer, 10, "submits refused for want of a live node")
        # First the store refuses the task itself (503 store_unavailable); never a 400 for the type.
        assert {status for status, _ in seen} <= {503}, seen
        assert "no live node in the cluster" in refused["message"]
    finally:
        store.config_set("min-replicas-to-write", 0)
    wait_for(lambda: http.post("/api/v1/tasks", json=spec).status_code == 201, 15, "submits taken again")
