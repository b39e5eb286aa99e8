"""The cluster's ``public`` pub/sub channel (the seed's): heartbeats and election requests, as JSON objects.

Every node publishes its beats there, but no node subscribes to hear them all: that would be N² deliveries
a beat. A master leaving publishes its election request on ``elections`` too (release.lua), which every
node's election listens to; the event hub subscribes to ``public`` only while a live view of the nodes is
open (shoal.events).

What goes here may be lost (no one listening, a subscription being made again): every node also records
its beats in the registry, and the election also wakes on its own timer. So a message that cannot be
read as a JSON object is skipped, not an error.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping
from typing import Any

import orjson
from redis.asyncio import Redis
from redis.asyncio.client import PubSub

from shoal.keys import Keys


class Subscription:
    """Messages of the channel as they come; one reader at a time."""

    def __init__(self, pubsub: PubSub) -> None:
        self._pubsub = pubsub

    async def next(self, timeout: float) -> dict[str, Any] | None:
        """The next message, or None if none came within ``timeout`` seconds (or it was not a JSON object).
        Raises StoreUnavailable when the subscription is lost: subscribe again."""
        message = await self._pubsub.get_message(ignore_subscribe_messages=True, timeout=timeout)
        if message is None:
            return None
        try:
            data = orjson.loads(message["data"])
        except (orjson.JSONDecodeError, TypeError):
            return None
        return data if isinstance(data, dict) else None


class PublicChannel:
    """Publishes to ``public``; subscribes to election requests. Safe to share between coroutines."""

    def __init__(self, redis: Redis, keys: Keys) -> None:
        self.redis = redis
        self.channel = keys.public
        self.elections = keys.elections

    async def publish(self, message: Mapping[str, Any]) -> None:
        """Send ``message`` to whoever listens now."""
        await self.redis.publish(self.channel, orjson.dumps(message))

    @contextlib.asynccontextmanager
    async def election_requests(self) -> AsyncIterator[Subscription]:
        """A subscription to the election requests, closed on leaving the block."""
        pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.subscribe(self.elections)
            yield Subscription(pubsub)
        finally:
            with contextlib.suppress(Exception):  # closing a lost subscription may fail as well
                await pubsub.aclose()
