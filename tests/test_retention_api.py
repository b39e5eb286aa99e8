"""Retention through real nodes, as a user sees it: a task's ``result_ttl_s`` (seconds or a duration such as
``15m``) goes in through REST, gRPC, the Python clients, the producer and the CLI and shows as seconds; a
finished task leaves (GET answers 404) once past it or past the node option ``retention``, a running one
never does, ``retention 0`` keeps finished tasks for ever, and ``/metrics`` counts what was removed. Bad
values are refused by every adapter with a message naming the field, and store nothing.
(tests/test_retention.py checks the sweep itself against the store.)
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import orjson
import pytest

from shoal.client import AsyncClient, Client
from shoal.errors import InvalidInput
from shoal.models import TaskSpec
from shoal.producer import Producer
from shoal.rpc.client import TasksClient, pb
from shoal.testing import TestNode, multiplier, wait_for

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[1]
#: Seconds a task may take to end, and a removal to be seen (a 1 s ttl or retention, plus a sweep round
#: every second); wait_for stretches both by SHOAL_TEST_MULTIPLIER.
END_S = 30.0
GONE_S = 15.0
TERMINAL = ("SUCCEED", "RUNTIME_ERROR", "KILLED")
EXPIRED = "shoal_tasks_expired_total"


class Api:
    """The REST calls these tests make, on one node."""

    def __init__(self, node: TestNode) -> None:
        self.node = node
        self.http = httpx.Client(base_url=node.http_url, headers=node.headers(), timeout=30.0, trust_env=False)

    def post(self, **fields: Any) -> httpx.Response:
        return self.http.post("/api/v1/tasks", json={"name": "echo", "type": "echo", "target": "hi", **fields})

    def submit(self, **fields: Any) -> dict[str, Any]:
        response = self.post(**fields)
        assert response.status_code == 201, response.text
        created: dict[str, Any] = response.json()
        return created

    def get(self, task_id: str) -> dict[str, Any]:
        response = self.http.get(f"/api/v1/tasks/{task_id}")
        assert response.status_code == 200, response.text
        found: dict[str, Any] = response.json()
        return found

    def exists(self, task_id: str) -> bool:
        status = self.http.get(f"/api/v1/tasks/{task_id}").status_code
        assert status in (200, 404), status
        return status == 200

    def ended(self, task_id: str) -> dict[str, Any]:
        def terminal() -> dict[str, Any] | None:
            task = self.get(task_id)
            return task if task["state"] in TERMINAL else None

        done: dict[str, Any] = wait_for(terminal, END_S, f"task {task_id} to end")
        return done

    def running(self, task_id: str) -> dict[str, Any]:
        started: dict[str, Any] = wait_for(
            lambda: (t := self.get(task_id))["state"] == "RUNNING" and t, END_S, f"task {task_id} to start"
        )
        return started

    def wait_gone(self, task_id: str) -> None:
        wait_for(lambda: not self.exists(task_id), GONE_S, f"task {task_id} to be removed")
        assert self.http.get(f"/api/v1/tasks/{task_id}/result").status_code == 404  # its result went with it

    def total(self) -> int:
        return int(self.http.get("/api/v1/tasks", params={"limit": 1}).json()["total"])

    def expired(self) -> float:
        """``shoal_tasks_expired_total`` on ``/metrics`` (which wants the token)."""
        metrics = self.http.get("/metrics")
        assert metrics.status_code == 200, metrics.text
        for line in metrics.text.splitlines():
            if line.startswith(EXPIRED + " "):
                return float(line.split()[1])
        raise AssertionError(f"{EXPIRED} is not on /metrics")


@pytest.fixture
def start(node_factory: Callable[..., TestNode]) -> Iterator[Callable[..., Api]]:
    """``start(*flags, env=...)``: a ready node and its REST API."""
    apis: list[Api] = []

    def make(*flags: str, env: dict[str, str] | None = None) -> Api:
        api = Api(node_factory(args=["--shutdown-grace", "1", *flags], env=env))
        apis.append(api)
        return api

    yield make
    for api in apis:
        api.http.close()


def shoal(cwd: Path, node: TestNode, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m shoal ARGS`` against ``node``, as a person runs it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHOAL_")}
    env |= {"PYTHONPATH": str(ROOT / "src"), "NO_COLOR": "1", "COLUMNS": "200"}
    env |= {"SHOAL_API": node.http_url, "SHOAL_TOKEN": node.token}
    done = subprocess.run([sys.executable, "-m", "shoal", *args], cwd=cwd, env=env, input=stdin, capture_output=True,
                          text=True, timeout=60 * multiplier())  # fmt: skip
    assert "Traceback" not in done.stderr, done.stderr
    return done


# -- removal ----------------------------------------------------------------------------------------------


def test_a_task_past_its_result_ttl_is_removed_while_a_sibling_without_one_stays(start: Callable[..., Api]) -> None:
    api = start()  # the default retention, 7 days: only result_ttl_s removes anything here
    short = api.submit(result_ttl_s="1s")
    plain = api.submit()
    assert short["result_ttl_s"] == 1.0 and plain["result_ttl_s"] is None, (short, plain)
    assert api.ended(short["id"])["result_ttl_s"] == 1.0  # still shown once ended, until it passes
    api.ended(plain["id"])

    api.wait_gone(short["id"])
    kept = api.get(plain["id"])
    assert kept["state"] == "SUCCEED", kept
    assert api.http.get(f"/api/v1/tasks/{plain['id']}/result").json()["code"] == "hi"
    assert [t["id"] for t in api.http.get("/api/v1/tasks").json()["tasks"]] == [plain["id"]]
    assert api.expired() >= 1


def test_retention_removes_finished_tasks_never_running_ones_and_counts_them(start: Callable[..., Api]) -> None:
    api = start("--retention", "1s")
    # A task that runs longer than the retention, started before the one that ends at once.
    long = api.submit(params={"delay_s": 5})
    api.running(long["id"])
    done = api.submit()
    api.ended(done["id"])
    api.wait_gone(done["id"])
    # A sweep removed `done` at least a second after it ended, so after `long` had run over a second too.
    still = api.get(long["id"])
    assert still["state"] == "RUNNING", still

    api.ended(long["id"])
    api.wait_gone(long["id"])
    assert api.total() == 0
    assert api.expired() >= 2


def test_retention_zero_keeps_finished_tasks(start: Callable[..., Api]) -> None:
    api = start("--retention", "0")
    plain = api.submit()
    api.ended(plain["id"])
    # Two siblings with a 1 s ttl, one after the other, are removed: two sweep rounds, each at least a second
    # after `plain` ended, kept it.
    for _ in range(2):
        sibling = api.submit(result_ttl_s=1)
        api.ended(sibling["id"])
        api.wait_gone(sibling["id"])
        assert api.get(plain["id"])["state"] == "SUCCEED"
    assert api.expired() >= 2
    assert [t["id"] for t in api.http.get("/api/v1/tasks").json()["tasks"]] == [plain["id"]]


def test_shoal_retention_in_the_environment_sets_the_retention(start: Callable[..., Api]) -> None:
    api = start(env={"SHOAL_RETENTION": "1s"})
    done = api.submit()
    api.ended(done["id"])
    api.wait_gone(done["id"])
    assert api.expired() >= 1


# -- every adapter: in, out, and refused ----------------------------------------------------------------------


def test_rest_takes_seconds_or_a_duration_and_refuses_anything_else(start: Callable[..., Api]) -> None:
    api = start()
    for given, seconds in (("15m", 900.0), (900, 900.0), (0.5, 0.5), ("2h", 7200.0), ("365d", 365 * 86400.0)):
        created = api.submit(result_ttl_s=given)
        assert created["result_ttl_s"] == seconds, (given, created)
        assert api.get(created["id"])["result_ttl_s"] == seconds
    assert api.submit(result_ttl_s=None)["result_ttl_s"] is None
    stored = api.total()

    for bad in ("soon", 0, "0s", -1, True, "400d", "", [60], {"s": 60}):
        refused = api.post(result_ttl_s=bad)
        assert refused.status_code == 400, (bad, refused.text)
        assert refused.json()["error"] == "invalid_input", refused.text
        assert "result_ttl_s" in refused.json()["message"], (bad, refused.text)
    batch = api.http.post("/api/v1/tasks/batch", json={"tasks": [
        {"name": "a", "type": "echo", "target": "a", "result_ttl_s": "1h"},
        {"name": "b", "type": "echo", "target": "b", "result_ttl_s": "soon"},
    ]})  # fmt: skip
    assert batch.status_code == 400 and batch.json()["message"].startswith("tasks[1]: result_ttl_s"), batch.text
    assert api.total() == stored  # nothing refused was stored, nor the good half of the batch

    stored_batch = api.http.post("/api/v1/tasks/batch", json={"tasks": [
        {"name": "a", "type": "echo", "target": "a", "result_ttl_s": "1h"},
        {"name": "b", "type": "echo", "target": "b"},
    ]})  # fmt: skip
    assert stored_batch.status_code == 201, stored_batch.text
    assert [t["result_ttl_s"] for t in stored_batch.json()["tasks"]] == [3600.0, None]


async def test_grpc_takes_the_text_of_seconds_or_a_duration_and_shows_seconds(start: Callable[..., Api]) -> None:
    api = start()
    node = api.node
    async with TasksClient(node.grpc_addr, node.token) as client:
        made = await client.stub.CreateTask(pb.TaskSpec(name="g", type="echo", target="x", result_ttl_s="15m"))
        assert made.HasField("result_ttl_s") and made.result_ttl_s == 900
        got = await client.stub.GetTask(pb.ID(id=[made.id]))
        assert got.result_ttl_s == 900
        assert (await client.get(made.id)).result_ttl_s == 900.0
        assert api.get(made.id)["result_ttl_s"] == 900.0  # the same task over REST
        seconds = await client.stub.CreateTask(pb.TaskSpec(name="g", type="echo", target="x", result_ttl_s="90"))
        assert seconds.result_ttl_s == 90
        bare = await client.stub.CreateTask(pb.TaskSpec(name="g", type="echo", target="x"))
        assert not bare.HasField("result_ttl_s") and api.get(bare.id)["result_ttl_s"] is None
        modelled = await client.create(TaskSpec(name="m", type="echo", target="x", result_ttl_s=0.25))
        assert modelled.result_ttl_s == 0.25
        many = await client.stub.CreateTasks(pb.CreateTasksRequest(tasks=[
            pb.TaskSpec(name="a", type="echo", target="a", result_ttl_s="1h"),
            pb.TaskSpec(name="b", type="echo", target="b"),
        ]))  # fmt: skip
        assert [t.HasField("result_ttl_s") for t in many.tasks] == [True, False] and many.tasks[0].result_ttl_s == 3600
        stored = api.total()

        for bad in ("soon", "0", "-5", "400d", "0s", "-1", "NaN", "inf", ""):
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await client.stub.CreateTask(pb.TaskSpec(name="g", type="echo", target="x", result_ttl_s=bad))
            assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT, bad
            assert "result_ttl_s" in (refused.value.details() or ""), (bad, refused.value.details())
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await client.stub.CreateTasks(pb.CreateTasksRequest(tasks=[
                pb.TaskSpec(name="a", type="echo", target="a", result_ttl_s="1h"),
                pb.TaskSpec(name="b", type="echo", target="b", result_ttl_s="soon"),
            ]))  # fmt: skip
        assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert (refused.value.details() or "").startswith("tasks[1]: result_ttl_s"), refused.value.details()
    assert api.total() == stored


async def test_the_python_clients_and_the_producer_send_result_ttl_as_given(start: Callable[..., Api]) -> None:
    api = start()
    node = api.node
    with Client(node.http_url, token=node.token) as c:
        assert c.submit("echo", "x", result_ttl_s="15m").result_ttl_s == 900.0
        assert c.submit("echo", "x", result_ttl_s=60).result_ttl_s == 60.0
        assert c.submit("echo", "x").result_ttl_s is None
        many = c.submit_many([{"type": "echo", "target": "a", "result_ttl_s": "1h"},
                              TaskSpec(name="b", type="echo", target="b", result_ttl_s=30.0)])  # fmt: skip
        assert [t.result_ttl_s for t in many] == [3600.0, 30.0]
        result = c.run("echo", "ran", result_ttl_s="2m")
        assert result.code == "ran" and c.get(result.task_id).result_ttl_s == 120.0
        stored = api.total()
        with pytest.raises(InvalidInput, match="result_ttl_s"):
            c.submit("echo", "x", result_ttl_s="soon")
        with pytest.raises(InvalidInput, match="result_ttl_s"):
            c.submit_many([{"type": "echo", "target": "a", "result_ttl_s": 0}])
    async with AsyncClient(node.http_url, token=node.token) as ac:
        assert (await ac.submit("echo", "x", result_ttl_s="15m")).result_ttl_s == 900.0
        with pytest.raises(InvalidInput, match="result_ttl_s"):
            await ac.submit("echo", "x", result_ttl_s="400d")
    async with await Producer.connect(node.redis_url) as producer:
        produced = await producer.submit("echo", "x", result_ttl_s="15m")
        assert produced.result_ttl_s == 900.0 and api.get(produced.id)["result_ttl_s"] == 900.0
        with pytest.raises(InvalidInput, match="result_ttl_s"):
            await producer.submit("echo", "x", result_ttl_s=-1)
    assert api.total() == stored + 2  # the async client's task and the produced one; nothing refused


def test_the_cli_takes_result_ttl_and_refuses_a_bad_one(start: Callable[..., Api], tmp_path: Path) -> None:
    api = start()
    node = api.node
    shown = shoal(tmp_path, node, "task", "submit", "echo", "hi", "--result-ttl", "15m", "--json")
    assert shown.returncode == 0, shown.stderr
    created = orjson.loads(shown.stdout)
    assert created["result_ttl_s"] == 900 and api.get(created["id"])["result_ttl_s"] == 900.0
    lines = '{"type": "echo", "target": "a", "result_ttl_s": "1h"}\n{"type": "echo", "target": "b"}\n'
    from_file = shoal(tmp_path, node, "task", "submit", "--from-file", "-", "--json", stdin=lines)
    assert from_file.returncode == 0, from_file.stderr
    assert [t["result_ttl_s"] for t in orjson.loads(from_file.stdout)["tasks"]] == [3600.0, None]
    stored = api.total()

    for value in ("soon", "0", "400d"):
        refused = shoal(tmp_path, node, "task", "submit", "echo", "hi", "--result-ttl", value)
        assert refused.returncode == 2, (value, refused.stderr)
        assert "--result-ttl" in refused.stderr and "result_ttl_s" in refused.stderr, refused.stderr
    bad_line = shoal(tmp_path, node, "task", "submit", "--from-file", "-",
                     stdin='{"type": "echo", "target": "a", "result_ttl_s": "soon"}\n')  # fmt: skip
    assert bad_line.returncode == 2 and "line 1: result_ttl_s" in bad_line.stderr, bad_line.stderr
    clash = shoal(tmp_path, node, "task", "submit", "--from-file", "-", "--result-ttl", "1h", stdin=lines)
    assert clash.returncode == 2 and "--result-ttl" in clash.stderr, clash.stderr
    assert api.total() == stored
