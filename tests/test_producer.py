"""``shoal.producer.Producer``: tasks submitted straight to the store, as a user sees them: run by a real
node, visible through its API, checked as the API checks them, and refused without a trace when bad."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest

from shoal.errors import InvalidInput, NoLiveNode, StoreUnavailable, UnknownTaskType
from shoal.models import TaskSpec, TaskState
from shoal.producer import Producer
from shoal.testing import TestNode
from shoal.validation import RefusedTask

pytestmark = pytest.mark.e2e


@pytest.fixture
async def producer(shoal_node: TestNode) -> AsyncIterator[Producer]:
    async with await Producer.connect(shoal_node.redis_url) as made:
        yield made


def task_count(node: TestNode) -> int:
    reply = httpx.get(f"{node.http_url}/api/v1/tasks", params={"limit": 1}, headers=node.headers(), timeout=10)
    reply.raise_for_status()
    total: int = reply.json()["total"]
    return total


async def test_a_produced_task_runs_on_a_node_and_shows_in_its_api(shoal_node: TestNode, producer: Producer) -> None:
    task = await producer.submit("echo", "hello", params={"delay_s": 0})
    assert task.name == "echo"
    assert task.state in (TaskState.WAITING, TaskState.INQUEUE)
    ended, result = await producer.wait(task.id, 30)
    assert ended.state is TaskState.SUCCEED
    assert result is not None and result.code == "hello"
    seen = httpx.get(f"{shoal_node.http_url}/api/v1/tasks/{task.id}", headers=shoal_node.headers(), timeout=10)
    assert seen.json()["state"] == "SUCCEED"


async def test_run_answers_the_task_with_its_result(producer: Producer) -> None:
    task, result = await producer.run("echo", "ran", name="greeting", timeout_s=30)
    assert (task.name, task.state) == ("greeting", TaskState.SUCCEED)
    assert result is not None and result.code == "ran"


async def test_many_are_stored_in_order(producer: Producer) -> None:
    specs = [{"type": "echo", "target": f"t{i}"} for i in range(5)]
    specs.append(TaskSpec(name="last", type="echo", target="t5"))
    tasks = await producer.submit_many(specs)
    assert [t.target for t in tasks] == [f"t{i}" for i in range(6)]
    for task in tasks:
        ended, result = await producer.wait(task.id, 30)
        assert ended.state is TaskState.SUCCEED and result is not None and result.code == task.target


@pytest.mark.parametrize(
    ("call", "refusal"),
    [
        (lambda p: p.submit("echo", ""), InvalidInput),
        (lambda p: p.submit("echo", "x", params={"delay_s": "soon"}), InvalidInput),
        (lambda p: p.submit("no such type!", "x"), InvalidInput),
        (lambda p: p.submit("nobody-runs-this", "x"), UnknownTaskType),
        (lambda p: p.submit("fetch", "http://169.254.169.254/latest"), InvalidInput),
        (lambda p: p.submit("echo", "x", max_retries=10_000), InvalidInput),
    ],
)
async def test_a_bad_submit_is_refused_and_stores_nothing(
    shoal_node: TestNode, producer: Producer, call: object, refusal: type[Exception]
) -> None:
    before = task_count(shoal_node)
    with pytest.raises(refusal):
        await call(producer)  # type: ignore[operator]
    assert task_count(shoal_node) == before


async def test_one_bad_spec_refuses_the_batch_with_its_index(shoal_node: TestNode, producer: Producer) -> None:
    before = task_count(shoal_node)
    specs = [TaskSpec(name="ok", type="echo", target="a"), TaskSpec(name="bad", type="echo", target="")]
    with pytest.raises(RefusedTask) as refused:
        await producer.submit_many(specs)
    assert refused.value.index == 1
    assert task_count(shoal_node) == before


async def test_without_a_live_node_a_submit_is_refused(redis_url: str) -> None:
    async with await Producer.connect(redis_url) as producer:
        with pytest.raises(NoLiveNode):
            await producer.submit("echo", "x")


async def test_the_password_may_come_from_a_file(shoal_node: TestNode, tmp_path: Path) -> None:
    parts = urlsplit(shoal_node.redis_url)
    assert parts.password
    secret = tmp_path / "password"
    secret.write_text(parts.password + "\n")
    bare = urlunsplit(parts._replace(netloc=f"{parts.username}@{parts.hostname}:{parts.port}"))
    async with await Producer.connect(bare, password_file=secret) as producer:
        task, _ = await producer.run("echo", "via file", timeout_s=30)
    assert task.state is TaskState.SUCCEED
    secret.write_text("wrong\n")
    with pytest.raises(StoreUnavailable) as refused:
        await Producer.connect(bare, password_file=secret)
    assert "wrong" not in str(refused.value) and parts.password not in str(refused.value)
