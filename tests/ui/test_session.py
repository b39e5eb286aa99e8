"""The task center's session over HTTP, against a real node: sign-in cookie, CSRF, pages, CORS, headers.

These are what a browser relies on but does not show: the cookie's flags, the token never in a URL, a
cookie-authenticated change refused without the CSRF header (and nothing changed), cross-origin answers
only for the cluster's own nodes.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from shoal.web.ui.pages import static_tag
from shoal.web.ui.session import COOKIE, CSRF_HEADER, csrf_token

pytestmark = pytest.mark.e2e


@pytest.fixture
def browser_like(shoal_node: Any) -> Iterator[httpx.Client]:
    """A client that keeps cookies and does not follow redirects, as a browser's first look would."""
    with httpx.Client(base_url=shoal_node.http_url, timeout=20, follow_redirects=False) as client:
        yield client


def sign_in(client: httpx.Client, token: str, next_path: str = "/") -> httpx.Response:
    return client.post("/signin", data={"token": token, "next": next_path}, headers={"Origin": str(client.base_url)})


def test_pages_send_a_stranger_to_sign_in_and_the_token_sets_a_strict_cookie(
    browser_like: httpx.Client, shoal_node: Any
) -> None:
    first = browser_like.get("/nodes")
    assert first.status_code == 303 and first.headers["location"] == "/signin?next=%2Fnodes"
    form = browser_like.get("/signin?next=/nodes")
    assert form.status_code == 200 and 'name="token"' in form.text and 'type="password"' in form.text

    wrong = sign_in(browser_like, "not-the-token", "/nodes")
    assert wrong.status_code == 401 and "wrong token" in wrong.text
    assert COOKIE not in browser_like.cookies and "set-cookie" not in wrong.headers

    empty = sign_in(browser_like, "  ", "/nodes")
    assert empty.status_code == 400 and "token is required" in empty.text

    ok = sign_in(browser_like, shoal_node.token, "/nodes")
    assert ok.status_code == 303 and ok.headers["location"] == "/nodes"
    cookie = ok.headers["set-cookie"]
    flags = {part.strip().split("=")[0].lower() for part in cookie.split(";")}
    assert {"httponly", "path", "samesite", "max-age"} <= flags, cookie
    assert "samesite=strict" in cookie.lower()
    assert shoal_node.token not in ok.headers["location"]

    page = browser_like.get("/nodes")
    assert page.status_code == 200
    assert f'<meta name="csrf-token" content="{csrf_token(shoal_node.token)}">' in page.text
    assert shoal_node.token not in page.text  # the token stays in the HttpOnly cookie
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp and "unsafe-inline" not in csp
    assert page.headers["cache-control"] == "no-store"


def test_sign_in_refuses_other_origins_and_foreign_next(browser_like: httpx.Client, shoal_node: Any) -> None:
    forged = browser_like.post("/signin", data={"token": shoal_node.token}, headers={"Origin": "http://evil.example"})
    assert forged.status_code == 403 and COOKIE not in browser_like.cookies
    away = sign_in(browser_like, shoal_node.token, "//evil.example/x")
    assert away.status_code == 303 and away.headers["location"] == "/"


def test_the_cookie_authenticates_the_api_and_changes_need_the_csrf_header(
    browser_like: httpx.Client, shoal_node: Any
) -> None:
    sign_in(browser_like, shoal_node.token)
    listed = browser_like.get("/api/v1/tasks")
    assert listed.status_code == 200 and listed.json()["total"] == 0
    spec = {"name": "by cookie", "type": "echo", "target": "x"}

    refused = browser_like.post("/api/v1/tasks", json=spec)
    assert refused.status_code == 403 and refused.json()["error"] == "forbidden"
    wrong = browser_like.post("/api/v1/tasks", json=spec, headers={CSRF_HEADER: "guess"})
    assert wrong.status_code == 403
    assert browser_like.get("/api/v1/tasks").json()["total"] == 0  # the refusals changed nothing

    made = browser_like.post("/api/v1/tasks", json=spec, headers={CSRF_HEADER: csrf_token(shoal_node.token)})
    assert made.status_code == 201, made.text
    # a bearer caller needs no CSRF token, cookie or not
    bearer = httpx.post(f"{shoal_node.http_url}/api/v1/tasks", json=spec, headers=shoal_node.headers(), timeout=20)
    assert bearer.status_code == 201
    assert browser_like.get("/api/v1/tasks").json()["total"] == 2


def test_sign_out_needs_the_csrf_token_and_ends_the_session(browser_like: httpx.Client, shoal_node: Any) -> None:
    sign_in(browser_like, shoal_node.token)
    forged = browser_like.post("/signout", data={"csrf": "nope"})
    assert forged.status_code == 403 and browser_like.get("/api/v1/tasks").status_code == 200
    out = browser_like.post("/signout", data={"csrf": csrf_token(shoal_node.token)})
    assert out.status_code == 303 and out.headers["location"] == "/signin"
    assert COOKIE not in browser_like.cookies
    assert browser_like.get("/api/v1/tasks").status_code == 401
    assert browser_like.get("/").status_code == 303


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
