"""One call from submit to result: REST ``?wait=&result=true``, gRPC ``wait_s`` with ``Task.result``, and the
Python client's ``run``, against a real node."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import grpc
import grpc.aio
import httpx
import pytest

from shoal.client import AsyncClient, Client, TaskFailed, WaitTimeout
from shoal.models import TaskState
from shoal.rpc.client import TasksClient, pb
from shoal.testing import TestNode

pytestmark = pytest.mark.e2e

SCALE = float(os.environ.get("SHOAL_TEST_MULTIPLIER", "1"))
DONE_S = min(60.0, 20.0 * SCALE)


def echo(target: str, delay_s: float = 0, **extra: Any) -> dict[str, Any]:
    return {"name": target, "type": "echo", "target": target, "params": {"delay_s": delay_s}, **extra}


@pytest.fixture
def api(shoal_node: TestNode) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=shoal_node.http_url, headers=shoal_node.headers(), timeout=DONE_S + 30) as client:
        yield client


def test_rest_submit_and_get_answer_with_the_result(api: httpx.Client) -> None:
    done = api.post("/api/v1/tasks", params={"wait": DONE_S, "result": "true"}, json=echo("hello"))
    assert done.status_code == 201, done.text
    task = done.json()
    assert task["state"] == "SUCCEED" and task["result"]["code"] == "hello"
    assert task["result"]["task_id"] == task["id"] and task["result"]["node"] == task["node"]
    again = api.get(f"/api/v1/tasks/{task['id']}", params={"wait": 1, "result": "true"}).json()
    assert again["result"] == api.get(f"/api/v1/tasks/{task['id']}/result").json()
    assert "result" not in api.get(f"/api/v1/tasks/{task['id']}", params={"wait": 1}).json()
    assert "result" not in api.get(f"/api/v1/tasks/{task['id']}", params={"result": "false"}).json()

    slow = api.post("/api/v1/tasks", params={"wait": 0.5, "result": "true"}, json=echo("slow", delay_s=60))
    assert slow.status_code == 201
    assert slow.json()["state"] in ("WAITING", "INQUEUE", "RUNNING") and slow.json()["result"] is None
    running = api.get(f"/api/v1/tasks/{slow.json()['id']}", params={"wait": 0.5, "result": "true"}).json()
    assert running["state"] not in ("SUCCEED", "RUNTIME_ERROR", "KILLED") and running["result"] is None
    plain = api.post("/api/v1/tasks", params={"wait": DONE_S}, json=echo("plain"))
    assert plain.json()["state"] == "SUCCEED" and "result" not in plain.json()

    count = api.get("/api/v1/tasks").json()["total"]
    refused = api.post("/api/v1/tasks", params={"wait": 1, "result": "maybe"}, json=echo("never"))
    assert refused.status_code == 400 and "result" in refused.json()["message"]
    assert api.get(f"/api/v1/tasks/{task['id']}", params={"result": "maybe"}).status_code == 400
    assert api.get("/api/v1/tasks").json()["total"] == count, "a refused submit stored its task"
    api.post(f"/api/v1/tasks/{slow.json()['id']}/kill")  # the node stops at once, not after its grace


def test_a_repeated_submit_with_wait_answers_the_ended_task_of_its_key_with_its_result(api: httpx.Client) -> None:
    waiting = {"wait": DONE_S, "result": "true"}
    first = api.post("/api/v1/tasks", params=waiting, json=echo("once", idempotency_key="k1"))
    assert first.status_code == 201 and first.json()["state"] == "SUCCEED"
    again = api.post("/api/v1/tasks", params=waiting, json=echo("twice", idempotency_key="k1"))
    assert again.status_code == 200, again.text  # the earlier task, answered at once
    assert again.json()["id"] == first.json()["id"] and again.json()["result"]["code"] == "once"


async def test_grpc_create_task_waits_for_its_result(shoal_node: TestNode) -> None:
    async with TasksClient(shoal_node.grpc_addr, shoal_node.token, timeout_s=DONE_S + 30) as client:
        done = await client.stub.CreateTask(pb.TaskSpec(name="a", type="echo", target="hello", wait_s=DONE_S))
        assert done.state == pb.Task.SUCCEED and done.HasField("result") and done.result.code == "hello"
        plain = await client.stub.CreateTask(pb.TaskSpec(name="b", type="echo", target="b"))
        assert not plain.HasField("result")
        got = await client.stub.GetTask(pb.ID(id=[plain.id], wait_s=DONE_S))
        assert got.state == pb.Task.SUCCEED and got.result.code == "b"
        assert not (await client.stub.GetTask(pb.ID(id=[plain.id]))).HasField("result")

        slow = pb.TaskSpec(name="slow", type="echo", target="s", params_json='{"delay_s": 60}', wait_s=0.5)
        running = await client.stub.CreateTask(slow)
        assert running.state != pb.Task.SUCCEED and not running.HasField("result")
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await client.stub.CreateTask(pb.TaskSpec(name="c", type="echo", target="c", wait_s=61))
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "wait_s" in (refused.value.details() or "")
        assert (await client.list()).total == 3
        await client.kill([running.id])


def test_client_run_returns_the_result_or_raises(shoal_node: TestNode) -> None:
    with Client(shoal_node.http_url, shoal_node.token) as client:
        result = client.run("echo", "hello", timeout=DONE_S)
        assert result.code == "hello"
        assert client.get(result.task_id).name == "echo"  # the name defaults to the type

        with pytest.raises(WaitTimeout) as late:
            client.run("echo", "slow", params={"delay_s": 60}, timeout=0.5)
        assert isinstance(late.value, TimeoutError) and not late.value.task.state.terminal
        client.kill(late.value.task.id)

        with pytest.raises(TaskFailed) as failed:
            client.run("echo", "too slow", params={"delay_s": 30}, timeout_s=0.2, timeout=DONE_S)
        assert failed.value.task.state is TaskState.RUNTIME_ERROR and failed.value.task.error


async def test_async_client_run(shoal_node: TestNode) -> None:
    async with AsyncClient(shoal_node.http_url, shoal_node.token) as client:
        result = await client.run("echo", "hi", name="greeting", timeout=DONE_S)
        assert result.code == "hi" and (await client.get(result.task_id)).name == "greeting"
