"""The HTTP cache policy and the proxy, in process: a real ``ProxyServer`` on a loopback port in front of
the loopback origin, over a small in-memory ``CacheAPI`` (the cluster cache has its own tests; the
proxy's end-to-end tests on real nodes are in test_proxy.py). Every request is a real HTTP request."""

from __future__ import annotations

import asyncio
import base64
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest

from shoal.cache.keys import http_key
from shoal.models import CacheItem, Fill
from shoal.proxy import policy
from shoal.proxy.entry import BadEntry, Entry
from shoal.proxy.httpcache import HttpCache
from shoal.proxy.server import ProxyServer
from shoal.worker.handlers import TaskContext
from shoal.worker.handlers.fetch import Fetcher, FetchFailed

TOKEN = "t0ken-for-the-proxy-tests"
MAX_VALUE = 64 * 1024


class MemoryCache:
    """``CacheAPI`` in one dict, with one fill per key at a time (what the cluster cache does at a key's owner)."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.items: dict[str, CacheItem] = {}
        self.flights: dict[str, asyncio.Future[bytes | None]] = {}
        self.clock = clock

    async def get(self, key: str) -> CacheItem | None:
        item = self.items.get(key)
        if item is not None and item.expires_at is not None and self.clock() >= item.expires_at:
            del self.items[key]
            return None
        return item

    async def set(self, key: str, value: bytes, ttl_s: float | None = None, keep_s: float = 0.0) -> None:
        assert ttl_s is None or ttl_s > 0, ttl_s
        stale_at = None if ttl_s is None else self.clock() + ttl_s
        self.items[key] = CacheItem(value, stale_at, None if stale_at is None else stale_at + keep_s)

    async def delete(self, key: str) -> bool:
        return self.items.pop(key, None) is not None

    async def get_or_fill(self, key: str, fill: Callable[[CacheItem | None], Awaitable[Fill]]) -> tuple[bytes, bool]:
        item = await self.get(key)
        if item is not None and item.fresh(self.clock()):
            return item.value, True
        flight = self.flights.get(key)
        if flight is not None:
            value = await asyncio.shield(flight)
            if value is not None:
                return value, True
        else:
            flight = self.flights[key] = asyncio.get_running_loop().create_future()
        kept: bytes | None = None
        try:
            result = await fill(item)
            if result.store:
                await self.set(key, result.value, result.ttl_s, result.keep_s)
                kept = result.value
            return result.value, False
        finally:
            if self.flights.get(key) is flight:
                del self.flights[key]
                flight.set_result(kept)

    def stats(self) -> dict[str, int]:
        return {"items": len(self.items)}

    async def cluster_stats(self) -> dict[str, dict[str, int]]:
        return {"memory": self.stats()}


class Proxied:
    """An in-process proxy, its cache, and a client that uses it."""

    def __init__(self, server: ProxyServer, cache: MemoryCache, origin: Any) -> None:
        self.server = server
        self.cache = cache
        self.origin = origin
        self.url = f"http://127.0.0.1:{server.port}"
        self.client = httpx.AsyncClient(proxy=f"http://user:{TOKEN}@127.0.0.1:{server.port}", trust_env=False)

    def page(self, **params: str) -> str:
        """A /cacheable URL of its own (a fresh key), with the given parameters."""
        return f"{self.origin.url}/cacheable?{urlencode({'k': uuid.uuid4().hex[:8], **params})}"

    def hits(self, url: str) -> int:
        return int(self.origin.hits_of(url.removeprefix(self.origin.url)))


@pytest.fixture
def clock() -> Callable[[], float]:
    """Unix time, as the cache and the proxy read it; a test may stop it."""
    return time.time


@pytest.fixture
async def proxied(origin: Any, clock: Callable[[], float]) -> AsyncIterator[Proxied]:
    cache = MemoryCache(clock=lambda: clock())
    http_cache = HttpCache(cache, max_value=MAX_VALUE, clock=lambda: clock())
    server = ProxyServer(bind="127.0.0.1:0", node="test", cache=http_cache,
                         accepts=lambda given: given == TOKEN, timeout_s=1.0, max_connections=4)  # fmt: skip
    await server.start()
    p = Proxied(server, cache, origin)
    yield p
    await p.client.aclose()
    await server.close()


# -- what is stored, what is not ------------------------------------------------------------------------------


async def test_fresh_page_is_served_from_the_cache_with_its_age(proxied: Proxied) -> None:
    url = proxied.page(cc="max-age=60")
    first = await proxied.client.get(url)
    second = await proxied.client.get(url)
    assert (first.status_code, first.headers["x-cache"], first.text) == (200, "MISS", first.text)
    assert (second.headers["x-cache"], second.text) == ("HIT", first.text)
    assert second.headers["via"] == "1.1 shoal-test" and int(second.headers["age"]) >= 0
    assert proxied.hits(url) == 1


@pytest.mark.parametrize(
    "params",
    [{"cc": "no-store"}, {"cc": "private, max-age=60"}, {"cookie": "1"}, {"vary": "Cookie"}, {"cc": "none"},
     {"cc": "max-age=60", "bytes": str(MAX_VALUE + 1)}],
    ids=["no-store", "private", "set-cookie", "vary", "no-freshness", "over-max-value"],
)  # fmt: skip
async def test_responses_that_must_not_be_stored_go_to_the_origin_each_time(
    proxied: Proxied, params: dict[str, str]
) -> None:
    url = proxied.page(**params)
    bodies = []
    for _ in range(2):
        response = await proxied.client.get(url)
        assert (response.status_code, response.headers["x-cache"]) == (200, "MISS")
        bodies.append(response.content)
    assert proxied.hits(url) == 2
    assert bodies[1].startswith(b"v2") and len(bodies[1]) == len(bodies[0])
    assert http_key(url) not in proxied.cache.items


async def test_requests_with_credentials_bypass_the_cache(proxied: Proxied) -> None:
    url = proxied.page(cc="public, max-age=60")
    await proxied.client.get(url)
    for headers in ({"Authorization": "Bearer x"}, {"Cookie": "a=b"}, {"Cache-Control": "no-store"}):
        response = await proxied.client.get(url, headers=headers)
        assert response.headers["x-cache"] == "MISS", headers
    assert proxied.hits(url) == 4
    assert (await proxied.client.get(url)).text.startswith("v1")  # the stored copy is still the first


@pytest.mark.parametrize("clock", [lambda: 1_700_000_000.0], ids=["clock-stopped"])
async def test_a_page_kept_only_for_revalidation_is_never_a_hit_however_soon(proxied: Proxied) -> None:
    """max-age=0 with a validator: stored to be revalidated, never served as it is, even when asked for again
    within the instant it was stored (with the clock stopped, every request comes in that instant)."""
    url = proxied.page(cc="max-age=0", etag="abc")
    served = [(await proxied.client.get(url)).headers["x-cache"] for _ in range(3)]
    assert served == ["MISS", "REVALIDATED", "REVALIDATED"]
    assert proxied.origin.conditional_hits(url.removeprefix(proxied.origin.url)) == 2


async def test_stale_page_is_revalidated_and_refreshed_by_a_304(proxied: Proxied) -> None:
    url = proxied.page(cc="max-age=0", etag="abc")
    first = await proxied.client.get(url)
    second = await proxied.client.get(url)
    assert (first.headers["x-cache"], second.headers["x-cache"]) == ("MISS", "REVALIDATED")
    assert second.text == first.text and second.text.startswith("v1")  # the body came from the cache
    assert proxied.hits(url) == 2 and proxied.origin.conditional_hits(url.removeprefix(proxied.origin.url)) == 1


async def test_last_modified_alone_revalidates_too(proxied: Proxied) -> None:
    url = proxied.page(cc="none", lm="1")
    await proxied.client.get(url)
    again = await proxied.client.get(url)
    assert again.headers["x-cache"] == "REVALIDATED" and again.text.startswith("v1")


async def test_no_cache_request_forces_a_revalidation(proxied: Proxied) -> None:
    url = proxied.page(cc="max-age=60", etag="e1")
    await proxied.client.get(url)
    assert (await proxied.client.get(url)).headers["x-cache"] == "HIT"
    forced = await proxied.client.get(url, headers={"Cache-Control": "no-cache"})
    assert forced.headers["x-cache"] == "REVALIDATED" and forced.text.startswith("v1")
    assert proxied.hits(url) == 2


async def test_client_conditional_is_answered_from_the_cache(proxied: Proxied) -> None:
    url = proxied.page(cc="max-age=60", etag="tag")
    await proxied.client.get(url)
    response = await proxied.client.get(url, headers={"If-None-Match": '"tag"'})
    assert (response.status_code, response.headers["x-cache"], response.content) == (304, "HIT", b"")
    assert proxied.hits(url) == 1


async def test_head_is_served_from_a_stored_get(proxied: Proxied) -> None:
    url = proxied.page(cc="max-age=60")
    body = (await proxied.client.get(url)).content
    head = await proxied.client.head(url)
    assert (head.status_code, head.headers["x-cache"], head.content) == (200, "HIT", b"")
    assert head.headers["content-length"] == str(len(body))
    assert proxied.hits(url) == 1


async def test_concurrent_misses_make_one_origin_request(proxied: Proxied) -> None:
    url = proxied.page(cc="max-age=60", delay="0.3")
    responses = await asyncio.gather(*(proxied.client.get(url) for _ in range(3)))
    assert [r.status_code for r in responses] == [200] * 3
    assert sorted(r.headers["x-cache"] for r in responses) == ["HIT", "HIT", "MISS"]
    assert proxied.hits(url) == 1


async def test_a_value_that_is_not_a_stored_response_is_ignored(proxied: Proxied) -> None:
    url = proxied.page(cc="max-age=60")
    await proxied.cache.set(http_key(url), b"planted through the cache API", 60)
    response = await proxied.client.get(url)
    assert (response.headers["x-cache"], response.text[:2]) == ("MISS", "v1")
    assert Entry.decode(proxied.cache.items[http_key(url)].value).body.startswith(b"v1")


async def test_post_passes_through_and_drops_the_stored_get(proxied: Proxied) -> None:
    url = f"{proxied.origin.url}/echo"
    key = http_key(url)
    await proxied.cache.set(key, Entry(200, "OK", (), b"old", time.time()).encode(), 60)
    response = await proxied.client.post(url, content=b"payload")
    assert (response.status_code, response.content, response.headers["x-cache"]) == (200, b"payload", "MISS")
    assert key not in proxied.cache.items


# -- the proxy's own answers ---------------------------------------------------------------------------


async def test_requests_without_the_token_get_407(proxied: Proxied) -> None:
    url = proxied.page()
    for proxy in (proxied.url, f"http://user:wrong@127.0.0.1:{proxied.server.port}"):
        async with httpx.AsyncClient(proxy=proxy, trust_env=False) as client:
            response = await client.get(url)
        assert response.status_code == 407
        assert response.headers["proxy-authenticate"] == 'Basic realm="shoal"'
    assert proxied.hits(url) == 0


async def test_origin_form_request_is_refused(proxied: Proxied) -> None:
    async with httpx.AsyncClient(trust_env=False) as client:  # straight to the proxy, as to a server
        response = await client.get(f"{proxied.url}/hello", headers={"Proxy-Authorization": _basic(TOKEN)})
    assert response.status_code == 400 and "forward proxy" in response.text


async def test_metadata_targets_are_refused(proxied: Proxied) -> None:
    for url in ("http://169.254.169.254/latest/meta-data/", "http://metadata.google.internal/"):
        response = await proxied.client.get(url)
        assert response.status_code == 403 and "refused" in response.text, url
    # IPv6 literals by hand: httpx drops the brackets from an IPv6 host in a proxy's absolute-form target
    for url in ("http://[fd20:ce::254]/computeMetadata/v1/", "http://[fd00:ec2::254]/latest/"):
        reader, writer = await asyncio.open_connection("127.0.0.1", proxied.server.port)
        writer.write(f"GET {url} HTTP/1.1\r\nHost: x\r\nProxy-Authorization: {_basic(TOKEN)}\r\n\r\n".encode())
        answer = await asyncio.wait_for(reader.read(), 5)
        writer.close()
        assert answer.split()[1] == b"403" and b"cloud metadata address" in answer, (url, answer)


async def test_a_loop_through_the_proxy_is_cut(proxied: Proxied) -> None:
    response = await proxied.client.get(proxied.page(), headers={"Via": "1.1 shoal-test"})
    assert response.status_code == 508


async def test_connections_over_the_limit_get_503(proxied: Proxied) -> None:
    """Four token holders keep their connections (keep-alive) in the four client slots; a fifth gets a 503."""
    proxy = f"http://user:{TOKEN}@127.0.0.1:{proxied.server.port}"
    held = [httpx.AsyncClient(proxy=proxy, trust_env=False) for _ in range(4)]
    try:
        assert [(await c.get(proxied.page())).status_code for c in held] == [200] * 4
        assert len(proxied.server._sessions) == 4
        response = await proxied.client.get(proxied.page())
        assert response.status_code == 503 and "serving all the clients it can" in response.text
    finally:
        for client in held:
            await client.aclose()
    await _wait(lambda: not proxied.server._sessions)
    assert (await proxied.client.get(proxied.page())).status_code == 200


async def test_oversized_request_head_is_refused(proxied: Proxied) -> None:
    response = await proxied.client.get(proxied.page(), headers={"X-Big": "a" * 40_000})
    assert response.status_code == 431


async def test_connect_checks_its_target_and_closes_an_idle_tunnel(proxied: Proxied) -> None:
    auth = _basic(TOKEN)
    for target, status in (("169.254.169.254:443", b"403"), ("[fd20:ce::254]:443", b"403"), ("no-port", b"400")):
        reader, writer = await asyncio.open_connection("127.0.0.1", proxied.server.port)
        writer.write(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\nProxy-Authorization: {auth}\r\n\r\n".encode())
        assert (await asyncio.wait_for(reader.read(), 5)).split()[1] == status, target
        writer.close()
    origin = proxied.origin.url.removeprefix("http://")
    reader, writer = await asyncio.open_connection("127.0.0.1", proxied.server.port)
    writer.write(f"CONNECT {origin} HTTP/1.1\r\nHost: {origin}\r\nProxy-Authorization: {auth}\r\n\r\n".encode())
    assert (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)).startswith(b"HTTP/1.1 200 ")
    writer.write(f"GET /hello HTTP/1.1\r\nHost: {origin}\r\n\r\n".encode())  # plain HTTP through the tunnel
    assert (await asyncio.wait_for(reader.readuntil(b"hello shoal"), 5)).startswith(b"HTTP/1.1 200 ")
    started = time.monotonic()
    assert await asyncio.wait_for(reader.read(), 5) == b""  # closed once idle for the proxy's timeout (1 s)
    assert 0.5 < time.monotonic() - started < 3
    writer.close()


# -- fetch through the same cache ---------------------------------------------------------------------


async def test_fetch_keeps_its_limits_on_a_stored_copy(origin: Any) -> None:
    cache = HttpCache(MemoryCache(), max_value=MAX_VALUE)
    url = f"{origin.url}/cacheable?{urlencode({'k': uuid.uuid4().hex[:8], 'bytes': '5000'})}"
    ctx = TaskContext(task_id="t", name="page", type="fetch", target=url, params={}, attempt=1, node="n1")
    async with httpx.AsyncClient(trust_env=False) as client:
        first = await Fetcher(client, cache=cache)(ctx)
        second = await Fetcher(client, cache=cache)(ctx)
        with pytest.raises(FetchFailed, match="limit is 4096"):
            await Fetcher(client, max_bytes=4096, cache=cache)(ctx)
    assert (first.meta["cache"], second.meta["cache"], second.code) == ("MISS", "HIT", first.code)
    assert origin.hits_of(url.removeprefix(origin.url)) == 1


# -- the policy itself --------------------------------------------------------------------------------


def test_freshness_from_max_age_s_maxage_and_expires() -> None:
    now = time.time()
    date = policy.http_date(now)
    assert policy.freshness_lifetime([("Cache-Control", "max-age=30, s-maxage=90")], now) == 90
    assert policy.freshness_lifetime([("Cache-Control", "max-age=30")], now) == 30
    expires = [("Date", date), ("Expires", policy.http_date(now + 120))]
    assert policy.freshness_lifetime(expires, now) == pytest.approx(120, abs=1)
    assert policy.freshness_lifetime([("Expires", "0")], now) == 0
    assert policy.freshness_lifetime([("Content-Type", "text/plain")], now) is None


def test_storable_decisions() -> None:
    now = time.time()
    ok = policy.storable(200, [("Cache-Control", "max-age=60")], 0, now)
    assert ok.store and ok.ttl_s == 60 and ok.keep_s == 0
    stale = policy.storable(200, [("Cache-Control", "max-age=0"), ("ETag", '"x"')], 0, now)
    assert stale.store and stale.ttl_s == policy.STALE_ON_ARRIVAL_S and stale.keep_s == policy.KEEP_STALE_S
    assert not policy.storable(302, [("Cache-Control", "max-age=60")], 0, now).store
    assert not policy.storable(200, [("Cache-Control", "max-age=60"), ("Vary", "*")], 0, now).store
    assert policy.storable(200, [("Cache-Control", "max-age=60"), ("Vary", "Accept-Encoding")], 0, now).store
    assert not policy.storable(200, [("Cache-Control", "max-age=10")], 11, now).store  # older than its lifetime


def test_request_modes() -> None:
    assert policy.request_mode([]) is policy.Mode.USE
    assert policy.request_mode([("Cache-Control", "no-cache")]) is policy.Mode.REVALIDATE
    assert policy.request_mode([("Cache-Control", "max-age=0")]) is policy.Mode.REVALIDATE
    assert policy.request_mode([("Pragma", "no-cache")]) is policy.Mode.REVALIDATE
    for header in ("Authorization", "Cookie", "Range"):
        assert policy.request_mode([(header, "x")]) is policy.Mode.BYPASS


def test_hop_by_hop_headers_are_dropped() -> None:
    headers = [("Connection", "close, X-Secret"), ("X-Secret", "1"), ("Keep-Alive", "5"), ("ETag", '"a"')]
    assert policy.end_to_end(headers) == [("ETag", '"a"')]


def test_entry_round_trip_and_garbage() -> None:
    entry = Entry.make(200, "OK", [("ETag", '"a"'), ("Transfer-Encoding", "chunked")], b"body", 1.0, 2.0)
    assert Entry.decode(entry.encode()) == entry and entry.headers == (("ETag", '"a"'),)
    for junk in (b"", b"SHC1", b"SHC1\x00\x00\x00\x05{bad}", b"plain value"):
        with pytest.raises(BadEntry):
            Entry.decode(junk)


def _basic(password: str) -> str:
    return "Basic " + base64.b64encode(f"user:{password}".encode()).decode()


async def _wait(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


def test_a_task_target_and_the_url_fetched_for_it_have_one_cache_key() -> None:
    """The scheduler keys a fetch by its raw target, the fetch by the URL httpx sends: the same key, so a
    fetch lands on the node that holds its page."""
    import httpx

    from shoal.cache.keys import http_key

    for target in ("HTTP://Example.COM:80/a b?q=1 2#frag", "https://[::1]:443/x", "http://127.0.0.1:8000"):
        assert http_key(target) == http_key(str(httpx.URL(target)))
    assert http_key("HTTP://Example.COM:80/a b") == "http:http://example.com/a%20b"
