"""The REST API of a real node, as an HTTP user sees it: every route, every refusal, the event stream.

Each refusal also checks that nothing changed: the task count and every task's state are the same after.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest

from shoal import validation
from shoal.models import DEFAULT_MAX_LOST_ATTEMPTS
from shoal.testing import wait_for

pytestmark = pytest.mark.e2e

SCALE = float(os.environ.get("SHOAL_TEST_MULTIPLIER", "1"))
DONE_S = min(60.0, 20.0 * SCALE)
UNKNOWN_ID = str(uuid.UUID(int=0x5E1F))
TASK_KEYS = {"id", "name", "type", "target", "params", "state", "node", "attempts", "created_at", "started_at"}
TASK_KEYS |= {"finished_at", "error", "max_retries", "timeout_s", "history"}
TASK_KEYS |= {"max_lost_attempts", "lost_attempts", "attempts_dropped", "memory_mb", "cpu_s_limit"}
ATTEMPT_KEYS = {"number", "node", "started_at", "finished_at", "outcome", "error"}
ATTEMPT_KEYS |= {"wall_s", "cpu_s", "max_rss_bytes", "exit_code", "signal", "loop_blocked_s", "epoch"}


@pytest.fixture
def api(shoal_node: Any) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {shoal_node.token}"}
    with httpx.Client(base_url=shoal_node.http_url, headers=headers, timeout=DONE_S + 30) as client:
        yield client


def submit(api: httpx.Client, url: str, name: str = "page", **extra: Any) -> dict[str, Any]:
    response = api.post("/api/v1/tasks", json={"name": name, "type": "fetch", "target": url, **extra})
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def finished(api: httpx.Client, task_id: str) -> dict[str, Any]:
    """The task once terminal, by long poll."""
    deadline = time.monotonic() + DONE_S
    while True:
        task: dict[str, Any] = api.get(f"/api/v1/tasks/{task_id}", params={"wait": DONE_S}).json()
        if task["state"] in ("SUCCEED", "RUNTIME_ERROR", "KILLED") or time.monotonic() > deadline:
            return task


def running(api: httpx.Client, task_id: str) -> None:
    wait_for(lambda: api.get(f"/api/v1/tasks/{task_id}").json()["state"] == "RUNNING", DONE_S, "task RUNNING")


def snapshot(api: httpx.Client) -> tuple[int, list[tuple[str, str]]]:
    """The count and the (id, state) of every task: what a refused request must leave alone."""
    page = api.get("/api/v1/tasks", params={"limit": validation.MAX_PAGE}).json()
    return page["total"], sorted((t["id"], t["state"]) for t in page["tasks"])


def test_submit_get_result_and_list(api: httpx.Client, origin: Any) -> None:
    created = submit(api, f"{origin.url}/hello", params={"n": 3}, max_retries=1, timeout_s=20, max_lost_attempts=4)
    assert TASK_KEYS <= set(created)
    assert (created["max_lost_attempts"], created["lost_attempts"], created["attempts_dropped"]) == (4, 0, 0)
    assert uuid.UUID(created["id"])
    assert (created["name"], created["type"], created["target"]) == ("page", "fetch", f"{origin.url}/hello")
    assert created["params"] == {"n": 3} and created["max_retries"] == 1 and created["timeout_s"] == 20
    assert created["state"] in ("WAITING", "INQUEUE", "RUNNING", "SUCCEED")
    assert isinstance(created["created_at"], float)

    done = finished(api, created["id"])
    assert done["state"] == "SUCCEED", done["error"]
    assert done["node"] and done["attempts"] >= 1 and done["finished_at"] >= done["started_at"]
    assert done["history"] and all(set(a) == ATTEMPT_KEYS for a in done["history"]), done["history"]
    assert done["max_lost_attempts"] == 4
    default = submit(api, f"{origin.url}/hello", name="defaults")
    assert default["max_lost_attempts"] == DEFAULT_MAX_LOST_ATTEMPTS
    assert finished(api, default["id"])["state"] == "SUCCEED"

    result = api.get(f"/api/v1/tasks/{created['id']}/result")
    assert result.status_code == 200
    body = result.json()
    assert body["code"] == "hello shoal"
    assert body["task_id"] == created["id"] and body["node"] == done["node"]
    assert {"attempt", "finished_at", "meta", "duplicates"} <= set(body)

    page = api.get("/api/v1/tasks").json()
    assert page["total"] == 2 and page["next_cursor"] is None
    assert [t["id"] for t in page["tasks"]] == [default["id"], created["id"]]
    assert api.get("/api/v1/tasks", params={"state": "succeed"}).json()["total"] == 2
    assert api.get("/api/v1/tasks", params={"state": "RUNNING"}).json() == {
        "tasks": [],
        "total": 0,
        "next_cursor": None,
    }


def test_list_pages_newest_first_and_total_counts_the_filter(api: httpx.Client, origin: Any) -> None:
    ids = [submit(api, f"{origin.url}/hello", name=f"t{i}")["id"] for i in range(5)]
    for task_id in ids:
        assert finished(api, task_id)["state"] == "SUCCEED"
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = api.get("/api/v1/tasks", params=params).json()
        assert page["total"] == 5 and len(page["tasks"]) <= 2
        seen += [t["id"] for t in page["tasks"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == list(reversed(ids))


def test_long_polls_answer_when_the_task_ends(api: httpx.Client, origin: Any) -> None:
    quick = api.post(
        "/api/v1/tasks", params={"wait": DONE_S}, json={"name": "q", "type": "fetch", "target": f"{origin.url}/hello"}
    )
    assert quick.status_code == 201 and quick.json()["state"] == "SUCCEED"

    slow = submit(api, f"{origin.url}/slow?s=1.5")
    missing = api.get(f"/api/v1/tasks/{slow['id']}/result")
    assert missing.status_code == 404 and missing.json()["error"] == "result_not_found"
    waited = api.get(f"/api/v1/tasks/{slow['id']}/result", params={"wait": DONE_S})
    assert waited.status_code == 200 and waited.json()["code"] == "slow done"

    short = submit(api, f"{origin.url}/slow?s=30")
    started = time.monotonic()
    polled = api.get(f"/api/v1/tasks/{short['id']}", params={"wait": 0.5})
    assert polled.status_code == 200 and polled.json()["state"] in ("WAITING", "INQUEUE", "RUNNING")
    assert time.monotonic() - started < 10 * SCALE
    assert api.post(f"/api/v1/tasks/{short['id']}/kill").status_code == 200  # not left running for the teardown


def test_kill_delete_and_illegal_changes(api: httpx.Client, origin: Any) -> None:
    task = submit(api, f"{origin.url}/slow?s=60")
    running(api, task["id"])
    killed = api.post(f"/api/v1/tasks/{task['id']}/kill")
    assert killed.status_code == 200 and killed.json()["state"] == "KILLED"

    before = snapshot(api)
    again = api.post(f"/api/v1/tasks/{task['id']}/kill")
    assert again.status_code == 409
    assert again.json()["error"] == "illegal_transition" and "KILLED" in again.json()["message"]
    assert snapshot(api) == before

    assert api.delete(f"/api/v1/tasks/{task['id']}").status_code == 204
    gone = api.get(f"/api/v1/tasks/{task['id']}")
    assert gone.status_code == 404 and gone.json()["error"] == "task_not_found"
    assert api.get("/api/v1/tasks").json()["total"] == 0


def test_bulk_kill_and_delete_say_which_worked(api: httpx.Client, origin: Any) -> None:
    a, b = (submit(api, f"{origin.url}/slow?s=60", name=n)["id"] for n in ("a", "b"))
    killed = api.post("/api/v1/tasks/kill", json={"ids": [a, b, UNKNOWN_ID]})
    assert killed.status_code == 200
    assert killed.json() == {"succeed": {a: True, b: True, UNKNOWN_ID: False}}
    assert {t["state"] for t in api.get("/api/v1/tasks").json()["tasks"]} == {"KILLED"}

    deleted = api.post("/api/v1/tasks/delete", json={"ids": [a, UNKNOWN_ID]})
    assert deleted.json() == {"succeed": {a: True, UNKNOWN_ID: False}}
    assert [t["id"] for t in api.get("/api/v1/tasks").json()["tasks"]] == [b]


def test_refusals_change_nothing(api: httpx.Client, shoal_node: Any, origin: Any) -> None:
    kept = submit(api, f"{origin.url}/hello")
    assert finished(api, kept["id"])["state"] == "SUCCEED"
    before = snapshot(api)
    url = f"{origin.url}/hello"
    big = orjson.dumps({"name": "x" * validation.MAX_BODY_BYTES, "type": "fetch", "target": url})
    wrong, no_token = {"Authorization": "Bearer wrong"}, {"Authorization": ""}

    def spec(**fields: Any) -> dict[str, Any]:
        return {"json": {k: v for k, v in {"name": "n", "type": "fetch", "target": url, **fields}.items() if v != ...}}

    tasks, one, unknown = "/api/v1/tasks", f"/api/v1/tasks/{kept['id']}", f"/api/v1/tasks/{UNKNOWN_ID}"
    cases: list[tuple[str, str, dict[str, Any], int, str, str]] = [
        ("POST", tasks, spec(name=...), 400, "invalid_input", "is required"),
        ("POST", tasks, spec(target=...), 400, "invalid_input", "is required"),
        ("POST", tasks, spec(name=" "), 400, "invalid_input", "is required"),
        ("POST", tasks, spec(type="nosuchtype"), 400, "unknown_task_type", "nosuchtype"),
        ("POST", tasks, spec(target="not a url"), 400, "invalid_input", ""),
        ("POST", tasks, {"content": b'{"name": "n", '}, 400, "invalid_input", "malformed JSON"),
        ("POST", tasks, spec(max_retries="lots"), 400, "invalid_input", "max_retries"),
        ("POST", tasks, spec(max_lost_attempts=0), 400, "invalid_input", "max_lost_attempts must be between 1"),
        ("POST", tasks, {"content": big}, 413, "body_too_large", "limit"),
        ("POST", tasks, {**spec(), "headers": wrong}, 401, "unauthorized", ""),
        ("POST", tasks, {**spec(), "headers": no_token}, 401, "unauthorized", ""),
        ("GET", f"{tasks}/12345", {}, 400, "invalid_input", "malformed task id"),
        ("GET", unknown, {}, 404, "task_not_found", UNKNOWN_ID),
        ("GET", f"{unknown}/result", {}, 404, "task_not_found", UNKNOWN_ID),
        ("POST", f"{tasks}/12345/kill", {}, 400, "invalid_input", "malformed task id"),
        ("POST", f"{unknown}/kill", {}, 404, "task_not_found", ""),
        ("POST", f"{one}/kill", {}, 409, "illegal_transition", "SUCCEED"),
        ("DELETE", f"{tasks}/12345", {}, 400, "invalid_input", "malformed task id"),
        ("DELETE", unknown, {}, 404, "task_not_found", ""),
        ("DELETE", one, {"headers": wrong}, 401, "unauthorized", ""),
        (
            "POST",
            f"{tasks}/delete",
            {"json": {"ids": [kept["id"], "12345"]}},
            400,
            "invalid_input",
            "malformed task id",
        ),
        ("POST", f"{tasks}/kill", {"json": {"ids": "all"}}, 400, "invalid_input", "ids"),
        ("GET", tasks, {"params": {"state": "DONE"}}, 400, "invalid_input", "unknown state"),
        ("GET", tasks, {"params": {"limit": "ten"}}, 400, "invalid_input", "limit"),
        ("GET", "/api/v1/nothing", {}, 404, "not_found", "no such route"),
        ("PATCH", one, {}, 405, "method_not_allowed", "PATCH"),
    ]
    for method, path, kwargs, status, kind, says in cases:
        response = api.request(method, path, **kwargs)
        assert response.status_code == status, (method, path, response.text)
        body = response.json()
        assert body["error"] == kind, (method, path, body)
        assert says in body["message"] and body["message"], (method, path, body)
        assert "Traceback" not in response.text
        if status == 401:
            assert response.headers["www-authenticate"] == "Bearer"
        assert snapshot(api) == before, (method, path)
    assert api.get(f"/api/v1/tasks/{kept['id']}/result").json()["code"] == "hello shoal"


def test_cluster_types_probes_and_metrics(api: httpx.Client, shoal_node: Any) -> None:
    cluster = api.get("/api/v1/cluster").json()
    assert cluster["master"] == shoal_node.name and cluster["epoch"] >= 1
    (node,) = [n for n in cluster["nodes"] if n["name"] == shoal_node.name]
    assert {"name", "host", "http", "grpc", "state", "role", "slots", "running", "pid", "last_beat"} <= set(node)
    assert (node["state"], node["role"]) == ("alive", "master")
    assert node["http"].endswith(":" + shoal_node.http_url.rsplit(":", 1)[1])
    assert "fetch" in api.get("/api/v1/types").json()["types"]

    with httpx.Client(base_url=shoal_node.http_url, timeout=10) as anonymous:
        assert anonymous.get("/healthz").json() == {"status": "ok", "node": shoal_node.name, "pid": shoal_node.pid}
        ready = anonymous.get("/readyz")
        assert ready.status_code == 200 and ready.json()["status"] == "ready"
        assert (ready.json()["node"], ready.json()["pid"]) == (shoal_node.name, shoal_node.pid)
        assert anonymous.get("/metrics").status_code == 401
        doc = anonymous.get("/openapi.json").json()
        assert {"/api/v1/tasks", "/api/v1/tasks/{task_id}", "/api/v1/events", "/api/v1/cluster"} <= set(doc["paths"])
    metrics = api.get("/metrics")
    assert metrics.status_code == 200 and metrics.headers["content-type"].startswith("text/plain")
    assert 'shoal_http_requests_total{method="GET",route="/api/v1/cluster",status="200"}' in metrics.text


def _metric(api: httpx.Client, name: str) -> float:
    for line in api.get("/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


def test_event_stream_delivers_a_tasks_state_changes(api: httpx.Client, shoal_node: Any, origin: Any) -> None:
    events: dict[str, list[str]] = {}
    connected, finished_event = threading.Event(), threading.Event()
    failure: list[BaseException] = []
    watched: list[str] = []

    def listen() -> None:
        headers = {"Authorization": f"Bearer {shoal_node.token}"}
        try:
            with httpx.Client(base_url=shoal_node.http_url, headers=headers, timeout=DONE_S + 20) as client:
                with client.stream("GET", "/api/v1/events") as response:
                    assert response.status_code == 200
                    assert response.headers["content-type"].startswith("text/event-stream")
                    event = ""
                    for line in response.iter_lines():
                        if line == ": connected":
                            connected.set()
                        elif line.startswith("event: "):
                            event = line[7:]
                        elif line.startswith("data: ") and event == "task":
                            data = orjson.loads(line[6:])
                            assert data["kind"] == "task" and {"id", "state", "node", "at"} <= set(data)
                            events.setdefault(data["id"], []).append(data["state"])
                            if watched and data["id"] == watched[0] and data["state"] in ("SUCCEED", "RUNTIME_ERROR"):
                                finished_event.set()
                                return
        except BaseException as exc:  # reported to the test below
            failure.append(exc)

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    assert connected.wait(DONE_S), "the event stream did not open"
    assert _metric(api, "shoal_event_streams") == 1

    # events are hints sent from now on: prove the stream is live with probe tasks before the real one
    probes: list[str] = []

    def probe_seen() -> bool:
        if not any(p in events for p in probes):
            probes.append(submit(api, f"{origin.url}/hello", name="probe")["id"])
        return any(p in events for p in probes)

    wait_for(probe_seen, DONE_S, "a probe task's event on the stream")
    watched.append(submit(api, f"{origin.url}/slow?s=1")["id"])
    assert finished_event.wait(DONE_S + 10), events.get(watched[0])
    listener.join(10)
    assert not failure, failure
    states = events[watched[0]]
    assert states[0] == "WAITING" and states[-1] == "SUCCEED" and "RUNNING" in states, states
    order = ["WAITING", "INQUEUE", "RUNNING", "SUCCEED"]
    assert [order.index(s) for s in states] == sorted(order.index(s) for s in states), states
    # the client went away: the server ends the stream and stops watching for it
    wait_for(lambda: _metric(api, "shoal_event_streams") == 0, DONE_S, "the closed stream released")
