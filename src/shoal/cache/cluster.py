"""The cluster cache as one node offers it (``CacheAPI``): keys on their owners, one fill per miss.

A key's owners are the first ``replicas`` members in its rendezvous order (``Membership.order``). This
node answers for itself without RPC (its ``ShardOwner``) and reaches the others over ``CachePeers``.

- get: the owner, then the next member, until ``replicas`` members answered; the first that holds the
  key wins. A member that does not answer is skipped (and tried last for a while), so reads go on
  while a dead owner is still in the membership.
- set / delete: every owner at once; a write that cannot reach an owner goes to the next member
  instead, so ``replicas`` copies land while any ``replicas`` members answer; one that reaches no member is
  ``NoLiveNode`` (503: the nodes failed it, not the store).
- get_or_fill: concurrent callers on this node share one flight; the flight asks the key's owner for a
  fill lease (see ``shoal.cache.owner``), fills when granted it and stores on every owner, which
  answers every caller waiting at the owner, on any node. A lease holder that keeps nothing, fails or
  takes longer than ``hold_s`` leaves its waiters to fill on their own.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

from shoal import validation
from shoal._utils import cancel_and_wait, every
from shoal.cache.membership import Membership
from shoal.cache.owner import ShardOwner
from shoal.cache.routing import Io
from shoal.cache.shard import Shard
from shoal.config import NodeConfig
from shoal.errors import InvalidInput, NoLiveNode, ValueTooLarge
from shoal.models import CacheItem, Fill
from shoal.rpc.cache_convert import MAX_LEASE_WAIT_S
from shoal.rpc.cache_peers import CachePeers
from shoal.rpc.peers import PeerClient
from shoal.store.nodes import NodeRegistry

log = logging.getLogger("shoal.cache.cluster")

T = TypeVar("T")
#: A lease outlasts the longest fill by this much, so that a slow but working filler is not raced.
FILL_MARGIN_S = 5.0
FillFn = Callable[[CacheItem | None], Awaitable[Fill]]


@dataclass(frozen=True, slots=True)
class _Outcome:
    """What a flight on this node ended with, for the callers that joined it."""

    value: bytes | None = None  # shared with the joiners when the value was stored (or was a hit)
    stale: CacheItem | None = None  # for joiners that must fill on their own


#: Past this many node records, the read of them all that a refresh makes without a change of membership
#: comes less often, in proportion.
MEMBERS_PER_FULL_READ = 10


class ClusterCache:
    """``CacheAPI`` over this node's shard and its peers. Safe for any number of concurrent callers in
    one event loop. ``run()`` keeps the membership fresh (call ``refresh()`` once before serving).

    Parameters:
        name: this node's name.
        shard: this node's shard.
        membership: the live members.
        peers: cache calls to other nodes (None: this node alone).
        registry: where members are read from (None: the membership is set by hand).
        replicas: members that hold each key.
        hold_s: the longest a fill may take before its lease lapses and its waiters fill on their own.
        interval: seconds between two membership refreshes.
        full_every: seconds between two reads of every record when the membership version has not moved,
            stretched in proportion past ``MEMBERS_PER_FULL_READ`` records (see ``refresh``).
    """

    def __init__(
        self,
        *,
        name: str,
        shard: Shard,
        membership: Membership,
        peers: CachePeers | None = None,
        registry: NodeRegistry | None = None,
        replicas: int = 2,
        hold_s: float = 35.0,
        interval: float = 1.0,
        full_every: float = 5.0,
    ) -> None:
        self.name = name
        self.shard = shard
        self.owner = ShardOwner(shard, hold_s=hold_s)
        self.membership = membership
        self.registry = registry
        self.replicas = replicas
        self.hold_s = hold_s
        self.interval = interval
        self.full_every = full_every
        self._version, self._full_due = -1, 0.0  # the membership version last read; when to read anyway
        self.io = Io(name=name, owner=self.owner, membership=membership, peers=peers)
        self._flights: dict[str, asyncio.Future[_Outcome]] = {}
        self._background: set[asyncio.Task[Any]] = set()
        self.joined = 0

    def __repr__(self) -> str:
        return f"<ClusterCache {self.name} {self.shard!r} flights={len(self._flights)} {self.membership!r}>"

    # -- CacheAPI ---------------------------------------------------------------------------------

    async def get(self, key: str) -> CacheItem | None:
        key = validation.cache_key(key)
        answered = 0
        for node in self.membership.order(key):
            if answered >= self.replicas:
                break
            found, item = await self.io.load(node, key)
            answered += found
            if item is not None:
                return item
        return None

    async def set(self, key: str, value: bytes, ttl_s: float | None = None, keep_s: float = 0.0) -> None:
        key, ttl_s, keep_s = _checked(key, ttl_s, keep_s)
        if len(value) > self.shard.max_value:
            raise ValueTooLarge(len(value), self.shard.max_value)
        if not await self.io.write(self.membership.order(key), self.replicas, key, bytes(value), ttl_s, keep_s):
            raise _unreachable("store", key)

    async def delete(self, key: str) -> bool:
        key = validation.cache_key(key)
        reached, found = await self.io.drop(self.membership.order(key), self.replicas, key)
        if not reached:
            raise _unreachable("drop", key)
        return found

    async def get_or_fill(self, key: str, fill: FillFn) -> tuple[bytes, bool]:
        key = validation.cache_key(key)
        flight = self._flights.get(key)
        if flight is not None:
            self.joined += 1
            await asyncio.wait([flight])
            outcome = flight.result()
            if outcome.value is not None:
                return outcome.value, True
            return await self._fill_alone(key, fill, outcome.stale)
        flight = asyncio.get_running_loop().create_future()
        self._flights[key] = flight
        outcome = _Outcome()
        try:
            value, hit, shared, stale = await self._fill_through_owner(key, fill)
            outcome = _Outcome(value if shared else None, stale)
            return value, hit
        finally:
            if self._flights.get(key) is flight:
                del self._flights[key]
            flight.set_result(outcome)

    def stats(self) -> dict[str, int]:
        return self.shard.stats()

    async def cluster_stats(self) -> dict[str, dict[str, int]]:
        stats = {name: dict(s) for name, s in self.membership.stats.items()}
        stats[self.name] = self.stats()
        return stats

    # -- for the scheduler and the node ---------------------------------------------------------------

    def owner_of(self, key: str) -> str:
        """The member that owns ``key`` by rank, as every node with this membership sees it."""
        return self.membership.owners(key, 1)[0]

    async def refresh(self) -> None:
        """Sweep expired items, and read the members from the registry when they may have changed (the
        registry's membership version moved) or ``full_every`` seconds have passed: a node falling silent
        moves no version until the master's verdict, so every record is read again now and then."""
        self.shard.sweep()
        if self.registry is None:
            return
        version = await self.registry.membership_version()
        if version == self._version and time.monotonic() < self._full_due:
            return
        now, records = await self.registry.all_with_time()
        self.membership.update(records, now)
        # Every node reads every record: at a fixed period that costs the store N^2 reads. Stretched with N,
        # the cluster's reads stay linear in its size; the master's verdict on a silent node moves the
        # version, so the read that does not wait for it is only a safety net.
        stretch = max(1.0, len(records) / MEMBERS_PER_FULL_READ)
        self._version, self._full_due = version, time.monotonic() + self.full_every * stretch

    async def run(self) -> None:
        """Refresh every ``interval`` until cancelled; a failed refresh keeps the last membership."""
        await every(self.interval, self.refresh, log, "cache membership refresh failed")

    async def close(self) -> None:
        await asyncio.gather(*(cancel_and_wait(task) for task in list(self._background)))

    # -- get_or_fill ------------------------------------------------------------------------------

    async def _fill_through_owner(self, key: str, fill: FillFn) -> tuple[bytes, bool, bool, CacheItem | None]:
        """(value, hit, stored, stale): one lease at the first owner that answers, then the fill."""
        order = self.membership.order(key)
        holder, grant = await self.io.lease(order, self.replicas, key, self.hold_s)
        if grant.hit and grant.item is not None:
            return grant.item.value, True, True, None
        lease = grant.lease if holder is not None else ""
        answered = not lease  # a lease is answered by a store of the key at its holder, else released
        try:
            if lease and grant.item is None:
                found = await self._from_replicas(key, order, holder)
                if found is not None:  # e.g. the holder is new to the key: copy it there, for its waiters too
                    answered = await self.io.put(holder, key, found)
                    return found.value, True, True, None
            result = await self._run_fill(fill, grant.item)
            stored = await self._keep(key, order, result)
            answered = answered or stored
            return result.value, False, stored, grant.item
        finally:
            if not answered and holder is not None:
                self._later(self.io.release(holder, key, lease))

    async def _fill_alone(self, key: str, fill: FillFn, stale: CacheItem | None) -> tuple[bytes, bool]:
        """A fill for this caller alone (the shared one kept nothing); stored if it says so."""
        result = await self._run_fill(fill, stale)
        await self._keep(key, self.membership.order(key), result)
        return result.value, False

    async def _run_fill(self, fill: FillFn, stale: CacheItem | None) -> Fill:
        self.shard.fills += 1
        return await fill(stale)

    async def _keep(self, key: str, order: list[str], result: Fill) -> bool:
        """Store a fill's value on the key's owners if it asks to be kept and may be; True if stored."""
        if not result.store or len(result.value) > self.shard.max_value:
            return False
        try:
            _, ttl_s, keep_s = _checked(key, result.ttl_s, result.keep_s)
        except InvalidInput as exc:
            log.debug("not caching %r: %s", key, exc.message)
            return False
        return await self.io.write(order, self.replicas, key, result.value, ttl_s, keep_s)

    async def _from_replicas(self, key: str, order: list[str], holder: str | None) -> CacheItem | None:
        """A fresh copy held by another owner (the lease holder may be new to the key, e.g. just joined)."""
        others = [n for n in order[: self.replicas] if n != holder]
        now = time.time()
        for node in others:
            _, item = await self.io.load(node, key, count=False)
            if item is not None and item.fresh(now):
                return item
        return None

    def _later(self, coro: Coroutine[Any, Any, T]) -> None:
        """Run ``coro`` in the background (it must not be lost when its caller is cancelled)."""
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)


def _unreachable(action: str, key: str) -> NoLiveNode:
    """A write that no node holding ``key`` (nor any member after them) answered: the cluster's nodes failed
    it, not the store, so it is ``NoLiveNode`` (503), never ``StoreUnavailable``."""
    return NoLiveNode(f"could {action} cache key {key!r}: none of the nodes that hold it answered")


def _checked(key: str, ttl_s: float | None, keep_s: float) -> tuple[str, float | None, float]:
    key = validation.cache_key(key)
    ttl_s = validation.cache_ttl(ttl_s)
    if isinstance(keep_s, bool) or not isinstance(keep_s, int | float) or not 0 <= keep_s <= validation.MAX_CACHE_TTL_S:
        raise InvalidInput(f"keep_s must be between 0 and {validation.MAX_CACHE_TTL_S:g} seconds")
    return key, ttl_s, float(keep_s)


def build_cache(config: NodeConfig, *, registry: NodeRegistry, peers: PeerClient, alive_within: float) -> ClusterCache:
    """The node's cache from its config: a shard of ``cache_bytes``, leases that outlast the slowest fill
    (a fetch or a proxied request), membership looked at every heartbeat (read again when it changed, and
    at least once in ``alive_within``)."""
    c = config
    return ClusterCache(
        name=c.name,
        shard=Shard(c.cache_bytes, c.cache_max_value),
        membership=Membership(
            c.name, c.advertised(c.grpc), alive_within=alive_within, down_s=max(1.0, 2 * c.heartbeat_interval)
        ),
        peers=CachePeers(peers),
        registry=registry,
        replicas=c.cache_replicas,
        hold_s=min(MAX_LEASE_WAIT_S, max(c.fetch_timeout, c.proxy_timeout) + FILL_MARGIN_S),
        interval=c.heartbeat_interval,
        full_every=alive_within,
    )
