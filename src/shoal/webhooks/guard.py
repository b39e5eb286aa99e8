"""Which URLs a webhook may reach: the fetch guard (``shoal.addresses``), and loopback only when allowed.

A webhook URL is a stranger's input as a fetch target is, and it is used over and over, by every node. It is
checked twice: when the subscription is added (``check_url``: a refused host, literal or resolved now, is a
400), and at every connection (``Resolver``, in the outbound client's connection pool), since a name may
resolve elsewhere later. Refused: cloud metadata names and addresses, link-local ranges, the cluster's own
addresses (its store and nodes' ports), and loopback and unspecified addresses unless the node's
``webhook_allow_loopback`` is on (a receiver on the same machine, as in a test or a sidecar).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket

import httpx

from shoal.addresses import AddressRefused, IPAddress, carried, refuse_address, refuse_host
from shoal.errors import InvalidInput
from shoal.outbound import Resolver as _Resolve

#: Longest a check at add time waits for a name to resolve; a name that does not resolve then is taken
#: (every attempt checks it again).
RESOLVE_TIMEOUT_S = 2.0
#: Names that always mean this machine.
LOCAL_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"})
LOOPBACK_HINT = "webhook_allow_loopback (SHOAL_WEBHOOK_ALLOW_LOOPBACK=1) lets webhooks reach it"


def refuse_loopback(ip: IPAddress) -> None:
    """Refuse ``ip`` if it, or an IPv4 address it carries, reaches this machine by loopback or as unspecified."""
    for candidate in carried(ip):
        if candidate.is_loopback or candidate.is_unspecified:
            raise AddressRefused(f"refused: {ip} is a loopback address; {LOOPBACK_HINT}")


def _refuse(ip: IPAddress, allow_loopback: bool) -> None:
    refuse_address(ip)
    if not allow_loopback:
        refuse_loopback(ip)


async def check_url(url: str, *, allow_loopback: bool) -> str:
    """The URL, if a webhook may POST to it: an absolute http(s) URL whose host is not refused (as a literal,
    a known name, or by what it resolves to now). InvalidInput says why not."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError) as exc:
        raise InvalidInput(f"url is not a valid URL: {exc}") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise InvalidInput("url must be an absolute http:// or https:// URL with a host")
    host = parsed.host
    try:
        refuse_host(host)
        if host.lower().rstrip(".") in LOCAL_NAMES and not allow_loopback:
            raise AddressRefused(f"refused: {host} is this machine; {LOOPBACK_HINT}")
        for ip in await _addresses(host, parsed.port or (443 if parsed.scheme == "https" else 80)):
            _refuse(ip, allow_loopback)
    except AddressRefused as exc:
        raise InvalidInput(f"url {exc}") from None
    return url


async def _addresses(host: str, port: int) -> list[IPAddress]:
    """The addresses ``host`` has now: itself when it is a literal; none when it does not resolve in time."""
    try:
        return [ipaddress.ip_address(host.strip("[]"))]
    except ValueError:
        pass
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(RESOLVE_TIMEOUT_S):
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, TimeoutError, UnicodeError):
        return []
    return [ipaddress.ip_address(info[4][0]) for info in infos]


class Resolver:
    """The outbound client's resolver for webhooks: ``inner`` (the node's, which refuses metadata, link-local
    and the cluster's own addresses), then loopback unless allowed."""

    def __init__(self, inner: _Resolve, *, allow_loopback: bool) -> None:
        self.inner = inner
        self.allow_loopback = allow_loopback

    async def __call__(self, host: str, port: int) -> IPAddress:
        address = await self.inner(host, port)
        if not self.allow_loopback:
            refuse_loopback(address)
        return address
