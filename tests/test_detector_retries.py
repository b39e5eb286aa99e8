"""The master's failure detector keeps a retry time for each node incarnation it could not reach to verify;
nodes that come and go (a new name each time, or the same name in a new incarnation) must not pile them up.
In-process on the real Redis, with a prober that never reaches anyone."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.asyncio import Redis

from shoal.cluster.detector import Detector
from shoal.keys import Keys
from shoal.rpc.peers import Verdict
from shoal.store.nodes import REJECTED, NodeRecord, NodeRegistry
from shoal.store.tasks import TaskStore
from shoal.testing import multiplier

pytestmark = pytest.mark.e2e

CHURNED = 40


class Unreachable:
    """Every node is out of reach: verification fails as worth trying again later."""

    async def is_alive(self, *args: Any) -> None:
        return None

    async def ask_alive(self, *args: Any) -> bool:
        return False

    async def verify(self, addr: str, expected_name: str, timeout_s: float) -> Verdict:
        return Verdict(False, "unreachable: failed to connect to all addresses", unreachable=True)


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    yield client
    await client.aclose()


def record(name: str, incarnation: int = 1) -> NodeRecord:
    return NodeRecord(
        name=name, host="127.0.0.1", http="127.0.0.1:1", grpc="127.0.0.1:2", slots=8, running=0, pid=1,
        types=("echo",), run_tasks=True, last_beat=0.0, incarnation=incarnation,
    )  # fmt: skip


async def test_retries_of_nodes_that_left_or_came_back_anew_are_forgotten(redis: Redis) -> None:
    keys = Keys("shoal")
    registry = NodeRegistry(redis, keys)
    epoch = (await registry.take_lease("master", 30)).epoch
    detector = Detector(
        registry=registry, store=TaskStore(redis, keys, result_max_bytes=4096), prober=Unreachable(), me="master",
        epoch=epoch, interval=1.0, dead_after=5,
    )  # fmt: skip

    async def rejected(name: str, incarnation: int) -> None:
        """Beat as ``name`` until the detector has tried it and refused it as unreachable."""
        deadline = time.monotonic() + 10 * multiplier()
        while True:
            await registry.beat(record("master"))
            await registry.beat(record(name, incarnation))
            await detector.tick()
            found = await registry.get(name)
            if found is not None and found.state == REJECTED and found.state_incarnation == incarnation:
                return
            assert time.monotonic() < deadline, f"timed out waiting for {name} to be refused"
            await asyncio.sleep(0.02)

    for i in range(CHURNED):  # a node under a new name each time, that leaves again
        await rejected(f"pod-{i}", 1)
        await registry.forget(f"pod-{i}")
    for incarnation in range(1, CHURNED + 1):  # one name, restarting over and over
        await rejected("restarting", incarnation)
    await detector.tick()
    assert sorted(detector._retry_at) == [("restarting", CHURNED)]  # only the incarnation still there
