"""Redis behind Sentinel: the URL form, and a client that follows the master through a failover.

``redis+sentinel://[[user]:password@]host:port[,host:port...]/service[/db][?sentinel_password=...]``

The client asks the sentinels where the master is whenever it opens a connection, so once the sentinels
have promoted a replica, new connections go there. Connections to the lost master fail fast (refused or
reset), and a READONLY reply (a demoted master that still answers, also from inside a script: see
shoal.store.refusals) drops the connection and raises a ``ConnectionError``: to shoal both are the store
being down for a moment, which every caller already handles. While the sentinels still flag the old master down and
have promoted nobody yet, ``MasterNotFoundError`` (also a ``ConnectionError``) says the same.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from redis.asyncio import Redis
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool, SentinelManagedConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from shoal._utils import cancel_and_wait, is_digits
from shoal.errors import InvalidInput
from shoal.store.deadlines import TimedConnection, WaitingPool
from shoal.store.refusals import RefusalsAsDown

log = logging.getLogger("shoal.store.sentinel")

SCHEME = "redis+sentinel"
DEFAULT_PORT = 26379
#: A sentinel answers from memory: one that takes longer is skipped for the next one in the URL.
SENTINEL_TIMEOUT = 1.0
#: Seconds between two looks at where the sentinels say the master is (see WaitingSentinelPool).
CHECK_EVERY = 0.5
#: Query parameters the URL may carry.
PARAMETERS = ("sentinel_username", "sentinel_password")

USAGE = f"{SCHEME}://[[user]:password@]host:port[,host:port...]/service[/db][?sentinel_password=...]"


@dataclass(frozen=True)
class SentinelURL:
    """A parsed sentinel URL. ``password`` is Redis's own; ``sentinel_password`` the sentinels' (if any)."""

    sentinels: tuple[tuple[str, int], ...]
    service: str
    db: int = 0
    username: str | None = None
    password: str | None = None
    sentinel_username: str | None = None
    sentinel_password: str | None = None


def parse(url: str) -> SentinelURL:
    """Read a sentinel URL; InvalidInput says what is wrong (without repeating any password)."""
    parts = urlsplit(url)
    if parts.scheme != SCHEME:
        raise InvalidInput(f"not a sentinel URL: use {USAGE}")
    sentinels = tuple(_address(item) for item in parts.netloc.rpartition("@")[2].split(","))
    path = [unquote(p) for p in parts.path.split("/") if p]
    if not path or len(path) > 2:
        raise InvalidInput(f"a sentinel URL names the service, then optionally the db number: {USAGE}")
    db = 0
    if len(path) == 2:
        if not is_digits(path[1]):
            raise InvalidInput(f"the db number in a sentinel URL must be a number, not {path[1]!r}")
        db = int(path[1])
    query = parse_qs(parts.query, keep_blank_values=True)
    unknown = sorted(set(query) - set(PARAMETERS))
    if unknown:
        known = ", ".join(PARAMETERS)
        raise InvalidInput(f"unknown parameter(s) {', '.join(unknown)} in the sentinel URL; known: {known}")

    def param(name: str) -> str | None:
        values = query.get(name)
        return values[-1] if values else None

    return SentinelURL(
        sentinels=sentinels,
        service=path[0],
        db=db,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password is not None else None,
        sentinel_username=param("sentinel_username"),
        sentinel_password=param("sentinel_password"),
    )


def _address(item: str) -> tuple[str, int]:
    """``host:port``, ``[v6]:port`` or a bare host (port 26379)."""
    if not item:
        raise InvalidInput(f"a sentinel URL lists at least one sentinel as host:port: {USAGE}")
    if item.startswith("["):
        host, _, rest = item[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ("" if not rest else "?")
    elif item.count(":") == 1:
        host, _, port = item.partition(":")
    else:
        host, port = item, ""
    if not host or (port and not (is_digits(port) and 0 < int(port) < 65536)):
        raise InvalidInput(f"{item!r} in a sentinel URL is not host:port")
    return host, int(port) if port else DEFAULT_PORT


class WaitingSentinelPool(SentinelConnectionPool, WaitingPool):
    """Sentinel discovery with WaitingPool's bound: a burst of requests waits up to ``timeout``
    for a free connection instead of failing, exactly as with a plain URL.

    redis-py asks the sentinels only when it opens a connection, so pooled connections would go on
    writing to a master the sentinels have demoted while it still runs (a switch-over with ``SENTINEL
    FAILOVER``, or a master cut off from the sentinels but not from shoal): every write there is lost
    when it becomes a replica. So at most every ``CHECK_EVERY`` seconds a checkout also asks, in the
    background, where the master is; if it moved, every connection is closed, busy ones included: their
    callers get the ConnectionError of a store that went away, and recover as from one (the scheduler
    takes over what its reads left unacknowledged, the worker re-reads its inbox, subscriptions are
    made again), now on the new master.
    """

    def __init__(self, service_name: str, sentinel_manager: Sentinel, **kwargs: Any) -> None:
        super().__init__(service_name, sentinel_manager, **kwargs)  # type: ignore[no-untyped-call]
        self._checked_at = 0.0
        self._check: asyncio.Task[None] | None = None

    async def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        now = time.monotonic()
        if now - self._checked_at >= CHECK_EVERY and (self._check is None or self._check.done()):
            self._checked_at = now
            self._check = asyncio.create_task(self._check_master(), name="sentinel master check")
        return await super().get_connection(*args, **kwargs)

    async def stop_checking(self) -> None:
        """No more looks (the client is closing); one under way is cancelled."""
        check, self._check = self._check, None
        self._checked_at = float("inf")
        if check is not None:
            await cancel_and_wait(check)

    async def _check_master(self) -> None:
        known = self.master_address
        try:
            address = await self.sentinel_manager.discover_master(self.service_name)
        except (RedisConnectionError, RedisTimeoutError):  # no master named right now: connections fail anyway
            return
        if known is None or address == known or self.master_address != known:
            return
        log.warning("the sentinels moved the master of %s from %s:%s to %s:%s; reconnecting",
                    self.service_name, *known, *address)  # fmt: skip
        self.master_address = address
        await self.disconnect(inuse_connections=True)


class SentinelStoreConnection(RefusalsAsDown, TimedConnection, SentinelManagedConnection):
    """A connection to the master the sentinels name; READONLY and NOREPLICAS read as a lost store."""


class SentinelRedis(Redis):
    """The master's client; closing it closes the connections to the sentinels too."""

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        pool = self.connection_pool
        if isinstance(pool, WaitingSentinelPool):
            await pool.stop_checking()
        await super().aclose(close_connection_pool)
        if isinstance(pool, SentinelConnectionPool):
            await pool.sentinel_manager.aclose()


def connect_sentinel(
    url: str, *, name: str, max_connections: int, options: dict[str, Any], password: str | None = None
) -> Redis:
    """A client of the master that ``url``'s sentinels name; ``options`` are the plain URL's connection
    settings (timeouts, keepalive, health checks), so both kinds of store behave alike. ``password`` is
    Redis's, when the URL has none."""
    u = parse(url)
    sentinel_options: dict[str, Any] = {
        "socket_timeout": SENTINEL_TIMEOUT,
        "socket_connect_timeout": SENTINEL_TIMEOUT,
        "username": u.sentinel_username,
        "password": u.sentinel_password,
    }
    sentinel = Sentinel(
        list(u.sentinels),
        sentinel_kwargs=sentinel_options,
        username=u.username,
        password=u.password if u.password is not None else password,
        db=u.db,
        client_name=name,
        **options,
    )
    client: Redis = sentinel.master_for(
        u.service,
        redis_class=SentinelRedis,
        connection_pool_class=WaitingSentinelPool,
        connection_class=SentinelStoreConnection,
        max_connections=max_connections,
        timeout=options["socket_timeout"],
    )
    return client
