"""Connections to the store: one pool per node from a redis://, rediss://, unix:// or sentinel URL, and a
client over it that raises shoal's store errors (``shoal.store.client``)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any, cast
from urllib.parse import parse_qsl, urlencode, urlsplit

from redis.asyncio import Redis
from redis.asyncio.connection import Connection, SSLConnection, UnixDomainSocketConnection, parse_url
from redis.exceptions import AuthenticationError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from shoal.errors import InvalidInput, StoreError, StoreUnavailable
from shoal.store import sentinel
from shoal.store.client import StoreClient
from shoal.store.deadlines import TimedConnection, WaitingPool
from shoal.store.refusals import RefusalsAsDown

#: Seconds a reply may take before the connection is dropped; blocking reads must block for less.
SOCKET_TIMEOUT = 10.0
#: Errors that mean the store could not be reached (as opposed to a call it refused): shoal's, as a
#: StoreClient raises it, and redis-py's, as a raw connection (shoal.store.wire) or a plain client raises
#: them. A store that cannot take writes for now (a demoted master, one short of the replicas it must have)
#: reads as one that cannot be reached: see shoal.store.refusals.
STORE_DOWN = (StoreUnavailable, RedisConnectionError, RedisTimeoutError)
#: What users are told while the store cannot be reached.
STORE_DOWN_MESSAGE = StoreUnavailable.MESSAGE
#: Milliseconds that XREADGROUP calls block for.
BLOCK_MS = 2000

_SCHEMES = ("redis", "rediss", "unix", sentinel.SCHEME)

#: Connection settings shared by plain and sentinel URLs.
_OPTIONS: dict[str, Any] = {
    "health_check_interval": 30,
    "socket_connect_timeout": 5,
    "socket_keepalive": True,
}


#: Longest password file read (redis_password_file): a password, not a document.
MAX_PASSWORD_FILE = 4096


def check_url(url: str, *, password_file: Path | None = None) -> None:
    """Refuse a URL that ``connect`` could not use, with a message that names no password; and a password
    given twice, in the URL and in ``password_file``."""
    scheme = urlsplit(url).scheme
    if scheme not in _SCHEMES:
        raise InvalidInput(
            f"unsupported Redis URL scheme {scheme!r}: use redis://, rediss://, unix:// or {sentinel.USAGE}"
        )
    if scheme == sentinel.SCHEME:
        has_password = sentinel.parse(url).password is not None
    else:
        try:
            has_password = parse_url(url).get("password") is not None
        except ValueError as exc:
            raise InvalidInput(f"bad Redis URL {redacted(url)}: {exc}") from None
    if has_password and password_file is not None:
        raise InvalidInput("the URL has a password and redis_password_file gives one: give it in one place")


def read_password(path: Path) -> str:
    """The password in ``path`` (its first line), for a store whose URL carries none."""
    try:
        with path.open("rb") as f:
            data = f.read(MAX_PASSWORD_FILE + 1)
    except OSError as exc:
        raise InvalidInput(f"cannot read redis_password_file {path}: {exc.strerror}") from None
    lines = data.decode("utf-8", "replace").splitlines()
    password = lines[0].strip() if lines else ""
    if len(data) > MAX_PASSWORD_FILE or not password:
        raise InvalidInput(f"redis_password_file {path} must hold a password on its first line (at most "
                           f"{MAX_PASSWORD_FILE} bytes in all)")  # fmt: skip
    return password


def connect(
    url: str,
    *,
    name: str = "shoal",
    max_connections: int = 128,
    password_file: Path | None = None,
    reply_timeout: float = SOCKET_TIMEOUT,
) -> StoreClient:
    """A client for ``url``; a ``redis+sentinel://`` URL follows Sentinel failovers (see shoal.store.sentinel).

    Passwords and TLS come from the URL as redis-py reads them (``rediss://``, ``?ssl_cert_reqs=``), or the
    password from ``password_file`` (so that it is in no URL: a mounted secret). A send or a reply that takes
    longer than ``reply_timeout`` seconds fails, as does a wait as long for a free connection
    (shoal.store.deadlines).
    """
    check_url(url, password_file=password_file)
    password = read_password(password_file) if password_file is not None else None
    if urlsplit(url).scheme == sentinel.SCHEME:
        built = sentinel.connect_sentinel(url, name=name, max_connections=max_connections,
                                          options={**_OPTIONS, "socket_timeout": reply_timeout},
                                          password=password)  # fmt: skip
        built.auto_close_connection_pool = False  # its pool passes to the client below, which closes it
        return cast(_SentinelClient, _SentinelClient.from_pool(built.connection_pool))
    # A waiting pool makes a burst of requests wait for a connection instead of failing.
    # Built as ConnectionPool.from_url does (what the URL says wins), but with shoal's connection
    # classes, which from_url would replace by the URL's.
    options: dict[str, Any] = {"client_name": name, "max_connections": max_connections, **_OPTIONS,
                               "socket_timeout": reply_timeout, "timeout": reply_timeout, **parse_url(url)}  # fmt: skip
    if password is not None:
        options["password"] = password
    options["connection_class"] = _CONNECTIONS[options.get("connection_class", Connection)]
    if options["connection_class"] is _UnixConnection:
        options.pop("socket_keepalive")  # a TCP option: a Unix socket connection refuses it
    return cast(StoreClient, StoreClient.from_pool(WaitingPool(**options)))  # closing it closes the pool


class _SentinelClient(StoreClient, sentinel.SentinelRedis):  # type: ignore[misc]  # redis-py's own mixins disagree
    """A StoreClient of the master the sentinels name; closing it closes the connections to them too."""


class _Connection(RefusalsAsDown, TimedConnection, Connection):
    pass


class _SSLConnection(RefusalsAsDown, TimedConnection, SSLConnection):
    pass


class _UnixConnection(RefusalsAsDown, TimedConnection, UnixDomainSocketConnection):
    pass


_CONNECTIONS: dict[type, type] = {
    Connection: _Connection,
    SSLConnection: _SSLConnection,
    UnixDomainSocketConnection: _UnixConnection,
}


def database_of(redis: Redis) -> int:
    """The database number the client selects (pub/sub channels ignore it; shoal's channel names do not)."""
    return int(redis.connection_pool.connection_kwargs.get("db") or 0)


def redacted(url: str) -> str:
    """The URL with any password (in the user part or a ``*password`` parameter) replaced, for logs."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if parts.password is not None:
        user, _, hosts = netloc.rpartition("@")
        netloc = f"{user.partition(':')[0]}:***@{hosts}"
    query = parts.query
    pairs = parse_qsl(query, keep_blank_values=True)
    if any("password" in key for key, _ in pairs):
        query = urlencode([(k, "***" if "password" in k else v) for k, v in pairs], safe="*")
    return parts._replace(netloc=netloc, query=query).geturl()


async def wait_until_up(client: Redis, url: str, timeout: float = 15.0) -> str:
    """Wait until the store at ``url`` answers, and return what it runs (``server_version``).

    A store still starting (refusing connections, loading its data) is waited for up to ``timeout``
    seconds; a wrong password or user is not, since waiting will not fix it. Either raises
    StoreUnavailable, saying why, with no password in it.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            await client.ping()
            return await server_version(client)
        except Exception as exc:
            if isinstance(exc, AuthenticationError) or time.monotonic() > deadline:
                why = exc.detail if isinstance(exc, StoreError) and exc.detail else exc
                raise StoreUnavailable(f"cannot reach Redis at {redacted(url)}: {why}") from None
            await asyncio.sleep(0.2)


async def server_version(redis: Redis) -> str:
    """What the store runs, as "Redis 7.0.15" or "Valkey 8.1.1" (Valkey also reports a Redis version)."""
    try:
        info: dict[str, Any] = await redis.info("server")
    except ResponseError:  # a user the store's ACL does not allow INFO
        return "a server that does not say its version"
    if "valkey_version" in info:
        return f"Valkey {info['valkey_version']}"
    return f"Redis {info.get('redis_version', 'unknown')}"
