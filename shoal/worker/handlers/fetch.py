"""``fetch``: GET the target URL and keep the page source as the result, the seed's example task.

Limits (time in all, body size, redirects) come from the node's config. Every hop's address is checked
before any connection is made: cloud-metadata and link-local addresses are refused, and the connection
then goes to the very address that was checked (the Host header and TLS name stay the URL's), so a DNS
answer that changes between check and connect cannot slip past.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin

import httpx

from shoal.errors import InvalidInput
from shoal.worker.handlers import Output, TaskContext

#: Names that resolve to an instance-metadata service on some cloud.
METADATA_NAMES = frozenset({"metadata", "metadata.google.internal", "metadata.goog", "instance-data"})
#: Metadata addresses that are not link-local (link-local ones are refused as a whole range).
METADATA_ADDRESSES = frozenset(ipaddress.ip_address(a) for a in ("100.100.100.200", "fd00:ec2::254"))

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class FetchRefused(Exception):
    """Raised when a URL leads to an address that fetch must never contact."""


class FetchFailed(Exception):
    """Raised when the fetch went through but broke a limit or got an error status."""


def validate(target: str, params: dict[str, Any]) -> None:
    """Submit-time check: an absolute http(s) URL with a host, and not a refused address."""
    try:
        url = httpx.URL(target)
    except (httpx.InvalidURL, TypeError) as exc:
        raise InvalidInput(f"target is not a valid URL: {exc}") from None
    if url.scheme not in ("http", "https") or not url.host:
        raise InvalidInput("target must be an absolute http:// or https:// URL with a host")
    try:
        refuse_name(url.host)
        literal = _literal(url.host)
        if literal is not None:
            refuse_address(literal)
    except FetchRefused as exc:
        raise InvalidInput(str(exc)) from None


def refuse_name(host: str) -> None:
    if host.lower().rstrip(".") in METADATA_NAMES:
        raise FetchRefused(f"refused: {host} is a cloud metadata service")


#: The well-known NAT64 prefix: 64:ff9b::a.b.c.d reaches IPv4 a.b.c.d through the network's translator.
NAT64 = ipaddress.ip_network("64:ff9b::/96")


def refuse_address(ip: IPAddress) -> None:
    """Refuse ``ip`` and every IPv4 address it carries (IPv4-mapped, IPv4-compatible, NAT64, 6to4)."""
    candidates: list[IPAddress | None] = [ip]
    if isinstance(ip, ipaddress.IPv6Address):
        candidates += [ip.ipv4_mapped, ip.sixtofour]
        if ip in NAT64 or int(ip) >> 32 == 0:
            candidates.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    for candidate in candidates:
        if candidate is None:
            continue
        if candidate in METADATA_ADDRESSES:
            raise FetchRefused(f"refused: {ip} is a cloud metadata address")
        if candidate.is_link_local:
            raise FetchRefused(f"refused: {ip} is a link-local address")


def _literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


async def resolve(host: str, port: int) -> IPAddress:
    """The address to connect to, after refusing metadata names and every refused address it has."""
    refuse_name(host)
    literal = _literal(host)
    if literal is not None:
        refuse_address(literal)
        return literal
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise FetchFailed(f"cannot resolve {host}: {exc.strerror}") from None
    addresses = [ipaddress.ip_address(info[4][0]) for info in infos]
    for address in addresses:
        refuse_address(address)
    return addresses[0]


@dataclass(frozen=True, slots=True)
class Fetcher:
    """The fetch handler bound to a node's limits and its shared HTTP connection pool."""

    client: httpx.AsyncClient
    timeout_s: float = 30.0
    max_bytes: int = 10 * 1024 * 1024
    max_redirects: int = 10

    async def __call__(self, ctx: TaskContext) -> Output:
        try:
            async with asyncio.timeout(self.timeout_s):
                return await self._fetch(ctx.target)
        except TimeoutError:
            raise FetchFailed(f"fetch took longer than {self.timeout_s:g}s") from None
        except FetchRefused:
            raise
        except httpx.HTTPError as exc:
            raise FetchFailed(f"{type(exc).__name__}: {exc}") from None

    async def _fetch(self, target: str) -> Output:
        url = httpx.URL(target)
        for redirects in range(self.max_redirects + 1):
            if url.scheme not in ("http", "https"):
                raise FetchFailed(f"redirected to a non-http URL: {url}")
            port = url.port or (443 if url.scheme == "https" else 80)
            address = await resolve(url.host, port)
            pinned = url.copy_with(host=str(address))
            request = self.client.build_request(
                "GET", pinned, headers={"Host": url.netloc.decode()}, extensions={"sni_hostname": url.host}
            )
            response = await self.client.send(request, stream=True)
            try:
                if response.is_redirect and "location" in response.headers:
                    url = httpx.URL(urljoin(str(url), response.headers["location"]))
                    continue
                body = await self._read(response)
            finally:
                await response.aclose()
            if response.status_code >= 400:
                raise FetchFailed(f"HTTP {response.status_code} {response.reason_phrase} from {url}")
            meta = {
                "status": response.status_code,
                "content_type": response.headers.get("content-type", ""),
                "bytes": len(body),
                "url": str(url),
                "redirects": redirects,
            }
            return Output(body.decode(response.encoding or "utf-8", "replace"), meta)
        raise FetchFailed(f"more than {self.max_redirects} redirects")

    async def _read(self, response: httpx.Response) -> bytes:
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            raise FetchFailed(f"body is {declared} bytes; the limit is {self.max_bytes}")
        chunks: list[bytes] = []
        size = 0
        async for chunk in response.aiter_bytes():
            size += len(chunk)
            if size > self.max_bytes:
                raise FetchFailed(f"body is over the limit of {self.max_bytes} bytes")
            chunks.append(chunk)
        return b"".join(chunks)
