"""Polite fetching: the holds a site asks for with ``Retry-After`` (429, 503), and robots.txt when a task
asks for it (``params.robots``).

In-process tests drive the Fetcher against a loopback site of their own, whose answers each test chooses,
through the network double of test_fetch that reaches loopback only; holds go to the suite's real Redis.
End-to-end tests run fetches on a real node, through its cluster cache. No packet leaves 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import redis
from test_fetch import LoopbackOnly

from shoal.errors import InvalidInput
from shoal.keys import Keys
from shoal.outbound import CheckedBackend, client
from shoal.store.hosts import HostHolds
from shoal.store.redis import connect, database_of
from shoal.testing import TestNode, wait_for
from shoal.worker.handlers import TaskContext
from shoal.worker.handlers.fetch import (
    DEFAULT_HOLD_S,
    MAX_HOLD_S,
    MIN_HOLD_S,
    USER_AGENT,
    Fetcher,
    FetchFailed,
    HoldHost,
    hold_s,
    retry_after_s,
    validate,
)

TERMINAL = ("SUCCEED", "RUNTIME_ERROR", "KILLED")
ROBOTS = b"User-agent: *\nDisallow: /private\n"


class Site:
    """A real HTTP server on loopback whose answer for each path the test sets (404 for any other), counting
    the requests for each path and keeping the User-Agent each came with."""

    def __init__(self) -> None:
        self.routes: dict[str, tuple[int, list[tuple[str, str]], bytes]] = {}
        self.hits: Counter[str] = Counter()
        self.agents: list[str] = []
        self.lock = threading.Lock()
        site = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                path = urlsplit(self.path).path
                with site.lock:
                    site.hits[path] += 1
                    site.agents.append(self.headers.get("User-Agent", ""))
                    status, headers, body = site.routes.get(path, (404, [], b"not found"))
                self.send_response(status)
                for name, value in [("Content-Type", "text/plain; charset=utf-8"), *headers]:
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{port}"
        self.host = f"127.0.0.1:{port}"  # as hold:{host} names it: not the scheme's port, so it is kept
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def answer(
        self, path: str, status: int = 200, body: bytes = b"ok", headers: list[tuple[str, str]] | None = None
    ) -> None:
        with self.lock:
            self.routes[path] = (status, headers or [], body)

    def hits_of(self, path: str) -> int:
        with self.lock:
            return self.hits[path]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def site() -> Iterator[Site]:
    """A site of the test's own: a port, and so a host and a robots.txt, that no other test shares."""
    server = Site()
    yield server
    server.close()


@pytest.fixture
async def fetch() -> AsyncIterator[Callable[..., Fetcher]]:
    """Fetchers on the loopback-only network, closed after the test."""
    made: list[Fetcher] = []

    def make(hold_host: HoldHost | None = None) -> Fetcher:
        made.append(Fetcher(client(timeout=10.0, backend=CheckedBackend(inner=LoopbackOnly())), hold_host=hold_host))
        return made[-1]

    yield make
    for fetcher in made:
        await fetcher.client.aclose()


def context(url: str, **params: Any) -> TaskContext:
    return TaskContext(task_id="t", name="page", type="fetch", target=url, params=params, attempt=1, node="n1")


# -- Retry-After -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "asked"), [("2", 2.0), (" 120 ", 120.0), ("0", 0.0), ("86400", 86400.0)])
def test_retry_after_in_seconds(value: str, asked: float) -> None:
    assert retry_after_s(value) == asked


def test_retry_after_as_an_http_date_counts_from_the_sites_own_date() -> None:
    sent = 1_800_000_000.0
    later = formatdate(sent + 30, usegmt=True)
    assert retry_after_s(later, date=formatdate(sent, usegmt=True), now=sent + 500) == 30.0  # the site's clock
    assert retry_after_s(later, now=sent + 10) == 20.0  # no Date: from now
    assert retry_after_s(later, now=sent + 10.5) == 20.0  # rounded up to a whole second
    assert retry_after_s(formatdate(sent - 60, usegmt=True), now=sent) == 0.0  # already past
    assert retry_after_s(later, date="not a date", now=sent) == 30.0


@pytest.mark.parametrize("value", [None, "", "soon", "1.5", "-3", "+3", "²", "0x10", "Someday, 99 Foo 2026"])
def test_an_unreadable_retry_after_asks_for_nothing(value: str | None) -> None:
    assert retry_after_s(value) is None


def test_the_hold_is_the_default_without_retry_after_and_capped_either_way() -> None:
    assert hold_s(None) == DEFAULT_HOLD_S == 5.0
    assert hold_s(2.0) == 2.0
    assert hold_s(0.0) == MIN_HOLD_S
    assert hold_s(retry_after_s("86400")) == MAX_HOLD_S == 3600.0
    assert hold_s(retry_after_s("9" * 40)) == MAX_HOLD_S
    far = formatdate(time.time() + 10 * 86400, usegmt=True)
    assert hold_s(retry_after_s(far)) == MAX_HOLD_S


async def test_a_429_fails_the_fetch_saying_how_long_the_site_asked(site: Site, fetch: Callable[..., Fetcher]) -> None:
    site.answer("/busy", 429, b"slow down", [("Retry-After", "2")])
    site.answer("/down", 503, b"maintenance")
    site.answer("/long", 503, b"maintenance", [("Retry-After", "7200")])
    fetcher = fetch()  # no store: nothing holds the host, the fetch fails all the same
    with pytest.raises(FetchFailed) as busy:
        await fetcher(context(f"{site.url}/busy"))
    assert str(busy.value) == (
        f"HTTP 429 Too Many Requests from {site.url}/busy; the site asked to wait 2s (Retry-After)"
    )
    with pytest.raises(FetchFailed, match=f"no usable Retry-After, so fetches to {site.host} wait 5s"):
        await fetcher(context(f"{site.url}/down"))
    with pytest.raises(FetchFailed, match=r"asked to wait 7200s \(Retry-After\), held for 3600s"):
        await fetcher(context(f"{site.url}/long"))


async def test_a_hold_the_store_cannot_take_still_fails_the_fetch(site: Site, fetch: Callable[..., Fetcher]) -> None:
    async def store_down(host: str, seconds: float) -> None:
        raise ConnectionError("the store is down")

    site.answer("/busy", 429, b"", [("Retry-After", "2")])
    with pytest.raises(FetchFailed, match="HTTP 429"):
        await fetch(store_down)(context(f"{site.url}/busy"))


# -- host holds in the store ---------------------------------------------------------------------------------


@pytest.fixture
async def holds(redis_url: str) -> AsyncIterator[HostHolds]:
    """Host holds on the suite's real Redis."""
    redis = connect(redis_url, name="polite-test")
    yield HostHolds(redis, Keys("polite", db=database_of(redis)))
    await redis.aclose()


async def store_time(holds: HostHolds) -> float:
    seconds, micros = await holds.redis.time()
    return float(seconds) + micros / 1e6


async def test_a_429_holds_its_host_and_a_shorter_wait_never_shortens_it(
    site: Site, fetch: Callable[..., Fetcher], holds: HostHolds
) -> None:
    site.answer("/busy", 429, b"slow down", [("Retry-After", "2")])
    site.answer("/down", 503, b"maintenance", [("Retry-After", "1")])
    site.answer("/longer", 503, b"maintenance", [("Retry-After", "4")])
    fetcher = fetch(holds.hold)
    key = holds.keys.host_hold(site.host)
    assert key == f"shoal:polite:hold:127.0.0.1:{site.url.rsplit(':', 1)[1]}"

    with pytest.raises(FetchFailed, match=r"429 Too Many Requests .*the site asked to wait 2s \(Retry-After\)"):
        await fetcher(context(f"{site.url}/busy"))
    ends, left_ms = await holds.until(site.host), await holds.redis.pttl(key)
    assert ends is not None and 1000 < left_ms <= 2000
    assert abs(ends - (await store_time(holds) + left_ms / 1000)) < 0.05  # the store's clock, not this one's

    with pytest.raises(FetchFailed, match=r"503 Service Unavailable .*asked to wait 1s"):
        await fetcher(context(f"{site.url}/down"))
    assert await holds.until(site.host) == ends  # not shortened
    assert await holds.redis.pttl(key) > 1000

    with pytest.raises(FetchFailed, match="asked to wait 4s"):
        await fetcher(context(f"{site.url}/longer"))
    extended = await holds.until(site.host)
    assert extended is not None and extended > ends and 3000 < await holds.redis.pttl(key) <= 4000


async def test_holds_are_kept_per_host_and_end_on_their_own(holds: HostHolds) -> None:
    now = await store_time(holds)
    first = await holds.hold("example.org", 0.2)
    assert now + 0.15 < first < now + 0.3
    assert await holds.hold("example.org", 0.1) == first  # shorter: the longer one stays
    assert await holds.until("example.org:8080") is None  # another port, another host

    deadline = time.monotonic() + 5
    while await holds.until("example.org") is not None:
        assert time.monotonic() < deadline, "the hold did not expire"
        await asyncio.sleep(0.02)


# -- robots.txt ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("robots", ["yes", 1, "true", None, [True]])
def test_params_robots_must_be_a_boolean(robots: Any) -> None:
    with pytest.raises(InvalidInput, match="params.robots must be true or false"):
        validate("https://example.org/", {"robots": robots})


def test_params_robots_true_or_false_or_absent_is_accepted() -> None:
    for params in ({"robots": True}, {"robots": False}, {}, {"other": "kept as before"}):
        validate("https://example.org/", params)


async def test_robots_txt_refuses_a_disallowed_path_and_allows_the_rest(
    site: Site, fetch: Callable[..., Fetcher]
) -> None:
    site.answer("/robots.txt", body=ROBOTS)
    site.answer("/private/page", body=b"secret")
    site.answer("/public", body=b"hello")
    fetcher = fetch()
    with pytest.raises(FetchFailed) as refused:
        await fetcher(context(f"{site.url}/private/page", robots=True))
    assert str(refused.value) == f"disallowed by robots.txt: {site.url}/private/page"
    assert site.hits_of("/private/page") == 0
    out = await fetcher(context(f"{site.url}/public", robots=True))
    assert out.code == "hello"
    assert site.hits_of("/robots.txt") == 2  # once per fetch: no cache here
    assert all(agent == USER_AGENT for agent in site.agents) and USER_AGENT.startswith("shoal/")
    assert (await fetcher(context(f"{site.url}/robots.txt"))).code == ROBOTS.decode()  # robots: off by default
    assert site.hits_of("/robots.txt") == 3


async def test_robots_txt_groups_for_shoal_apply_to_it(site: Site, fetch: Callable[..., Fetcher]) -> None:
    site.answer("/robots.txt", body=b"User-agent: *\nAllow: /\n\nUser-agent: shoal\nDisallow: /\n")
    site.answer("/page", body=b"page")
    with pytest.raises(FetchFailed, match="disallowed by robots.txt"):
        await fetch()(context(f"{site.url}/page", robots=True))
    assert site.hits_of("/page") == 0


async def test_a_redirect_hop_is_checked_against_robots_txt(site: Site, fetch: Callable[..., Fetcher]) -> None:
    site.answer("/robots.txt", body=ROBOTS)
    site.answer("/go", 302, b"", [("Location", "/private/x")])
    with pytest.raises(FetchFailed, match=f"disallowed by robots.txt: {site.url}/private/x"):
        await fetch()(context(f"{site.url}/go", robots=True))
    assert (site.hits_of("/go"), site.hits_of("/private/x")) == (1, 0)


@pytest.mark.parametrize("status", [404, 403, 410])
async def test_a_missing_robots_txt_allows_everything(site: Site, fetch: Callable[..., Fetcher], status: int) -> None:
    site.answer("/robots.txt", status, b"no robots here")
    site.answer("/private/page", body=b"found")
    assert (await fetch()(context(f"{site.url}/private/page", robots=True))).code == "found"


@pytest.mark.parametrize("status", [500, 502])
async def test_a_failing_robots_txt_allows_nothing(site: Site, fetch: Callable[..., Fetcher], status: int) -> None:
    site.answer("/robots.txt", status, b"broken")
    site.answer("/page", body=b"page")
    with pytest.raises(FetchFailed, match=rf"disallowed by robots.txt: .*/page \(robots.txt answered HTTP {status}\)"):
        await fetch()(context(f"{site.url}/page", robots=True))
    assert site.hits_of("/page") == 0


async def test_robots_txt_redirects_are_followed(site: Site, fetch: Callable[..., Fetcher]) -> None:
    site.answer("/robots.txt", 301, b"", [("Location", "/moved-robots.txt")])
    site.answer("/moved-robots.txt", body=ROBOTS)
    with pytest.raises(FetchFailed, match="disallowed by robots.txt"):
        await fetch()(context(f"{site.url}/private", robots=True))
    assert site.hits_of("/moved-robots.txt") == 1


async def test_a_robots_txt_past_its_size_limit_is_read_to_the_limit(site: Site, fetch: Callable[..., Fetcher]) -> None:
    padding = b"# " + b"x" * 1000 + b"\n"
    site.answer("/robots.txt", body=ROBOTS + padding * 1000 + b"User-agent: *\nDisallow: /\n")  # past 512 KiB
    site.answer("/page", body=b"page")
    assert (await fetch()(context(f"{site.url}/page", robots=True))).code == "page"  # the last rule is ignored


async def test_a_robots_txt_that_asks_to_wait_holds_the_host(
    site: Site, fetch: Callable[..., Fetcher], holds: HostHolds
) -> None:
    site.answer("/robots.txt", 503, b"", [("Retry-After", "3")])
    with pytest.raises(FetchFailed, match=r"/robots.txt; the site asked to wait 3s"):
        await fetch(holds.hold)(context(f"{site.url}/page", robots=True))
    assert 2000 < await holds.redis.pttl(holds.keys.host_hold(site.host)) <= 3000
    assert site.hits_of("/page") == 0


# -- on a node: the cluster cache, the store, submit ----------------------------------------------------------


class Api:
    def __init__(self, node: TestNode) -> None:
        self.http = httpx.Client(base_url=node.http_url, headers=node.headers(), timeout=30.0, trust_env=False)

    def submit(self, url: str, **params: Any) -> httpx.Response:
        return self.http.post("/api/v1/tasks", json={"name": "page", "type": "fetch", "target": url, "params": params})

    def run(self, url: str, **params: Any) -> dict[str, Any]:
        response = self.submit(url, **params)
        assert response.status_code == 201, response.text
        task_id = response.json()["id"]

        def ended() -> dict[str, Any] | None:
            task: dict[str, Any] = self.http.get(f"/api/v1/tasks/{task_id}").json()
            return task if task["state"] in TERMINAL else None

        task = wait_for(ended, 20, f"fetch of {url} to end")
        assert task is not None
        return task


@pytest.fixture
def api(node_factory: Callable[..., TestNode]) -> Iterator[Api]:
    made = Api(node_factory())
    yield made
    made.http.close()


@pytest.mark.e2e
def test_robots_txt_is_read_once_through_the_cluster_cache(api: Api, site: Site) -> None:
    site.answer("/robots.txt", body=ROBOTS, headers=[("Cache-Control", "max-age=60")])
    site.answer("/a", body=b"page a")
    site.answer("/b", body=b"page b")
    site.answer("/private/c", body=b"secret")
    for path in ("/a", "/b"):
        task = api.run(f"{site.url}{path}", robots=True)
        assert task["state"] == "SUCCEED", task["error"]
    refused = api.run(f"{site.url}/private/c", robots=True)
    assert refused["state"] == "RUNTIME_ERROR" and refused["error"].endswith(
        f"disallowed by robots.txt: {site.url}/private/c"
    )
    assert site.hits_of("/robots.txt") == 1 and site.hits_of("/private/c") == 0


@pytest.mark.e2e
def test_params_robots_that_is_no_boolean_is_refused_at_submit(api: Api) -> None:
    response = api.submit("http://127.0.0.1:9/page", robots="yes")
    assert response.status_code == 400, response.text
    assert "params.robots must be true or false" in response.text


@pytest.mark.e2e
def test_a_429_on_a_node_holds_the_host_in_its_store(api: Api, site: Site, redis_url: str) -> None:
    site.answer("/busy", 429, b"slow down", [("Retry-After", "30")])
    task = api.run(f"{site.url}/busy")
    assert task["state"] == "RUNTIME_ERROR"
    assert task["error"].endswith(
        f"HTTP 429 Too Many Requests from {site.url}/busy; the site asked to wait 30s (Retry-After)"
    )
    with redis.Redis.from_url(redis_url) as store:
        assert 20_000 < store.pttl(Keys("shoal").host_hold(site.host)) <= 30_000  # the node's cluster: "shoal"
