"""The task center's session over HTTP, against real nodes: sign-in cookie, CSRF, pages, CORS, headers.

These are what a browser relies on but does not show: the cookie's flags, neither the token nor anything
made from it in a cookie or a URL, a session that every node of the cluster knows and that sign-out or
expiry ends everywhere, a cookie-authenticated change refused without the CSRF header (and nothing
changed), cross-origin answers only for the cluster's own nodes.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
import redis
from redis.asyncio import Redis as AsyncRedis
from starlette.requests import Request

from shoal.auth import token_id
from shoal.keys import Keys
from shoal.rpc.tokens import TokenKeeper
from shoal.store.sessions import SessionStore
from shoal.testing import wait_for
from shoal.web.ui import session
from shoal.web.ui.pages import static_tag
from shoal.web.ui.session import COOKIE_PREFIX, CSRF_HEADER

pytestmark = pytest.mark.e2e


@pytest.fixture
def browser_like(shoal_node: Any) -> Iterator[httpx.Client]:
    """A client that keeps cookies and does not follow redirects, as a browser's first look would."""
    with httpx.Client(base_url=shoal_node.http_url, timeout=20, follow_redirects=False) as client:
        yield client


def sign_in(client: httpx.Client, token: str, next_path: str = "/") -> httpx.Response:
    return client.post("/signin", data={"token": token, "next": next_path}, headers={"Origin": str(client.base_url)})


def cookie_of(node: Any) -> str:
    """The name of the session cookie a node sets: its HTTP port in it."""
    return f"{COOKIE_PREFIX}{node.http_port}"


def csrf_of(page: httpx.Response) -> str:
    """The CSRF token a signed-in page carries."""
    found = re.search(r'<meta name="csrf-token" content="([^"]+)">', page.text)
    assert found, "no CSRF token on the page"
    return found.group(1)


def with_cookie(node: Any, name: str, value: str) -> httpx.Client:
    """A fresh client on ``node`` holding one cookie, as a browser that kept it would send it."""
    return httpx.Client(base_url=node.http_url, timeout=20, follow_redirects=False, cookies={name: value})


def with_cookies(node: Any) -> httpx.Client:
    """A client on ``node`` that keeps cookies and does not follow redirects."""
    return httpx.Client(base_url=node.http_url, timeout=20, follow_redirects=False)


def test_pages_send_a_stranger_to_sign_in_and_the_token_sets_a_strict_cookie(
    browser_like: httpx.Client, shoal_node: Any
) -> None:
    first = browser_like.get("/nodes")
    assert first.status_code == 303 and first.headers["location"] == "/signin?next=%2Fnodes"
    form = browser_like.get("/signin?next=/nodes")
    assert form.status_code == 200 and 'name="token"' in form.text and 'type="password"' in form.text

    wrong = sign_in(browser_like, "not-the-token", "/nodes")
    assert wrong.status_code == 401 and "wrong token" in wrong.text
    assert not browser_like.cookies and "set-cookie" not in wrong.headers

    empty = sign_in(browser_like, "  ", "/nodes")
    assert empty.status_code == 400 and "token is required" in empty.text

    ok = sign_in(browser_like, shoal_node.token, "/nodes")
    assert ok.status_code == 303 and ok.headers["location"] == "/nodes"
    cookie = ok.headers["set-cookie"]
    flags = {part.strip().split("=")[0].lower() for part in cookie.split(";")}
    assert {"httponly", "path", "samesite", "max-age"} <= flags, cookie
    assert "samesite=strict" in cookie.lower() and "path=/;" in cookie.lower() + ";"
    assert cookie.startswith(cookie_of(shoal_node) + "=")
    assert shoal_node.token not in ok.headers["location"]

    page = browser_like.get("/nodes")
    assert page.status_code == 200
    assert len(csrf_of(page)) >= 32
    assert shoal_node.token not in page.text
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp and "unsafe-inline" not in csp
    assert page.headers["cache-control"] == "no-store"


def test_sign_in_refuses_other_origins_and_foreign_next(browser_like: httpx.Client, shoal_node: Any) -> None:
    forged = browser_like.post("/signin", data={"token": shoal_node.token}, headers={"Origin": "http://evil.example"})
    assert forged.status_code == 403 and not browser_like.cookies
    away = sign_in(browser_like, shoal_node.token, "//evil.example/x")
    assert away.status_code == 303 and away.headers["location"] == "/"


def test_the_cookie_authenticates_the_api_and_changes_need_the_csrf_header(
    browser_like: httpx.Client, shoal_node: Any
) -> None:
    sign_in(browser_like, shoal_node.token)
    csrf = csrf_of(browser_like.get("/"))
    listed = browser_like.get("/api/v1/tasks")
    assert listed.status_code == 200 and listed.json()["total"] == 0
    spec = {"name": "by cookie", "type": "echo", "target": "x"}

    refused = browser_like.post("/api/v1/tasks", json=spec)
    assert refused.status_code == 403 and refused.json()["error"] == "forbidden"
    wrong = browser_like.post("/api/v1/tasks", json=spec, headers={CSRF_HEADER: "guess"})
    assert wrong.status_code == 403
    assert browser_like.get("/api/v1/tasks").json()["total"] == 0  # the refusals changed nothing

    made = browser_like.post("/api/v1/tasks", json=spec, headers={CSRF_HEADER: csrf})
    assert made.status_code == 201, made.text
    # a bearer caller needs no CSRF token, cookie or not
    bearer = httpx.post(f"{shoal_node.http_url}/api/v1/tasks", json=spec, headers=shoal_node.headers(), timeout=20)
    assert bearer.status_code == 201
    assert browser_like.get("/api/v1/tasks").json()["total"] == 2


def test_sign_out_needs_the_csrf_token_and_ends_the_session_on_every_node(node_factory: Any) -> None:
    first = node_factory("node-1")
    other = node_factory("node-2")
    with with_cookies(first) as browser_like:
        sign_out_everywhere(browser_like, first, other)


def sign_out_everywhere(browser_like: httpx.Client, first: Any, other: Any) -> None:
    sign_in(browser_like, first.token)
    kept = browser_like.cookies[cookie_of(first)]  # what a browser (or a thief) kept of the session
    forged = browser_like.post("/signout", data={"csrf": "nope"})
    assert forged.status_code == 403 and browser_like.get("/api/v1/tasks").status_code == 200
    out = browser_like.post("/signout", data={"csrf": csrf_of(browser_like.get("/"))})
    assert out.status_code == 303 and out.headers["location"] == "/signin"
    assert not browser_like.cookies
    assert browser_like.get("/api/v1/tasks").status_code == 401
    assert browser_like.get("/").status_code == 303
    for node in (first, other):  # the old cookie, sent again, is refused by every node
        with with_cookie(node, cookie_of(first), kept) as replay:
            refused = replay.get("/api/v1/tasks")
            assert refused.status_code == 401 and "sign in again" in refused.json()["message"]
            assert replay.get("/nodes").headers["location"] == "/signin?next=%2Fnodes"


def test_the_cookie_holds_a_random_session_id_never_the_token_and_every_node_takes_it(
    node_factory: Any, redis_url: str
) -> None:
    first = node_factory("node-1")
    other = node_factory("node-2")
    ids = []
    for _ in range(2):
        with with_cookies(first) as browser:
            sign_in(browser, first.token)
            ids.append(browser.cookies[cookie_of(first)])
    token = first.token
    for value in ids:
        assert token not in value and value not in token
        assert value not in (token_id(token), hashlib.sha256(token.encode()).hexdigest())
        assert re.fullmatch(r"[A-Za-z0-9_-]{43}", value)
    assert ids[0] != ids[1]  # random per sign-in, so not made from the token
    with redis.Redis.from_url(redis_url) as store:  # the store keeps a digest of the id, not the id itself
        keys = [k.decode() for k in store.scan_iter(match="shoal:*:session:*")]
        assert len(keys) == 2 and not any(value in key for key in keys for value in ids)
        assert all(token not in str(store.hgetall(key)) for key in keys)

    # The session opened on node-1 works on node-2 (a balancer may send the browser to either), CSRF too.
    with with_cookie(other, cookie_of(first), ids[1]) as elsewhere:
        page = elsewhere.get("/")
        assert page.status_code == 200
        made = elsewhere.post("/api/v1/tasks", json={"name": "via node-2", "type": "echo", "target": "x"},
                              headers={CSRF_HEADER: csrf_of(page)})  # fmt: skip
        assert made.status_code == 201, made.text
        assert elsewhere.get("/api/v1/tasks").json()["total"] == 1
    # A cookie with an id the cluster never gave out is refused.
    with with_cookie(other, cookie_of(other), "x" * 43) as stranger:
        assert stranger.get("/api/v1/tasks").status_code == 401


def test_a_session_ends_when_it_expires(node_factory: Any) -> None:
    node = node_factory("node-1", args=["--session-ttl", "2"])
    with with_cookies(node) as client:
        sign_in(client, node.token)
        assert client.get("/api/v1/tasks").status_code == 200
        wait_for(lambda: client.get("/api/v1/tasks").status_code == 401, 10, "the session to expire")
        assert client.get("/").status_code == 303


def test_cors_answers_only_the_clusters_own_origins(node_factory: Any) -> None:
    shoal_node = node_factory("node-1")
    other = node_factory("node-2")
    for origin, allowed in ((other.http_url, True), ("http://evil.example", False), ("http://127.0.0.1:1", False)):
        pre = httpx.options(
            f"{shoal_node.http_url}/api/v1/tasks/kill",
            headers={
                "Origin": origin,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "content-type, x-csrf-token",
            },  # fmt: skip
            timeout=20,
        )
        got = httpx.get(f"{shoal_node.http_url}/api/v1/tasks", headers={**shoal_node.headers(), "Origin": origin})
        if allowed:
            assert pre.status_code == 204 and pre.headers["access-control-allow-origin"] == origin
            assert "x-csrf-token" in pre.headers["access-control-allow-headers"].lower()
            assert got.headers["access-control-allow-origin"] == origin
            assert got.headers["access-control-allow-credentials"] == "true"
        else:
            assert "access-control-allow-origin" not in pre.headers
            assert "access-control-allow-origin" not in got.headers


def test_static_files_are_public_and_immutable_under_their_tag(shoal_node: Any) -> None:
    tag = static_tag()
    page = httpx.get(f"{shoal_node.http_url}/signin", timeout=20)
    assert f'href="/static/{tag}/shoal.css"' in page.text
    for name in ("shoal.css", "tasks.js", "live.js", "api.js"):
        tagged = httpx.get(f"{shoal_node.http_url}/static/{tag}/{name}", timeout=20)
        assert tagged.status_code == 200 and "immutable" in tagged.headers["cache-control"], name
        plain = httpx.get(f"{shoal_node.http_url}/static/{name}", timeout=20)
        assert plain.status_code == 200 and plain.headers["cache-control"] == "no-cache", name
        assert plain.content == tagged.content
    older = httpx.get(f"{shoal_node.http_url}/static/{'0' * len(tag)}/api.js", timeout=20)
    assert older.status_code == 200 and older.headers["cache-control"] == "no-cache"
    assert httpx.get(f"{shoal_node.http_url}/static/../app.py", timeout=20).status_code == 404
    missing = httpx.get(f"{shoal_node.http_url}/tasks/not-an-id", timeout=20, follow_redirects=False)
    assert missing.status_code == 303


def test_a_malformed_task_page_is_a_page_not_found(browser_like: httpx.Client, shoal_node: Any) -> None:
    sign_in(browser_like, shoal_node.token)
    missing = browser_like.get("/tasks/not-an-id")
    assert missing.status_code == 404 and "a task id is a UUID" in missing.text
    assert "text/html" in missing.headers["content-type"]


class Clock:
    """A monotonic clock the test moves by hand (for the token keeper's grace period)."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def request_with(cookie: str, store: SessionStore) -> Request:
    """A request to a node on port 8080 carrying this port's session cookie, as the node's app sees it."""
    app = SimpleNamespace(state=SimpleNamespace(sessions=store))
    headers = [(b"host", b"127.0.0.1:8080"), (b"cookie", f"{COOKIE_PREFIX}8080={cookie}".encode())]
    scope = {"type": "http", "method": "GET", "scheme": "http", "server": ("127.0.0.1", 8080), "path": "/",
             "query_string": b"", "app": app, "headers": headers}  # fmt: skip
    return Request(scope)


async def test_a_token_rotation_ends_the_sessions_opened_with_the_old_token_after_its_grace(redis_url: str) -> None:
    old, new = "old-cluster-token-0123456789", "new-cluster-token-9876543210"
    client = AsyncRedis.from_url(redis_url)
    try:
        store = SessionStore(client, Keys("shoal"), ttl_s=3600)
        clock = Clock()
        keeper = TokenKeeper(old, grace_s=60, clock=clock)
        opened = await store.open(token_id(old))
        request = request_with(opened.id, store)
        assert await session.current(request, keeper) == opened
        keeper.rotate(new)
        assert await session.current(request, keeper) == opened  # the old token's grace period
        clock.now += 61
        assert await session.current(request, keeper) is None  # over: signed out, on every node alike
        assert await session.current(request_with((await store.open(token_id(new))).id, store), keeper)
    finally:
        await client.aclose()
