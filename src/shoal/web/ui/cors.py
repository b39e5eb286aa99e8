"""Cross-origin access to ``/api/v1`` for pages served by the other nodes of the same cluster.

When the node that served a page dies, the page carries on through another node (its REST API and
event stream). That node is another origin (another port or host), so the browser asks it first. This
middleware answers yes only to the origins of the cluster's own nodes, as the registry lists their
advertised HTTP addresses, and only with credentials for those: any other origin gets no CORS headers,
so the browser keeps its answers from the calling page. The session cookie is only sent along where the
browser counts both nodes as the same site (e.g. 127.0.0.1 on different ports, or one host name); where
it does not, the page says it is stale and links to the other nodes instead.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shoal.web.ui.session import CSRF_HEADER

log = logging.getLogger("shoal.web.ui.cors")

#: Seconds the list of cluster origins is trusted before it is read again.
ORIGINS_TTL_S = 5.0
#: Seconds a browser may cache a preflight answer.
PREFLIGHT_MAX_AGE_S = 600

Origins = Callable[[], Awaitable[set[str]]]


def origins_of(addresses: list[str]) -> set[str]:
    """``host:port`` addresses as the origins a page served from them has (http and https)."""
    found: set[str] = set()
    for addr in addresses:
        if addr:
            found.add(f"http://{addr}")
            found.add(f"https://{addr}")
    return found


class ClusterCors:
    """ASGI middleware for ``/api/v1``: CORS with credentials for the cluster's own origins, nothing for others."""

    def __init__(self, app: ASGIApp, origins: Origins, prefix: str = "/api/v1/") -> None:
        self.app = app
        self._origins = origins
        self.prefix = prefix
        self._known: set[str] = set()
        self._read_at = float("-inf")

    async def allowed(self, origin: str) -> bool:
        if time.monotonic() - self._read_at > ORIGINS_TTL_S or origin not in self._known:
            if time.monotonic() - self._read_at > 0.5:  # a stranger's requests must not make every call a read
                try:
                    self._known = await self._origins()
                except Exception as exc:  # the store may be down; keep the last list
                    log.debug("cannot read the cluster's origins: %s", exc)
                self._read_at = time.monotonic()
        return origin in self._known

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(self.prefix):
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        origin = headers.get("origin")
        if origin is None or origin == _own_origin(scope, headers) or not await self.allowed(origin):
            await self.app(scope, receive, send)
            return
        if scope["method"] == "OPTIONS" and "access-control-request-method" in headers:
            await _preflight(origin, send)
            return

        async def with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                out = MutableHeaders(scope=message)
                out["Access-Control-Allow-Origin"] = origin
                out["Access-Control-Allow-Credentials"] = "true"
                out.add_vary_header("Origin")
            await send(message)

        await self.app(scope, receive, with_cors)


async def _preflight(origin: str, send: Send) -> None:
    headers = [
        (b"access-control-allow-origin", origin.encode("latin-1")),
        (b"access-control-allow-credentials", b"true"),
        (b"access-control-allow-methods", b"GET, POST, DELETE"),
        (b"access-control-allow-headers", f"Content-Type, {CSRF_HEADER}".encode()),
        (b"access-control-max-age", str(PREFLIGHT_MAX_AGE_S).encode()),
        (b"vary", b"Origin"),
        (b"content-length", b"0"),
    ]
    await send({"type": "http.response.start", "status": 204, "headers": headers})
    await send({"type": "http.response.body", "body": b""})


def _own_origin(scope: Scope, headers: Headers) -> str:
    return f"{scope.get('scheme', 'http')}://{headers.get('host', '')}"
