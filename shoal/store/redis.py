"""Connections to the store: one pool per node from a redis://, rediss://, unix:// or sentinel URL."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.sentinel import Sentinel
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from shoal.errors import InvalidInput

#: Seconds a reply may take before the connection is dropped; blocking reads must block for less.
SOCKET_TIMEOUT = 10.0
#: Errors that mean the store could not be reached (as opposed to a call it refused).
STORE_DOWN = (RedisConnectionError, RedisTimeoutError)
#: What users are told while the store cannot be reached.
STORE_DOWN_MESSAGE = "the store (Redis) cannot be reached right now; try again shortly"
#: Milliseconds that XREADGROUP calls block for.
BLOCK_MS = 2000


def connect(url: str, *, name: str = "shoal", max_connections: int = 128) -> Redis:
    """A client for ``url``. ``redis+sentinel://[:pw@]h1:p1,h2:p2/service[/db]`` follows Sentinel failovers.

    Passwords and TLS come from the URL as redis-py reads them (``rediss://``, ``?ssl_cert_reqs=``).
    """
    scheme = urlsplit(url).scheme
    if scheme == "redis+sentinel":
        return _sentinel(url, name)
    if scheme not in ("redis", "rediss", "unix"):
        raise InvalidInput(
            f"unsupported Redis URL scheme {scheme!r}: use redis://, rediss://, unix:// or redis+sentinel://"
        )
    # A blocking pool makes a burst of requests wait for a connection instead of failing.
    pool = BlockingConnectionPool.from_url(
        url,
        client_name=name,
        max_connections=max_connections,
        timeout=SOCKET_TIMEOUT,
        health_check_interval=30,
        socket_connect_timeout=5,
        socket_timeout=SOCKET_TIMEOUT,
        socket_keepalive=True,
    )
    return Redis(connection_pool=pool)


def _sentinel(url: str, name: str) -> Redis:
    parts = urlsplit(url)
    hosts = []
    for item in parts.netloc.rpartition("@")[2].split(","):
        host, _, port = item.rpartition(":")
        hosts.append((host or "127.0.0.1", int(port or 26379)))
    path = [p for p in parts.path.split("/") if p]
    if not path:
        raise InvalidInput("a sentinel URL needs the service name: redis+sentinel://host:port/mymaster[/db]")
    service, db = path[0], int(path[1]) if len(path) > 1 else 0
    query = parse_qs(parts.query)
    password = parts.password
    sentinel = Sentinel(  # type: ignore[no-untyped-call]
        hosts,
        socket_timeout=SOCKET_TIMEOUT,
        socket_connect_timeout=float(query.get("socket_timeout", ["1.0"])[0]),
        sentinel_kwargs={
            "password": query.get("sentinel_password", [None])[0],
            "socket_timeout": float(query.get("socket_timeout", ["1.0"])[0]),
        },
        password=password,
        db=db,
        client_name=name,
    )
    client: Redis = sentinel.master_for(service)
    return client


def redacted(url: str) -> str:
    """The URL with any password replaced, for logs and status output."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return parts._replace(netloc=netloc).geturl()
