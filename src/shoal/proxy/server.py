"""The caching forward proxy a node serves on its ``proxy`` address (``HTTP_PROXY=http://user:TOKEN@host:3128``).

Clients authenticate with ``Proxy-Authorization: Basic`` whose password is the cluster token (any user
name), checked in constant time against every token the node accepts now (a rotation's previous one
too). Where requests may go is ``shoal.proxy.access``.

Connections are counted in two pools. One that has not yet authenticated is *pending*: its first request
head must arrive whole within ``HEAD_TIMEOUT_S``, and at most ``max_connections`` are pending at once; one
more pushes out the oldest, so strangers that drip their heads slowly cannot keep token holders out. An
authenticated connection is *served*: at most ``max_connections`` at once, one more gets a 503.
``proxy_timeout`` bounds connecting to an origin, waiting for its answer (a cached GET's whole body),
each later wait for body bytes, a client's silence between requests, and an idle tunnel.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Callable

from shoal._utils import cancel_and_wait
from shoal.addresses import IPAddress, resolve
from shoal.cluster.addresses import REFRESH_S, ClusterAddresses
from shoal.config import NodeConfig, split_addr
from shoal.proxy.access import AccessRefused, ProxyAccess, parse_rules
from shoal.proxy.httpcache import HttpCache
from shoal.proxy.session import Session
from shoal.proxy.upstream import Upstream
from shoal.types import CacheAPI

log = logging.getLogger("shoal.proxy")

#: Bytes the kernel may queue for a listening socket before ``accept``.
BACKLOG = 1024
#: Seconds a new connection has to send its first request head whole (at most ``proxy_timeout``).
HEAD_TIMEOUT_S = 10.0


class ProxyServer:
    """One node's forward proxy. ``start()``, then ``close()``; counters in ``stats``.

    Parameters:
        bind: ``host:port`` to listen on (port 0 picks a free one; see ``port``).
        node: this node's name, for the ``Via`` header (``1.1 shoal-<node>``).
        cache: the HTTP cache GETs go through (None: every request goes to the origin).
        accepts: whether a given password is an accepted token (None: no authentication).
        timeout_s: see the module docstring.
        max_connections: authenticated client connections served at once, and pending ones held at once.
        access: where requests may go (None: anywhere ``shoal.addresses`` allows).
        access_refresh_s: seconds between two resolutions of ``proxy_deny``'s names.
    """

    def __init__(self, *, bind: str, node: str, cache: HttpCache | None, accepts: Callable[[str | None], bool] | None,
                 timeout_s: float, max_connections: int, access: ProxyAccess | None = None,
                 access_refresh_s: float = REFRESH_S) -> None:  # fmt: skip
        self.bind = bind
        self.via_name = f"shoal-{node}".lower()
        self.via = f"1.1 shoal-{node}"
        self.cache = cache
        self.accepts = accepts
        self.timeout_s = timeout_s
        self.head_timeout_s = min(HEAD_TIMEOUT_S, timeout_s)
        self.max_connections = max_connections
        self.access = access
        self.access_refresh_s = access_refresh_s
        self.upstream = Upstream(timeout_s=timeout_s, via=self.via, max_connections=max_connections,
                                 resolve=self.request_target)  # fmt: skip
        self.stats: Counter[str] = Counter()
        self.port = 0
        self._server: asyncio.Server | None = None
        self._sessions: set[asyncio.Task[None]] = set()  # authenticated
        self._pending: dict[asyncio.Task[None], None] = {}  # not yet authenticated, oldest first
        self._refresher: asyncio.Task[None] | None = None

    async def start(self) -> None:
        host, port = split_addr(self.bind, "proxy")
        try:
            self._server = await asyncio.start_server(self._accept, host, port, backlog=BACKLOG)
        except OSError as exc:
            raise OSError(f"cannot serve the proxy on {self.bind}: {exc.strerror or exc}") from None
        self.port = self._server.sockets[0].getsockname()[1]
        if self.access is not None:
            self.access.cluster.add([(host, self.port)])
            await self.access.cluster.refresh()
            await self.access.refresh()
            self._refresher = asyncio.create_task(self.access.run(self.access_refresh_s), name="proxy-access")
        log.info("proxy listening on %s:%d", host, self.port)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        tasks = [*self._sessions, *self._pending, *([self._refresher] if self._refresher is not None else [])]
        await asyncio.gather(*(cancel_and_wait(task) for task in tasks))
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5)
        await self.upstream.aclose()

    @property
    def connections(self) -> int:
        return len(self._sessions) + len(self._pending)

    async def request_target(self, host: str, port: int) -> IPAddress:
        """The checked address of a plain request's origin (AccessRefused or AddressRefused: a 403)."""
        return await self._target(host, port, tunnel=False)

    async def tunnel_target(self, host: str, port: int) -> IPAddress:
        """The checked address of a CONNECT's target."""
        return await self._target(host, port, tunnel=True)

    async def _target(self, host: str, port: int, *, tunnel: bool) -> IPAddress:
        if self.access is None:
            return await resolve(host, port)
        try:
            return await self.access.resolve(host, port, tunnel=tunnel)
        except AccessRefused:
            self.stats["refused"] += 1
            raise

    def admit(self) -> bool:
        """Move the calling session from pending to served, now that it has authenticated; False (and the
        session stays pending) when all ``max_connections`` are served already."""
        task = asyncio.current_task()
        if task not in self._pending:
            return True
        if len(self._sessions) >= self.max_connections:
            self.stats["busy"] += 1
            return False
        del self._pending[task]
        self._sessions.add(task)
        return True

    def count(self, cache: str) -> None:
        self.stats["requests"] += 1
        self.stats[cache.lower()] += 1

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        try:
            if len(self._pending) >= self.max_connections:
                oldest = next(iter(self._pending))
                del self._pending[oldest]
                oldest.cancel()
                self.stats["dropped"] += 1
            self._pending[task] = None
            await Session(self, reader, writer).run()
        except asyncio.CancelledError:
            pass  # close() or a newer connection ended it; a task that ends cancelled would be logged as an error
        except Exception:
            log.exception("proxy connection failed")
        finally:
            self._pending.pop(task, None)
            self._sessions.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 1)
            if not writer.transport.is_closing() or writer.transport.get_write_buffer_size():
                writer.transport.abort()  # a client that stopped reading: drop what it would never take

    def __repr__(self) -> str:
        return (f"ProxyServer({self.bind}, clients={len(self._sessions)}, pending={len(self._pending)}, "
                f"{dict(self.stats)})")  # fmt: skip


async def start_proxy(
    config: NodeConfig,
    cache: CacheAPI,
    accepts: Callable[[str | None], bool],
    *,
    cluster: ClusterAddresses,
) -> ProxyServer | None:
    """The node's proxy on ``config.proxy``, started; None when ``proxy_enabled`` is off. ``cluster``: the
    cluster's own addresses, which the proxy refuses (it adds its own listener to them)."""
    if not config.proxy_enabled:
        return None
    access = ProxyAccess(
        connect_ports=config.proxy_connect_ports,
        allow=parse_rules(config.proxy_allow, "proxy_allow"),
        deny=parse_rules(config.proxy_deny, "proxy_deny"),
        cluster=cluster,
    )
    server = ProxyServer(
        bind=config.proxy,
        node=config.name,
        cache=HttpCache(cache, max_value=config.cache_max_value),
        accepts=accepts,
        timeout_s=config.proxy_timeout,
        max_connections=config.proxy_max_connections,
        access=access,
        access_refresh_s=max(REFRESH_S, config.heartbeat_interval),
    )
    await server.start()
    return server
