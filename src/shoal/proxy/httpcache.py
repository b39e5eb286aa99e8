"""``HttpCache``: GET through the cluster cache, for the proxy and the ``fetch`` task type.

A GET is looked up under ``shoal.cache.keys.http_key(url)``. A fresh stored response is served as it is
(``HIT``). Otherwise one caller in the whole cluster loads it (``CacheAPI.get_or_fill``: concurrent misses
for one URL collapse into one request to the origin, the others get what it stored): a stale stored
response with a validator is revalidated with ``If-None-Match``/``If-Modified-Since``, and a 304 refreshes
it (``REVALIDATED``); anything else is a ``MISS``, stored when ``policy.storable`` allows. A body larger
than the cache's largest value is not stored: the caller gets it as a stream.

The request to the origin is made by the caller's ``Loader`` (which checks and pins the address); this
module never opens a connection itself.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import httpx

from shoal._utils import is_digits
from shoal.cache.keys import http_key
from shoal.errors import InvalidInput
from shoal.models import CacheItem, Fill
from shoal.proxy import policy
from shoal.proxy.entry import BadEntry, Entry
from shoal.types import CacheAPI
from shoal.validation import cache_key

log = logging.getLogger("shoal.proxy.httpcache")

HIT, MISS, REVALIDATED = "HIT", "MISS", "REVALIDATED"
#: Sends a GET with the given headers to the origin; returns the response with its body not yet read.
Loader = Callable[[list[tuple[str, str]]], Awaitable[httpx.Response]]
#: Headers a 304 made from a stored response carries (RFC 9110 15.4.5).
NOT_MODIFIED_HEADERS = ("cache-control", "content-location", "date", "etag", "expires", "vary", "last-modified")


@dataclass(slots=True)
class Served:
    """A response for the caller: ``body`` is all of it, or its start when ``rest`` streams the remainder
    from the still open ``upstream`` response (close with ``aclose``). ``cache`` says where it came from."""

    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes = b""
    cache: str = MISS
    rest: AsyncIterator[bytes] | None = None
    upstream: httpx.Response | None = field(default=None, repr=False)

    async def aclose(self) -> None:
        if self.upstream is not None:
            await self.upstream.aclose()


def streamed(response: httpx.Response, start: bytes = b"", rest: AsyncIterator[bytes] | None = None) -> Served:
    """An origin's response handed on as it comes, not stored."""
    headers = policy.end_to_end(response.headers.multi_items())
    rest = response.aiter_raw() if rest is None else rest
    return Served(response.status_code, response.reason_phrase, headers, start, MISS, rest, response)


class HttpCache:
    """The HTTP caching policy over a ``CacheAPI``. Stateless itself: safe for any number of concurrent calls.

    Parameters:
        cache: the cluster cache.
        max_value: the largest value the cache takes; larger responses are streamed and not stored.
        clock: Unix seconds.
    """

    def __init__(self, cache: CacheAPI, *, max_value: int, clock: Callable[[], float] = time.time) -> None:
        self.cache = cache
        self.max_value = max_value
        self.clock = clock

    async def get(self, url: str, headers: Sequence[tuple[str, str]], load: Loader) -> Served:
        """Serve a GET of ``url`` with the client's end-to-end ``headers``, from the cache when it may."""
        key = _key(url)
        mode = policy.request_mode(headers)
        if key is None or mode is policy.Mode.BYPASS:
            return streamed(await load(list(headers)))
        run = _Fill(self, _shared(headers), load)
        if mode is policy.Mode.USE:
            try:
                value, _ = await self.cache.get_or_fill(key, run)
            except Exception as exc:
                if run.finished:
                    log.warning("could not store a GET in the cache: %s", exc)
                    return run.served(headers)
                if run.ran:
                    raise  # the origin failed, not the cache
                log.warning("cache unavailable for a GET, going to the origin: %s", exc)
                return streamed(await load(list(headers)))
            if run.ran:
                return run.served(headers)
            entry = _decode(value)
            if entry is not None and _servable(entry, headers, self.clock()):
                return self.from_entry(entry, headers, HIT)
        try:
            stale = await self.cache.get(key)
        except Exception as exc:
            log.warning("cache unavailable for a GET, revalidating without it: %s", exc)
            stale = None
        fill = await run(stale)
        if fill.store:
            try:
                await self.cache.set(key, fill.value, fill.ttl_s, fill.keep_s)
            except Exception as exc:
                log.warning("could not store a GET in the cache: %s", exc)
        return run.served(headers)

    async def cached(self, url: str, headers: Sequence[tuple[str, str]]) -> Served | None:
        """A fresh stored GET response for a HEAD request (body left out by the caller), or None."""
        key = _key(url)
        if key is None or policy.request_mode(headers) is not policy.Mode.USE:
            return None
        try:
            item = await self.cache.get(key)
        except Exception as exc:
            log.warning("cache unavailable for a HEAD, going to the origin: %s", exc)
            return None
        now = self.clock()
        if item is None or not item.fresh(now):
            return None
        entry = _decode(item.value)
        if entry is None or not _servable(entry, headers, now):
            return None
        return self.from_entry(entry, headers, HIT)

    async def invalidate(self, url: str) -> None:
        """Drop the stored GET of ``url`` (after an unsafe method changed it, RFC 9111 4.4)."""
        key = _key(url)
        if key is not None:
            await self.cache.delete(key)

    def from_entry(self, entry: Entry, request: Sequence[tuple[str, str]], state: str) -> Served:
        """A stored response as served: a 304 when the client's own condition holds, else the whole."""
        now = self.clock()
        with_age = state != MISS or entry.age >= 1
        if entry.status == 200 and policy.not_modified(entry.headers, request):
            headers = [(k, v) for k, v in entry.headers if k.lower() in NOT_MODIFIED_HEADERS]
            if with_age:
                headers.append(("Age", str(int(entry.current_age(now)))))
            return Served(304, "Not Modified", headers, b"", state)
        return Served(entry.status, entry.reason, entry.served_headers(now, with_age=with_age), entry.body, state)


class _Fill:
    """One load from the origin on behalf of ``HttpCache.get``; remembers what it produced for its caller."""

    def __init__(self, owner: HttpCache, headers: list[tuple[str, str]], load: Loader) -> None:
        self.owner = owner
        self.headers = headers
        self.load = load
        self.ran = False
        self.finished = False
        self.entry: Entry | None = None
        self.state = MISS
        self.stream: Served | None = None

    async def __call__(self, stale: CacheItem | None) -> Fill:
        self.ran = True
        old = _decode(stale.value) if stale is not None else None
        conditions = policy.conditional_headers(old.headers) if old is not None else []
        clock = self.owner.clock
        request_time = clock()
        response = await self.load(self.headers + conditions)
        handed_on = False
        try:
            now = clock()
            headers = response.headers.multi_items()
            age = policy.initial_age(headers, now, request_time)
            if response.status_code == 304 and old is not None:
                self.entry, self.state = old.refreshed(headers, now, age), REVALIDATED
                return self._fill(self.entry.encode(), now)
            chunks: list[bytes] = []
            size, limit = 0, self.owner.max_value
            declared = response.headers.get("content-length", "")
            rest = response.aiter_raw()
            if not (is_digits(declared) and int(declared) > limit):
                async for chunk in rest:
                    chunks.append(chunk)
                    size += len(chunk)
                    if size > limit:
                        break
            if size > limit or (is_digits(declared) and int(declared) > limit):
                log.debug("not stored: the body is over %d bytes", limit)
                self.stream = streamed(response, b"".join(chunks), rest)
                handed_on = self.finished = True
                return Fill(b"", store=False)
            self.entry = Entry.make(response.status_code, response.reason_phrase, headers, b"".join(chunks), now, age)
            return self._fill(self.entry.encode(), now)
        finally:
            if not handed_on:
                await response.aclose()

    def _fill(self, value: bytes, now: float) -> Fill:
        assert self.entry is not None
        self.finished = True
        decision = policy.storable(self.entry.status, self.entry.headers, self.entry.age, now)
        if decision.store and len(value) > self.owner.max_value:
            decision = policy.Decision(False, why="too large")
        if not decision.store:
            log.debug("not stored: %s", decision.why)
            return Fill(value, store=False)
        return Fill(value, decision.ttl_s, decision.keep_s)

    def served(self, request: Sequence[tuple[str, str]]) -> Served:
        if self.stream is not None:
            return self.stream
        assert self.entry is not None
        return self.owner.from_entry(self.entry, request, self.state)


def _key(url: str) -> str | None:
    """The cache key of a GET of ``url``, or None when the URL is too long to be one (then not cached)."""
    try:
        return cache_key(http_key(url))
    except (InvalidInput, ValueError):
        return None


def _shared(headers: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    """The client's headers as a fill sends them for everyone: no conditions of its own, and asking for
    the identity encoding, which every client accepts."""
    kept = policy.without(headers, {*policy.CONDITIONALS, "accept-encoding"})
    return [*kept, ("Accept-Encoding", "identity")]


def _decode(value: bytes) -> Entry | None:
    try:
        return Entry.decode(value)
    except BadEntry as exc:
        log.debug("ignoring a cache value: %s", exc)
        return None


def _servable(entry: Entry, request: Sequence[tuple[str, str]], now: float) -> bool:
    """Whether the stored response may be served without asking the origin: fresh by its own headers (a
    response kept only for revalidation never is, however soon it is asked for again), and within the
    request's own ``max-age``, if it gave one."""
    age = entry.current_age(now)
    lifetime = policy.freshness_lifetime(entry.headers, entry.stored_at)
    if lifetime is None or age >= lifetime:
        return False
    asked = policy.max_age_asked(request)
    return asked is None or age <= asked
