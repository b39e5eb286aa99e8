"""The cluster's own addresses, which no stranger's request may reach through a node.

``fetch`` targets and proxy requests come from users who hold a token but not the network: the store and
the nodes' ports listen where such users cannot reach, and a node must not become their way in. The
cluster's addresses are the store (from its URL, the embedded server's included), every node's gRPC, HTTP
and proxy address as its record in the store says, and this node's own listeners. A listener bound to a
wildcard or loopback address is reached through any address of its machine, so its port is refused on
every address of this host. The records are read again every few seconds (``run``), so a node that joins
is refused within one refresh.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
import time
from collections.abc import Awaitable, Callable, Iterable
from urllib.parse import urlsplit

from shoal._utils import every, is_digits
from shoal.addresses import AddressRefused, IPAddress, carried, resolve, unscoped

log = logging.getLogger("shoal.cluster.addresses")

#: Seconds between two reads of the nodes' records, at least.
REFRESH_S = 2.0
#: Seconds after which the names are resolved again though the members did not change.
RESOLVE_AGAIN_S = 30.0
#: Longest a refresh waits for one name to resolve.
RESOLVE_TIMEOUT_S = 5.0
#: Port of a store URL that names none.
REDIS_PORT = 6379


class ClusterAddressRefused(AddressRefused):
    """One of the cluster's own addresses, asked for on a stranger's behalf."""


def store_addresses(url: str) -> list[tuple[str, int]]:
    """The ``host:port`` pairs a store URL names: its server, or its sentinels; none for a Unix socket."""
    from shoal.store import sentinel

    parts = urlsplit(url)
    if parts.scheme == sentinel.SCHEME:
        return list(sentinel.parse(url).sentinels)
    if parts.scheme in ("redis", "rediss") and parts.hostname:
        return [(parts.hostname, parts.port or REDIS_PORT)]
    return []


def split_host_port(addr: str) -> tuple[str, int] | None:
    """``host:port`` (``[v6]:port`` too) of an address in a node record; None when it is not one."""
    host, sep, port = addr.rpartition(":")
    if not sep or not host or not is_digits(port) or not 0 < int(port) < 65536:
        return None
    return host.strip("[]"), int(port)


def is_this_host(address: IPAddress) -> bool:
    """Whether connecting to ``address`` reaches this machine: loopback, unspecified, or one of its own."""
    if address.is_loopback or address.is_unspecified:
        return True
    family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((str(address), 0))  # only an address of this machine can be bound
        except OSError:
            return False
    return True


def plain(address: IPAddress) -> IPAddress:
    """An address as it is stored and compared: no IPv6 zone, an IPv4-mapped IPv6 address as its IPv4."""
    address = unscoped(address)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


async def addresses_of(host: str) -> frozenset[IPAddress]:
    """Every address ``host`` has now (none when it does not resolve)."""
    try:
        return frozenset({plain(ipaddress.ip_address(host))})
    except ValueError:
        pass
    loop = asyncio.get_running_loop()
    with contextlib.suppress(OSError, TimeoutError):
        async with asyncio.timeout(RESOLVE_TIMEOUT_S):
            infos = await loop.getaddrinfo(host, None, type=socket.SOCK_STREAM)
        return frozenset(plain(ipaddress.ip_address(info[4][0])) for info in infos)
    log.debug("cannot resolve %s to refuse it", host)
    return frozenset()


class ClusterAddresses:
    """The addresses ``refuse`` refuses. ``add`` this node's listeners and store, ``refresh()`` before use,
    then ``run`` it; ``resolve`` and ``refuse`` may be called from any number of requests at once.

    Parameters:
        nodes: reads the ``host:port`` addresses of every node in the cluster (their records in the store).
    """

    def __init__(self, nodes: Callable[[], Awaitable[Iterable[str]]] | None = None) -> None:
        self.nodes = nodes
        self.own: list[tuple[str, int]] = []
        self._exact: frozenset[tuple[IPAddress, int]] = frozenset()
        self._local_ports: frozenset[int] = frozenset()

    def __repr__(self) -> str:
        return f"ClusterAddresses(own={self.own}, known={len(self._exact)})"

    def add(self, pairs: Iterable[tuple[str, int]]) -> None:
        """This node's own ``(host, port)`` listeners or store servers, refused from the next refresh."""
        self.own.extend(pairs)

    def contains(self, address: IPAddress, port: int) -> bool:
        return any(
            (each, port) in self._exact or (port in self._local_ports and is_this_host(each))
            for each in carried(address)
        )

    def refuse(self, address: IPAddress, port: int) -> None:
        """ClusterAddressRefused if ``address:port`` is one of the cluster's own."""
        if self.contains(address, port):
            target = f"[{address}]:{port}" if address.version == 6 else f"{address}:{port}"
            raise ClusterAddressRefused(f"refused: {target} is one of this cluster's own addresses")

    async def resolve(self, host: str, port: int) -> IPAddress:
        """``shoal.addresses.resolve``, refusing the cluster's own addresses too (``fetch``'s resolver)."""
        address = await resolve(host, port)
        self.refuse(address, port)
        return address

    async def refresh(self) -> None:
        """Read the nodes' records again and resolve every name they and this node's own pairs hold."""
        pairs = list(self.own)
        if self.nodes is not None:
            pairs += [p for p in (split_host_port(a) for a in await self.nodes()) if p is not None]
        names = {host for host, _ in pairs}
        resolved = dict(zip(names, await asyncio.gather(*(addresses_of(n) for n in names)), strict=True))
        exact = {(address, port) for host, port in pairs for address in resolved[host]}
        self._exact = frozenset(exact)
        self._local_ports = frozenset(port for address, port in exact if is_this_host(address))

    async def run(self, interval: float, version: Callable[[], Awaitable[int]] | None = None) -> None:
        """``refresh`` every ``interval`` seconds until cancelled; a failed refresh keeps the last addresses.
        With ``version`` (the registry's membership version), only when it moved, or after RESOLVE_AGAIN_S
        (names may resolve to new addresses with no change of members)."""
        seen, due = -1, 0.0

        async def maybe() -> None:
            nonlocal seen, due
            now = None if version is None else await version()
            if now is None or now != seen or time.monotonic() >= due:
                await self.refresh()
                seen, due = (now if now is not None else -1), time.monotonic() + RESOLVE_AGAIN_S

        await every(interval, maybe, log, "could not refresh the cluster's addresses")
