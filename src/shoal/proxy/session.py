"""One client connection to the proxy: HTTP/1.1 requests parsed with h11, answered one after another.

Each request is checked (head size and header count, ``Proxy-Authorization``, an absolute URI, no loop
through this proxy, no refused target), then served: GET through the HTTP cache, HEAD from a fresh stored
GET or the origin, other methods passed to the origin uncached (body up to ``MAX_REQUEST_BODY``), CONNECT
tunnelled. The proxy's own answers (errors) carry a short text body and close the connection.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import time
from http import HTTPStatus
from typing import TYPE_CHECKING

import h11
import httpx

from shoal.addresses import refuse_host
from shoal.proxy import policy, tunnel
from shoal.proxy.httpcache import Served, streamed

if TYPE_CHECKING:
    from shoal.proxy.server import ProxyServer

#: What a client gets when the proxy serves all the clients it may.
BUSY_TEXT = "the proxy is serving all the clients it can; try again later"

log = logging.getLogger("shoal.proxy")

#: Largest request head (request line and headers) in bytes, and most header lines in it.
MAX_HEAD = 32 * 1024
MAX_HEADERS = 100
#: Largest request body passed on (POST, PUT...); it is read whole before the origin is asked.
MAX_REQUEST_BODY = 16 * 1024 * 1024
READ_CHUNK = 64 * 1024
#: Methods that change nothing at the origin; a success of any other drops the URL's stored GET.
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})


def basic_password(header: str | None) -> str | None:
    """The password of a ``Basic`` credential (the user name is ignored), or None."""
    if not header:
        return None
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    _, sep, password = decoded.partition(":")
    return password if sep else None


def loggable(url: httpx.URL) -> str:
    """The URL without credentials or query, which may carry secrets."""
    return str(url.copy_with(username=None, password=None, query=None, fragment=None))


class Session:
    """Serves the requests of one client connection in turn; owned by the task that runs ``run``."""

    def __init__(self, proxy: ProxyServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.proxy = proxy
        self.reader = reader
        self.writer = writer
        self.conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
        self.method = ""
        self.head_deadline = 0.0  # loop time by which the request head being read must be whole

    async def run(self) -> None:
        head_s = self.proxy.head_timeout_s  # the first head, from a stranger; later ones get the idle limit
        while True:
            self.method = ""
            self.head_deadline = asyncio.get_running_loop().time() + head_s
            head_s = self.proxy.timeout_s
            try:
                event = await self._next()
                if not isinstance(event, h11.Request) or not await self._handle(event):
                    return
            except (TimeoutError, OSError):
                return  # an idle or vanished client
            except h11.RemoteProtocolError as exc:
                await self._error(exc.error_status_hint, f"bad request: {exc}")
                return
            if self.conn.our_state is not h11.DONE or self.conn.their_state is not h11.DONE:
                return
            self.conn.start_next_cycle()

    async def _next(self) -> object:
        """The next event from the client (or ``h11.PAUSED``), waiting at most the proxy's timeout for bytes,
        and for a request head no later than ``head_deadline`` (a head dripped byte by byte ends there)."""
        while True:
            event = self.conn.next_event()
            if event is not h11.NEED_DATA:
                return event
            wait = self.proxy.timeout_s
            if self.conn.their_state is h11.IDLE:
                wait = min(wait, self.head_deadline - asyncio.get_running_loop().time())
            async with asyncio.timeout(max(0.0, wait)):
                data = await self.reader.read(READ_CHUNK)
            self.conn.receive_data(data)

    async def _handle(self, request: h11.Request) -> bool:
        """Answer one request; False when the connection must close after it."""
        self.method = request.method.decode("ascii", "replace").upper()
        target = request.target.decode("latin-1")
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.headers]
        if len(headers) > MAX_HEADERS:
            return await self._error(431, f"more than {MAX_HEADERS} header lines")
        if len(request.target) + sum(len(k) + len(v) + 4 for k, v in request.headers) > MAX_HEAD:
            return await self._error(431, f"request head over {MAX_HEAD} bytes")  # h11 checks only unfinished heads
        if self.proxy.accepts is not None and not self.proxy.accepts(
            basic_password(policy.get(headers, "proxy-authorization"))
        ):
            self.proxy.stats["unauthorized"] += 1
            challenge = [("Proxy-Authenticate", 'Basic realm="shoal"')]
            return await self._error(407, "proxy authentication required: the cluster token as password", challenge)
        if not self.proxy.admit():
            return await self._error(503, BUSY_TEXT)
        if self._passed_here(headers):
            return await self._error(508, "loop detected: this request has already passed this proxy")
        if self.method == "CONNECT":
            return await self._connect(target)
        try:
            url = httpx.URL(target)
        except (httpx.InvalidURL, TypeError):
            url = httpx.URL()
        if url.scheme not in ("http", "https") or not url.host:
            return await self._error(400, "this is a forward proxy: send an absolute http:// URI or CONNECT host:port")
        body = await self._body()
        if body is None:
            return await self._error(413, f"request body over {MAX_REQUEST_BODY} bytes")
        started = time.monotonic()
        try:
            async with asyncio.timeout(self.proxy.timeout_s):
                refuse_host(url.host)
                served = await self._serve(url, policy.end_to_end(headers), body)
        except Exception as exc:
            status, text = self._failure(exc, url.netloc.decode("ascii", "replace"), loggable(url))
            log.debug("%s %s -> %d (%s)", self.method, loggable(url), status, text)
            return await self._error(status, text)
        keep = await self._respond(served)
        self.proxy.count(served.cache)
        log.debug("%s %s -> %d %s %.0fms", self.method, loggable(url), served.status, served.cache,
                  (time.monotonic() - started) * 1000)  # fmt: skip
        return keep

    def _passed_here(self, headers: list[tuple[str, str]]) -> bool:
        """Whether a ``Via`` entry names this proxy: the request came round to it again."""
        entries = (e.split() for v in policy.get_all(headers, "via") for e in v.split(","))
        return any(len(e) >= 2 and e[1].lower() == self.proxy.via_name for e in entries)

    async def _serve(self, url: httpx.URL, headers: list[tuple[str, str]], body: bytes) -> Served:
        cache = self.proxy.cache
        upstream = self.proxy.upstream
        if self.method == "GET" and cache is not None:
            return await cache.get(str(url), headers, upstream.loader(url))
        if self.method == "HEAD" and cache is not None:
            hit = await cache.cached(str(url), headers)
            if hit is not None:
                return hit
        response = await upstream.open(self.method, url, headers, body or None)
        if self.method not in SAFE_METHODS and response.status_code < 400 and cache is not None:
            try:
                await cache.invalidate(str(url))
            except Exception as exc:
                log.warning("could not drop the stored GET after a %s: %s", self.method, exc)
        return streamed(response)

    def _failure(self, exc: Exception, target: str, shown: str) -> tuple[int, str]:
        """The status and text for a request to ``target`` (``host:port``) that failed; ``shown``: the
        request as the log may show it."""
        try:
            return self.proxy.upstream.failure(exc, target)
        except Exception:
            log.exception("proxy request to %s failed", shown)
            return 502, f"the proxy could not reach {target}"

    async def _body(self) -> bytes | None:
        """The whole request body, or None when it is over the limit."""
        if self.conn.they_are_waiting_for_100_continue:
            await self._send(h11.InformationalResponse(status_code=100, headers=[]))
        chunks: list[bytes] = []
        size = 0
        while True:
            event = await self._next()
            if isinstance(event, h11.Data):
                size += len(event.data)
                if size > MAX_REQUEST_BODY:
                    return None
                chunks.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                return b"".join(chunks)
            else:
                raise h11.RemoteProtocolError("the request body ended early", 400)

    async def _respond(self, served: Served) -> bool:
        """Send a response; its body streams on from the origin when it was not read whole."""
        headers = [*policy.without(served.headers, {"x-cache"}), ("Via", self.proxy.via), ("X-Cache", served.cache)]
        try:
            await self._send(h11.Response(status_code=served.status, headers=headers, reason=served.reason.encode()))
            if self.method != "HEAD" and served.status not in (204, 304):
                if served.body:
                    await self._send(h11.Data(data=served.body))
                if served.rest is not None:
                    async for chunk in served.rest:
                        if chunk:
                            await self._send(h11.Data(data=chunk))
            await self._send(h11.EndOfMessage())
        except (httpx.HTTPError, OSError, TimeoutError, h11.LocalProtocolError) as exc:
            log.debug("response cut short: %s", exc)  # headers are out: all that is left is to close
            return False
        finally:
            await served.aclose()
        return True

    async def _connect(self, target: str) -> bool:
        try:
            host, port = tunnel.parse_authority(target)
        except ValueError as exc:
            return await self._error(400, str(exc))
        await self._body()
        try:
            refuse_host(host)
            upstream = await tunnel.connect(host, port, self.proxy.timeout_s, self.proxy.tunnel_target)
        except Exception as exc:
            status, text = self._failure(exc, target, f"CONNECT {target}")
            log.debug("CONNECT %s -> %d (%s)", target, status, text)
            return await self._error(status, text)
        self.proxy.stats["tunnels"] += 1
        try:
            await self._send(h11.Response(status_code=200, headers=[("Via", self.proxy.via)],
                                          reason=b"Connection established"))  # fmt: skip
        except (OSError, TimeoutError):
            upstream[1].close()
            return False
        first, _ = self.conn.trailing_data
        moved = await tunnel.Tunnel((self.reader, self.writer), upstream, self.proxy.timeout_s).run(first)
        log.debug("CONNECT %s closed after %d bytes", target, moved)
        return False

    async def _send(self, event: h11.Event) -> None:
        data = self.conn.send(event)
        if data:
            self.writer.write(data)
            async with asyncio.timeout(self.proxy.timeout_s):
                await self.writer.drain()

    async def _error(self, status: int, text: str, extra: list[tuple[str, str]] | None = None) -> bool:
        """The proxy's own answer; the connection closes after it. Always False, for ``return``."""
        self.proxy.stats["errors"] += 1
        if self.conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return False
        body = text.encode() + b"\n"
        headers = [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body))),
                   ("Via", self.proxy.via), ("Connection", "close"), *(extra or [])]  # fmt: skip
        try:
            reason = HTTPStatus(status).phrase.encode()
        except ValueError:
            reason = b""
        try:
            await self._send(h11.Response(status_code=status, headers=headers, reason=reason))
            if self.method != "HEAD":
                await self._send(h11.Data(data=body))
            await self._send(h11.EndOfMessage())
        except (OSError, TimeoutError, h11.LocalProtocolError):
            pass
        return False
