"""A multi-host lab in Linux network namespaces, for tests that need shoal on separate hosts.

Layout: namespace ``<tag>-br`` holds bridge ``br0``; each ``<tag>-hK`` has ``eth0`` = ``<subnet>.K/24``,
whose veth peer ``vK`` sits on the bridge. Before any namespace exists, the root namespace gets a
blackhole route for the lab's /24: from there a lab address would otherwise follow the default route
off the machine, and a test may only reach loopback and the lab. Processes run inside a host with
``spawn`` (``ip netns exec`` execs the command itself, so the pid is the process's own) and are killed by
that pid before the namespaces are deleted, since a process outlives ``ip netns del``.

A partition is a pair of nft drop rules (input from, output to the other address) in each end's
namespace, so nothing crosses in either direction and clients see timeouts, as on a real network.

The tag carries this process's pid and the subnet's third octet: a later run deletes what a run that
died without its teardown left behind (namespaces, their processes, the blackhole route).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from shoal.selftest import netns
from shoal.selftest.netns import blackhole, free_octet, kill_inside, sh

#: The lab's subnets are NETWORK.X.0/24 (the selftest's partitions use 10.98).
NETWORK = "10.99"
_TAG_RE = re.compile(r"^shoallab(\d+)n(\d+)-")
NFT_TABLE = "shoallab"


def unavailable() -> str | None:
    """Why this machine cannot host the lab, or None if it can."""
    return netns.unavailable("the network-namespace lab needs")


def sweep_leftovers() -> list[str]:
    """Delete what earlier lab runs whose process is gone left behind; return the namespaces removed."""
    return netns.sweep_leftovers(_TAG_RE, NETWORK)


class Lab:
    """Hosts 1..n on one bridge. ``up()`` then ``spawn``/``partition``/``heal``; ``down()`` always."""

    def __init__(self, hosts: int) -> None:
        self.hosts = hosts
        self.octet = free_octet(NETWORK)
        self.subnet = f"{NETWORK}.{self.octet}"
        self.tag = f"shoallab{os.getpid()}n{self.octet}"
        self.bridge = f"{self.tag}-br"
        self.procs: list[subprocess.Popen[bytes]] = []
        self.blocked: set[tuple[int, int]] = set()
        self._route = False
        self._made: list[str] = []

    def __repr__(self) -> str:
        return f"<Lab {self.tag} {self.subnet}.0/24 hosts={self.hosts} procs={len(self.procs)}>"

    def ns(self, k: int) -> str:
        return f"{self.tag}-h{k}"

    def ip(self, k: int) -> str:
        return f"{self.subnet}.{k}"

    def up(self) -> Lab:
        # First of all: lab addresses must never leave the machine from the root namespace.
        sh("ip", "route", "replace", *blackhole(self.subnet))
        self._route = True
        self._add_ns(self.bridge)
        sh("ip", "-n", self.bridge, "link", "set", "lo", "up")
        sh("ip", "-n", self.bridge, "link", "add", "br0", "type", "bridge")
        sh("ip", "-n", self.bridge, "link", "set", "br0", "up")
        for k in range(1, self.hosts + 1):
            ns = self.ns(k)
            self._add_ns(ns)
            # made in the bridge's namespace, one end moved to the host ("vK": a bare "a" would parse as lladdr)
            sh("ip", "-n", self.bridge, "link", "add", f"v{k}", "type", "veth", "peer", "name", "eth0", "netns", ns)
            sh("ip", "-n", self.bridge, "link", "set", f"v{k}", "master", "br0", "up")
            sh("ip", "-n", ns, "link", "set", "lo", "up")
            sh("ip", "-n", ns, "addr", "add", f"{self.ip(k)}/24", "dev", "eth0")
            sh("ip", "-n", ns, "link", "set", "eth0", "up")
            sh("ip", "netns", "exec", ns, "nft", "add", "table", "inet", NFT_TABLE)
            for chain, hook in (("in", "input"), ("out", "output")):
                spec = f"{{ type filter hook {hook} priority 0; policy accept; }}"
                sh("ip", "netns", "exec", ns, "nft", "add", "chain", "inet", NFT_TABLE, chain, spec)
        return self

    def _add_ns(self, ns: str) -> None:
        sh("ip", "netns", "add", ns)
        self._made.append(ns)

    def spawn(
        self, k: int, argv: Sequence[str], *, log: Path, env: Mapping[str, str] | None = None, pipes: bool = False
    ) -> subprocess.Popen[bytes]:
        """Start ``argv`` inside host ``k``, output to ``log``; with ``pipes``, stdin and stdout are pipes
        (the caller talks to it) and only stderr goes to ``log``."""
        with log.open("ab") as out:
            proc = subprocess.Popen(
                ["ip", "netns", "exec", self.ns(k), *argv],
                stdin=subprocess.PIPE if pipes else subprocess.DEVNULL,
                stdout=subprocess.PIPE if pipes else out,
                stderr=out,
                env=dict(env) if env is not None else None,
                start_new_session=True,
            )
        self.procs.append(proc)
        return proc

    def run(self, k: int, *argv: str) -> str:
        """Run a short command inside host ``k``; its stdout."""
        return sh("ip", "netns", "exec", self.ns(k), *argv).stdout

    def partition(self, a: int, others: Sequence[int]) -> None:
        """Cut host ``a`` off from each of ``others``, both directions, dropping on both ends; each namespace
        gets its rules in one nft transaction, host ``a`` first, so its cut is one instant."""
        peers = {a: [b for b in others if (a, b) not in self.blocked]}
        for b in others:
            if (b, a) not in self.blocked:
                peers.setdefault(b, []).append(a)
        for me, theirs in peers.items():
            if not theirs:
                continue
            addrs = ", ".join(self.ip(k) for k in theirs)
            script = (f"add rule inet {NFT_TABLE} in ip saddr {{ {addrs} }} drop\n"
                      f"add rule inet {NFT_TABLE} out ip daddr {{ {addrs} }} drop\n")  # fmt: skip
            sh("ip", "netns", "exec", self.ns(me), "nft", "-f", "-", stdin=script)
            self.blocked.update((me, k) for k in theirs)

    def heal(self) -> None:
        """Remove every partition rule."""
        for k in sorted({me for me, _ in self.blocked}):
            for chain in ("in", "out"):
                sh("ip", "netns", "exec", self.ns(k), "nft", "flush", "chain", "inet", NFT_TABLE, chain)
        self.blocked.clear()

    def rules(self, k: int) -> str:
        return self.run(k, "nft", "list", "table", "inet", NFT_TABLE)

    def kill(self, proc: subprocess.Popen[bytes], timeout: float = 5.0) -> None:
        """SIGKILL one process started here, by its pid, and reap it."""
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout)
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()

    def down(self) -> None:
        """Kill every process (by pid, then any straggler inside), delete the namespaces, drop the route."""
        errors: list[str] = []
        for proc in reversed(self.procs):
            self.kill(proc)
        for ns in reversed(self._made):
            kill_inside(ns)
            done = sh("ip", "netns", "del", ns, check=False)
            if done.returncode != 0:
                errors.append(f"ip netns del {ns}: {done.stderr.strip()}")
        self._made.clear()
        if self._route:
            done = sh("ip", "route", "del", *blackhole(self.subnet), check=False)
            if done.returncode != 0:
                errors.append(f"ip route del blackhole {self.subnet}.0/24: {done.stderr.strip()}")
            self._route = False
        if errors:
            raise RuntimeError("lab teardown: " + "; ".join(errors))
