"""Idempotency keys on a real node: a second submit with the same ``idempotency_key`` within the window
stores nothing and answers with the first task (REST 200, not 201), under 50 concurrent submits too, inside
a batch, through gRPC, the clients and the CLI; the key is forgotten after the window or with its task."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import httpx
import orjson
import pytest
import redis

from shoal.client import AsyncClient, Client
from shoal.keys import Keys
from shoal.producer import Producer
from shoal.rpc.client import TasksClient, pb
from shoal.testing import TestNode, multiplier, wait_for

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[1]
KEYS = Keys("shoal")


@pytest.fixture
def api(shoal_node: TestNode) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=shoal_node.http_url, headers=shoal_node.headers(), timeout=30.0) as client:
        yield client


def post(api: httpx.Client, key: Any, **fields: Any) -> httpx.Response:
    body = {"name": "once", "type": "echo", "target": "x", "idempotency_key": key, **fields}
    return api.post("/api/v1/tasks", json=body)


def total(api: httpx.Client) -> int:
    return int(api.get("/api/v1/tasks", params={"limit": 1}).json()["total"])


def test_a_second_submit_with_the_key_answers_200_with_the_first_task(api: httpx.Client) -> None:
    first = post(api, "order-1")
    assert first.status_code == 201, first.text
    task = first.json()
    assert task["idempotency_key"] == "order-1"
    again = post(api, "order-1", target="something else", delay_s=60)
    assert again.status_code == 200, again.text
    assert again.json()["id"] == task["id"] and again.json()["target"] == "x", "the first task, as it was stored"
    other = post(api, "order-2")
    assert other.status_code == 201 and other.json()["id"] != task["id"]
    assert total(api) == 2
    assert api.get(f"/api/v1/tasks/{task['id']}").json()["idempotency_key"] == "order-1"

    assert api.delete(f"/api/v1/tasks/{task['id']}").status_code == 204
    after = post(api, "order-1")
    assert after.status_code == 201 and after.json()["id"] != task["id"], "its task gone, the key makes a new one"


def test_fifty_concurrent_submits_with_one_key_store_one_task(api: httpx.Client) -> None:
    with ThreadPoolExecutor(max_workers=50) as pool:
        answers = list(pool.map(lambda _: post(api, "payment-77"), range(50)))
    assert sorted(a.status_code for a in answers) == [200] * 49 + [201]
    assert len({a.json()["id"] for a in answers}) == 1
    assert total(api) == 1


def test_a_batch_gets_one_task_per_key_inside_it_and_again(api: httpx.Client) -> None:
    specs = [{"name": f"b{i}", "type": "echo", "target": "x", "idempotency_key": key}
             for i, key in enumerate(["a", "a", "b"])]  # fmt: skip
    first = api.post("/api/v1/tasks/batch", json={"tasks": specs})
    assert first.status_code == 201, first.text
    ids = [t["id"] for t in first.json()["tasks"]]
    assert ids[0] == ids[1] != ids[2]
    again = api.post("/api/v1/tasks/batch", json={"tasks": specs})
    assert again.status_code == 200 and [t["id"] for t in again.json()["tasks"]] == ids, "every one reused: 200"
    mixed = api.post("/api/v1/tasks/batch", json={"tasks": [*specs, {"name": "c", "type": "echo", "target": "x"}]})
    assert mixed.status_code == 201 and [t["id"] for t in mixed.json()["tasks"]][:3] == ids
    assert total(api) == 3


def test_bad_keys_are_refused_and_store_nothing(api: httpx.Client) -> None:
    for key, says in (("", "non-empty"), ("k" * 201, "201 characters"), ("a\nb", "control"), (7, "string")):
        refused = post(api, key)
        assert refused.status_code == 400, (key, refused.text)
        assert says in refused.json()["message"], refused.json()
    assert total(api) == 0


def test_the_key_is_forgotten_after_the_window(node_factory: Callable[..., TestNode]) -> None:
    node = node_factory(args=["--idempotency-window", "1s"])
    with httpx.Client(base_url=node.http_url, headers=node.headers(), timeout=30.0) as api:
        first = post(api, "short")
        assert first.status_code == 201 and post(api, "short").status_code == 200
        with redis.Redis.from_url(node.redis_url) as store:  # the key's expiry, as the window set it
            wait_for(lambda: not store.exists(KEYS.prefix + "idem:short"), 10, "the key to expire")
        later = post(api, "short")
        assert later.status_code == 201 and later.json()["id"] != first.json()["id"]


async def test_grpc_the_clients_the_producer_and_the_cli_take_the_key(shoal_node: TestNode, tmp_path: Path) -> None:
    async with TasksClient(shoal_node.grpc_addr, shoal_node.token) as client:
        spec = pb.TaskSpec(name="g", type="echo", target="x", idempotency_key="grpc-1")
        first, again = await client.stub.CreateTask(spec), await client.stub.CreateTask(spec)
        assert first.id == again.id and again.idempotency_key == "grpc-1"
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await client.stub.CreateTask(pb.TaskSpec(name="g", type="echo", target="x", idempotency_key="a\tb"))
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with Client(shoal_node.http_url, shoal_node.token) as c:
        assert c.submit("echo", "x", idempotency_key="grpc-1").id == first.id, "one key, whatever the way in"
    async with AsyncClient(shoal_node.http_url, shoal_node.token) as ac:
        made = await ac.submit("echo", "x", idempotency_key="async-1")
        assert (await ac.submit("echo", "y", idempotency_key="async-1")).id == made.id
    async with await Producer.connect(shoal_node.redis_url) as producer:
        assert (await producer.submit("echo", "z", idempotency_key="async-1")).id == made.id

    env = {k: v for k, v in os.environ.items() if not k.startswith("SHOAL_")}
    env |= {"PYTHONPATH": str(ROOT / "src"), "SHOAL_API": shoal_node.http_url, "SHOAL_TOKEN": shoal_node.token}
    shown = [
        subprocess.run([sys.executable, "-m", "shoal", "task", "submit", "echo", "hi", "--idempotency-key", "cli-1",
                        "--json"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60 * multiplier())
        for _ in range(2)
    ]  # fmt: skip
    assert all(s.returncode == 0 for s in shown), [s.stderr for s in shown]
    assert len({orjson.loads(s.stdout)["id"] for s in shown}) == 1
