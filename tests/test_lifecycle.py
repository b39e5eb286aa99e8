"""A task's whole life on real node processes, seen over REST: waiting for a slot, running, ending, being
killed or deleted, timing out, being retried, and surviving a node killed -9, a node stopped by SIGTERM
and a Redis restart. Plug-in task types come from ``tests/plugins/shoal_test_types.py``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from shoal.store.embedded import EmbeddedRedis
from shoal.testing import TestNode, multiplier, wait_for

pytestmark = pytest.mark.e2e

PLUGINS = Path(__file__).parent / "plugins"
PLUGIN_ARGS = ["--task-modules", "shoal_test_types"]
#: Tests leave long tasks running; a short grace keeps each node's SIGTERM at the end quick.
GRACE_ARGS = ["--shutdown-grace", "1"]
TERMINAL = ("SUCCEED", "RUNTIME_ERROR", "KILLED")
DONE_S = 20.0
OUTAGE_S = 1.0
#: Pause between two samples of the API while a test watches tasks run.
POLL_S = 0.02


def plugin_env() -> dict[str, str]:
    return {"PYTHONPATH": os.pathsep.join(p for p in (str(PLUGINS), os.environ.get("PYTHONPATH", "")) if p)}


class Api:
    """The REST calls these tests make, on one node."""

    def __init__(self, node: TestNode) -> None:
        self.node = node
        self.http = httpx.Client(base_url=node.http_url, headers=node.headers(), timeout=30.0, trust_env=False)

    def submit(self, type_: str, target: str, **extra: Any) -> dict[str, Any]:
        response = self.http.post("/api/v1/tasks", json={"name": type_, "type": type_, "target": target, **extra})
        assert response.status_code == 201, response.text
        task: dict[str, Any] = response.json()
        return task

    def echo(self, target: str = "hi", delay_s: float = 0, **extra: Any) -> str:
        return str(self.submit("echo", target, params={"delay_s": delay_s}, **extra)["id"])

    def get(self, task_id: str) -> dict[str, Any]:
        response = self.http.get(f"/api/v1/tasks/{task_id}")
        assert response.status_code == 200, response.text
        task: dict[str, Any] = response.json()
        return task

    def state(self, task_id: str) -> str:
        return str(self.get(task_id)["state"])

    def wait_state(self, task_id: str, state: str, timeout: float = DONE_S) -> dict[str, Any]:
        return self._until(task_id, (state,), timeout, state)

    def finished(self, task_id: str, timeout: float = DONE_S) -> dict[str, Any]:
        return self._until(task_id, TERMINAL, timeout, "to end")

    def _until(self, task_id: str, states: tuple[str, ...], timeout: float, what: str) -> dict[str, Any]:
        def reached() -> dict[str, Any] | None:
            task = self.get(task_id)
            return task if task["state"] in states else None

        task = wait_for(reached, timeout, f"task {task_id} {what}")
        assert task is not None
        return task

    def result(self, task_id: str) -> dict[str, Any]:
        response = self.http.get(f"/api/v1/tasks/{task_id}/result")
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    def total(self, state: str) -> int:
        return int(self.http.get("/api/v1/tasks", params={"state": state, "limit": 1}).json()["total"])


@pytest.fixture
def start(node_factory: Callable[..., TestNode]) -> Iterator[Callable[..., Api]]:
    """``start(*flags, plugins=True)``: a ready node with the test plug-in types, and its API."""
    apis: list[Api] = []

    def make(*flags: str, plugins: bool = True, name: str = "node-1") -> Api:
        args = [*GRACE_ARGS, *(PLUGIN_ARGS if plugins else []), *flags]  # a later flag wins
        node = node_factory(name=name, args=args, env=plugin_env() if plugins else None)
        apis.append(Api(node))
        return apis[-1]

    yield make
    for api in apis:
        api.http.close()


def outcomes(task: dict[str, Any]) -> list[str | None]:
    return [a["outcome"] for a in task["history"]]


def lines(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


# -- one task's life ---------------------------------------------------------------------------------


def test_echo_succeeds_with_its_code(start: Callable[..., Api]) -> None:
    api = start(plugins=False)
    task_id = api.echo("hello from echo")
    task = api.finished(task_id)
    assert task["state"] == "SUCCEED", task["error"]
    assert task["attempts"] == 1 and task["node"] == "node-1" and outcomes(task) == ["succeeded"]
    assert task["finished_at"] >= task["started_at"] >= task["created_at"]
    result = api.result(task_id)
    assert (result["code"], result["node"], result["attempt"], result["duplicates"]) == ("hello from echo", "node-1",
                                                                                        1, 0)  # fmt: skip


def test_task_waits_for_a_free_slot_then_succeeds(start: Callable[..., Api]) -> None:
    api = start("--slots", "1", plugins=False)
    blocker = api.echo("first", delay_s=1.0)
    api.wait_state(blocker, "RUNNING")
    second = api.echo("second")
    seen: list[str] = []
    deadline = time.monotonic() + DONE_S * multiplier()
    while (state := api.state(second)) not in TERMINAL:  # polls the API until the task ends
        if not seen or seen[-1] != state:
            seen.append(state)
        if api.state(blocker) == "RUNNING":  # read after: it was running when `state` was read
            assert state == "WAITING", "a task was placed on a node with no free slot"
        assert time.monotonic() < deadline, f"the second task did not end; states seen: {seen}"
        time.sleep(POLL_S)
    assert seen[0] == "WAITING" and state == "SUCCEED"
    first, done = api.get(blocker), api.get(second)
    assert first["state"] == "SUCCEED"
    assert done["started_at"] >= first["finished_at"]
    assert api.result(second)["code"] == "second"


def test_kill_waiting_task_is_killed_at_once(start: Callable[..., Api]) -> None:
    api = start("--slots", "1", plugins=False)
    blocker = api.echo(delay_s=30)
    api.wait_state(blocker, "RUNNING")
    queued = api.echo()
    assert api.state(queued) == "WAITING"
    response = api.http.post(f"/api/v1/tasks/{queued}/kill")
    assert response.status_code == 200, response.text
    assert response.json()["state"] == "KILLED"
    task = api.get(queued)
    assert task["state"] == "KILLED" and task["attempts"] == 0 and task["history"] == []
    assert api.http.get(f"/api/v1/tasks/{queued}/result").status_code == 404
    again = api.http.post(f"/api/v1/tasks/{queued}/kill")
    assert again.status_code == 409 and again.json()["error"] == "illegal_transition"


def test_kill_running_task_stops_it_and_frees_its_slot(start: Callable[..., Api], tmp_path: Path) -> None:
    api = start("--slots", "1")
    progress_file = tmp_path / "progress.txt"
    runner = api.submit("progress", str(progress_file), params={"seconds": 60})["id"]
    api.wait_state(runner, "RUNNING")
    wait_for(lambda: lines(progress_file) >= 3, DONE_S, "the task to write progress")
    follower = api.echo("next")
    assert api.state(follower) == "WAITING"

    killed_at = time.monotonic()
    response = api.http.post(f"/api/v1/tasks/{runner}/kill")
    assert response.status_code == 200, response.text
    wait_for(lambda: api.state(runner) == "KILLED", 2.0, "the running task to be KILLED")
    # The slot is freed on the node itself: the waiting task starts and ends there.
    api.wait_state(follower, "SUCCEED", timeout=5.0)
    assert time.monotonic() - killed_at < 5.0 * multiplier()

    task = api.get(runner)
    assert task["state"] == "KILLED" and outcomes(task) == ["killed"]
    # Really stopped: the file, written every 50 ms while the task runs, no longer changes.
    written = lines(progress_file)
    window_end = time.monotonic() + 0.5
    while time.monotonic() < window_end:
        assert lines(progress_file) == written, "the killed task is still writing"
        time.sleep(0.05)


def test_delete_running_task_is_gone_and_frees_its_slot(start: Callable[..., Api]) -> None:
    api = start("--slots", "1", plugins=False)
    runner = api.echo(delay_s=30)
    api.wait_state(runner, "RUNNING")
    follower = api.echo("after delete")
    response = api.http.delete(f"/api/v1/tasks/{runner}")
    assert response.status_code == 204, response.text
    assert api.http.get(f"/api/v1/tasks/{runner}").status_code == 404
    assert api.http.get(f"/api/v1/tasks/{runner}/result").status_code == 404
    api.wait_state(follower, "SUCCEED", timeout=5.0)
    assert api.total("RUNNING") == 0 and api.http.get("/api/v1/tasks").json()["total"] == 1


def test_timeout_ends_in_runtime_error(start: Callable[..., Api]) -> None:
    api = start(plugins=False)
    task_id = api.echo(delay_s=30, timeout_s=0.5)
    task = api.finished(task_id, timeout=10)
    assert task["state"] == "RUNTIME_ERROR"
    assert "timed out" in task["error"]
    assert outcomes(task) == ["timed out"]
    assert task["finished_at"] - task["started_at"] < 5
    assert api.http.get(f"/api/v1/tasks/{task_id}/result").status_code == 404


def test_flaky_task_succeeds_on_its_retry(start: Callable[..., Api]) -> None:
    api = start("--retry-backoff", "0.1")
    retried = api.submit("flaky", "x", max_retries=1)["id"]
    no_retry = api.submit("flaky", "x")["id"]
    task = api.finished(retried)
    assert task["state"] == "SUCCEED", task["error"]
    assert task["attempts"] == 2 and outcomes(task) == ["failed", "succeeded"]
    assert "flaky failure on attempt 1" in task["history"][0]["error"]
    assert api.result(retried)["code"] == "ok on attempt 2" and api.result(retried)["attempt"] == 2

    failed = api.finished(no_retry)
    assert failed["state"] == "RUNTIME_ERROR" and failed["attempts"] == 1
    assert "RuntimeError: flaky failure on attempt 1" in failed["error"]


def test_sync_plugin_function_runs_in_a_worker_process(start: Callable[..., Api]) -> None:
    api = start()
    task_id = api.submit("upper", "shout this", params={"sleep_s": 0.2})["id"]
    task = api.finished(task_id)
    assert task["state"] == "SUCCEED"
    result = api.result(task_id)
    node_pids = {n["pid"] for n in api.http.get("/api/v1/cluster").json()["nodes"]}
    assert result["code"] == "SHOUT THIS" and result["meta"]["pid"] not in node_pids
    attempt = task["history"][0]
    assert attempt["wall_s"] >= 0.2 and attempt["cpu_s"] is not None and attempt["max_rss_bytes"] > 1024 * 1024


def test_plugin_types_are_registered_and_unknown_types_refused(start: Callable[..., Api]) -> None:
    api = start()
    types = api.http.get("/api/v1/types").json()["types"]
    assert {"echo", "fetch", "progress", "flaky", "upper"} <= set(types)
    response = api.http.post("/api/v1/tasks", json={"name": "n", "type": "nobody-runs-this", "target": "x"})
    assert response.status_code == 400
    assert response.json()["error"] == "unknown_task_type" and "nobody-runs-this" in response.json()["message"]
    assert api.http.get("/api/v1/tasks").json()["total"] == 0


def test_plugin_type_unknown_without_its_module(start: Callable[..., Api]) -> None:
    api = start(plugins=False)
    assert "flaky" not in api.http.get("/api/v1/types").json()["types"]
    response = api.http.post("/api/v1/tasks", json={"name": "n", "type": "flaky", "target": "x"})
    assert response.status_code == 400 and "flaky" in response.json()["message"]


def test_missing_task_module_stops_the_node_with_a_message(node_factory: Callable[..., TestNode]) -> None:
    node = node_factory(args=["--task-modules", "no_such_shoal_module"], ready=False)
    code = node.proc.wait(20 * multiplier())
    assert code not in (None, 0)
    assert "no_such_shoal_module" in node.log()


# -- many tasks --------------------------------------------------------------------------------------


def test_slots_bound_how_many_run_at_once(start: Callable[..., Api]) -> None:
    api = start("--slots", "2", plugins=False)
    ids = [api.echo(f"t{i}", delay_s=0.4) for i in range(6)]
    most = 0
    deadline = time.monotonic() + DONE_S * multiplier()
    while True:  # samples the RUNNING count until every task has ended
        running = api.total("RUNNING")
        most = max(most, running)
        assert running <= 2, f"{running} tasks RUNNING on a node with 2 slots"
        if all(api.state(i) in TERMINAL for i in ids):
            break
        assert time.monotonic() < deadline, "the tasks did not end"
        time.sleep(POLL_S)
    assert most == 2
    assert [api.get(i)["state"] for i in ids] == ["SUCCEED"] * 6
    assert sorted(api.result(i)["code"] for i in ids) == [f"t{i}" for i in range(6)]


# -- failures ----------------------------------------------------------------------------------------


def test_node_killed_and_restarted_runs_its_tasks_again(start: Callable[..., Api]) -> None:
    api = start("--slots", "4", plugins=False)
    ids = [api.echo(f"t{i}", delay_s=2) for i in range(3)]
    for task_id in ids:
        api.wait_state(task_id, "RUNNING")
    api.node.kill()
    api.node.start()
    for task_id in ids:
        task = api.finished(task_id)
        assert task["state"] == "SUCCEED", task["error"]
        assert task["attempts"] == 2 and outcomes(task) == ["node lost", "succeeded"]
    assert sorted(api.result(i)["code"] for i in ids) == ["t0", "t1", "t2"]


def test_redis_restart_loses_no_accepted_task(start: Callable[..., Api], redis_server: EmbeddedRedis) -> None:
    api = start("--slots", "2", plugins=False)
    ids = [api.echo(f"t{i}", delay_s=0.3) for i in range(6)]
    api.wait_state(ids[0], "RUNNING")
    try:
        redis_server.stop()
        down_since = time.monotonic()
        wait_for(lambda: api.http.get("/readyz").status_code != 200, 10, "the node to see the store gone")
        # The outage itself lasts a second, so that running tasks end (and must report) while it lasts.
        time.sleep(max(0.0, down_since + OUTAGE_S - time.monotonic()))
    finally:
        redis_server.start()
    wait_for(lambda: api.http.get("/readyz").status_code == 200, 15, "the node to reconnect")
    for task_id in ids:
        task = api.finished(task_id, timeout=30)
        assert task["state"] == "SUCCEED", task
    assert sorted(api.result(i)["code"] for i in ids) == [f"t{i}" for i in range(6)]


def test_sigterm_lets_running_tasks_finish_and_loses_none(start: Callable[..., Api]) -> None:
    api = start("--slots", "2", plugins=False)
    ids = [api.echo(f"t{i}", delay_s=1) for i in range(4)]

    def two_running() -> list[str] | None:
        running = [i for i in ids if api.state(i) == "RUNNING"]
        return running if len(running) == 2 else None

    running = wait_for(two_running, DONE_S, "two tasks RUNNING") or []
    assert api.node.stop() == 0
    api.node.start()
    for task_id in ids:
        task = api.finished(task_id)
        assert task["state"] == "SUCCEED", task["error"]
    for task_id in running:  # finished within the grace period, on the first life of the node
        assert api.get(task_id)["attempts"] == 1 and outcomes(api.get(task_id)) == ["succeeded"]


def test_sigterm_past_the_grace_hands_running_tasks_back(start: Callable[..., Api]) -> None:
    api = start("--slots", "2", "--shutdown-grace", "0.2", plugins=False)
    ids = [api.echo(f"t{i}", delay_s=1.5) for i in range(2)]
    for task_id in ids:
        api.wait_state(task_id, "RUNNING")
    assert api.node.stop() == 0
    api.node.start()
    for task_id in ids:
        task = api.finished(task_id)
        assert task["state"] == "SUCCEED", task["error"]
        assert task["attempts"] == 2 and outcomes(task) == ["handed back", "succeeded"]
