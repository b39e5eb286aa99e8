"""The ``fetch`` task type: what it keeps, every limit it enforces, and the addresses it never contacts.

End-to-end tests run fetches on real nodes against the loopback origin. In-process tests drive the
Fetcher through a network that lets connections reach loopback addresses only (and fails the test
otherwise), so a refusal is shown to happen before any connection; the address checks are also tested as
pure functions.
No test sends a packet anywhere but 127.0.0.1.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Iterable, Iterator
from typing import Any
from urllib.parse import quote, urlsplit

import httpcore
import httpx
import pytest

from shoal.addresses import AddressRefused, IPAddress, refuse_address, resolve
from shoal.errors import InvalidInput
from shoal.outbound import CheckedBackend, client
from shoal.testing import TestNode, wait_for
from shoal.worker.handlers import TaskContext
from shoal.worker.handlers.fetch import Fetcher, FetchFailed, validate

TERMINAL = ("SUCCEED", "RUNTIME_ERROR", "KILLED")
LIMITS = ["--fetch-max-redirects", "3", "--fetch-max-bytes", "4096", "--fetch-timeout", "1"]
#: URLs of metadata services and link-local hosts; none may ever be contacted.
REFUSED_URLS = [
    "http://169.254.169.254/latest/meta-data/",
    "http://169.254.1.1:8080/x",
    "http://[fe80::1]/",
    "http://[::ffff:169.254.169.254]/latest/meta-data/",
    "http://100.100.100.200/latest/meta-data/",
    "http://[fd00:ec2::254]/latest/meta-data/",
    "http://metadata.google.internal/computeMetadata/v1/",
    "http://METADATA.GOOGLE.INTERNAL./computeMetadata/v1/",
    "https://metadata/computeMetadata/v1/",
]


# -- end to end, on a node -----------------------------------------------------------------------------


class Api:
    def __init__(self, node: TestNode) -> None:
        self.http = httpx.Client(base_url=node.http_url, headers=node.headers(), timeout=30.0, trust_env=False)

    def fetch(self, url: str) -> httpx.Response:
        return self.http.post("/api/v1/tasks", json={"name": "page", "type": "fetch", "target": url})

    def run(self, url: str) -> dict[str, Any]:
        """Submit a fetch of ``url`` and return the task once it has ended."""
        response = self.fetch(url)
        assert response.status_code == 201, response.text
        task_id = response.json()["id"]

        def ended() -> dict[str, Any] | None:
            task: dict[str, Any] = self.http.get(f"/api/v1/tasks/{task_id}").json()
            return task if task["state"] in TERMINAL else None

        task = wait_for(ended, 20, f"fetch of {url} to end")
        assert task is not None
        return task

    def result(self, task_id: str) -> dict[str, Any]:
        response = self.http.get(f"/api/v1/tasks/{task_id}/result")
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body


@pytest.fixture
def start(node_factory: Callable[..., TestNode]) -> Iterator[Callable[..., Api]]:
    apis: list[Api] = []

    def make(*flags: str) -> Api:
        apis.append(Api(node_factory(args=list(flags))))
        return apis[-1]

    yield make
    for api in apis:
        api.http.close()


@pytest.mark.e2e
def test_fetch_keeps_the_page_source_and_its_meta(start: Callable[..., Api], origin: Any) -> None:
    api = start()
    before = origin.hits("/hello")
    task = api.run(f"{origin.url}/hello")
    assert task["state"] == "SUCCEED", task["error"]
    result = api.result(task["id"])
    assert result["code"] == "hello shoal"
    meta = result["meta"]
    assert (meta["status"], meta["content_type"], meta["bytes"]) == (200, "text/plain; charset=utf-8", 11)
    assert origin.hits("/hello") == before + 1


@pytest.mark.e2e
def test_fetch_of_an_error_status_is_a_runtime_error(start: Callable[..., Api], origin: Any) -> None:
    api = start()
    for code in (500, 404):
        task = api.run(f"{origin.url}/status?code={code}")
        assert task["state"] == "RUNTIME_ERROR"
        assert f"HTTP {code}" in task["error"]
        assert api.http.get(f"/api/v1/tasks/{task['id']}/result").status_code == 404


@pytest.mark.e2e
def test_redirects_are_followed_up_to_the_limit(start: Callable[..., Api], origin: Any) -> None:
    api = start(*LIMITS)
    within = api.run(f"{origin.url}/redirect?n=3")
    assert within["state"] == "SUCCEED", within["error"]
    result = api.result(within["id"])
    assert result["code"] == "hello shoal"
    assert result["meta"]["redirects"] == 3 and result["meta"]["url"] == f"{origin.url}/hello"

    over = api.run(f"{origin.url}/redirect?n=4")
    assert over["state"] == "RUNTIME_ERROR"
    assert "more than 3 redirects" in over["error"]


@pytest.mark.e2e
def test_body_over_the_limit_is_a_runtime_error(start: Callable[..., Api], origin: Any) -> None:
    api = start(*LIMITS)
    at_limit = api.run(f"{origin.url}/big?bytes=4096")
    assert at_limit["state"] == "SUCCEED", at_limit["error"]
    assert api.result(at_limit["id"])["meta"]["bytes"] == 4096

    declared = api.run(f"{origin.url}/big?bytes=4097")  # refused from its Content-Length
    assert declared["state"] == "RUNTIME_ERROR" and "4096" in declared["error"]
    streamed = api.run(f"{origin.url}/stream?bytes=100000")  # refused while reading: no length announced
    assert streamed["state"] == "RUNTIME_ERROR" and "4096" in streamed["error"]


@pytest.mark.e2e
def test_fetch_over_its_time_limit_is_a_runtime_error(start: Callable[..., Api], origin: Any) -> None:
    api = start(*LIMITS)
    task = api.run(f"{origin.url}/slow?s=3")
    assert task["state"] == "RUNTIME_ERROR"
    assert "1s" in task["error"] or "Timeout" in task["error"], task["error"]
    assert task["finished_at"] - task["started_at"] < 2.5


@pytest.mark.e2e
def test_metadata_and_link_local_targets_are_refused_at_submit(start: Callable[..., Api]) -> None:
    api = start()
    for url in REFUSED_URLS:
        response = api.fetch(url)
        assert response.status_code == 400, (url, response.text)
        assert response.json()["error"] == "invalid_input"
        assert "refused" in response.json()["message"], url
    assert api.http.get("/api/v1/tasks").json()["total"] == 0  # nothing was stored, so nothing ran


@pytest.mark.e2e
def test_redirect_to_a_metadata_address_is_refused(start: Callable[..., Api], origin: Any) -> None:
    api = start()
    before = origin.hits("/redirect-to")
    target = "http://169.254.169.254/latest/meta-data/"
    task = api.run(f"{origin.url}/redirect-to?url={quote(target, safe='')}")
    assert task["state"] == "RUNTIME_ERROR"
    assert "refused" in task["error"] and "169.254.169.254" in task["error"]
    assert origin.hits("/redirect-to") == before + 1


@pytest.mark.e2e
def test_the_clusters_own_addresses_are_refused_as_fetch_targets(
    node_factory: Callable[..., TestNode], origin: Any
) -> None:
    """A token holder must not reach the store or a node's ports through a fetch, as through the proxy:
    directly, by name, on a wildcard's other address, or behind a redirect from a page they control."""
    node = node_factory()
    api = Api(node)
    store_port = urlsplit(node.redis_url).port
    targets = [
        f"http://127.0.0.1:{store_port}/",
        f"http://localhost:{node.http_port}/healthz",
        f"http://127.0.0.2:{node.http_port}/healthz",
        f"http://127.0.0.1:{node.grpc_port}/",
        f"http://127.0.0.1:{node.proxy_port}/",
        f"{origin.url}/redirect-to?url={quote(f'http://127.0.0.1:{store_port}/', safe='')}",
    ]
    for target in targets:
        task = api.run(target)
        assert task["state"] == "RUNTIME_ERROR", (target, task)
        assert "this cluster's own addresses" in task["error"], (target, task["error"])
    assert api.run(f"{origin.url}/hello")["state"] == "SUCCEED"  # another port of this host is no cluster's
    api.http.close()


# -- in process: the Fetcher and the address checks ----------------------------------------------------


class LoopbackOnly(httpcore.AsyncNetworkBackend):
    """The real network, for loopback addresses only: a connection anywhere else fails the test unopened."""

    def __init__(self) -> None:
        self.inner = httpcore.AnyIOBackend()
        self.connected: list[str] = []

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        self.connected.append(host)
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False  # a name: the checked address must be connected to instead
        if not loopback:
            raise AssertionError(f"fetch tried to connect to {host}")
        return await self.inner.connect_tcp(host, port, timeout, local_address, socket_options)

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)


@pytest.fixture
def transport() -> LoopbackOnly:
    return LoopbackOnly()


def fetcher(transport: LoopbackOnly, **limits: Any) -> Fetcher:
    return Fetcher(client(timeout=10.0, backend=CheckedBackend(inner=transport)), **limits)


def context(url: str) -> TaskContext:
    return TaskContext(task_id="t", name="page", type="fetch", target=url, params={}, attempt=1, node="n1")


async def test_fetcher_pins_the_checked_address(transport: LoopbackOnly, origin: Any) -> None:
    first = socket.getaddrinfo("localhost", 80, type=socket.SOCK_STREAM)[0][4][0]
    if first != "127.0.0.1":  # the origin listens on IPv4 only, and fetch connects to the first address
        pytest.skip(f"localhost resolves to {first} first here")
    fetch = fetcher(transport)
    async with fetch.client:
        out = await fetch(context(origin.url.replace("127.0.0.1", "localhost") + "/hello"))
    assert out.code == "hello shoal" and out.meta["status"] == 200
    assert transport.connected == ["127.0.0.1"]


@pytest.mark.parametrize(
    "location",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://[::ffff:169.254.169.254]/",
        "http://[fe80::1]:8080/",
        "http://metadata.google.internal/computeMetadata/v1/",
        "http://100.100.100.200/",
    ],
)
async def test_redirect_to_a_refused_address_is_refused_before_connecting(
    transport: LoopbackOnly, origin: Any, location: str
) -> None:
    fetch = fetcher(transport)
    async with fetch.client:
        with pytest.raises(AddressRefused, match="refused"):
            await fetch(context(f"{origin.url}/redirect-to?url={quote(location, safe='')}"))
    assert transport.connected == ["127.0.0.1"]  # the origin only


async def test_a_name_resolving_to_a_refused_address_is_refused_as_the_connection_opens(
    transport: LoopbackOnly,
) -> None:
    async def rebound(host: str, port: int) -> IPAddress:
        """A name whose DNS answer is the metadata address (what a rebinding attacker serves)."""
        assert host == "rebound.test", host
        return await resolve("169.254.169.254", port)

    pool = client(timeout=5.0, limits=httpx.Limits(max_connections=1), backend=CheckedBackend(rebound, transport))
    fetch = Fetcher(pool, timeout_s=5.0)
    async with fetch.client:
        for _ in range(3):  # a refused connection does not keep the pool's only slot
            with pytest.raises(AddressRefused, match="169.254.169.254"):
                await fetch(context("http://rebound.test/latest/meta-data/"))
    assert transport.connected == []


async def test_redirect_to_a_non_http_url_fails(transport: LoopbackOnly, origin: Any) -> None:
    fetch = fetcher(transport)
    async with fetch.client:
        with pytest.raises(FetchFailed, match="non-http"):
            await fetch(context(f"{origin.url}/redirect-to?url={quote('file:///etc/passwd', safe='')}"))


async def test_streamed_body_is_cut_at_the_limit(transport: LoopbackOnly, origin: Any) -> None:
    fetch = fetcher(transport, max_bytes=2048)
    async with fetch.client:
        with pytest.raises(FetchFailed, match="limit of 2048"):
            await fetch(context(f"{origin.url}/stream?bytes=1000000"))
        small = await fetch(context(f"{origin.url}/stream?bytes=2048"))
    assert small.code == "y" * 2048


def ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return ipaddress.ip_address(text)


@pytest.mark.parametrize(
    "address",
    [
        "169.254.169.254",
        "169.254.0.1",
        "fe80::1",
        "fe80::a9fe:a9fe",
        "::ffff:169.254.169.254",  # IPv4-mapped IPv6
        "::ffff:a9fe:1",
        "100.100.100.200",
        "::ffff:100.100.100.200",
        "fd00:ec2::254",
        "fd20:ce::254",  # Google Cloud's IPv6 metadata address
        "64:ff9b::169.254.169.254",  # NAT64: reaches the IPv4 address through the network's translator
        "2002:a9fe:a9fe::1",  # 6to4 of 169.254.169.254
        "::169.254.169.254",  # IPv4-compatible IPv6 (deprecated, still parsed)
    ],
)
def test_refused_addresses(address: str) -> None:
    with pytest.raises(AddressRefused, match="refused"):
        refuse_address(ip(address))


@pytest.mark.parametrize(
    "address", ["127.0.0.1", "::1", "10.0.0.1", "192.168.1.1", "8.8.8.8", "2001:db8::1", "::ffff:127.0.0.1", "::"]
)
def test_allowed_addresses(address: str) -> None:
    refuse_address(ip(address))


@pytest.mark.parametrize("url", REFUSED_URLS)
def test_validate_refuses_without_resolving(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_lookup(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("validate looked a name up")

    monkeypatch.setattr(socket, "getaddrinfo", no_lookup)
    with pytest.raises(InvalidInput, match="refused"):
        validate(url, {})


@pytest.mark.parametrize(
    "url", ["ftp://example.test/x", "not a url", "http://", "/relative/path", "file:///etc/passwd"]
)
def test_validate_refuses_what_is_not_an_http_url(url: str) -> None:
    with pytest.raises(InvalidInput):
        validate(url, {})


def test_validate_accepts_ordinary_urls() -> None:
    for url in ("http://127.0.0.1:8080/hello", "https://example.test/page?q=1", "http://[::1]:80/"):
        validate(url, {})


async def test_resolve_literal_and_loopback_names() -> None:
    assert await resolve("127.0.0.1", 80) == ip("127.0.0.1")
    assert await resolve("[::1]", 80) == ip("::1")
    assert (await resolve("localhost", 80)).is_loopback  # from the hosts file
    for host in ("169.254.169.254", "[fe80::1]", "[::ffff:169.254.169.254]", "metadata.google.internal"):
        with pytest.raises(AddressRefused):
            await resolve(host, 80)


async def test_resolve_refuses_numeric_spellings_of_a_metadata_address() -> None:
    # These are not literals to ``ipaddress`` but the C resolver parses them as numbers (no lookup is made,
    # as inet_aton shows first): the address they resolve to is what is checked.
    for host in ("2852039166", "0xa9fea9fe", "169.254.43518"):
        assert socket.inet_aton(host) == socket.inet_aton("169.254.169.254")
        with pytest.raises(AddressRefused):
            await resolve(host, 80)
