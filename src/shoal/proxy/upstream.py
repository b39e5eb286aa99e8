"""Requests from the proxy to origins, and what their failures mean to the proxy's client.

Every target goes through the checks of the ``fetch`` task type (``shoal.addresses.resolve``):
cloud-metadata names and link-local or metadata addresses are refused, and a connection goes only to the
very address that was checked, so DNS cannot change it between check and connect. Connections are pooled
and TLS-verified under the URL's name (``shoal.outbound``): one verified for a name never serves another.
A body is passed on as the origin sent it, never decoded here.
"""

from __future__ import annotations

import ssl
from collections.abc import Awaitable, Callable, Sequence

import httpx

from shoal import outbound
from shoal.addresses import AddressRefused, IPAddress, Unresolvable, resolve
from shoal.proxy import policy
from shoal.proxy.httpcache import Loader
from shoal.worker.handlers.fetch import FetchFailed

#: Connections kept open to origins, over all of them.
KEEPALIVE = 64


class Upstream:
    """The proxy's HTTP client: one connection pool, no redirects followed, no environment proxies, HTTP/1.1.

    Parameters:
        timeout_s: limit on connecting and on every wait for the origin (each read of the response).
        via: this proxy's ``Via`` entry, added to every forwarded request.
        max_connections: connections open to origins at once.
        resolve: the checked address to connect to for a host and port (the proxy's access policy).
        verify: the CAs to trust (tests give their own); by default certifi's.
    """

    def __init__(self, *, timeout_s: float, via: str, max_connections: int,
                 resolve: Callable[[str, int], Awaitable[IPAddress]] = resolve,
                 verify: ssl.SSLContext | bool = True) -> None:  # fmt: skip
        self.timeout_s = timeout_s
        self.via = via
        self.resolve = resolve
        self.client = outbound.client(
            timeout=httpx.Timeout(timeout_s),
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=KEEPALIVE),
            verify=verify,
            backend=outbound.CheckedBackend(resolve),
        )
        self.client.headers.clear()  # forward the client's headers, not httpx's defaults

    async def open(
        self, method: str, url: httpx.URL, headers: Sequence[tuple[str, str]], content: bytes | None = None
    ) -> httpx.Response:
        """Send the request; the response comes back with its body unread (close it). Every request is
        checked, also one that a pooled connection serves; a new connection is checked as it is opened."""
        port = url.port or (443 if url.scheme == "https" else 80)
        await self.resolve(url.host, port)
        sent = [*policy.without(headers, {"host"}), ("Host", _authority(url)), ("Via", self.via)]
        target = url.copy_with(username=None, password=None)
        request = self.client.build_request(method, target, headers=sent, content=content)
        return await self.client.send(request, stream=True)

    def loader(self, url: httpx.URL) -> Loader:
        """A GET of ``url`` for ``HttpCache`` to make when it must."""

        async def load(headers: list[tuple[str, str]]) -> httpx.Response:
            return await self.open("GET", url, headers)

        return load

    async def aclose(self) -> None:
        await self.client.aclose()

    def failure(self, exc: BaseException, target: str) -> tuple[int, str]:
        """The status and text the client gets when the request to ``target`` failed with ``exc``;
        anything that is not an upstream failure is raised again."""
        if isinstance(exc, AddressRefused):
            return 403, str(exc)
        if isinstance(exc, Unresolvable):
            return 502, str(exc)
        if isinstance(exc, (TimeoutError, httpx.TimeoutException)):
            return 504, f"no answer from {target} within {self.timeout_s:g}s"
        if isinstance(exc, FetchFailed):
            return 502, str(exc)
        if isinstance(exc, httpx.ConnectError):
            return 502, f"cannot connect to {target}: {_reason(exc)}"
        if isinstance(exc, (httpx.HTTPError, OSError)):
            return 502, f"{target} failed: {_reason(exc)}"
        raise exc


def _authority(url: httpx.URL) -> str:
    host = f"[{url.host}]" if ":" in url.host else url.host
    return host if url.port is None else f"{host}:{url.port}"


def _reason(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
