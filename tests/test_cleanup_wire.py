"""The raw pipeline of backups and restores (``shoal.store.wire``) raises shoal's store errors, as every other
store call does: StoreFault for an error reply (after reading every reply, so the connection stays in step),
StoreUnavailable for a reply that does not come in time or a connection the store closed. Against the
suite's real Redis, as shoal's user.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import redis

from shoal.errors import StoreFault, StoreUnavailable
from shoal.store.client import StoreClient
from shoal.store.redis import connect
from shoal.store.wire import Wire

KEY = b"shoal:cleanup:wire"


@pytest.fixture
async def store(redis_url: str) -> AsyncIterator[StoreClient]:
    client = connect(redis_url, name="shoal-cleanup-wire")
    yield client
    await client.aclose()


async def test_an_error_reply_is_a_store_fault_and_the_replies_after_it_are_read(store: StoreClient) -> None:
    async with Wire(store) as wire:
        assert await wire.call([(b"SET", KEY, b"not a number")]) == [b"OK"]
        with pytest.raises(StoreFault) as caught:
            await wire.call([(b"INCR", KEY), (b"SET", KEY, b"second")])
        assert "not an integer" in str(caught.value)
        assert await wire.call([(b"GET", KEY)]) == [b"second"]  # this call's reply, not the one before's


async def test_a_reply_that_does_not_come_in_time_is_store_unavailable(store: StoreClient) -> None:
    async with Wire(store) as wire:
        with pytest.raises(StoreUnavailable, match="took over 0.05s"):
            await wire.read(1, timeout=0.05)  # nothing was sent: no reply comes


async def test_a_connection_the_store_closes_is_store_unavailable(store: StoreClient, redis_admin_url: str) -> None:
    async with Wire(store) as wire:
        assert await wire.call([(b"PING",)]) == [b"PONG"]
        with redis.Redis.from_url(redis_admin_url) as admin:
            assert admin.client_kill_filter(_type="normal", skipme=True) >= 1
        with pytest.raises(StoreUnavailable, match="closed the connection"):
            await wire.read(1, timeout=5)
