"""The caching forward proxy a node serves on its ``proxy`` address (``HTTP_PROXY=http://user:TOKEN@host:3128``).

Clients authenticate with ``Proxy-Authorization: Basic`` whose password is the cluster token (any user
name), checked in constant time against every token the node accepts now (a rotation's previous one
too). At most ``proxy_max_connections`` clients are served at once; one more gets a 503 and is closed.
``proxy_timeout`` bounds connecting to an origin, waiting for its answer (a cached GET's whole body),
each later wait for body bytes, a client's silence between requests, and an idle tunnel.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Callable

from shoal.config import NodeConfig, split_addr
from shoal.proxy.httpcache import HttpCache
from shoal.proxy.session import Session
from shoal.proxy.upstream import Upstream
from shoal.types import CacheAPI

log = logging.getLogger("shoal.proxy")

_BUSY_TEXT = b"the proxy is serving all the clients it can; try again later\n"
BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n"
    b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(_BUSY_TEXT), _BUSY_TEXT)
)
#: Bytes the kernel may queue for a listening socket before ``accept``.
BACKLOG = 1024


class ProxyServer:
    """One node's forward proxy. ``start()``, then ``close()``; counters in ``stats``.

    Parameters:
        bind: ``host:port`` to listen on (port 0 picks a free one; see ``port``).
        node: this node's name, for the ``Via`` header (``1.1 shoal-<node>``).
        cache: the HTTP cache GETs go through (None: every request goes to the origin).
        accepts: whether a given password is an accepted token (None: no authentication).
        timeout_s: see the module docstring.
        max_connections: client connections served at once.
    """

    def __init__(self, *, bind: str, node: str, cache: HttpCache | None, accepts: Callable[[str | None], bool] | None,
                 timeout_s: float, max_connections: int) -> None:  # fmt: skip
        self.bind = bind
        self.via_name = f"shoal-{node}".lower()
        self.via = f"1.1 shoal-{node}"
        self.cache = cache
        self.accepts = accepts
        self.timeout_s = timeout_s
        self.max_connections = max_connections
        self.upstream = Upstream(timeout_s=timeout_s, via=self.via, max_connections=max_connections)
        self.stats: Counter[str] = Counter()
        self.port = 0
        self._server: asyncio.Server | None = None
        self._sessions: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        host, port = split_addr(self.bind, "proxy")
        try:
            self._server = await asyncio.start_server(self._accept, host, port, backlog=BACKLOG)
        except OSError as exc:
            raise OSError(f"cannot serve the proxy on {self.bind}: {exc.strerror or exc}") from None
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("proxy listening on %s:%d", host, self.port)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._sessions):
            task.cancel()
        await asyncio.gather(*self._sessions, return_exceptions=True)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5)
        await self.upstream.aclose()

    @property
    def connections(self) -> int:
        return len(self._sessions)

    def count(self, cache: str) -> None:
        self.stats["requests"] += 1
        self.stats[cache.lower()] += 1

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        try:
            if len(self._sessions) >= self.max_connections:
                self.stats["busy"] += 1
                writer.write(BUSY)
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(writer.drain(), 1)
                return
            assert task is not None
            self._sessions.add(task)
            await Session(self, reader, writer).run()
        except asyncio.CancelledError:
            pass  # close() ends the sessions; a task that ends cancelled would be logged by asyncio as an error
        except Exception:
            log.exception("proxy connection failed")
        finally:
            if task is not None:
                self._sessions.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 1)

    def __repr__(self) -> str:
        return f"ProxyServer({self.bind}, clients={len(self._sessions)}, {dict(self.stats)})"


async def start_proxy(config: NodeConfig, cache: CacheAPI, accepts: Callable[[str | None], bool]) -> ProxyServer | None:
    """The node's proxy on ``config.proxy``, started; None when ``proxy_enabled`` is off."""
    if not config.proxy_enabled:
        return None
    server = ProxyServer(
        bind=config.proxy,
        node=config.name,
        cache=HttpCache(cache, max_value=config.cache_max_value),
        accepts=accepts,
        timeout_s=config.proxy_timeout,
        max_connections=config.proxy_max_connections,
    )
    await server.start()
    return server
