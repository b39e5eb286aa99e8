"""Many tasks in one call, as a user sees it over REST, gRPC, the Python client and the CLI: all stored in
order, or none (the refusal names the task's index), against a real node.

Every refusal also checks that nothing was stored: the task count is the same after.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import httpx
import orjson
import pytest

from shoal import validation
from shoal.client import AsyncClient, Client
from shoal.errors import InvalidInput, UnknownTaskType
from shoal.models import TaskSpec
from shoal.rpc.client import TasksClient, pb
from shoal.testing import TestNode

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[1]


def echo(name: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "type": "echo", "target": f"said {name}", **extra}


@pytest.fixture
def api(shoal_node: TestNode) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=shoal_node.http_url, headers=shoal_node.headers(), timeout=60) as client:
        yield client


def total(api: httpx.Client) -> int:
    count: int = api.get("/api/v1/tasks", params={"limit": 1}).json()["total"]
    return count


def test_a_batch_is_stored_in_order_or_not_at_all(api: httpx.Client) -> None:
    created = api.post("/api/v1/tasks/batch", json={"tasks": [echo("a"), echo("b", params={"k": 1}), echo("c")]})
    assert created.status_code == 201, created.text
    tasks = created.json()["tasks"]
    assert [t["name"] for t in tasks] == ["a", "b", "c"]
    assert tasks[1]["params"] == {"k": 1} and all(t["state"] in ("WAITING", "INQUEUE") for t in tasks)
    listed = api.get("/api/v1/tasks").json()
    assert listed["total"] == 3 and {t["id"] for t in listed["tasks"]} == {t["id"] for t in tasks}

    bad_second = api.post("/api/v1/tasks/batch", json={"tasks": [echo("d"), {"type": "echo", "target": "x"}]})
    assert bad_second.status_code == 400
    body = bad_second.json()
    assert (body["error"], body["index"]) == ("invalid_input", 1)
    assert "tasks[1]" in body["message"] and "name" in body["message"]

    unknown = api.post("/api/v1/tasks/batch", json={"tasks": [echo("e"), echo("f"), echo("g", type="nosuchtype")]})
    assert unknown.status_code == 400
    assert unknown.json()["error"] == "unknown_task_type" and unknown.json()["index"] == 2
    assert "nosuchtype" in unknown.json()["message"]

    bad_params = api.post("/api/v1/tasks/batch", json={"tasks": [echo("h", params={"delay_s": -1})]})
    assert bad_params.status_code == 400 and bad_params.json()["index"] == 0  # the type's own check
    assert "delay_s" in bad_params.json()["message"]
    assert total(api) == 3, "a refused batch stored some of its tasks"


MALFORMED = [
    ({"tasks": []}, "empty"),
    ({"tasks": [echo(f"t{i}") for i in range(validation.MAX_BATCH + 1)]}, "at most 1000"),
    ({"tasks": echo("one")}, "list"),
    ([echo("bare list")], "tasks"),
    ({"tasks": [echo("a")], "wait": 1}, "unknown field"),
]


def test_a_malformed_batch_is_refused(api: httpx.Client) -> None:
    for body, says in MALFORMED:
        refused = api.post("/api/v1/tasks/batch", json=body)
        assert refused.status_code == 400, refused.text
        assert refused.json()["error"] == "invalid_input" and says in refused.json()["message"], refused.text
        assert "index" not in refused.json()
    assert total(api) == 0
    assert api.get("/api/v1/tasks/batch").status_code == 405  # a route of its own, not a task id


async def test_grpc_create_tasks_all_or_nothing(shoal_node: TestNode) -> None:
    async with TasksClient(shoal_node.grpc_addr, shoal_node.token) as client:
        specs = [pb.TaskSpec(name=n, type="echo", target=n) for n in ("a", "b", "c")]
        created = await client.stub.CreateTasks(pb.CreateTasksRequest(tasks=specs))
        assert [t.name for t in created.tasks] == ["a", "b", "c"]
        assert all(t.state in (pb.Task.WAITING, pb.Task.INQUEUE) for t in created.tasks)  # queued or placed

        bad = [specs[0], pb.TaskSpec(name="", type="echo", target="x"), specs[2]]
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await client.stub.CreateTasks(pb.CreateTasksRequest(tasks=bad))
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "tasks[1]" in (refused.value.details() or "")
        waits = [pb.TaskSpec(name="w", type="echo", target="w", wait_s=1)]
        with pytest.raises(grpc.aio.AioRpcError) as waited:
            await client.stub.CreateTasks(pb.CreateTasksRequest(tasks=waits))
        assert "wait_s" in (waited.value.details() or "")
        assert (await client.list()).total == 3


async def test_grpc_submit_tasks_streams_any_number(shoal_node: TestNode) -> None:
    async def specs(count: int, bad_at: int = -1) -> AsyncIterator[Any]:
        for i in range(count):
            yield pb.TaskSpec(name=f"t{i}", type="echo" if i != bad_at else "nosuchtype", target=str(i))
            if i % 700 == 0:
                await asyncio.sleep(0)  # a producer that pauses: the server stores what has come so far

    async with TasksClient(shoal_node.grpc_addr, shoal_node.token, timeout_s=120) as client:
        names = [task.name async for task in client.stub.SubmitTasks(specs(2500), timeout=120)]
        assert names == [f"t{i}" for i in range(2500)]
        assert (await client.list()).total == 2500

        received: list[str] = []
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            async for task in client.stub.SubmitTasks(specs(1500, bad_at=1200), timeout=120):
                received.append(task.name)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "tasks[1200]" in (refused.value.details() or "") and "nosuchtype" in (refused.value.details() or "")
        assert received == [f"t{i}" for i in range(1200)], "every spec before the refused one is stored"
        assert (await client.list()).total == 2500 + 1200


def test_client_submit_many_chunks_for_the_caller(shoal_node: TestNode) -> None:
    with Client(shoal_node.http_url, shoal_node.token) as client:
        mixed: list[Any] = [echo("a"), TaskSpec(name="b", type="echo", target="b"), {"type": "echo", "target": "c"}]
        chunks: list[int] = []
        tasks = client.submit_many(mixed, chunk=2, on_chunk=lambda part: chunks.append(len(part)))
        assert [t.name for t in tasks] == ["a", "b", "echo"] and chunks == [2, 1]  # the name defaults to the type

        with pytest.raises(InvalidInput) as malformed:  # checked before anything is sent
            client.submit_many([echo("d"), echo("e"), echo("f", timeout_s=-1)], chunk=2)
        assert getattr(malformed.value, "index", None) == 2 and "timeout_s" in malformed.value.message
        assert client.list().total == 3

        with pytest.raises(UnknownTaskType) as unknown:
            client.submit_many([echo("g"), echo("h"), echo("i"), echo("j", type="nosuchtype")], chunk=2)
        assert getattr(unknown.value, "index", None) == 3 and "tasks[3]" in unknown.value.message
        stored = getattr(unknown.value, "stored", [])
        assert [t.name for t in stored] == ["g", "h"] and "were stored" in unknown.value.message
        assert client.list().total == 5, "the refused chunk stored nothing, the one before it stays"


async def test_async_client_submit_many(shoal_node: TestNode) -> None:
    async with AsyncClient(shoal_node.http_url, shoal_node.token) as client:
        tasks = await client.submit_many([echo(f"t{i}") for i in range(5)], chunk=2)
        assert [t.name for t in tasks] == [f"t{i}" for i in range(5)]
        assert (await client.list()).total == 5


def shoal(node: TestNode, cwd: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {"PYTHONPATH": str(ROOT / "src"), "NO_COLOR": "1", "SHOAL_API": node.http_url, "SHOAL_TOKEN": node.token}
    done = subprocess.run([sys.executable, "-m", "shoal", *args], cwd=cwd, env=env, input=stdin, capture_output=True,
                          text=True, timeout=60)  # fmt: skip
    assert "Traceback" not in done.stderr, done.stderr
    return done


def test_cli_submits_a_file_of_tasks(shoal_node: TestNode, tmp_path: Path, api: httpx.Client) -> None:
    lines = [orjson.dumps(echo(f"t{i}")).decode() for i in range(3)]
    good = tmp_path / "tasks.jsonl"
    good.write_text("\n".join([lines[0], "", lines[1], "   ", lines[2]]) + "\n")
    done = shoal(shoal_node, tmp_path, "task", "submit", "--from-file", str(good))
    assert done.returncode == 0, done.stderr
    ids = done.stdout.split()
    assert len(ids) == 3 and "submitted 3 task(s)" in done.stderr
    assert [api.get(f"/api/v1/tasks/{i}").json()["name"] for i in ids] == ["t0", "t1", "t2"]

    piped = shoal(shoal_node, tmp_path, "task", "submit", "--from-file", "-", "--json", stdin=lines[0] + "\n")
    assert piped.returncode == 0, piped.stderr
    assert [t["name"] for t in orjson.loads(piped.stdout)["tasks"]] == ["t0"]
    assert total(api) == 4

    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join([lines[0], lines[1], '{"type": "echo", "name": "no target"}', lines[2]]) + "\n")
    refused = shoal(shoal_node, tmp_path, "task", "submit", "--from-file", str(bad))
    assert refused.returncode == 2 and "line 3" in refused.stderr and "target" in refused.stderr, refused.stderr
    assert refused.stdout == ""
    unknown = tmp_path / "unknown.jsonl"
    unknown.write_text(lines[0] + "\n" + orjson.dumps(echo("x", type="nosuchtype")).decode() + "\n")
    refused = shoal(shoal_node, tmp_path, "task", "submit", "--from-file", str(unknown))
    assert refused.returncode == 2 and "line 2" in refused.stderr and "nosuchtype" in refused.stderr
    assert total(api) == 4, "a refused file submitted some of its tasks"

    both = shoal(shoal_node, tmp_path, "task", "submit", "echo", "x", "--from-file", str(good))
    assert both.returncode == 2 and "--from-file" in both.stderr
    assert total(api) == 4


async def test_only_api_nodes_beating_is_no_live_node(node_factory: Any) -> None:
    """Nodes that run no tasks register no types: a submit is refused as the cluster being unwell (503,
    UNAVAILABLE), not as an unknown type."""
    node: TestNode = node_factory(args=["--no-run-tasks"])
    async with httpx.AsyncClient(base_url=node.http_url, headers=node.headers(), timeout=30) as api:
        for path, body in (("/api/v1/tasks", echo("a")), ("/api/v1/tasks/batch", {"tasks": [echo("a")]})):
            refused = await api.post(path, json=body)
            assert refused.status_code == 503, refused.text
            assert refused.json()["error"] == "no_live_node" and "runs tasks" in refused.json()["message"]
        assert (await api.get("/api/v1/tasks")).json()["total"] == 0
    async with TasksClient(node.grpc_addr, node.token) as client:
        for call in (
            client.stub.CreateTask(pb.TaskSpec(name="a", type="echo", target="a")),
            client.stub.CreateTasks(pb.CreateTasksRequest(tasks=[pb.TaskSpec(name="a", type="echo", target="a")])),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as unavailable:
                await call
            assert unavailable.value.code() == grpc.StatusCode.UNAVAILABLE
