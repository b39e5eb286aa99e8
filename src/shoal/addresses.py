"""What shoal never contacts on a stranger's behalf: one reviewed list, shared by ``fetch`` and the proxy.

A task's target and a proxy user's URL or ``CONNECT`` are strangers' input. Before any connection is made
their host is checked here: names of cloud instance-metadata services, metadata addresses, and the whole
link-local ranges (169.254.0.0/16, fe80::/10, where most metadata services live), in every form an IPv6
address can carry an IPv4 one. ``resolve`` checks every address a name has, and the caller connects to the
address that was checked, so a DNS answer that changes between check and connect cannot slip past.

Sources, reviewed for this list:
- AWS EC2 IMDS: 169.254.169.254, IPv6 fd00:ec2::254 (docs.aws.amazon.com, "Instance metadata service").
- Google Cloud: metadata.google.internal and metadata.goog, 169.254.169.254, IPv6 fd20:ce::254
  (cloud.google.com, "About VM metadata").
- Azure IMDS: 169.254.169.254 (link-local); Oracle Cloud, DigitalOcean, OpenStack: 169.254.169.254.
- Alibaba Cloud ECS: 100.100.100.200 (not link-local, so listed by address).
- "instance-data": the name EC2's resolver gives the metadata service; "metadata": a common short alias.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

#: Names that resolve to an instance-metadata service on some cloud.
METADATA_NAMES = frozenset({"metadata", "metadata.google.internal", "metadata.goog", "instance-data"})
#: Metadata addresses that are not link-local (link-local ones are refused as a whole range).
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "100.100.100.200",  # Alibaba Cloud
        "fd00:ec2::254",  # AWS, IPv6
        "fd20:ce::254",  # Google Cloud, IPv6
    )
)
#: The well-known NAT64 prefix: 64:ff9b::a.b.c.d reaches IPv4 a.b.c.d through the network's translator.
NAT64 = ipaddress.ip_network("64:ff9b::/96")


class AddressRefused(Exception):
    """A host or address that shoal must never contact for a stranger."""


class Unresolvable(Exception):
    """A host name with no address."""


def refuse_host(host: str) -> None:
    """Refuse a metadata name or a refused address literal, without looking anything up."""
    refuse_name(host)
    literal = _literal(host)
    if literal is not None:
        refuse_address(literal)


def refuse_name(host: str) -> None:
    if host.lower().rstrip(".") in METADATA_NAMES:
        raise AddressRefused(f"refused: {host} is a cloud metadata service")


def unscoped(ip: IPAddress) -> IPAddress:
    """``ip`` without an IPv6 zone (``fd00::5%1``): the kernel ignores the zone of an address that is not
    link-local, but ``ipaddress`` compares it, so a check must never see it."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.scope_id is not None:
        return ipaddress.IPv6Address(int(ip))
    return ip


def carried(ip: IPAddress) -> list[IPAddress]:
    """``ip`` (unscoped) and every IPv4 address it carries (IPv4-mapped, IPv4-compatible, NAT64, 6to4):
    what a check of ``ip`` must look at, since a connection to it may reach any of them."""
    ip = unscoped(ip)
    found: list[IPAddress] = [ip]
    if isinstance(ip, ipaddress.IPv6Address):
        found += [v4 for v4 in (ip.ipv4_mapped, ip.sixtofour) if v4 is not None]
        if ip in NAT64 or int(ip) >> 32 == 0:
            found.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    return found


def refuse_address(ip: IPAddress) -> None:
    """Refuse ``ip`` if it or an IPv4 address it carries is a metadata or link-local address."""
    for candidate in carried(ip):
        if candidate in METADATA_ADDRESSES:
            raise AddressRefused(f"refused: {ip} is a cloud metadata address")
        if candidate.is_link_local:
            raise AddressRefused(f"refused: {ip} is a link-local address")


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
        return unscoped(literal)
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise Unresolvable(f"cannot resolve {host}: {exc.strerror}") from None
    except UnicodeError:  # a name IDNA cannot encode ("x..y")
        raise Unresolvable(f"cannot resolve {host}: not a valid host name") from None
    addresses = [ipaddress.ip_address(info[4][0]) for info in infos]
    for address in addresses:
        refuse_address(address)
    return addresses[0]
