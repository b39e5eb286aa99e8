"""The HTTP client for strangers' URLs (``fetch`` and the proxy): checked addresses, connections pooled by name.

A request keeps the URL's own name. The connection pool opens a connection only through ``CheckedBackend``,
which resolves that name with ``shoal.addresses.resolve`` (metadata and link-local addresses refused) and
connects to the very address it checked, so DNS cannot change it between check and connect. Because the
URL is not rewritten to the address, the pool keys connections by scheme, name and port, and TLS checks the
certificate against that name: a connection verified for one name is never reused for another name that
happens to share its address.
"""

from __future__ import annotations

import ssl
from collections.abc import Awaitable, Callable, Iterable

import httpcore
import httpx

from shoal.addresses import IPAddress, resolve

#: Resolves and checks a host name; returns the one address to connect to.
Resolver = Callable[[str, int], Awaitable[IPAddress]]
#: httpx's own pool limits, for a client that is given none.
LIMITS = httpx.Limits()


class CheckedBackend(httpcore.AsyncNetworkBackend):
    """Connects to a host only at the address ``resolver`` checked for it; ``inner`` makes the connection."""

    def __init__(self, resolver: Resolver = resolve, inner: httpcore.AsyncNetworkBackend | None = None) -> None:
        self.resolver = resolver
        self.inner = inner or httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        address = await self.resolver(host, port)
        return await self.inner.connect_tcp(str(address), port, timeout, local_address, socket_options)

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)


class CheckedTransport(httpx.AsyncHTTPTransport):
    """httpx's HTTP/1.1 transport, its connection pool opening connections through a ``CheckedBackend``."""

    def __init__(self, *, verify: ssl.SSLContext | bool = True, limits: httpx.Limits = LIMITS,
                 backend: CheckedBackend | None = None) -> None:  # fmt: skip
        context = httpx.create_ssl_context(verify=verify, trust_env=False)
        super().__init__(verify=context, trust_env=False, limits=limits)
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=context,
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=backend or CheckedBackend(),
        )


def client(
    *,
    timeout: httpx.Timeout | float,
    limits: httpx.Limits = LIMITS,
    verify: ssl.SSLContext | bool = True,
    backend: CheckedBackend | None = None,
) -> httpx.AsyncClient:
    """An HTTP client for strangers' URLs: checked addresses, no redirects followed, no environment proxies.

    ``verify`` and ``backend`` are for tests (a test CA, names pointed at loopback); by default certifi's
    CA bundle (as httpx's) and ``shoal.addresses.resolve``."""
    transport = CheckedTransport(verify=verify, limits=limits, backend=backend)
    return httpx.AsyncClient(transport=transport, trust_env=False, follow_redirects=False, timeout=timeout)
