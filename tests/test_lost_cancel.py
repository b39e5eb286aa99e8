"""Duties that read the store stop although a cancel is lost in a store call.

On Python 3.11, ``asyncio.wait_for`` (which redis-py uses for every command) drops a cancellation that
arrives just as the call it guards completes. A loop stopped by one cancel would then run on, and a node
whose leftover task never ends does not exit (``asyncio.run`` waits for it). These drive the duties on a
real store with a subscription that drops the first cancel, as redis-py can.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.asyncio import Redis

from shoal._utils import cancel_and_wait, every, run_together
from shoal.cluster.election import Election
from shoal.cluster.heartbeat import Heartbeat
from shoal.config import NodeConfig
from shoal.keys import Keys
from shoal.store.nodes import NodeRegistry
from shoal.store.public import Subscription
from shoal.testing import multiplier


class DropsOneCancel:
    """A subscription whose ``next`` swallows the first cancellation, then behaves."""

    def __init__(self, real: Subscription) -> None:
        self.real = real
        self.dropped = 0

    async def next(self, timeout: float) -> dict[str, Any] | None:
        try:
            return await self.real.next(timeout)
        except asyncio.CancelledError:
            if self.dropped:
                raise
            self.dropped += 1
            return None


@pytest.fixture
async def redis(redis_admin_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_admin_url)
    yield client
    await client.aclose()


async def _nothing(*_: Any) -> None:
    return None


async def test_the_election_listener_ends_with_its_election_though_a_cancel_is_lost(redis: Redis) -> None:
    registry = NodeRegistry(redis, Keys("lost-cancel"))
    real_requests = registry.public.election_requests
    wrapped: list[DropsOneCancel] = []

    @contextlib.asynccontextmanager
    async def requests() -> AsyncIterator[DropsOneCancel]:
        async with real_requests() as messages:
            wrapped.append(DropsOneCancel(messages))
            yield wrapped[-1]

    registry.public.election_requests = requests  # type: ignore[method-assign]
    config = NodeConfig(name="n1", heartbeat_interval=0.2, dead_after=5)
    heartbeat = Heartbeat(config=config, registry=registry, types=["echo"], load=lambda: 0, on_declared_dead=_nothing)
    election = Election(config=config, registry=registry, heartbeat=heartbeat, on_elected=_nothing, on_deposed=_nothing)
    running = asyncio.create_task(election.run())
    deadline = asyncio.get_running_loop().time() + 5 * multiplier()
    while not wrapped:
        assert asyncio.get_running_loop().time() < deadline, "the listener never subscribed"
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.05)  # the listener is inside next()

    await cancel_and_wait(running)

    listeners = [t for t in asyncio.all_tasks() if t.get_name() == "election listener"]
    assert listeners, "the listener task is not found"
    async with asyncio.timeout(5 * multiplier()):
        await asyncio.wait(listeners)
    assert wrapped[0].dropped == 1


async def test_a_periodic_duty_ends_though_its_step_lost_the_cancel() -> None:
    """``every`` (the cache membership refresh, a proxy's access rules): a step that swallows the cancel, as
    a store call can, does not keep the loop going."""
    swallowed = 0
    stepping = asyncio.Event()

    async def step() -> None:
        nonlocal swallowed
        stepping.set()
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            swallowed += 1

    duty = asyncio.create_task(every(0, step, logging.getLogger("test"), "step failed"))
    await stepping.wait()
    duty.cancel()  # lands in the step, which swallows it
    async with asyncio.timeout(5 * multiplier()):
        await asyncio.wait([duty])
    assert swallowed == 1 and duty.cancelled()


async def test_tasks_run_together_all_end_though_one_drops_its_cancel() -> None:
    """``run_together`` stops its tasks until they have ended (``asyncio.TaskGroup`` cancels them once), and a
    caller cancelled again meanwhile, as ``cancel_and_wait`` does, does not leave one running."""
    dropped = 0
    started = asyncio.Event()

    async def drops_one_cancel() -> None:
        nonlocal dropped
        started.set()
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            dropped += 1
        await asyncio.sleep(10)

    together = asyncio.create_task(run_together(("dropper", drops_one_cancel()), ("sleeper", asyncio.sleep(10))))
    await started.wait()
    async with asyncio.timeout(5 * multiplier()):
        await cancel_and_wait(together, every_s=0.01)
    assert dropped == 1 and together.cancelled()
    assert not [t for t in asyncio.all_tasks() if t.get_name() in ("dropper", "sleeper")]


async def test_tasks_run_together_end_with_the_first_failure() -> None:
    async def fails() -> None:
        await asyncio.sleep(0.01)
        raise ConnectionError("lost")

    with pytest.raises(ConnectionError, match="lost"):
        async with asyncio.timeout(5 * multiplier()):
            await run_together(("fails", fails()), ("sleeper", asyncio.sleep(10)))
    assert not [t for t in asyncio.all_tasks() if t.get_name() == "sleeper"]
