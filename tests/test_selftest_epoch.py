"""Each attempt records the master epoch of the placement that led to it (start.lua copies the task's
``epoch``), so that ``shoal selftest`` can check placements against the master's terms. Against a real
Redis, in-process; and through the gRPC conversion."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from shoal.keys import Keys
from shoal.models import Attempt, TaskSpec
from shoal.rpc import convert
from shoal.store.nodes import NodeRegistry
from shoal.store.tasks import TaskStore


@pytest.fixture
async def stores(redis_admin_url: str) -> AsyncIterator[tuple[TaskStore, NodeRegistry]]:
    redis = Redis.from_url(redis_admin_url)
    keys = Keys("epochs")
    try:
        yield TaskStore(redis, keys, result_max_bytes=4096), NodeRegistry(redis, keys)
    finally:
        await redis.aclose()


async def test_every_attempt_keeps_the_epoch_of_its_placement(stores: tuple[TaskStore, NodeRegistry]) -> None:
    tasks, nodes = stores
    task_id = (await tasks.create([TaskSpec(name="t", type="echo", target="x", max_retries=1)]))[0].id
    first = (await nodes.take_lease("m1", 30.0)).epoch
    assert await tasks.place(first, "n1", 4, [task_id]) == [1]
    attempt = await tasks.start(task_id, "n1")
    assert attempt == 1
    running = await tasks.get(task_id)
    assert [a.epoch for a in running.history] == [first]

    # The attempt fails and is retried; a new master (a higher epoch) places the retry.
    await tasks.finish(task_id, "n1", attempt, "failed", error="boom", backoff=0.0)
    await nodes.release_lease("m1")
    second = (await nodes.take_lease("m2", 30.0)).epoch
    assert second > first
    while (await tasks.promote_due()) is not None:
        pass
    assert await tasks.place(second, "n2", 4, [task_id]) == [1]
    assert await tasks.start(task_id, "n2") == 2
    task = await tasks.get(task_id)
    assert [(a.number, a.node, a.epoch) for a in task.history] == [(1, "n1", first), (2, "n2", second)]


def test_the_attempt_epoch_survives_grpc() -> None:
    attempt = Attempt(number=2, node="node-1", started_at=1700000000.5, epoch=7)
    assert convert._attempt_from_proto(convert._attempt_to_proto(attempt)) == attempt
    unset = Attempt(number=1, node="node-1", started_at=1700000000.5)
    assert convert._attempt_from_proto(convert._attempt_to_proto(unset)).epoch is None
