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

Politeness. Every request says ``User-Agent: shoal/<version>``. A site that answers 429 or 503 is asking
for a pause: the fetch fails, and the node holds the site's host (``hold_host``, store/hosts.py) for as long
as its ``Retry-After`` says (delta-seconds or an HTTP date, at least ``MIN_HOLD_S``, at most ``MAX_HOLD_S``;
``DEFAULT_HOLD_S`` when the header is missing or unreadable), so that the master places no fetch to that
host, this task's retry included, before the hold ends. With ``params.robots: true`` the site's robots.txt
(RFC 9309, read through the same cache, parsed by ``urllib.robotparser``) is asked before the target and
before every redirect hop, for the product token ``shoal``: a 4xx robots.txt allows everything, a 5xx or
unreachable one nothing.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urljoin
from urllib.robotparser import RobotFileParser

import httpx

from shoal import http_decode
from shoal._utils import is_digits
from shoal.addresses import AddressRefused, Unresolvable, refuse_host
from shoal.errors import InvalidInput
from shoal.limits import host_of
from shoal.proxy.httpcache import HIT, MISS, REVALIDATED, HttpCache, Served, streamed
from shoal.version import __version__
from shoal.worker.handlers import Output, TaskContext

log = logging.getLogger("shoal.worker.handlers.fetch")

#: The product token robots.txt groups are matched against, and the User-Agent every fetch sends.
ROBOTS_AGENT = "shoal"
USER_AGENT = f"{ROBOTS_AGENT}/{__version__}"
#: Statuses by which a site asks a client to come back later (RFC 6585 section 4, RFC 9110 section 15.6.4).
SLOW_DOWN = frozenset({429, 503})
#: How long a host is held after a 429/503 without a usable Retry-After, in seconds.
DEFAULT_HOLD_S = 5.0
#: The shortest and longest hold a Retry-After gets, in seconds: "0" (or a date already past) still gets a
#: second's pause, and no site keeps a host's fetches waiting more than an hour.
MIN_HOLD_S = 1.0
MAX_HOLD_S = 3600.0
#: How long recording a hold may take before the fetch fails without it, in seconds.
HOLD_WRITE_TIMEOUT_S = 5.0
#: What of a robots.txt is read (RFC 9309 section 2.5 asks for at least 500 KiB; the rest is ignored), and
#: how many redirects are followed to it (section 2.3.1.2: five; past them it counts as unavailable).
ROBOTS_MAX_BYTES = 512 * 1024
ROBOTS_MAX_REDIRECTS = 5

#: Records that fetches to a host wait ``seconds`` from now: ``HostHolds.hold`` on the node's store.
HoldHost = Callable[[str, float], Awaitable[object]]


class FetchFailed(Exception):
    """Raised when the fetch went through but broke a limit or got an error status."""


class _SlowDown(Exception):
    """Raised inside a fetch when a site answered 429/503: the hold to record before it fails."""

    def __init__(self, message: str, host: str, seconds: float) -> None:
        super().__init__(message)
        self.host = host
        self.seconds = seconds


def validate(target: str, params: dict[str, Any]) -> None:
    """Submit-time check: an absolute http(s) URL with a host, and not a refused address; ``params.robots``,
    when given, true or false."""
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
    robots = params.get("robots", False)
    if not isinstance(robots, bool):
        raise InvalidInput(f"params.robots must be true or false, got {str(robots)[:40]!r}")


def retry_after_s(value: str | None, *, date: str | None = None, now: float | None = None) -> float | None:
    """The seconds a ``Retry-After`` value asks to wait, not yet capped; None when missing or unreadable.

    It is delta-seconds (``120``) or an HTTP date. A date is counted from the response's own ``Date`` when
    it has one (both then come from the site's clock, whatever this node's says), else from ``now`` (Unix
    seconds; default the node's clock), rounded up to a whole second; a date already past asks for 0."""
    if value is None:
        return None
    value = value.strip()
    if is_digits(value):
        return float(int(value[:12]))  # beyond 12 digits is beyond any cap
    asked = _http_date(value)
    if asked is None:
        return None
    sent = _http_date(date) if date is not None else None
    base = sent if sent is not None else (time.time() if now is None else now)
    return float(max(0, math.ceil(asked - base)))


def hold_s(asked: float | None) -> float:
    """How long a host is held after a 429/503 whose Retry-After asked for ``asked`` seconds (None: none)."""
    return DEFAULT_HOLD_S if asked is None else min(MAX_HOLD_S, max(MIN_HOLD_S, asked))


def _http_date(value: str) -> float | None:
    try:
        parsed = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return (parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)).timestamp()


def _everything(allowed: bool) -> RobotFileParser:
    """Rules that allow (robots.txt unavailable) or disallow (unreachable) every path."""
    rules = RobotFileParser()
    rules.parse(["User-agent: *", "Allow: /" if allowed else "Disallow: /"])
    return rules


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
    hold_host: HoldHost | None = None  # None: a 429/503 fails the fetch, and nothing holds the host

    async def __call__(self, ctx: TaskContext) -> Output:
        try:
            async with asyncio.timeout(self.timeout_s):
                return await self._fetch(ctx.target, robots=ctx.params.get("robots") is True)
        except _SlowDown as slow:
            await self._hold(slow.host, slow.seconds)  # before the attempt ends: its retry sees the hold
            raise FetchFailed(str(slow)) from None
        except TimeoutError:
            raise FetchFailed(f"fetch took longer than {self.timeout_s:g}s") from None
        except AddressRefused:
            raise
        except Unresolvable as exc:
            raise FetchFailed(str(exc)) from None
        except httpx.HTTPError as exc:
            raise FetchFailed(f"{type(exc).__name__}: {exc}") from None

    async def _fetch(self, target: str, *, robots: bool = False) -> Output:
        url = httpx.URL(target)
        used: list[str] = []
        rules: dict[str, tuple[RobotFileParser, str]] = {}  # per site, its robots.txt and why, if unusual
        for redirects in range(self.max_redirects + 1):
            if url.scheme not in ("http", "https"):
                raise FetchFailed(f"redirected to a non-http URL: {url}")
            if robots:
                await self._check_robots(url, rules)
            served = await self._get(url)
            try:
                used.append(served.cache)
                _refuse_slow_down(served, url)
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
            request = self.client.build_request("GET", url, headers=[*headers, ("User-Agent", USER_AGENT)])
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

    async def _hold(self, host: str, seconds: float) -> None:
        """Record that fetches to ``host`` wait ``seconds``; a store that cannot take it now costs only the
        hold (the fetch fails all the same), never an attempt that hangs."""
        if self.hold_host is None:
            return
        try:
            async with asyncio.timeout(HOLD_WRITE_TIMEOUT_S):
                await self.hold_host(host, seconds)
        except Exception as exc:
            log.warning("could not hold fetches to %s for %gs: %s", host, seconds, exc)

    async def _check_robots(self, url: httpx.URL, rules: dict[str, tuple[RobotFileParser, str]]) -> None:
        """Fail unless the robots.txt of ``url``'s site allows ``url`` (read once per site and fetch)."""
        site = url.join("/robots.txt")
        found = rules.get(str(site))
        if found is None:
            found = rules[str(site)] = await self._robots(site)
        allowed, why = found
        if not allowed.can_fetch(ROBOTS_AGENT, str(url)):
            raise FetchFailed(f"disallowed by robots.txt: {url}{why}")

    async def _robots(self, location: httpx.URL) -> tuple[RobotFileParser, str]:
        """A site's robots.txt rules, and why when they are not the file's own (RFC 9309 section 2.3.1)."""
        for _ in range(ROBOTS_MAX_REDIRECTS + 1):
            if location.scheme not in ("http", "https"):
                return _everything(True), ""  # unavailable
            try:
                served = await self._get(location)
            except (httpx.HTTPError, http_decode.BodyRefused) as exc:
                return _everything(False), f" (robots.txt unreachable: {type(exc).__name__}: {exc})"
            try:
                _refuse_slow_down(served, location)
                target = _header(served, "location")
                if served.status in REDIRECTS and target is not None:
                    location = httpx.URL(urljoin(str(location), target))
                    continue
                if served.status >= 500:
                    return _everything(False), f" (robots.txt answered HTTP {served.status})"
                if not 200 <= served.status < 300:
                    return _everything(True), ""  # 4xx: unavailable, so every path is allowed
                lines = await self._robots_lines(served)
            except (httpx.HTTPError, http_decode.BodyRefused) as exc:
                return _everything(False), f" (robots.txt unreachable: {type(exc).__name__}: {exc})"
            finally:
                await served.aclose()
            parsed = RobotFileParser(str(location))
            parsed.parse(lines)
            return parsed, ""
        return _everything(True), ""  # more than five redirects: unavailable

    async def _robots_lines(self, served: Served) -> list[str]:
        """A robots.txt's lines, up to ``ROBOTS_MAX_BYTES`` of it (a line cut there is dropped)."""
        codings = [v for k, v in served.headers if k.lower() == "content-encoding"]
        body = bytearray()
        async for piece in http_decode.decoded(_chunks(served), codings, max(self.max_bytes, ROBOTS_MAX_BYTES)):
            body += piece
            if len(body) >= ROBOTS_MAX_BYTES:
                body = body[: body.rfind(b"\n", 0, ROBOTS_MAX_BYTES) + 1]
                break  # the caller closes the response
        return body.decode("utf-8", "replace").splitlines()


def _refuse_slow_down(served: Served, url: httpx.URL) -> None:
    """Raise ``_SlowDown`` for a 429/503, with the hold its Retry-After asks for."""
    if served.status not in SLOW_DOWN:
        return
    asked = retry_after_s(_header(served, "retry-after"), date=_header(served, "date"))
    seconds, host = hold_s(asked), host_of(str(url)) or url.host
    said = f"HTTP {served.status} {served.reason} from {url}; "
    if asked is None:
        said += f"no usable Retry-After, so fetches to {host} wait {seconds:g}s"
    else:
        said += f"the site asked to wait {asked:g}s (Retry-After)"
        said += f", held for {seconds:g}s" if seconds != asked else ""
    raise _SlowDown(said, host, seconds)


async def _chunks(served: Served) -> AsyncIterator[bytes]:
    """A body's bytes as sent: the start already read (all of it, when stored), then the rest still to come."""
    yield served.body
    if served.rest is not None:
        async for chunk in served.rest:
            yield chunk


def _header(served: Served, name: str) -> str | None:
    name = name.lower()
    return next((v for k, v in served.headers if k.lower() == name), None)
