"""The node's subscription to task events: a connection that goes silent (the store stops answering, the
connection still open) is noticed and made again, so that waiters and streams do not wait on it for ever."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from redis.asyncio import Redis

from shoal.events import LOST_AFTER_S, EventHub
from shoal.testing import multiplier


async def until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout * multiplier()
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


async def test_a_subscription_gone_silent_is_made_again(redis_admin_url: str) -> None:
    redis, admin = Redis.from_url(redis_admin_url), Redis.from_url(redis_admin_url)
    hub = EventHub(redis, "shoal:hubtest:events")
    runner = asyncio.create_task(hub.run())
    try:
        await until(hub.subscribed.is_set, 10, "the subscription")
        # the store stops answering for a while (the pause ends by itself), the connection staying open
        await admin.execute_command("CLIENT", "PAUSE", int((LOST_AFTER_S + 3) * 1000), "ALL")
        await until(lambda: not hub.subscribed.is_set(), LOST_AFTER_S + 2.5, "the silent subscription given up")
        await until(hub.subscribed.is_set, 15, "the subscription made again")
        with hub.waiter("t1") as ended:
            await admin.publish("shoal:hubtest:events", b'{"kind": "tasks", "events": [["t1", "SUCCEED", "n1", 1.5]]}')
            await asyncio.wait_for(ended.wait(), 10 * multiplier())
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
        await redis.aclose()
        await admin.aclose()
