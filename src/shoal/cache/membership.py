"""The nodes the cache spreads keys over, as this node last read them from the registry.

A member is a node the master admitted in its current incarnation, that is not draining and that beat
within ``alive_within`` (``shoal.liveness``): the same rule on every node, over the same records, so that
nodes agree on a key's owners (for a moment they may not, right after a change; a read then falls over to a replica).
The registry is read once per refresh (about once a heartbeat), never per cache operation.

A member this node failed to reach is marked down for ``down_s``: it stays in the ring (the others may
still reach it) but is tried last, so reads and writes go straight to the next owner instead of
waiting on it every time.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping

from shoal.cache import ring
from shoal.liveness import liveness
from shoal.store.nodes import NodeRecord


class Membership:
    """The live members and their gRPC addresses. Not thread-safe; one event loop.

    Parameters:
        me: this node's name.
        my_addr: this node's advertised gRPC address.
        alive_within: seconds since its last beat within which a node counts as live.
        down_s: how long a node that failed a call is tried last.
    """

    def __init__(
        self,
        me: str,
        my_addr: str,
        *,
        alive_within: float,
        down_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.me = me
        self.my_addr = my_addr
        self.alive_within = alive_within
        self.down_s = down_s
        self._clock = clock
        self._addrs: dict[str, str] = {}
        self._down: dict[str, float] = {}
        self.stats: dict[str, dict[str, int]] = {}
        self.refreshed = 0

    def __repr__(self) -> str:
        return f"<Membership {self.me} members={sorted(self._addrs)} down={sorted(self._down)}>"

    @property
    def names(self) -> list[str]:
        """The members, sorted; just this node while none is known (so a lone node caches locally)."""
        return sorted(self._addrs) or [self.me]

    def address(self, name: str) -> str:
        if name == self.me:
            return self.my_addr
        return self._addrs[name]

    def update(self, records: Iterable[NodeRecord], now: float) -> None:
        """Take the members from the registry's records (``now`` is the registry's clock)."""
        members: dict[str, str] = {}
        stats: dict[str, dict[str, int]] = {}
        for r in records:
            if r.grpc and liveness(r, now, self.alive_within).member:
                members[r.name] = r.grpc
                if r.cache is not None:
                    stats[r.name] = dict(r.cache)
        self.set(members)
        self.stats = stats

    def set(self, members: Mapping[str, str]) -> None:
        """Replace the members (name -> gRPC address)."""
        self._addrs = dict(members)
        for name in [n for n in self._down if n not in self._addrs]:
            del self._down[name]
        self.refreshed += 1

    def order(self, key: str) -> list[str]:
        """Every member, best owner of ``key`` first; members marked down go last, in rank order."""
        ranked = ring.rank(key, self.names)
        if not self._down:
            return ranked
        now = self._clock()
        for name, until in list(self._down.items()):
            if until <= now:
                del self._down[name]
        return [n for n in ranked if n not in self._down] + [n for n in ranked if n in self._down]

    def owners(self, key: str, replicas: int) -> list[str]:
        """The ``replicas`` members that hold ``key`` by rank alone (what every node agrees on)."""
        return ring.owners(key, self.names, replicas)

    def mark_down(self, name: str) -> None:
        if name != self.me:
            self._down[name] = self._clock() + self.down_s

    def mark_up(self, name: str) -> None:
        self._down.pop(name, None)

    def is_down(self, name: str) -> bool:
        until = self._down.get(name)
        return until is not None and until > self._clock()
