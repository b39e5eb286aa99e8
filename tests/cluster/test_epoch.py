"""The master's term and its epoch when the store loses writes: the epoch never goes backwards, and a
master whose duties stopped steps down instead of renewing its lease with nothing behind it.

Two ways in, both on a real Redis: three real node processes on a store restarted without persistence
(everything it held is gone, the epoch included), and, where timing must be exact, a master's election
and duties driven in-process, step by step, with its epoch lowered while its scheduler is between reading
a task and placing it (the fenced write), then raised back to the very number the master holds.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from shoal.cluster.election import Election
from shoal.cluster.heartbeat import Heartbeat
from shoal.cluster.leader import LeaderRole
from shoal.config import NodeConfig
from shoal.keys import Keys
from shoal.models import TaskSpec
from shoal.rpc.peers import Verdict
from shoal.store.embedded import EmbeddedRedis
from shoal.store.nodes import ALIVE, NodeRecord, NodeRegistry
from shoal.store.tasks import TaskStore
from shoal.testing import multiplier

from .conftest import PREFIX, Cluster

pytestmark = pytest.mark.cluster


# -- three nodes, a store restarted without persistence ----------------------------------------------------


@pytest.fixture
def volatile_store(tmp_path: Path, redis_server: EmbeddedRedis) -> Iterator[EmbeddedRedis]:
    """A redis-server of this test's own (the suite's keeps its data across restarts; this one will not)."""
    server = EmbeddedRedis(tmp_path / "volatile", binary=redis_server.binary)
    server.start()
    yield server
    server.stop()


def restart_empty(server: EmbeddedRedis) -> None:
    """Stop the store and start it again with none of its data (same users and passwords): as a restart
    without persistence does."""
    server.stop()
    shutil.rmtree(server.dir / "appendonlydir", ignore_errors=True)
    (server.dir / "dump.rdb").unlink(missing_ok=True)
    server.start()


def test_after_the_store_restarts_empty_the_epoch_goes_on_from_where_it_was_and_tasks_run(
    volatile_store: EmbeddedRedis, tmp_path: Path
) -> None:
    cluster = Cluster(volatile_store.url, tmp_path)
    try:
        a, b, c = cluster.start(3)
        before = cluster.wait_agreed()
        for i, node in enumerate((a, b, c)):
            ended = cluster.wait_all_ended(node, [cluster.submit(node, f"before-{i}")], timeout=30)
            assert ended[0]["state"] == "SUCCEED"

        restart_empty(volatile_store)
        cluster.redis.close()  # its connection died with the store

        # Every node is ready again and tasks run: a master whose duties died with the store's data would
        # keep its lease with nothing placed.
        cluster.wait_agreed(timeout=30)
        for node in (a, b, c):
            node.wait_ready(30)
        ids = [cluster.submit(node, f"after-{i}") for i, node in enumerate((a, b, c))]
        ended = cluster.wait_all_ended(a, ids, timeout=30)
        assert [t["state"] for t in ended] == ["SUCCEED"] * 3, cluster.describe(ids)
        # The store forgot the epoch, the nodes did not: the new term is numbered above the old one.
        after = cluster.wait_agreed()
        assert after["epoch"] > before["epoch"], (before, after)
        elected = cluster.events("elected")[-1]
        assert elected["epoch"] == after["epoch"] and "lost writes" in elected["rule"], elected
    finally:
        cluster.close()


# -- in-process: the epoch lowered between a duty's read and its fenced write ----------------------------------


class AdmitAll:
    """The network, as the detector sees it: every node answers and proves it holds the token."""

    async def is_alive(self, *args: Any) -> tuple[str, int] | None:
        return ("someone", 1)

    async def ask_alive(self, *args: Any) -> bool:
        return True

    async def verify(self, addr: str, expected_name: str, timeout_s: float) -> Verdict:
        return Verdict(True, "verified", 1)


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    yield client
    await client.aclose()


def record(name: str) -> NodeRecord:
    return NodeRecord(
        name=name, host="127.0.0.1", http="127.0.0.1:1", grpc="127.0.0.1:2", slots=4, running=0, pid=1,
        types=("echo",), run_tasks=True, last_beat=0.0, incarnation=1,
    )  # fmt: skip


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout * multiplier()
    while not await check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


async def test_a_master_whose_scheduler_met_a_stale_epoch_ends_its_term_though_the_epoch_came_back(
    redis: Redis,
) -> None:
    keys = Keys("shoal")
    registry = NodeRegistry(redis, keys)
    store = TaskStore(redis, keys, result_max_bytes=4096)
    config = NodeConfig(name="master", heartbeat_interval=0.2, dead_after=5)
    heartbeat = Heartbeat(config=config, registry=registry, types=["echo"], load=lambda: 0, on_declared_dead=_nothing)
    holder: dict[str, LeaderRole] = {}
    election = Election(
        config=config,
        registry=registry,
        heartbeat=heartbeat,
        on_elected=lambda epoch: holder["leader"].establish(epoch),
        on_deposed=lambda: holder["leader"].revoke(),
    )
    leader = holder["leader"] = LeaderRole(
        store=store, registry=registry, prober=AdmitAll(), me="master", interval=0.2, dead_after=5,
        may_write=election.may_write, on_stopped=election.duty_stopped,
    )  # fmt: skip

    async def beat() -> None:
        await registry.beat(record("master"))
        await registry.beat(record("worker"))

    async def worker_alive() -> bool:
        await beat()
        found = await registry.get("worker")
        return found is not None and found.state == ALIVE

    try:
        await beat()
        await election.tick()
        term = election.epoch
        assert term is not None
        await eventually(worker_alive, 10, "the master's detector to admit the worker")

        # The store loses the last election's write; the scheduler reads a task and places it under its
        # epoch: refused. The number then comes back (the store is written to by others again).
        await redis.set(f"{PREFIX}epoch", term - 1)
        first = (await store.create([TaskSpec(name="echo", type="echo", target="first")]))[0]
        leader.poke()

        async def scheduler_stopped() -> bool:
            leader.poke()
            return "scheduler" in leader.stopped()

        await eventually(scheduler_stopped, 10, "the scheduler to meet the stale epoch")
        assert "stale" in leader.stopped()  # what /readyz says of this master until its term ends
        await redis.set(f"{PREFIX}epoch", term)

        async def placed() -> bool:
            await beat()
            await election.tick()
            leader.poke()
            return (await store.get(first.id)).state.name == "INQUEUE"

        await eventually(placed, 10, "the task to be placed by a master whose duties run")
        assert election.epoch is not None and election.epoch > term
        stepped = [e for e in await registry.timeline() if e["kind"] == "stepped down"]
        assert len(stepped) == 1 and stepped[0]["node"] == "master" and stepped[0]["epoch"] == term
        assert "scheduler stopped" in stepped[0]["rule"] and "stale" in stepped[0]["rule"]
        assert leader.stopped() == ""
    finally:
        await leader.revoke()


async def _nothing() -> None:
    return None
