"""Delayed tasks on a real node: ``run_at`` and ``delay_s`` through REST, gRPC, the Python clients, the
producer and the CLI. A delayed task is WAITING with ``waiting_for`` saying when it is due, runs once after
that time, can be killed before it, and a bad time is refused with a clear message and stores nothing.
(tests/cluster/test_delayed.py kills the master in between.)"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import httpx
import orjson
import pytest

from shoal.client import AsyncClient, Client
from shoal.errors import InvalidInput
from shoal.producer import Producer
from shoal.rpc.client import TasksClient, pb
from shoal.testing import TestNode, multiplier, wait_for

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[1]
END_S = 30.0


@pytest.fixture
def api(shoal_node: TestNode) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=shoal_node.http_url, headers=shoal_node.headers(), timeout=30.0) as client:
        yield client


def submit(api: httpx.Client, **fields: Any) -> dict[str, Any]:
    response = api.post("/api/v1/tasks", json={"name": "later", "type": "echo", "target": "hi", **fields})
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def get(api: httpx.Client, task_id: str) -> dict[str, Any]:
    found: dict[str, Any] = api.get(f"/api/v1/tasks/{task_id}").json()
    return found


def ended(api: httpx.Client, task_id: str) -> dict[str, Any]:
    done: dict[str, Any] = wait_for(
        lambda: (t := get(api, task_id))["state"] in ("SUCCEED", "RUNTIME_ERROR", "KILLED") and t,
        END_S,
        f"task {task_id} to end",
    )
    return done


def rfc3339(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).isoformat().replace("+00:00", "Z")


def test_a_delayed_task_waits_with_its_due_time_then_runs_once(api: httpx.Client) -> None:
    task = submit(api, delay_s=1.5)
    assert task["state"] == "WAITING" and task["delay_s"] == 1.5
    assert task["run_at"] == pytest.approx(task["created_at"] + 1.5, abs=0.01)
    assert task["waiting_for"].startswith("due at ") and task["waiting_for"].endswith("Z")
    stored = get(api, task["id"])
    assert (stored["state"], stored["run_at"], stored["waiting_for"]) == (
        "WAITING",
        task["run_at"],
        task["waiting_for"],
    )
    waiting = api.get("/api/v1/tasks", params={"state": "WAITING"}).json()["tasks"]
    assert [t["waiting_for"] for t in waiting] == [task["waiting_for"]]

    done = ended(api, task["id"])
    assert done["state"] == "SUCCEED" and done["attempts"] == 1 and done["waiting_for"] is None
    assert done["started_at"] >= task["run_at"], "not before it was due"

    at = time.time() + 1.0
    dated = submit(api, run_at=rfc3339(at))
    assert dated["run_at"] == pytest.approx(at, abs=0.001) and dated["state"] == "WAITING"
    assert ended(api, dated["id"])["started_at"] >= at
    past = submit(api, run_at=time.time() - 3600)
    assert past["waiting_for"] is None and ended(api, past["id"])["state"] == "SUCCEED", "a time past: at once"
    both = submit(api, run_at=time.time() - 3600, delay_s=600)
    assert both["run_at"] == pytest.approx(both["created_at"] + 600, abs=0.01), "given both: the later"
    assert api.post(f"/api/v1/tasks/{both['id']}/kill").status_code == 200


def test_a_delayed_task_killed_before_its_time_never_runs(api: httpx.Client) -> None:
    task = submit(api, delay_s=1.0)
    assert api.post(f"/api/v1/tasks/{task['id']}/kill").json()["state"] == "KILLED"
    later = submit(api, delay_s=1.5)  # due after the killed one: once it ran, the killed one's time had passed
    assert ended(api, later["id"])["state"] == "SUCCEED"
    killed = get(api, task["id"])
    assert (killed["state"], killed["attempts"], killed["waiting_for"]) == ("KILLED", 0, None)


def test_bad_times_are_refused_with_a_reason_and_store_nothing(api: httpx.Client) -> None:
    before = api.get("/api/v1/tasks", params={"limit": 1}).json()["total"]
    cases: list[tuple[dict[str, Any], str]] = [
        ({"run_at": "06/12/2026 10:00"}, "RFC 3339"),
        ({"run_at": "2026-12-06T10:00:00"}, "offset"),
        ({"run_at": "2026-02-30T10:00:00Z"}, "not a date-time"),
        ({"run_at": time.time() * 1000}, "milliseconds"),
        ({"run_at": True}, "run_at"),
        ({"delay_s": "soon"}, "delay_s"),
        ({"delay_s": -1}, "delay_s"),
        ({"delay_s": "400d"}, "a year"),
    ]
    for fields, reason in cases:
        body = {"name": "bad", "type": "echo", "target": "x", **fields}
        refused = api.post("/api/v1/tasks", json=body)
        assert refused.status_code == 400, (fields, refused.text)
        assert reason in refused.json()["message"], (fields, refused.json())
    batch = [{"name": "ok", "type": "echo", "target": "x", "delay_s": 1}, {"name": "b", "type": "echo",
             "target": "x", "run_at": "tomorrow"}]  # fmt: skip
    refused = api.post("/api/v1/tasks/batch", json={"tasks": batch})
    assert refused.status_code == 400 and refused.json()["index"] == 1, refused.text
    assert api.get("/api/v1/tasks", params={"limit": 1}).json()["total"] == before


async def test_grpc_takes_epoch_seconds_or_a_date_time_as_text(shoal_node: TestNode) -> None:
    at = time.time() + 600
    async with TasksClient(shoal_node.grpc_addr, shoal_node.token) as client:
        by_epoch = await client.stub.CreateTask(pb.TaskSpec(name="g", type="echo", target="x", run_at=f"{at:.3f}"))
        assert by_epoch.state == pb.Task.WAITING and by_epoch.run_at == pytest.approx(at, abs=0.001)
        assert by_epoch.waiting_for.startswith("due at ")
        by_text = await client.stub.CreateTask(pb.TaskSpec(name="g", type="echo", target="x", run_at=rfc3339(at)))
        delayed = await client.stub.CreateTask(pb.TaskSpec(name="g", type="echo", target="x", delay_s="10m"))
        assert by_text.run_at == pytest.approx(at, abs=0.001) and delayed.delay_s == 600
        got = await client.stub.GetTask(pb.ID(id=[delayed.id]))
        assert got.waiting_for == delayed.waiting_for and got.HasField("run_at")
        for bad in (pb.TaskSpec(name="g", type="echo", target="x", run_at="noon"),
                    pb.TaskSpec(name="g", type="echo", target="x", delay_s="1y")):  # fmt: skip
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await client.stub.CreateTask(bad)
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT, refused.value.details()
        await client.kill([by_epoch.id, by_text.id, delayed.id])


async def test_the_clients_and_the_producer_take_run_at_and_delay_s(shoal_node: TestNode) -> None:
    with Client(shoal_node.http_url, shoal_node.token) as c:
        task = c.submit("echo", "x", delay_s="10m")
        assert task.delay_s == 600 and task.waiting_for and c.get(task.id).waiting_for == task.waiting_for
        with pytest.raises(InvalidInput, match="delay_s"):
            c.submit("echo", "x", delay_s="a while")
        c.kill(task.id)
    async with AsyncClient(shoal_node.http_url, shoal_node.token) as ac:
        at = time.time() + 600
        task = await ac.submit("echo", "x", run_at=rfc3339(at))
        assert task.run_at == pytest.approx(at, abs=0.001) and task.state.name == "WAITING"
        await ac.kill(task.id)
    async with await Producer.connect(shoal_node.redis_url) as producer:
        produced = await producer.submit("echo", "x", delay_s=600)
        assert produced.waiting_for and produced.run_at == pytest.approx(produced.created_at + 600)
        with pytest.raises(InvalidInput, match="run_at"):
            await producer.submit("echo", "x", run_at="next week")


def test_the_cli_takes_delay_and_at_and_refuses_bad_ones(shoal_node: TestNode, tmp_path: Path) -> None:
    def shoal(*args: str) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SHOAL_")}
        env |= {"PYTHONPATH": str(ROOT / "src"), "NO_COLOR": "1", "COLUMNS": "200"}
        env |= {"SHOAL_API": shoal_node.http_url, "SHOAL_TOKEN": shoal_node.token}
        return subprocess.run([sys.executable, "-m", "shoal", *args], cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=60 * multiplier())  # fmt: skip

    shown = shoal("task", "submit", "echo", "hi", "--delay", "15m", "--json")
    assert shown.returncode == 0, shown.stderr
    created = orjson.loads(shown.stdout)
    assert created["delay_s"] == 900 and created["waiting_for"].startswith("due at ")
    detail = shoal("task", "show", created["id"])
    assert "waiting for" in detail.stdout and created["waiting_for"] in detail.stdout, detail.stdout
    at = shoal("task", "submit", "echo", "hi", "--at", f"{time.time() + 900:.0f}", "--json")
    assert at.returncode == 0 and orjson.loads(at.stdout)["state"] == "WAITING", at.stderr
    for args in (["--delay", "soon"], ["--at", "tomorrow"], ["--at", "2026-12-06T10:00:00"]):
        refused = shoal("task", "submit", "echo", "hi", *args)
        assert refused.returncode == 2, (args, refused.stderr)
        assert "--delay" in refused.stderr or "--at" in refused.stderr, refused.stderr
