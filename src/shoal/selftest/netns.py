"""Hosts in Linux network namespaces for the selftest's ``partition`` fault (root, ``ip`` and ``nft`` only).

Layout: namespace ``<tag>-br`` holds bridge ``br0``; each node's namespace ``<tag>-hK`` has ``eth0`` =
``<subnet>.K/24`` on that bridge, and the selftest's own namespace joins it too, as ``<subnet>.254`` on a
veth of its own, so that the workload reaches every node and the nodes reach the store (through
``relay``, since the embedded store listens on loopback only). The subnet is a 10.98.X.0/24 that nothing on
the machine uses; its connected route keeps it on the machine, and a blackhole route for it (a higher
metric, so it only counts when the connected route is gone, before ``up`` has finished or after ``down``)
makes sure no packet for the lab ever follows the default route off the machine.

A partition is a set of nft drop rules in the cut-off node's namespace and in each of its peers': nothing
crosses between the node and the other nodes, nor between the node and the store, in either direction,
so each side sees timeouts, as on a real network. The workload still reaches the node.

The tag carries this process's pid: a later run deletes what a run that died without its teardown left.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Sequence

NFT_TABLE = "shoalselftest"
#: Third octets tried for the lab's 10.98.X.0/24, starting from one derived from the pid.
OCTETS = range(10, 250)
#: The host part of the selftest's own address in the lab.
SELF_HOST = 254
#: The metric of the lab subnet's blackhole route: above the connected route's, which wins while it exists.
BLACKHOLE_METRIC = 4000
_TAG_RE = re.compile(r"^shst(\d+)n(\d+)-")


def unavailable(who: str = "partitions need") -> str | None:
    """Why this machine cannot build hosts in network namespaces, or None if it can; ``who`` starts the
    answer (the selftest's partitions, the lab tests)."""
    if os.geteuid() != 0:
        return f"{who} root (network namespaces and nft)"
    missing = [tool for tool in ("ip", "nft") if shutil.which(tool) is None]
    if missing:
        return f"{who} {' and '.join(missing)} (apt-get install -y iproute2 nftables)"
    probe = f"shst{os.getpid()}probe"
    made = sh("ip", "netns", "add", probe, check=False)
    if made.returncode != 0:
        return f"cannot create a network namespace: {made.stderr.strip()}"
    try:
        nft = sh("ip", "netns", "exec", probe, "nft", "list", "ruleset", check=False)
        if nft.returncode != 0:
            return f"nft does not work in a network namespace: {nft.stderr.strip()}"
    finally:
        sh("ip", "netns", "del", probe, check=False)
    return None


def sh(*argv: str, check: bool = True, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run a command (no shell); with ``check``, a failure raises with what it printed on stderr."""
    done = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=30)
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.strip()}")
    return done


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def namespaces() -> list[str]:
    out = sh("ip", "netns", "list", check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def kill_inside(ns: str) -> None:
    """SIGKILL every process still inside ``ns`` (all of them were started there by a selftest)."""
    for _ in range(50):
        pids = [int(p) for p in sh("ip", "netns", "pids", ns, check=False).stdout.split()]
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.05)


def sweep_leftovers(tag: re.Pattern[str] = _TAG_RE, network: str = "10.98") -> list[str]:
    """Delete what earlier runs whose process is gone left behind: their namespaces (veths go with them),
    the processes still inside, the blackhole route of their subnet. ``tag`` matches a namespace name
    with the pid and the subnet's third octet; ``network`` is the first two octets. Returns the names."""
    removed = []
    for ns in namespaces():
        m = tag.match(ns)
        if m is None or alive(int(m.group(1))):
            continue
        kill_inside(ns)
        sh("ip", "netns", "del", ns, check=False)
        sh("ip", "route", "del", *blackhole(f"{network}.{m.group(2)}"), check=False)
        removed.append(ns)
    return removed


def blackhole(subnet: str) -> tuple[str, ...]:
    """The ``ip route`` arguments of the blackhole route for ``subnet``.0/24."""
    return ("blackhole", f"{subnet}.0/24", "metric", str(BLACKHOLE_METRIC))


def free_octet(network: str = "10.98") -> int:
    """A third octet X for which no route or address of the root namespace (nor another run) uses
    ``network``.X.0/24, starting from one derived from the pid."""
    used = sh("ip", "-4", "route", "show", "table", "all", check=False).stdout
    used += sh("ip", "-4", "addr", "show", check=False).stdout
    start = os.getpid() % len(OCTETS)
    for i in range(len(OCTETS)):
        octet = OCTETS[(start + i) % len(OCTETS)]
        if f"{network}.{octet}." not in used:
            return octet
    raise RuntimeError(f"no free {network}.X.0/24 in the root namespace")


class NetLab:
    """Hosts 1..n on one bridge with the selftest's namespace beside them. ``up()``, then ``prefix`` to run
    a command inside a host, ``partition``/``heal``; ``down()`` always."""

    def __init__(self, hosts: int) -> None:
        self.hosts = hosts
        self.octet = free_octet()
        self.subnet = f"10.98.{self.octet}"
        self.tag = f"shst{os.getpid()}n{self.octet}"
        self.bridge = f"{self.tag}-br"
        self.link = f"shst{self.octet}"  # the selftest's own end (interface names are at most 15 bytes)
        self.blocked: set[int] = set()
        self._made: list[str] = []
        self._blackholed = False

    def ns(self, k: int) -> str:
        return f"{self.tag}-h{k}"

    def ip(self, k: int) -> str:
        return f"{self.subnet}.{k}"

    @property
    def self_ip(self) -> str:
        return self.ip(SELF_HOST)

    def up(self) -> NetLab:
        sweep_leftovers()
        sh("ip", "route", "add", *blackhole(self.subnet))
        self._blackholed = True
        self._add_ns(self.bridge)
        sh("ip", "-n", self.bridge, "link", "set", "lo", "up")
        sh("ip", "-n", self.bridge, "link", "add", "br0", "type", "bridge")
        sh("ip", "-n", self.bridge, "link", "set", "br0", "up")
        for k in range(1, self.hosts + 1):
            ns = self.ns(k)
            self._add_ns(ns)
            sh("ip", "-n", self.bridge, "link", "add", f"v{k}", "type", "veth", "peer", "name", "eth0", "netns", ns)
            sh("ip", "-n", self.bridge, "link", "set", f"v{k}", "master", "br0", "up")
            sh("ip", "-n", ns, "link", "set", "lo", "up")
            sh("ip", "-n", ns, "addr", "add", f"{self.ip(k)}/24", "dev", "eth0")
            sh("ip", "-n", ns, "link", "set", "eth0", "up")
            sh("ip", "netns", "exec", ns, "nft", "add", "table", "inet", NFT_TABLE)
            for chain, hook in (("in", "input"), ("out", "output")):
                spec = f"{{ type filter hook {hook} priority 0; policy accept; }}"
                sh("ip", "netns", "exec", ns, "nft", "add", "chain", "inet", NFT_TABLE, chain, spec)
        # the selftest's own end, made here with its peer moved onto the bridge: deleting the bridge's
        # namespace deletes the pair
        sh("ip", "link", "add", self.link, "type", "veth", "peer", "name", "vself", "netns", self.bridge)
        sh("ip", "-n", self.bridge, "link", "set", "vself", "master", "br0", "up")
        sh("ip", "addr", "add", f"{self.self_ip}/24", "dev", self.link)
        sh("ip", "link", "set", self.link, "up")
        return self

    def _add_ns(self, ns: str) -> None:
        sh("ip", "netns", "add", ns)
        self._made.append(ns)

    def prefix(self, k: int) -> list[str]:
        """The command prefix that runs a program inside host ``k`` (``ip netns exec`` execs it, so the pid
        is the program's own)."""
        return ["ip", "netns", "exec", self.ns(k)]

    def partition(self, k: int, store_port: int) -> None:
        """Cut host ``k`` off from every other host and from the store's relay (port ``store_port`` on the
        selftest's address), both ways; host ``k``'s rules go in first, in one nft transaction."""
        others = [h for h in range(1, self.hosts + 1) if h != k]
        addrs = ", ".join(self.ip(h) for h in others)
        script = (f"add rule inet {NFT_TABLE} in ip saddr {{ {addrs} }} drop\n"
                  f"add rule inet {NFT_TABLE} out ip daddr {{ {addrs} }} drop\n"
                  f"add rule inet {NFT_TABLE} in ip saddr {self.self_ip} tcp sport {store_port} drop\n"
                  f"add rule inet {NFT_TABLE} out ip daddr {self.self_ip} tcp dport {store_port} drop\n")  # fmt: skip
        sh("ip", "netns", "exec", self.ns(k), "nft", "-f", "-", stdin=script)
        self.blocked.add(k)
        for h in others:
            script = (f"add rule inet {NFT_TABLE} in ip saddr {self.ip(k)} drop\n"
                      f"add rule inet {NFT_TABLE} out ip daddr {self.ip(k)} drop\n")  # fmt: skip
            sh("ip", "netns", "exec", self.ns(h), "nft", "-f", "-", stdin=script)
            self.blocked.add(h)

    def heal(self) -> None:
        """Remove every partition rule."""
        for k in sorted(self.blocked):
            for chain in ("in", "out"):
                sh("ip", "netns", "exec", self.ns(k), "nft", "flush", "chain", "inet", NFT_TABLE, chain, check=False)
        self.blocked.clear()

    def down(self) -> None:
        """Kill whatever still runs inside, delete the namespaces (and with them every veth)."""
        for ns in reversed(self._made):
            kill_inside(ns)
            sh("ip", "netns", "del", ns, check=False)
        self._made.clear()
        with contextlib.suppress(RuntimeError):
            if self.link in sh("ip", "-o", "link", "show", check=False).stdout:
                sh("ip", "link", "del", self.link, check=False)
        if self._blackholed:  # last: no lab address is reachable by then
            sh("ip", "route", "del", *blackhole(self.subnet), check=False)
            self._blackholed = False


def hosts_of(names: Sequence[str]) -> dict[str, int]:
    """node-K -> K."""
    return {name: int(name.rsplit("-", 1)[1]) for name in names}
