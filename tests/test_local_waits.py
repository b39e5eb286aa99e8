"""A wait for a task's end on the node that runs it is answered with the task its worker read back as it
reported the end, in the same store call: no read of its own, no wait for the end's event.

In process, on a real store: a producer's task service (whose event hub is not even running, so that no
event can answer the wait) and a worker on the same event loop, as a node has them.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from shoal.models import AttemptOutcome, NodeRecord, TaskResult, TaskSpec, TaskState
from shoal.producer import Producer
from shoal.store.nodes import NodeRegistry
from shoal.store.tasks import Report, TaskStore
from shoal.testing import multiplier
from shoal.worker.executor import Executor
from shoal.worker.handlers import TaskContext, TaskTypes

NODE = "n1"


@pytest.fixture
async def producer(redis_url: str) -> AsyncIterator[Producer]:
    async with await Producer.connect(redis_url) as made:
        await made._tasks.registry.beat(
            NodeRecord(name=NODE, host="127.0.0.1", http="127.0.0.1:1", grpc="127.0.0.1:2", slots=1, running=0,
                       pid=1, types=("echo", "fail"), run_tasks=True, last_beat=0.0, incarnation=1)
        )  # fmt: skip
        yield made


def _worker_store(producer: Producer) -> TaskStore:
    """The producer's store as a node's worker has it (a producer keeps no results of its own)."""
    service = producer._tasks
    return TaskStore(service.store.redis, service.store.keys, result_max_bytes=4096)


async def _place(store: TaskStore, task_ids: list[str]) -> None:
    epoch = (await NodeRegistry(store.redis, store.keys).take_lease("master", 30.0)).epoch
    assert await store.place(epoch, NODE, len(task_ids), task_ids) == [1] * len(task_ids)


async def test_a_report_reads_back_the_tasks_it_ends_as_a_read_would_find_them(producer: Producer) -> None:
    store = _worker_store(producer)
    done, failed, retried, unasked = await store.create(
        [
            TaskSpec(name=n, type="echo", target=n, max_retries=1 if n == "retried" else 0)
            for n in ("done", "failed", "retried", "unasked")
        ]  # fmt: skip
    )
    child = (await store.create([TaskSpec(name="child", type="echo", target="c", depends_on=[done.id])]))[0]
    ids = [done.id, failed.id, retried.id, unasked.id]
    await _place(store, ids)
    await store.begin_many(NODE, [(task_id, False) for task_id in ids])
    value = TaskResult(done.id, "ok", NODE, 1, 0.0, {"k": 1}, 0)
    finishes = await store.finish_many(
        NODE,
        [
            Report(done.id, 1, AttemptOutcome.SUCCEEDED, result=value),
            Report(failed.id, 1, AttemptOutcome.FAILED, error="ValueError: no"),
            Report(retried.id, 1, AttemptOutcome.FAILED, error="ValueError: again"),
            Report(unasked.id, 1, AttemptOutcome.SUCCEEDED, result=None),
        ],
        read_back={done.id, failed.id, retried.id},
    )
    assert [(f.verdict, f.state) for f in finishes[::3]] == [("done", "SUCCEED"), ("done", "SUCCEED")]
    assert (finishes[1].verdict, finishes[2].verdict) == ("done", "retry")
    # the ended ones asked for come back exactly as a read after the call finds them (the child released)
    for finish, task_id in zip(finishes[:2], ids, strict=False):
        assert finish.ended == await store.get_with_result(task_id)
    ended, result = finishes[0].ended or (None, None)
    assert ended is not None and result is not None
    assert (ended.state, result.code, result.meta, ended.children) == (TaskState.SUCCEED, "ok", {"k": 1}, (child.id,))
    assert (await store.get(child.id)).state is TaskState.WAITING  # released by its parent's end
    assert [a.outcome for a in ended.history] == [AttemptOutcome.SUCCEEDED]
    # one that goes on (a retry), and one nobody asked for, come back without it
    assert (finishes[2].ended, finishes[3].ended) == (None, None)


async def _worker(producer: Producer, store: TaskStore) -> Executor:
    """A worker of node NODE running echo on the producer's loop, its ends handed to the producer's waits."""
    types = TaskTypes()

    async def echo(ctx: TaskContext) -> str:
        return ctx.target

    types.add("echo", echo)
    worker = Executor(store=store, types=types, node=NODE, slots=1, retry_backoff=1.0, waits=producer._tasks.hub)
    await worker.recover()
    return worker


async def _starting_here(producer: Producer, store: TaskStore) -> tuple[Executor, int]:
    """The producer's service given a worker of node NODE, as a node that runs tasks has it (its inbox is
    never read here), and a roster on which NODE has room: a waited submit starts there. The master's epoch."""
    worker = await _worker(producer, store)
    producer._tasks.worker = worker
    epoch = (await NodeRegistry(store.redis, store.keys).take_lease("master", 30.0)).epoch
    await store.publish_roster(epoch, [(NODE, 1, ["echo"])], [], 30)
    return worker, epoch


def _count_reads(producer: Producer) -> tuple[list[str], Any]:
    """The ids the service reads a task of (``get_with_result``) from now on, and the uncounted read."""
    store, reads = producer._tasks.store, list[str]()
    read = store.get_with_result

    async def counted(task_id: str, **options: Any) -> Any:
        reads.append(task_id)
        return await read(task_id, **options)

    store.get_with_result = counted  # type: ignore[method-assign]
    return reads, read


async def test_a_wait_on_the_node_that_runs_the_task_needs_no_read(producer: Producer) -> None:
    service, store = producer._tasks, _worker_store(producer)
    worker = await _worker(producer, store)
    reads, read = _count_reads(producer)
    runner = asyncio.create_task(worker.run())
    try:
        waiting = asyncio.create_task(service.submit_and_wait(TaskSpec(name="echo", type="echo", target="x"), 30))
        async with asyncio.timeout(10 * multiplier()):
            while not service.hub._waiters:
                await asyncio.sleep(0.005)
        (task_id,) = service.hub._waiters
        await _place(store, [task_id])
        async with asyncio.timeout(10 * multiplier()):  # a wait that read would be answered after a second
            task, stored, found = await waiting
    finally:
        await worker.close(grace=0)
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
    assert reads == []
    assert (task.id, task.state, stored, found and found.code) == (task_id, TaskState.SUCCEED, True, "x")
    assert (task, found) == await read(task_id)


async def test_a_waited_submit_runs_on_the_node_that_waits_with_no_order_and_no_read(producer: Producer) -> None:
    service, store = producer._tasks, _worker_store(producer)
    worker, epoch = await _starting_here(producer, store)
    reads, _ = _count_reads(producer)
    try:
        async with asyncio.timeout(10 * multiplier()):
            task, stored, found = await service.submit_and_wait(TaskSpec(name="echo", type="echo", target="y"), 30)
    finally:
        await worker.close(grace=0)
    assert (task.state, task.node, stored, found and found.code, reads) == (TaskState.SUCCEED, NODE, True, "y", [])
    assert [(a.number, a.node, a.epoch, a.outcome) for a in task.history] == [(1, NODE, epoch, "succeeded")]
    assert await store.redis.xlen(store.keys.inbox(NODE)) == 0


async def test_a_waited_submit_running_here_needs_no_read_though_another_end_was_heard_meanwhile(
    producer: Producer,
) -> None:
    service, store = producer._tasks, _worker_store(producer)
    worker, _epoch = await _starting_here(producer, store)
    submit = service._store_one

    async def submit_as_another_task_ends(spec: TaskSpec, near: str | None) -> Any:
        submitted = await submit(spec, near)
        service.hub.ends_heard += 1  # as the hub counts an end it hears while the submit is under way
        return submitted

    service._store_one = submit_as_another_task_ends  # type: ignore[method-assign]
    reads, _ = _count_reads(producer)
    try:
        async with asyncio.timeout(10 * multiplier()):
            task, _stored, found = await service.submit_and_wait(TaskSpec(name="echo", type="echo", target="z"), 30)
    finally:
        await worker.close(grace=0)
    assert (task.state, task.node, found and found.code, reads) == (TaskState.SUCCEED, NODE, "z", [])
