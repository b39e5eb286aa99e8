"""The cluster cache over REST and the Python client.

In-process, the app is given ``ShardCache``: a small but real CacheAPI (a dict with TTLs and counters) so
the web layer's rules can be checked call by call (what is refused must reach the cache not at all). The
end-to-end tests at the bottom run the same calls against a real node process.
"""

from __future__ import annotations

import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry

from shoal.client import AsyncClient, Client
from shoal.errors import InvalidInput, Unauthorized
from shoal.models import CacheItem, Fill
from shoal.testing import TestNode, wait_for
from shoal.web.app import create_app

TOKEN = "cache-test-token"
MAX_VALUE = 4096
ODD_KEYS = ["a/b/c", "/lead/and/trail/", "a//b", "a/../b", "..", ".", "ünï/cödé ✓", "100%25 sure?#x", "x%2Fy"]
EVERY_BYTE = bytes(range(256)) * 3


class ShardCache:
    """A one-node CacheAPI: enough of the real contract (TTL, stale, counters) to drive the web layer."""

    def __init__(self) -> None:
        self.items: dict[str, CacheItem] = {}
        self.calls: list[str] = []
        self.hits = self.misses = 0

    async def get(self, key: str) -> CacheItem | None:
        self.calls.append(f"get {key}")
        item = self.items.get(key)
        if item is None or (item.expires_at is not None and item.expires_at <= time.time()):
            self.misses += 1
            return None
        self.hits += 1
        return item

    async def set(self, key: str, value: bytes, ttl_s: float | None = None, keep_s: float = 0.0) -> None:
        self.calls.append(f"set {key}")
        stale = None if ttl_s is None else time.time() + ttl_s
        self.items[key] = CacheItem(value, stale, None if stale is None else stale + keep_s)

    async def delete(self, key: str) -> bool:
        self.calls.append(f"delete {key}")
        return self.items.pop(key, None) is not None

    async def get_or_fill(self, key: str, fill: Callable[[CacheItem | None], Awaitable[Fill]]) -> tuple[bytes, bool]:
        item = await self.get(key)
        if item is not None and item.fresh(time.time()):
            return item.value, True
        done = await fill(item)
        if done.store:
            await self.set(key, done.value, done.ttl_s, done.keep_s)
        return done.value, False

    def stats(self) -> dict[str, int]:
        used = sum(len(k.encode()) + len(i.value) for k, i in self.items.items())
        return {"items": len(self.items), "bytes": used, "capacity": 1 << 20, "hits": self.hits,
                "misses": self.misses, "evictions": 0, "expired": 0, "fills": 0}  # fmt: skip

    async def cluster_stats(self) -> dict[str, dict[str, int]]:
        return {"node-1": self.stats()}


class Untouchable:
    def __getattr__(self, name: str) -> Any:
        pytest.fail(f"the cache routes reached the task or cluster API ({name})")


@pytest.fixture
def cache() -> ShardCache:
    return ShardCache()


@pytest.fixture
async def app(cache: ShardCache) -> AsyncIterator[httpx.ASGITransport]:
    registry = CollectorRegistry()
    yield httpx.ASGITransport(
        app=create_app(
            tasks=Untouchable(),
            cluster=Untouchable(),
            token=TOKEN,
            registry=registry,
            cache=cache,
            cache_max_value=MAX_VALUE,
        )  # fmt: skip
    )


@pytest.fixture
async def client(app: httpx.ASGITransport) -> AsyncIterator[AsyncClient]:
    async with AsyncClient("http://node.test", TOKEN, transport=app) as c:
        yield c


@pytest.fixture
async def raw(app: httpx.ASGITransport) -> AsyncIterator[httpx.AsyncClient]:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with httpx.AsyncClient(transport=app, base_url="http://node.test", headers=headers) as c:
        yield c


async def test_round_trip_keeps_bytes_and_odd_keys_intact(client: AsyncClient, cache: ShardCache) -> None:
    for i, key in enumerate(ODD_KEYS):
        await client.cache_set(key, EVERY_BYTE + bytes([i]))
    assert set(cache.items) == set(ODD_KEYS)
    for i, key in enumerate(ODD_KEYS):
        assert await client.cache_get(key) == EVERY_BYTE + bytes([i])
    assert await client.cache_delete("a/../b") is True
    assert await client.cache_get("a/../b") is None
    assert await client.cache_delete("a/../b") is False
    assert await client.cache_get("a/b/c") == EVERY_BYTE + b"\x00"


async def test_get_says_how_long_the_value_stays_fresh(raw: httpx.AsyncClient) -> None:
    html = {"Content-Type": "text/html"}
    put = await raw.put("/api/v1/cache/page/1", params={"ttl": "30"}, content=b"<html>", headers=html)
    assert put.status_code == 204 and put.content == b""
    got = await raw.get("/api/v1/cache/page/1")
    assert got.status_code == 200 and got.content == b"<html>"
    assert got.headers["content-type"] == "application/octet-stream"
    assert 29 < float(got.headers["x-shoal-ttl"]) <= 30
    assert got.headers["cache-control"] in ("private, max-age=29", "private, max-age=30")
    await raw.put("/api/v1/cache/forever", content=b"x")
    forever = await raw.get("/api/v1/cache/forever")
    assert "x-shoal-ttl" not in forever.headers and forever.headers["cache-control"] == "private"
    missing = await raw.get("/api/v1/cache/nothing/here")
    assert missing.status_code == 404
    assert missing.json() == {"error": "cache_miss", "message": "no value in the cache for key 'nothing/here'"}
    assert (await raw.delete("/api/v1/cache/nothing/here")).json()["error"] == "cache_miss"


async def test_a_value_past_its_ttl_is_a_miss(client: AsyncClient, cache: ShardCache) -> None:
    await client.cache_set("short", b"soon gone", ttl=0.3)
    await client.cache_set("kept-stale", b"old", ttl=0.3)
    cache.items["kept-stale"] = CacheItem(b"old", time.time() - 1, time.time() + 60)  # as the proxy keeps it
    assert await client.cache_get("short") == b"soon gone"
    assert await client.cache_get("kept-stale") is None
    deadline = time.monotonic() + 5
    while await client.cache_get("short") is not None:
        assert time.monotonic() < deadline, "the value outlived its ttl"


BAD_PUTS = [
    ("/api/v1/cache/k", {"ttl": "soon"}, 400, "ttl: Input should be a valid number"),
    ("/api/v1/cache/k", {"ttl": "\u0663"}, 400, "ttl: Input should be a valid number"),  # Arabic-Indic three
    ("/api/v1/cache/k", {"ttl": "0"}, 400, "ttl must be above 0"),
    ("/api/v1/cache/k", {"ttl": "-5"}, 400, "ttl must be above 0"),
    ("/api/v1/cache/k", {"ttl": "nan"}, 400, "ttl must be a number"),
    ("/api/v1/cache/k", {"ttl": "1e99"}, 400, "at most"),
    ("/api/v1/cache/bad%0Akey", {}, 400, "control characters"),
    ("/api/v1/cache/" + "k" * 513, {}, 400, "at most 512 bytes"),
    ("/api/v1/cache/", {}, 400, "non-empty"),
]


@pytest.mark.parametrize(("path", "params", "status", "words"), BAD_PUTS)
async def test_bad_input_is_refused_and_changes_nothing(
    raw: httpx.AsyncClient, cache: ShardCache, path: str, params: dict[str, str], status: int, words: str
) -> None:
    response = await raw.put(path, params=params, content=b"value")
    assert response.status_code == status
    assert response.json()["error"] == "invalid_input" and words in response.json()["message"]
    assert cache.calls == []


async def test_values_over_the_limit_get_413_declared_or_streamed(raw: httpx.AsyncClient, cache: ShardCache) -> None:
    assert (await raw.put("/api/v1/cache/fits", content=b"x" * MAX_VALUE)).status_code == 204

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(MAX_VALUE // 1000 + 1):
            yield b"y" * 1000

    declared = await raw.put("/api/v1/cache/big", content=b"x" * (MAX_VALUE + 1))
    streamed = await raw.put("/api/v1/cache/big", content=chunks())
    for response, size in ((declared, MAX_VALUE + 1), (streamed, 5000)):
        assert response.status_code == 413
        assert response.json() == {"error": "value_too_large", "message": (
            f"cache value of {size} bytes is over the limit of {MAX_VALUE} bytes")}  # fmt: skip
    assert cache.calls == ["set fits"]
    # a value larger than the task API's body limit (1 MiB) is still the cache's to judge
    app = create_app(tasks=Untouchable(), cluster=Untouchable(), token=TOKEN, registry=CollectorRegistry(),
                     cache=cache, cache_max_value=2 << 20, max_body_bytes=1024)  # fmt: skip
    async with AsyncClient("http://node.test", TOKEN, transport=httpx.ASGITransport(app=app)) as big:
        await big.cache_set("large", b"z" * (1 << 20))
        assert await big.cache_get("large") == b"z" * (1 << 20)


async def test_the_token_is_required_and_nothing_reaches_the_cache(app: httpx.ASGITransport, cache: ShardCache) -> None:
    async with AsyncClient("http://node.test", "wrong", transport=app) as c:
        for call in (c.cache_get("k"), c.cache_set("k", b"v"), c.cache_delete("k"), c.cache_stats()):
            with pytest.raises(Unauthorized):
                await call
    async with httpx.AsyncClient(transport=app, base_url="http://node.test") as anonymous:
        response = await anonymous.put("/api/v1/cache/k", content=b"v")
        assert response.status_code == 401 and response.headers["www-authenticate"] == "Bearer"
    assert cache.calls == []


async def test_client_checks_keys_and_ttls_before_sending(client: AsyncClient, cache: ShardCache) -> None:
    for bad in (lambda: client.cache_set("", b"v"), lambda: client.cache_set("k", b"v", ttl=-1),
                lambda: client.cache_set("k", "text", ttl=1), lambda: client.cache_get("a\nb")):  # type: ignore[arg-type]  # fmt: skip
        with pytest.raises(InvalidInput):
            await bad()
    assert cache.calls == []


async def test_stats_and_metrics_show_the_shard(client: AsyncClient, raw: httpx.AsyncClient) -> None:
    await client.cache_set("m", b"12345")
    for _ in range(3):
        await client.cache_get("m")
    await client.cache_get("absent")
    stats = await client.cache_stats()
    assert stats["node-1"]["items"] == 1 and stats["node-1"]["hits"] == 3 and stats["node-1"]["misses"] == 1
    text = (await raw.get("/metrics")).text
    lines = text.splitlines()
    for gauge in ("shoal_cache_items 1.0", "shoal_cache_bytes 6.0", "shoal_cache_capacity_bytes 1.048576e+06"):
        assert gauge in lines, gauge
    for counter in ("shoal_cache_hits_total 3.0", "shoal_cache_misses_total 1.0", "shoal_cache_evictions_total 0.0"):
        assert counter in lines, counter


async def test_a_node_without_cache_answers_503() -> None:
    app = create_app(tasks=Untouchable(), cluster=Untouchable(), token=TOKEN, registry=CollectorRegistry())
    async with AsyncClient("http://node.test", TOKEN, transport=httpx.ASGITransport(app=app)) as c:
        with pytest.raises(Exception) as caught:
            await c.cache_get("k")
        assert getattr(caught.value, "status", None) == 503 and "serves no cache" in str(caught.value)


# end to end: a real node process


@pytest.fixture(scope="module")
def node(module_redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestNode]:
    started = TestNode(tmp_path_factory.mktemp("cache-node"), module_redis_url, name="cache-1",
                       env={"SHOAL_CACHE_MAX_VALUE": "65536"}).start()  # fmt: skip
    yield started
    started.stop(timeout=15)


@pytest.fixture
def real(node: TestNode) -> Iterator[Client]:
    with Client(node.http_url, node.token) as c:
        yield c


@pytest.mark.e2e
def test_node_round_trip_with_ttl_expiry(real: Client) -> None:
    for key in ODD_KEYS:
        real.cache_set(key, EVERY_BYTE + key.encode())
    for key in ODD_KEYS:
        assert real.cache_get(key) == EVERY_BYTE + key.encode()
    real.cache_set("brief", b"gone soon", ttl=0.5)
    assert real.cache_get("brief") == b"gone soon"
    wait_for(lambda: real.cache_get("brief") is None, 10, "the value to expire")
    assert real.cache_delete("a//b") is True and real.cache_get("a//b") is None
    assert real.cache_delete("a//b") is False


@pytest.mark.e2e
def test_node_refuses_bad_input_and_changes_nothing(node: TestNode, real: Client) -> None:
    real.cache_set("keep", b"before")
    url = f"{node.http_url}/api/v1/cache/keep"
    bad = [
        httpx.put(url, params={"ttl": "x"}, content=b"after", headers=node.headers()),
        httpx.put(url, content=b"a" * 65537, headers=node.headers()),
        httpx.put(url, content=b"after", headers={"Authorization": "Bearer wrong"}),
        httpx.delete(url, headers={"Authorization": "Bearer wrong"}),
    ]
    assert [r.status_code for r in bad] == [400, 413, 401, 401]
    assert [r.json()["error"] for r in bad] == ["invalid_input", "value_too_large", "unauthorized", "unauthorized"]
    assert real.cache_get("keep") == b"before"


@pytest.mark.e2e
def test_node_shows_cache_use_in_cluster_view_and_metrics(node: TestNode, real: Client) -> None:
    real.cache_set("seen", b"v" * 100)
    for _ in range(4):
        assert real.cache_get("seen") is not None
    assert real.cache_get("never-set") is None
    stats = real.cache_stats()[node.name]
    assert stats["items"] >= 1 and stats["hits"] >= 4 and stats["misses"] >= 1 and stats["capacity"] > 0

    def published() -> dict[str, int] | None:
        shard = next(n for n in real.cluster().nodes if n.name == node.name).cache
        return shard if shard and shard.get("hits", 0) >= 4 else None

    wait_for(published, 10, "the heartbeat to publish the cache stats")
    text = httpx.get(f"{node.http_url}/metrics", headers=node.headers()).text
    values = {line.split()[0]: float(line.split()[1]) for line in text.splitlines() if line.startswith("shoal_cache")}
    assert values["shoal_cache_hits_total"] >= 4 and values["shoal_cache_misses_total"] >= 1
    assert values["shoal_cache_items"] >= 1 and values["shoal_cache_bytes"] >= 100
    assert values["shoal_cache_capacity_bytes"] == stats["capacity"] and math.isfinite(
        values["shoal_cache_evictions_total"]
    )
