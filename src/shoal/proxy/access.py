"""Where the proxy may go on a user's behalf. A proxy user holds the cluster token, but the proxy must not
become their way into the cluster's own store and ports, which listen on networks users cannot reach.

Every target is checked after its name is resolved, on the very address the proxy then connects to, in
this order (the first rule that matches decides; a refusal is a 403 with its reason):

1. metadata names, metadata and link-local addresses (``shoal.addresses``): refused, as ``fetch`` refuses them.
2. the cluster's own addresses (``shoal.cluster.addresses``: the store, every node's ports): refused,
   whatever the policy says, as ``fetch`` refuses them.
3. ``proxy_deny``: refused (deny beats allow).
4. ``proxy_allow``: CONNECT may reach what it lists, on any port (a network or name without a port) or
   on the port given (``host:port``), beyond ``proxy_connect_ports``.
5. CONNECT reaches only ``proxy_connect_ports`` (443), as Squid's ``SSL_ports``: a tunnel carries any
   protocol, so it is kept to the ports of TLS services. Plain requests reach any other port.

A rule is a network (``10.0.0.0/8``, an address, ``[fd00::/8]``) or a host name, either with an optional
``:port``. A name matches the name asked for and, in ``proxy_deny``, every address it resolved to at the
last refresh (``run``).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from shoal._utils import every, is_digits
from shoal.addresses import AddressRefused, IPAddress, carried, resolve
from shoal.cluster.addresses import ClusterAddresses, addresses_of, plain

log = logging.getLogger("shoal.proxy.access")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
#: Most rules in ``proxy_allow`` or ``proxy_deny``.
MAX_RULES = 1000


class AccessRefused(AddressRefused):
    """A target the proxy's access policy refuses (a 403 with this text)."""


@dataclass(frozen=True, slots=True)
class Rule:
    """One entry of ``proxy_allow`` or ``proxy_deny``: a network or a host name, on one port or all (None)."""

    text: str
    network: Network | None
    name: str | None
    port: int | None

    def matches(self, host: str, address: IPAddress, port: int, resolved: Iterable[IPAddress] = ()) -> bool:
        if self.port is not None and self.port != port:
            return False
        network, seen = self.network, frozenset(resolved)
        if network is not None:
            return any(each in network for each in carried(address))  # NAT64 and friends reach the IPv4 inside
        return host == self.name or any(each in seen for each in carried(address))


def parse_rule(text: str) -> Rule:
    """A rule from its text; ValueError saying what is wrong."""
    entry = text.strip()
    host, port = entry, None
    if entry.startswith("["):
        host, bracket, rest = entry[1:].partition("]")
        if not bracket:
            raise ValueError(f"{text!r}: an IPv6 network in brackets needs its closing bracket")
        if rest:
            port = _port(rest.removeprefix(":"), entry) if rest.startswith(":") else _port("", entry)
    elif entry.count(":") == 1:
        host, _, port_text = entry.partition(":")
        port = _port(port_text, entry)
    try:
        return Rule(entry, ipaddress.ip_network(host, strict=False), None, port)
    except ValueError:
        pass
    name = host.lower().rstrip(".")
    labels = name.split(".")
    if (
        not name
        or len(name) > 253
        or not all(label and len(label) <= 63 for label in labels)
        or not all(ch.isascii() and (ch.isalnum() or ch in "-_") for label in labels for ch in label)
    ):
        raise ValueError(f"{text!r} is not a network (10.0.0.0/8, [fd00::/8]) or a host name, with an optional :port")
    return Rule(entry, None, name, port)


def _port(text: str, entry: str) -> int:
    if not is_digits(text) or not 0 < int(text) < 65536:
        raise ValueError(f"{entry!r}: the port must be a number from 1 to 65535")
    return int(text)


def parse_rules(texts: Sequence[str], key: str) -> tuple[Rule, ...]:
    """Every rule of option ``key``; ValueError naming the option and the bad entry."""
    if len(texts) > MAX_RULES:
        raise ValueError(f"option {key!r}: at most {MAX_RULES} entries")
    try:
        return tuple(parse_rule(text) for text in texts)
    except ValueError as exc:
        raise ValueError(f"option {key!r}: {exc}") from None


class ProxyAccess:
    """The proxy's access policy over the cluster's own addresses. ``refresh()`` before use, then
    periodically (``run``); ``resolve`` may be called concurrently from any number of requests.

    Parameters:
        connect_ports: ports CONNECT may reach (``proxy_connect_ports``).
        allow: ``proxy_allow`` rules; deny: ``proxy_deny`` rules.
        cluster: the cluster's own addresses (the node refreshes them; the proxy adds its own listener).
    """

    def __init__(self, *, connect_ports: Iterable[int], allow: Sequence[Rule], deny: Sequence[Rule],
                 cluster: ClusterAddresses) -> None:  # fmt: skip
        self.connect_ports = frozenset(connect_ports)
        self.allow = tuple(allow)
        self.deny = tuple(deny)
        self.cluster = cluster
        self.refused = 0
        self._denied_names: dict[str, frozenset[IPAddress]] = {}

    def __repr__(self) -> str:
        return (f"ProxyAccess(connect_ports={sorted(self.connect_ports)}, allow={len(self.allow)}, "
                f"deny={len(self.deny)}, refused={self.refused})")  # fmt: skip

    async def resolve(self, host: str, port: int, *, tunnel: bool) -> IPAddress:
        """The checked address to connect to for ``host:port``; AccessRefused (or AddressRefused) if the
        policy refuses it. ``tunnel``: a CONNECT, held to the CONNECT ports."""
        address = await resolve(host, port)
        try:
            self.check(host, plain(address), port, tunnel=tunnel)
        except AccessRefused as exc:
            self.refused += 1
            log.info("proxy refused %s %s:%d: %s", "CONNECT" if tunnel else "a request to", host, port, exc)
            raise
        return address

    def check(self, host: str, address: IPAddress, port: int, *, tunnel: bool) -> None:
        """Refuse ``address:port`` (asked for as ``host``) if the policy says so; see the module docstring."""
        target = f"[{address}]:{port}" if address.version == 6 else f"{address}:{port}"
        if self.cluster.contains(address, port):
            raise AccessRefused(f"refused: {target} is one of this cluster's own addresses")
        name = host.lower().rstrip(".")
        if any(rule.matches(name, address, port, self._denied_names.get(rule.name or "", ())) for rule in self.deny):
            raise AccessRefused(f"refused: {target} is denied by proxy_deny")
        if not tunnel or port in self.connect_ports:
            return
        if any(rule.matches(name, address, port) for rule in self.allow):
            return
        ports = ", ".join(str(p) for p in sorted(self.connect_ports)) or "none"
        noun = "port" if len(self.connect_ports) == 1 else "ports"
        raise AccessRefused(f"refused: CONNECT goes only to {noun} {ports} (proxy_connect_ports), not {port}")

    async def refresh(self) -> None:
        """Resolve every name ``proxy_deny`` holds again."""
        names = [rule.name for rule in self.deny if rule.name is not None]
        resolved = await asyncio.gather(*(addresses_of(name) for name in names))
        self._denied_names = dict(zip(names, resolved, strict=True))

    async def run(self, interval: float) -> None:
        """``refresh`` every ``interval`` seconds until cancelled; a failed refresh keeps the last addresses."""
        await every(interval, self.refresh, log, "could not resolve proxy_deny's names again")
