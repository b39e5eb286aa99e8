"""A submit that waits for its task's end (``TaskService.submit_and_wait``: gRPC ``wait_s``, REST ``?wait=``,
``Producer.run``) leaves out the read a wait starts with only while it cannot have missed the end.

In process, on a real store: a node record beats so that submits are taken, no node runs anything, and a
kill stands in for a task that ends at once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from shoal.models import NodeRecord, Task, TaskSpec, TaskState
from shoal.producer import Producer
from shoal.testing import multiplier

ECHO = TaskSpec(name="echo", type="echo", target="x")


@pytest.fixture
async def producer(redis_url: str) -> AsyncIterator[Producer]:
    async with await Producer.connect(redis_url) as made:
        service = made._tasks
        await service.registry.beat(
            NodeRecord(name="n1", host="127.0.0.1", http="127.0.0.1:1", grpc="127.0.0.1:2", slots=1, running=1,
                       pid=1, types=("echo",), run_tasks=False, last_beat=0.0, incarnation=1)
        )  # fmt: skip
        yield made


async def _ended_heard(made: Producer, before: int) -> None:
    async with asyncio.timeout(10 * multiplier()):
        while made._tasks.hub.ends_heard == before:
            await asyncio.sleep(0.01)


async def test_a_task_that_ends_while_its_submit_is_answered_is_answered_at_once(producer: Producer) -> None:
    service = producer._tasks
    real_submit = service._store_one

    async def submit_then_end(spec: TaskSpec, near: str | None) -> tuple[Task, bool]:
        """The submit's answer comes after the task has ended and the node has heard it: as when a task
        ends faster than the answer reaches the caller."""
        task, stored = await real_submit(spec, near)
        heard = service.hub.ends_heard
        await service.store.kill(task.id)
        await _ended_heard(producer, heard)
        return task, stored

    service._store_one = submit_then_end  # type: ignore[method-assign]
    await producer.run("echo", "warm", timeout_s=0.01)  # the hub subscribes
    began = time.monotonic()
    task, stored, _ = await service.submit_and_wait(ECHO, 30)
    took = time.monotonic() - began
    assert task.state is TaskState.KILLED and stored
    # a wait that missed the end would look again only after a second; this one read at once
    assert took < 0.9, f"answered after {took:.2f} s"


async def test_a_task_that_ends_later_is_answered_when_it_ends(producer: Producer) -> None:
    service = producer._tasks
    await producer.run("echo", "warm", timeout_s=0.01)
    ended: list[Any] = []

    async def end_soon() -> None:
        while not service.hub._waiters:
            await asyncio.sleep(0.005)
        (task_id,) = service.hub._waiters
        await service.store.kill(task_id)
        ended.append(task_id)

    killer = asyncio.create_task(end_soon())
    task, stored, found = await service.submit_and_wait(ECHO, 30)
    await killer
    assert (task.id, task.state, stored, found) == (ended[0], TaskState.KILLED, True, None)
