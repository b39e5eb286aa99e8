"""``fetch``: GET the target URL and keep the page source as the result, the seed's example task.

Limits (time in all, body size, redirects) come from the node's config. Every hop's address is checked
before any connection is made: cloud-metadata and link-local addresses are refused, and the connection
then goes to the very address that was checked, pooled and TLS-verified under the URL's name
(``shoal.outbound``), so a DNS answer that changes between check and connect cannot slip past. The body is
decoded a bounded step at a time (``shoal.http_decode``): ``max_bytes`` holds for the decoded bytes, so a
small compressed body cannot expand past it.

With the node's HTTP cache (``shoal.proxy.httpcache``), every hop is a GET through the cluster cache: a
fresh stored copy is served without touching the site, and what the site allows is stored for the next
fetch (redirects too, when they carry freshness). The result's ``meta.cache`` is ``HIT`` when no hop
touched the site, ``REVALIDATED`` when the site only confirmed stored copies (304), else ``MISS``. The
limits hold either way: a stored body over ``max_bytes`` fails the fetch as a downloaded one would.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin

import httpx

from shoal import http_decode
from shoal._utils import is_digits
from shoal.addresses import AddressRefused, Unresolvable, refuse_host
from shoal.errors import InvalidInput
from shoal.proxy.httpcache import HIT, MISS, REVALIDATED, HttpCache, Served, streamed
from shoal.worker.handlers import Output, TaskContext


class FetchFailed(Exception):
    """Raised when the fetch went through but broke a limit or got an error status."""


def validate(target: str, params: dict[str, Any]) -> None:
    """Submit-time check: an absolute http(s) URL with a host, and not a refused address."""
    try:
        url = httpx.URL(target)
    except (httpx.InvalidURL, TypeError) as exc:
        raise InvalidInput(f"target is not a valid URL: {exc}") from None
    if url.scheme not in ("http", "https") or not url.host:
        raise InvalidInput("target must be an absolute http:// or https:// URL with a host")
    try:
        refuse_host(url.host)
    except AddressRefused as exc:
        raise InvalidInput(str(exc)) from None


#: Statuses after which a fetch follows the Location header.
REDIRECTS = frozenset({301, 302, 303, 307, 308})
#: How a whole fetch used the cache, from its hops': the worst of them.
_RANK = {HIT: 0, REVALIDATED: 1, MISS: 2}


@dataclass(slots=True)
class Fetcher:
    """The fetch handler bound to a node's limits, its shared HTTP connection pool (a ``shoal.outbound``
    client, which checks every address it connects to) and its HTTP cache (None: every fetch goes to the
    site; the node sets it once its cache exists, before any task runs)."""

    client: httpx.AsyncClient
    timeout_s: float = 30.0
    max_bytes: int = 10 * 1024 * 1024
    max_redirects: int = 10
    cache: HttpCache | None = None

    async def __call__(self, ctx: TaskContext) -> Output:
        try:
            async with asyncio.timeout(self.timeout_s):
                return await self._fetch(ctx.target)
        except TimeoutError:
            raise FetchFailed(f"fetch took longer than {self.timeout_s:g}s") from None
        except AddressRefused:
            raise
        except Unresolvable as exc:
            raise FetchFailed(str(exc)) from None
        except httpx.HTTPError as exc:
            raise FetchFailed(f"{type(exc).__name__}: {exc}") from None

    async def _fetch(self, target: str) -> Output:
        url = httpx.URL(target)
        used: list[str] = []
        for redirects in range(self.max_redirects + 1):
            if url.scheme not in ("http", "https"):
                raise FetchFailed(f"redirected to a non-http URL: {url}")
            served = await self._get(url)
            try:
                used.append(served.cache)
                location = _header(served, "location")
                if served.status in REDIRECTS and location is not None:
                    url = httpx.URL(urljoin(str(url), location))
                    continue
                body, encoding = await self._read(served)
            finally:
                await served.aclose()
            if served.status >= 400:
                raise FetchFailed(f"HTTP {served.status} {served.reason} from {url}")
            meta = {
                "status": served.status,
                "content_type": _header(served, "content-type") or "",
                "bytes": len(body),
                "url": str(url),
                "redirects": redirects,
                "cache": max(used, key=_RANK.__getitem__),
            }
            return Output(body.decode(encoding, "replace"), meta)
        raise FetchFailed(f"more than {self.max_redirects} redirects")

    async def _get(self, url: httpx.URL) -> Served:
        """One GET, through the cache when there is one; a refused host is refused before the cache too."""
        refuse_host(url.host)

        async def load(headers: list[tuple[str, str]]) -> httpx.Response:
            request = self.client.build_request("GET", url, headers=headers)
            return await self.client.send(request, stream=True)

        if self.cache is None:
            return streamed(await load([("Accept-Encoding", http_decode.ACCEPT_ENCODING)]))
        return await self.cache.get(str(url), [], load)

    async def _read(self, served: Served) -> tuple[bytearray, str]:
        """The body, decoded as its Content-Encoding says, within ``max_bytes``; and its charset."""
        declared = _header(served, "content-length") or ""
        if is_digits(declared) and int(declared) > self.max_bytes:
            raise FetchFailed(f"body is {declared} bytes; the limit is {self.max_bytes}")
        codings = [v for k, v in served.headers if k.lower() == "content-encoding"]
        body = bytearray()
        try:
            async for piece in http_decode.decoded(_chunks(served), codings, self.max_bytes):
                body += piece
        except http_decode.BodyRefused as exc:
            raise FetchFailed(str(exc)) from None
        return body, httpx.Response(served.status, headers=served.headers).encoding or "utf-8"


async def _chunks(served: Served) -> AsyncIterator[bytes]:
    """A body's bytes as sent: the start already read (all of it, when stored), then the rest still to come."""
    yield served.body
    if served.rest is not None:
        async for chunk in served.rest:
            yield chunk


def _header(served: Served, name: str) -> str | None:
    name = name.lower()
    return next((v for k, v in served.headers if k.lower() == name), None)
