"""shoal.client against a real node: every call, typed errors, and where it finds the API and the token."""

from __future__ import annotations

import asyncio
import os
import threading
import uuid
from pathlib import Path
from typing import Any

import pytest

from shoal.client import ApiUnreachable, AsyncClient, Client, Lagged, WaitTimeout
from shoal.errors import IllegalTransition, InvalidInput, ResultNotFound, TaskNotFound, Unauthorized, UnknownTaskType
from shoal.models import DEFAULT_MAX_LOST_ATTEMPTS, Attempt, ClusterView, Task, TaskEvent, TaskResult, TaskState
from shoal.testing import free_port, wait_for

pytestmark = pytest.mark.e2e

SCALE = float(os.environ.get("SHOAL_TEST_MULTIPLIER", "1"))
DONE_S = 20.0 * SCALE
UNKNOWN_ID = str(uuid.UUID(int=0xC11E))


@pytest.fixture
def client(shoal_node: Any) -> Any:
    with Client(shoal_node.http_url, shoal_node.token) as c:
        yield c


def test_a_task_as_json_decodes_with_its_attempts_footprint() -> None:
    import orjson

    from shoal.client import _decode

    crashed = Attempt(1, "node-2", 1.0, 2.0, "crashed", "crashed: SIGKILL", wall_s=1.0, cpu_s=0.25,
                      max_rss_bytes=3 * 2**30, signal="SIGKILL")  # fmt: skip
    over = Attempt(2, "node-1", 3.0, 4.0, "over limit", "memory_mb", exit_code=1)
    task = Task(id="ID", name="n", type="t", target="x", params={}, state=TaskState.RUNTIME_ERROR, node="node-1",
                attempts=9, max_retries=1, timeout_s=None, created_at=0.0, started_at=3.0, finished_at=4.0,
                error="memory_mb", history=(crashed, over), max_lost_attempts=2, lost_attempts=1,
                attempts_dropped=7)  # fmt: skip
    body = orjson.loads(orjson.dumps(task.to_json()))
    assert body["history"][0]["max_rss_bytes"] == 3 * 2**30 and body["history"][1]["wall_s"] is None
    assert body["attempts_dropped"] == 7
    assert _decode.task(body) == task


def test_submit_wait_result_and_listing(client: Client, origin: Any) -> None:
    task = client.submit(
        "fetch", f"{origin.url}/hello", params={"k": "v"}, max_retries=2, timeout_s=15, max_lost_attempts=5
    )
    assert isinstance(task, Task) and task.name == "fetch"  # the name defaults to the type
    assert task.params == {"k": "v"} and task.max_retries == 2 and task.timeout_s == 15
    assert task.max_lost_attempts == 5 and task.lost_attempts == 0
    done = client.wait(task.id, DONE_S)
    assert done.state is TaskState.SUCCEED and done.node and done.history
    result = client.result(task.id)
    assert isinstance(result, TaskResult) and result.code == "hello shoal" and result.task_id == task.id
    assert client.get(task.id) == done

    named = client.submit("fetch", f"{origin.url}/hello", name="front page", wait=DONE_S)
    assert named.state is TaskState.SUCCEED and named.name == "front page"
    assert named.max_lost_attempts == DEFAULT_MAX_LOST_ATTEMPTS  # the node's default

    page = client.list(limit=1)
    assert page.total == 2 and [t.id for t in page.tasks] == [named.id] and page.next_cursor
    assert [t.id for t in client.iter_tasks(page_size=1)] == [named.id, task.id]
    assert client.list(state=TaskState.RUNNING).total == 0
    assert client.list(state="succeed").total == 2


def test_waits_time_out_with_a_typed_error(client: Client, origin: Any) -> None:
    slow = client.submit("fetch", f"{origin.url}/slow?s=30")
    with pytest.raises(WaitTimeout) as info:
        client.wait(slow.id, 0.5)
    assert isinstance(info.value, TimeoutError)
    assert info.value.task.id == slow.id and not info.value.task.state.terminal
    with pytest.raises(ResultNotFound):
        client.result(slow.id, wait=0.5)
    client.kill(slow.id)  # not left running for the teardown
    quick = client.submit("fetch", f"{origin.url}/slow?s=1")
    assert client.result(quick.id, wait=DONE_S).code == "slow done"


def test_kill_delete_single_and_many(client: Client, origin: Any) -> None:
    a, b, c = (client.submit("fetch", f"{origin.url}/slow?s=60", name=n) for n in "abc")
    assert client.kill(a.id).state is TaskState.KILLED
    with pytest.raises(IllegalTransition) as info:
        client.kill(a.id)
    assert getattr(info.value, "status", None) == 409 and "KILLED" in info.value.message
    assert client.kill_many([b.id, UNKNOWN_ID]) == {b.id: True, UNKNOWN_ID: False}
    client.delete(a.id)
    with pytest.raises(TaskNotFound):
        client.get(a.id)
    assert client.delete_many([b.id, c.id, UNKNOWN_ID]) == {b.id: True, c.id: True, UNKNOWN_ID: False}
    assert client.list().total == 0


def test_errors_come_back_as_shoal_errors(client: Client, shoal_node: Any, origin: Any) -> None:
    with pytest.raises(UnknownTaskType) as unknown:
        client.submit("nosuchtype", f"{origin.url}/hello")
    assert "nosuchtype" in unknown.value.message
    with pytest.raises(InvalidInput, match="is required"):
        client.submit("fetch", "")
    with pytest.raises(InvalidInput, match="malformed task id"):
        client.get("../cluster")  # refused before it could reach another path
    with pytest.raises(TaskNotFound):
        client.result(UNKNOWN_ID)
    with Client(shoal_node.http_url, "wrong-token") as stranger, pytest.raises(Unauthorized):
        stranger.list()
    assert client.list().total == 0


def test_cluster_health_and_types(client: Client, shoal_node: Any) -> None:
    view = client.cluster()
    assert isinstance(view, ClusterView) and view.master == shoal_node.name
    assert [n.role for n in view.nodes if n.name == shoal_node.name] == ["master"]
    assert "fetch" in client.types()
    assert client.health() == {"status": "ok", "node": shoal_node.name, "pid": shoal_node.pid}
    assert client.ready()[0] is True


def test_unreachable_api_names_the_url() -> None:
    port = free_port()  # nothing listens there
    with Client(f"http://127.0.0.1:{port}", "t") as c, pytest.raises(ApiUnreachable) as info:
        c.list()
    assert f"http://127.0.0.1:{port}" in str(info.value) and "refused" in str(info.value)


def test_api_and_token_from_environment_then_token_file(
    shoal_node: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("SHOAL_API", shoal_node.http_url)
    monkeypatch.setenv("SHOAL_TOKEN", shoal_node.token)
    with Client() as c:
        assert c.base_url == shoal_node.http_url and c.list().total == 0

    monkeypatch.delenv("SHOAL_TOKEN")
    monkeypatch.chdir(tmp_path)
    with Client() as c, pytest.raises(Unauthorized):
        c.list()  # no token anywhere
    (tmp_path / ".shoal").mkdir()
    (tmp_path / ".shoal" / "token").write_text(shoal_node.token + "\n")
    with Client() as c:
        assert c.list().total == 0


async def test_async_client_and_event_stream(shoal_node: Any, origin: Any) -> None:
    async with AsyncClient(shoal_node.http_url, shoal_node.token) as c:
        events: dict[str, list[TaskState]] = {}

        async def follow() -> None:
            async for item in c.events():
                assert isinstance(item, TaskEvent | Lagged)
                if isinstance(item, TaskEvent):
                    events.setdefault(item.id, []).append(item.state)

        follower = asyncio.create_task(follow())
        try:
            # events flow from the moment the stream is live: submit probes until one is seen
            deadline = asyncio.get_running_loop().time() + DONE_S
            probes: list[str] = []
            while not any(p in events for p in probes):
                assert asyncio.get_running_loop().time() < deadline, "no event arrived on the stream"
                probes.append((await c.submit("fetch", f"{origin.url}/hello", name="probe")).id)
                await c.wait(probes[-1], DONE_S)
            task = await c.submit("fetch", f"{origin.url}/slow?s=1")
            done = await c.wait(task.id, DONE_S)
            assert done.state is TaskState.SUCCEED
            while TaskState.SUCCEED not in events.get(task.id, []):
                assert asyncio.get_running_loop().time() < deadline, events.get(task.id)
                await asyncio.sleep(0.05)
        finally:
            follower.cancel()
        assert events[task.id][0] is TaskState.WAITING and TaskState.RUNNING in events[task.id]
        assert (await c.result(task.id)).code == "slow done"
        assert [t.id async for t in c.iter_tasks()][0] == task.id
        assert (await c.cluster()).master == shoal_node.name


async def test_async_unreachable_api_names_the_url() -> None:
    port = free_port()  # nothing listens there
    async with AsyncClient(f"http://127.0.0.1:{port}", "t") as c:
        with pytest.raises(ApiUnreachable) as info:
            await c.get(UNKNOWN_ID)
    assert f"http://127.0.0.1:{port}" in str(info.value) and "connection refused" in str(info.value)


def test_sync_event_stream(client: Client, shoal_node: Any, origin: Any) -> None:
    seen: dict[str, list[TaskState]] = {}
    stop = threading.Event()

    def follow() -> None:
        with Client(shoal_node.http_url, shoal_node.token) as listener:
            for item in listener.events():
                if isinstance(item, TaskEvent):
                    seen.setdefault(item.id, []).append(item.state)
                if stop.is_set():
                    return

    thread = threading.Thread(target=follow, daemon=True)
    thread.start()
    probes: list[str] = []

    def probe_seen() -> bool:
        if not any(p in seen for p in probes):
            probes.append(client.submit("fetch", f"{origin.url}/hello", name="probe").id)
        return any(p in seen for p in probes)

    wait_for(probe_seen, DONE_S, "a probe task's event")
    task = client.submit("fetch", f"{origin.url}/hello")
    wait_for(lambda: TaskState.SUCCEED in seen.get(task.id, []), DONE_S, "the task's SUCCEED event")
    stop.set()
    client.submit("fetch", f"{origin.url}/hello")  # one more event lets the follower see ``stop``
    thread.join(DONE_S)
    assert not thread.is_alive()
    assert seen[task.id][0] is TaskState.WAITING
