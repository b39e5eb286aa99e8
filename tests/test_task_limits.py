"""A task's own ``memory_mb`` and ``cpu_s_limit``: what each attempt may use in its worker process, never more
than its type allows.

The rule (shoal.worker.limits) is checked on its own; then on real nodes with the plug-in types of
``tests/plugins/shoal_limit_types.py``: a task held to its own limit ends ``over limit`` naming it, a task
asking for more than its type (or, for a type with no bound, the node) allows is held to that bound and
its attempt says so, the fields go through REST, gRPC, the client and the CLI and back, and values out
of range are refused by each without a trace.
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

from shoal.models import Task, TaskSpec, TaskState
from shoal.rpc.client import TasksClient, pb
from shoal.testing import TestNode, multiplier, wait_for
from shoal.worker.handlers import TaskType
from shoal.worker.limits import Limits, attempt_limits, not_applied

ROOT = Path(__file__).resolve().parents[1]
PLUGINS = Path(__file__).parent / "plugins"
DONE_S = 30.0 * multiplier()
MIB = 2**20
e2e = pytest.mark.e2e


def _noop(ctx: Any) -> str:
    return ""


def task(memory_mb: int | None = None, cpu_s_limit: float | None = None, type_: str = "t") -> Task:
    return Task(id="ID", name="n", type=type_, target="x", params={}, state=TaskState.RUNNING, node="node-1",
                attempts=1, max_retries=0, timeout_s=None, created_at=0.0, started_at=0.0, finished_at=None,
                error=None, memory_mb=memory_mb, cpu_s_limit=cpu_s_limit)  # fmt: skip


def kind(memory_mb: int | None = None, cpu_s_limit: float | None = None, isolation: Any = "process") -> TaskType:
    return TaskType("t", _noop, isolation=isolation, memory_mb=memory_mb, cpu_s_limit=cpu_s_limit)


def limits(t: Task, k: TaskType, node_memory_mb: int | None = 4096, node_cpu_s_limit: float | None = None) -> Limits:
    return attempt_limits(t, k, node="node-1", node_memory_mb=node_memory_mb, node_cpu_s_limit=node_cpu_s_limit)


# -- the rule -------------------------------------------------------------------------------------------


def test_a_task_without_limits_gets_its_types_bound_else_the_nodes_default() -> None:
    assert limits(task(), kind()) == Limits(4096, None)
    assert limits(task(), kind(memory_mb=200, cpu_s_limit=1.5)) == Limits(200, 1.5)
    assert limits(task(), kind(memory_mb=8192)) == Limits(8192, None)  # a type may allow more than the default
    assert limits(task(), kind(), node_memory_mb=None, node_cpu_s_limit=30.0) == Limits(None, 30.0)
    assert limits(task(), kind(), node_memory_mb=None) == Limits(None, None)


def test_a_task_gets_what_it_asks_for_within_the_bound() -> None:
    assert limits(task(100, 0.5), kind()) == Limits(100, 0.5)  # no CPU bound on this node: any ask stands
    assert limits(task(100, 0.5), kind(memory_mb=200, cpu_s_limit=1.0)) == Limits(100, 0.5)
    assert limits(task(200, 1.0), kind(memory_mb=200, cpu_s_limit=1.0)) == Limits(200, 1.0)  # the bound itself
    assert limits(task(2048), kind(), node_memory_mb=None) == Limits(2048, None)  # no bound anywhere


def test_a_task_asking_for_more_than_its_type_allows_is_held_to_the_types_bound_and_told() -> None:
    got = limits(task(2048, 60.0), kind(memory_mb=200, cpu_s_limit=1.0))
    assert (got.memory_mb, got.cpu_s_limit) == (200, 1.0)
    assert got.note == (
        "memory_mb held to 200 MiB, the most type 't' allows (the task asked for 2048 MiB); "
        "cpu_s_limit held to 1s, the most type 't' allows (the task asked for 60s)"
    )
    mixed = limits(task(100, 60.0), kind(memory_mb=200, cpu_s_limit=1.0))
    assert (mixed.memory_mb, mixed.cpu_s_limit) == (100, 1.0) and mixed.note.startswith("cpu_s_limit held to 1s")


def test_a_type_without_a_bound_is_bounded_by_the_nodes_default() -> None:
    got = limits(task(8192, 120.0), kind(), node_memory_mb=4096, node_cpu_s_limit=30.0)
    assert (got.memory_mb, got.cpu_s_limit) == (4096, 30.0)
    assert "memory_mb held to 4096 MiB, node node-1's default, as type 't' sets no bound" in got.note
    assert "(the task asked for 8192 MiB)" in got.note and "cpu_s_limit held to 30s" in got.note
    wide = limits(task(2**20), kind(), node_memory_mb=2**20)
    assert wide == Limits(2**20, None)


def test_an_inline_attempt_says_its_tasks_limits_do_not_apply() -> None:
    assert not_applied(task(), "echo") == ""
    assert not_applied(task(memory_mb=100), "echo") == (
        "memory_mb not applied: type 'echo' runs inline, in the node's own process"
    )
    assert not_applied(task(100, 1.0), "fetch").startswith("memory_mb and cpu_s_limit not applied: type 'fetch'")


def test_task_show_gives_the_limits_a_task_asked_for() -> None:
    from rich.console import Console

    from shoal.cli import _output as o

    def shown(t: Task) -> list[list[str]]:
        console = Console(width=200, record=True, no_color=True)
        console.print(o.task_detail(t))
        return [line.split() for line in console.export_text().splitlines()]

    rows = shown(task(512, 2.5))
    assert ["memory", "limit", "512", "MiB"] in rows and ["cpu", "limit", "2.5s"] in rows
    rows = shown(task())
    default = o.LIMIT_DEFAULT.split()
    assert ["memory", "limit", *default] in rows and ["cpu", "limit", *default] in rows


# -- on real nodes --------------------------------------------------------------------------------------


def plugin_env() -> dict[str, str]:
    return {"PYTHONPATH": os.pathsep.join(p for p in (str(PLUGINS), os.environ.get("PYTHONPATH", "")) if p)}


class Api:
    """The REST calls these tests make, on one node."""

    def __init__(self, node: TestNode) -> None:
        self.node = node
        self.http = httpx.Client(base_url=node.http_url, headers=node.headers(), timeout=30.0, trust_env=False)

    def post(self, type_: str, target: str = "x", **extra: Any) -> httpx.Response:
        return self.http.post("/api/v1/tasks", json={"name": type_, "type": type_, "target": target, **extra})

    def submit(self, type_: str, target: str = "x", **extra: Any) -> dict[str, Any]:
        response = self.post(type_, target, **extra)
        assert response.status_code == 201, response.text
        created: dict[str, Any] = response.json()
        return created

    def get(self, task_id: str) -> dict[str, Any]:
        response = self.http.get(f"/api/v1/tasks/{task_id}")
        assert response.status_code == 200, response.text
        found: dict[str, Any] = response.json()
        return found

    def finished(self, task_id: str) -> dict[str, Any]:
        def ended() -> dict[str, Any] | None:
            t = self.get(task_id)
            return t if t["state"] in ("SUCCEED", "RUNTIME_ERROR", "KILLED") else None

        done = wait_for(ended, DONE_S, f"task {task_id} to end")
        assert done is not None
        return done

    def run(self, type_: str, **extra: Any) -> dict[str, Any]:
        return self.finished(self.submit(type_, **extra)["id"])

    def total(self) -> int:
        return int(self.http.get("/api/v1/tasks").json()["total"])


@pytest.fixture
def start(node_factory: Callable[..., TestNode]) -> Iterator[Callable[..., Api]]:
    """``start(*flags)``: a ready node with the limit types, and its API."""
    apis: list[Api] = []

    def make(*flags: str) -> Api:
        args = ["--task-modules", "shoal_limit_types", "--shutdown-grace", "1", "--slots", "2", *flags]
        api = Api(node_factory(args=args, env=plugin_env()))
        apis.append(api)
        return api

    yield make
    for api in apis:
        api.http.close()


def last_attempt(t: dict[str, Any]) -> dict[str, Any]:
    attempt: dict[str, Any] = t["history"][-1]
    return attempt


@e2e
def test_a_task_held_to_its_own_memory_mb_ends_over_limit_and_without_it_succeeds(start: Callable[..., Api]) -> None:
    api = start()  # the node's default memory_mb, 4096 MiB, is plenty for 500
    held = api.run("limit-use", params={"mb": 500}, memory_mb=100)
    assert held["state"] == "RUNTIME_ERROR" and held["memory_mb"] == 100, held
    attempt = last_attempt(held)
    assert attempt["outcome"] == "over limit" and attempt["error"].startswith("memory_mb"), attempt
    assert "100 MiB" in attempt["error"] and "held to" not in attempt["error"]
    assert held["error"].startswith("memory_mb")

    free = api.run("limit-use", params={"mb": 500})
    assert free["state"] == "SUCCEED" and free["memory_mb"] is None, free
    assert last_attempt(free)["outcome"] == "succeeded" and not last_attempt(free)["error"]
    peak = last_attempt(free)["max_rss_bytes"]
    assert peak is None or peak >= 500 * MIB, peak
    assert api.http.get(f"/api/v1/tasks/{free['id']}/result").json()["code"] == "used 500 MiB and 0s of CPU"


@e2e
def test_a_task_held_to_its_own_cpu_s_limit_ends_over_limit(start: Callable[..., Api]) -> None:
    api = start()  # the node's default cpu_s_limit is none
    held = api.run("limit-use", params={"cpu_s": 10}, cpu_s_limit=0.5)
    assert held["state"] == "RUNTIME_ERROR" and held["cpu_s_limit"] == 0.5, held
    attempt = last_attempt(held)
    assert attempt["outcome"] == "over limit" and attempt["error"].startswith("cpu_s_limit"), attempt
    assert attempt["cpu_s"] is None or attempt["cpu_s"] < 5, attempt


@e2e
def test_a_task_asking_for_more_than_its_type_allows_is_held_to_the_types_bound(start: Callable[..., Api]) -> None:
    api = start()
    greedy = api.run("limit-capped", params={"mb": 500}, memory_mb=2048)  # limit-capped allows 200 MiB
    assert greedy["state"] == "RUNTIME_ERROR" and greedy["memory_mb"] == 2048, greedy  # kept as asked
    attempt = last_attempt(greedy)
    assert attempt["outcome"] == "over limit" and attempt["error"].startswith("memory_mb"), attempt
    assert "200 MiB" in attempt["error"]
    held = "memory_mb held to 200 MiB, the most type 'limit-capped' allows (the task asked for 2048 MiB)"
    assert held in attempt["error"], attempt

    burner = api.run("limit-capped", params={"cpu_s": 10}, cpu_s_limit=60)  # it allows 1 s
    attempt = last_attempt(burner)
    assert burner["state"] == "RUNTIME_ERROR" and attempt["outcome"] == "over limit", burner
    assert attempt["error"].startswith("cpu_s_limit") and "cpu_s_limit held to 1s" in attempt["error"], attempt
    assert attempt["cpu_s"] is None or attempt["cpu_s"] < 5, attempt

    # Held to the bound is no failure in itself: within it, the task succeeds, and its attempt says so.
    modest = api.run("limit-capped", params={"mb": 50}, memory_mb=4096)
    assert modest["state"] == "SUCCEED", modest
    assert "memory_mb held to 200 MiB" in last_attempt(modest)["error"]
    assert not modest["error"]
    # A task asking for less than its type allows gets just that.
    thrifty = api.run("limit-capped", params={"mb": 150}, memory_mb=100)
    assert thrifty["state"] == "RUNTIME_ERROR" and last_attempt(thrifty)["outcome"] == "over limit", thrifty
    assert "100 MiB" in last_attempt(thrifty)["error"] and "held to" not in last_attempt(thrifty)["error"]


@e2e
def test_a_type_without_bounds_holds_a_task_to_the_nodes_default(start: Callable[..., Api]) -> None:
    api = start("--memory-mb", "300", "--cpu-s-limit", "1")
    greedy = api.run("limit-use", params={"mb": 500}, memory_mb=8192)
    attempt = last_attempt(greedy)
    assert greedy["state"] == "RUNTIME_ERROR" and attempt["outcome"] == "over limit", greedy
    assert "memory_mb held to 300 MiB, node node-1's default, as type 'limit-use' sets no bound" in attempt["error"]
    burner = api.run("limit-use", params={"cpu_s": 10}, cpu_s_limit=3600)
    assert last_attempt(burner)["outcome"] == "over limit", burner
    assert "cpu_s_limit held to 1s, node node-1's default" in last_attempt(burner)["error"]
    # Within the node's default, the task's own value stands.
    small = api.run("limit-use", params={"mb": 50}, memory_mb=200)
    assert small["state"] == "SUCCEED" and not last_attempt(small)["error"], small


@e2e
def test_an_inline_type_runs_but_says_limits_do_not_apply(start: Callable[..., Api]) -> None:
    api = start()
    echoed = api.run("echo", target="hi", memory_mb=100, cpu_s_limit=1)
    assert echoed["state"] == "SUCCEED", echoed
    assert last_attempt(echoed)["error"] == (
        "memory_mb and cpu_s_limit not applied: type 'echo' runs inline, in the node's own process"
    )


@e2e
async def test_the_fields_round_trip_through_rest_grpc_the_client_and_the_cli(
    start: Callable[..., Api], tmp_path: Path
) -> None:
    from shoal.client import AsyncClient

    api = start()
    node = api.node
    # REST
    created = api.submit("limit-use", memory_mb=512, cpu_s_limit=2.5)
    assert (created["memory_mb"], created["cpu_s_limit"]) == (512, 2.5)
    done = api.finished(created["id"])
    assert done["state"] == "SUCCEED" and (done["memory_mb"], done["cpu_s_limit"]) == (512, 2.5), done
    whole = api.submit("limit-use", cpu_s_limit=3)  # a whole number of seconds is a number of seconds
    assert whole["cpu_s_limit"] == 3.0 and whole["memory_mb"] is None
    plain = api.get(api.submit("limit-use")["id"])
    assert plain["memory_mb"] is None and plain["cpu_s_limit"] is None

    # gRPC, as a message and through the client that turns it into models
    client = TasksClient(node.grpc_addr, node.token, timeout_s=DONE_S)
    try:
        msg = await client.stub.CreateTask(pb.TaskSpec(name="g", type="limit-use", target="x", memory_mb=256,
                                                       cpu_s_limit=1.25))  # fmt: skip
        assert (msg.memory_mb, msg.cpu_s_limit) == (256, 1.25)
        bare = await client.stub.CreateTask(pb.TaskSpec(name="g", type="limit-use", target="x"))
        assert not bare.HasField("memory_mb") and not bare.HasField("cpu_s_limit")
        got = await client.get(msg.id, wait_s=DONE_S)
        assert got.state is TaskState.SUCCEED and (got.memory_mb, got.cpu_s_limit) == (256, 1.25), got
        spec = TaskSpec(name="m", type="limit-use", target="x", memory_mb=128, cpu_s_limit=0.75)
        made = await client.create(spec)
        assert (made.memory_mb, made.cpu_s_limit) == (128, 0.75)
        assert ((await client.get(bare.id)).memory_mb, (await client.get(bare.id)).cpu_s_limit) == (None, None)
    finally:
        await client.close()
    assert (api.get(msg.id)["memory_mb"], api.get(made.id)["cpu_s_limit"]) == (256, 0.75)

    # the Python client
    async with AsyncClient(node.http_url, token=node.token) as c:
        submitted = await c.submit("limit-use", "x", memory_mb=1024, cpu_s_limit=5.5)
        assert isinstance(submitted, Task) and (submitted.memory_mb, submitted.cpu_s_limit) == (1024, 5.5)
        later = await c.wait(submitted.id, DONE_S)
        assert later.state is TaskState.SUCCEED and (later.memory_mb, later.cpu_s_limit) == (1024, 5.5)
        unset = await c.submit("limit-use", "x")
        assert (unset.memory_mb, unset.cpu_s_limit) == (None, None)

    # the CLI
    shown = shoal(tmp_path, node, "task", "submit", "limit-use", "x", "--memory-mb", "768", "--cpu-s-limit", "4",
                  "--json")  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    cli_task = orjson.loads(shown.stdout)
    assert (cli_task["memory_mb"], cli_task["cpu_s_limit"]) == (768, 4.0)
    detail = shoal(tmp_path, node, "task", "show", cli_task["id"])
    assert detail.returncode == 0, detail.stderr
    lines = [line.split() for line in detail.stdout.splitlines()]
    assert ["memory", "limit", "768", "MiB"] in lines and ["cpu", "limit", "4s"] in lines, detail.stdout
    listed = orjson.loads(shoal(tmp_path, node, "task", "show", plain["id"], "--json").stdout)
    assert (listed["memory_mb"], listed["cpu_s_limit"]) == (None, None)


@e2e
async def test_limits_out_of_range_are_refused_and_change_nothing(start: Callable[..., Api], tmp_path: Path) -> None:
    api = start()
    node = api.node
    kept = api.submit("limit-use")["id"]
    bad_rest: list[tuple[dict[str, Any], str]] = [
        ({"memory_mb": 63}, "memory_mb must be between 64 and 1048576"),
        ({"memory_mb": 2**20 + 1}, "memory_mb must be between 64 and 1048576"),
        ({"memory_mb": 512.5}, "memory_mb must be a whole number"),
        ({"memory_mb": "512"}, "memory_mb must be a whole number"),
        ({"memory_mb": True}, "memory_mb must be a whole number"),
        ({"cpu_s_limit": 0}, "cpu_s_limit must be above 0 and at most 86400"),
        ({"cpu_s_limit": -1.5}, "cpu_s_limit must be above 0 and at most 86400"),
        ({"cpu_s_limit": 86_400.5}, "cpu_s_limit must be above 0 and at most 86400"),
        ({"cpu_s_limit": "1"}, "cpu_s_limit must be a number of seconds"),
        ({"cpu_s_limit": False}, "cpu_s_limit must be a number of seconds"),
    ]
    for extra, says in bad_rest:
        refused = api.post("limit-use", **extra)
        assert refused.status_code == 400, (extra, refused.text)
        assert refused.json()["error"] == "invalid_input" and says in refused.json()["message"], refused.text

    client = TasksClient(node.grpc_addr, node.token, timeout_s=DONE_S)
    try:
        bad_grpc: list[tuple[dict[str, Any], str]] = [
            ({"memory_mb": 63}, "memory_mb must be between"),
            ({"memory_mb": -512}, "memory_mb must be between"),
            ({"cpu_s_limit": 0.0}, "cpu_s_limit must be above 0"),
            ({"cpu_s_limit": float("nan")}, "cpu_s_limit must be a number of seconds"),
            ({"cpu_s_limit": 1e9}, "cpu_s_limit must be above 0"),
        ]
        for extra, says in bad_grpc:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await client.stub.CreateTask(pb.TaskSpec(name="g", type="limit-use", target="x", **extra))
            assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT, extra
            assert says in (info.value.details() or ""), (extra, info.value.details())
    finally:
        await client.close()

    for flags, names in [
        (["--memory-mb", "63"], "--memory-mb"),
        (["--memory-mb", "lots"], "--memory-mb"),
        (["--cpu-s-limit", "0"], "--cpu-s-limit"),
        (["--cpu-s-limit", "86401"], "--cpu-s-limit"),
    ]:
        done = shoal(tmp_path, node, "task", "submit", "limit-use", "x", *flags)
        assert done.returncode == 2 and names in done.stderr, (flags, done.stderr)

    after = api.http.get("/api/v1/tasks").json()
    assert after["total"] == 1 and [t["id"] for t in after["tasks"]] == [kept], after


def shoal(cwd: Path, node: TestNode, *args: str) -> subprocess.CompletedProcess[str]:
    """``python -m shoal ARGS`` against ``node``, as a person runs it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHOAL_")}
    env |= {"PYTHONPATH": str(ROOT / "src"), "NO_COLOR": "1", "COLUMNS": "200"}
    env |= {"SHOAL_API": node.http_url, "SHOAL_TOKEN": node.token}
    done = subprocess.run([sys.executable, "-m", "shoal", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=DONE_S + 30)  # fmt: skip
    assert "Traceback" not in done.stderr, done.stderr
    return done
