"""A pub/sub connection on some of the cluster's channels (task events, the ``public`` channel), for the
node's event hub (shoal.events): messages as they come, and pings that prove a quiet connection alive."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence

from redis.asyncio import Redis
from redis.asyncio.client import PubSub

#: What a subscription is opened on: the node's store client.
Store = Redis
#: Seconds the store has to confirm a subscription.
CONFIRM_S = 5.0


class Subscription:
    """Messages of the channels subscribed to; one reader at a time, pings from anyone."""

    def __init__(self, pubsub: PubSub) -> None:
        self._pubsub = pubsub

    async def next(self) -> tuple[str, bytes] | None:
        """The next message as (channel, data), waiting as long as it takes; None for anything else that
        came (a ping's answer). Raises StoreUnavailable when the connection is lost: subscribe again."""
        message = await self._pubsub.get_message(ignore_subscribe_messages=True, timeout=None)
        if message is None or message.get("type") != "message":
            return None
        channel = message["channel"]
        return channel.decode() if isinstance(channel, bytes) else str(channel), message["data"]

    async def ping(self) -> None:
        """Ask the store for an answer on this connection (it arrives through ``next``)."""
        await self._pubsub.ping()


@contextlib.asynccontextmanager
async def subscribe(store: Store, channels: Sequence[str]) -> AsyncIterator[Subscription]:
    """A subscription to ``channels``, closed on leaving the block. The block begins once the store has
    confirmed every channel: whatever is published from then on comes through ``next``, so a reader that
    then reads what came before (a stream) misses nothing in between."""
    pubsub = store.pubsub()
    try:
        await pubsub.subscribe(*channels)
        async with asyncio.timeout(CONFIRM_S):
            confirmed = 0
            while confirmed < len(set(channels)):
                message = await pubsub.get_message(timeout=None)
                confirmed += message is not None and message.get("type") == "subscribe"
        yield Subscription(pubsub)
    finally:
        with contextlib.suppress(Exception):  # closing a lost subscription may fail as well
            await pubsub.aclose()
