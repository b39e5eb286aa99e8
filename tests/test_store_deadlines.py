"""A store that stops answering or stops reading fails the call waiting on it within the client's reply
timeout, and the next call after it recovers goes through; a burst of calls waits for a connection instead
of failing; a subscriber's wait for messages is not cut short (shoal.store.deadlines)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import pytest
import redis

from shoal.errors import StoreUnavailable
from shoal.store.client import StoreClient
from shoal.store.redis import connect
from shoal.testing import multiplier

#: The clients' reply timeout here: short, so that a stuck call fails soon.
REPLY_TIMEOUT_S = 0.5


class FreezingProxy:
    """A TCP proxy in front of the suite's Redis that can freeze: it then neither passes nor reads a byte
    more, as a store whose process is stopped or whose host went away without a reset."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.thawed = asyncio.Event()
        self.thawed.set()
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    def freeze(self) -> None:
        self.thawed.clear()

    def thaw(self) -> None:
        self.thawed.set()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        pumps = [asyncio.create_task(self._pump(reader, up_writer)), asyncio.create_task(self._pump(up_reader, writer))]
        try:
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for pump in pumps:
                pump.cancel()
            for w in (writer, up_writer):
                w.close()

    async def _pump(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        while True:
            await self.thawed.wait()
            chunk = await source.read(65536)
            if not chunk:
                return
            await self.thawed.wait()  # frozen meanwhile: the bytes read are held back until thawed
            sink.write(chunk)
            await sink.drain()

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()


@pytest.fixture
async def proxy(redis_url: str) -> AsyncIterator[FreezingProxy]:
    parts = urlsplit(redis_url)
    proxy = FreezingProxy((parts.hostname or "127.0.0.1", parts.port or 6379))
    await proxy.start()
    yield proxy
    proxy.thaw()
    await proxy.close()


def through(redis_url: str, proxy: FreezingProxy) -> str:
    parts = urlsplit(redis_url)
    credentials, _, _ = parts.netloc.rpartition("@")
    return parts._replace(netloc=f"{credentials}@127.0.0.1:{proxy.port}").geturl()


@pytest.fixture
async def client(redis_url: str, proxy: FreezingProxy) -> AsyncIterator[StoreClient]:
    store = connect(through(redis_url, proxy), name="shoal-test", reply_timeout=REPLY_TIMEOUT_S)
    yield store
    await store.aclose()


async def test_a_store_that_stops_answering_fails_the_call_and_the_next_one_goes_through(
    client: StoreClient, proxy: FreezingProxy
) -> None:
    await client.set("shoal:deadline", "before")
    proxy.freeze()
    async with asyncio.timeout(20 * multiplier()):  # the test's own bound: a call that hangs fails it
        with pytest.raises(StoreUnavailable):
            await client.get("shoal:deadline")
    proxy.thaw()
    assert await client.get("shoal:deadline") == b"before"  # on a new connection: the stuck one was dropped


async def test_a_send_the_store_does_not_take_fails_the_call(client: StoreClient, proxy: FreezingProxy) -> None:
    await client.ping()
    proxy.freeze()
    value = b"x" * (64 << 20)  # more than the socket buffers on both sides of the proxy hold
    async with asyncio.timeout(20 * multiplier()):
        with pytest.raises(StoreUnavailable):
            await client.set("shoal:deadline", value)
    proxy.thaw()
    assert await client.ping()


async def test_a_stuck_call_whose_connection_is_closed_under_it_still_fails(
    client: StoreClient, proxy: FreezingProxy
) -> None:
    """As when the sentinels name a new master: every connection is closed, busy ones included, and one whose
    unsent bytes keep its socket open must not leave its call waiting for ever."""
    await client.ping()
    proxy.freeze()
    stuck = asyncio.create_task(client.set("shoal:deadline", b"x" * (64 << 20)))
    await asyncio.sleep(0.1)
    await client.connection_pool.disconnect(inuse_connections=True)
    async with asyncio.timeout(20 * multiplier()):
        with pytest.raises(StoreUnavailable):
            await stuck
    proxy.thaw()
    assert await client.ping()


async def test_a_burst_waits_for_a_connection_and_opens_no_more_than_allowed(
    redis_url: str, redis_admin_url: str
) -> None:
    store = connect(redis_url, name="shoal-burst", max_connections=2, reply_timeout=REPLY_TIMEOUT_S * 20)
    try:
        replies = await asyncio.gather(*(store.incr("shoal:burst") for _ in range(200)))
        assert sorted(replies) == list(range(1, 201))
        with redis.Redis.from_url(redis_admin_url) as admin:
            opened = [c for c in admin.client_list() if c["name"] == "shoal-burst"]
        assert 1 <= len(opened) <= 2
    finally:
        await store.aclose()


async def test_a_caller_that_waits_too_long_for_a_connection_fails_and_the_next_one_gets_it(redis_url: str) -> None:
    store = connect(redis_url, name="shoal-one", max_connections=1, reply_timeout=REPLY_TIMEOUT_S)
    pubsub = store.pubsub()
    try:
        await pubsub.subscribe("shoal:deadline-channel")  # a subscription holds its connection: the only one
        async with asyncio.timeout(20 * multiplier()):
            with pytest.raises(StoreUnavailable) as caught:
                await store.get("shoal:deadline")
        assert "No connection available" in caught.value.detail
        await pubsub.aclose()  # gives the connection back
        assert await store.ping()
    finally:
        await pubsub.aclose()
        await store.aclose()


async def test_a_subscriber_waiting_longer_than_the_reply_timeout_is_not_cut(client: StoreClient) -> None:
    pubsub = client.pubsub()
    try:
        await pubsub.subscribe("shoal:deadline-channel")
        assert (await pubsub.get_message(timeout=5 * multiplier()))["type"] == "subscribe"  # type: ignore[index]
        waiting = asyncio.create_task(pubsub.get_message(ignore_subscribe_messages=True, timeout=None))
        await asyncio.sleep(4 * REPLY_TIMEOUT_S)  # past the reply timeout, and past the watch's looks
        assert not waiting.done()
        await client.publish("shoal:deadline-channel", "late")
        async with asyncio.timeout(10 * multiplier()):
            message = await waiting
        assert message is not None and message["data"] == b"late"
    finally:
        await pubsub.aclose()
