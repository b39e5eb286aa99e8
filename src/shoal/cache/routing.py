"""One cache operation on one node, here or over RPC, and the fall-over along a key's member order.

This node is served from its own ``ShardOwner`` without RPC; the others over ``CachePeers``. A node
that does not answer is marked down in the membership (tried last for a while) and the operation goes
on with the next node in the key's order. Nothing here raises for a peer's failure: the caller learns
what was reached from the return values.
"""

from __future__ import annotations

import asyncio
import logging
import time

from shoal.cache.membership import Membership
from shoal.cache.owner import ShardOwner
from shoal.errors import ShoalError
from shoal.models import CacheGrant, CacheItem
from shoal.rpc.cache_peers import CachePeers, PeerCallFailed

log = logging.getLogger("shoal.cache.routing")


class Io:
    """Per-node cache calls for ``ClusterCache``. Safe for concurrent use within one event loop."""

    def __init__(self, *, name: str, owner: ShardOwner, membership: Membership, peers: CachePeers | None) -> None:
        self.name = name
        self.owner = owner
        self.membership = membership
        self.peers = peers

    async def load(self, node: str, key: str, *, count: bool = True) -> tuple[bool, CacheItem | None]:
        """(whether ``node`` answered, the item it holds). ``count``: as a hit or miss in its stats."""
        if node == self.name:
            return True, self.owner.load(key) if count else self.owner.shard.peek(key)
        if self.peers is None:
            return False, None
        try:
            return True, await self.peers.load(node, self.membership.address(node), key)
        except (PeerCallFailed, KeyError) as exc:
            self._failed(node, "load", exc)
            return False, None

    async def store(self, node: str, key: str, value: bytes, ttl_s: float | None, keep_s: float) -> bool:
        """Whether ``node`` stored the item."""
        if node == self.name:
            try:
                self.owner.store(key, value, ttl_s, keep_s)
            except ShoalError as exc:
                log.warning("not cached here: %s", exc.message)
                return False
            return True
        if self.peers is None:
            return False
        try:
            await self.peers.store(node, self.membership.address(node), key, value, ttl_s, keep_s)
        except (PeerCallFailed, KeyError) as exc:
            self._failed(node, "store", exc)
            return False
        return True

    async def put(self, node: str | None, key: str, item: CacheItem) -> bool:
        """Store a copy of ``item`` (e.g. found on a replica) on ``node``, keeping its times."""
        if node is None:
            return False
        ttl_s, keep_s = remaining(item, time.time())
        if ttl_s is not None and ttl_s <= 0:
            return False
        return await self.store(node, key, item.value, ttl_s, keep_s)

    async def drop_one(self, node: str, key: str) -> tuple[bool, bool]:
        """(whether ``node`` answered, whether it held the key)."""
        if node == self.name:
            return True, self.owner.drop(key)
        if self.peers is None:
            return False, False
        try:
            return True, await self.peers.drop(node, self.membership.address(node), key)
        except (PeerCallFailed, KeyError) as exc:
            self._failed(node, "drop", exc)
            return False, False

    async def write(
        self, order: list[str], replicas: int, key: str, value: bytes, ttl_s: float | None, keep_s: float
    ) -> bool:
        """Store on the first ``replicas`` nodes of ``order`` that answer, at once; True if any stored."""
        stored, tried = 0, 0
        while stored < replicas and tried < len(order):
            batch = order[tried : tried + replicas - stored]
            tried += len(batch)
            results = await asyncio.gather(*(self.store(n, key, value, ttl_s, keep_s) for n in batch))
            stored += sum(results)
        return stored > 0

    async def drop(self, order: list[str], replicas: int, key: str) -> tuple[bool, bool]:
        """Remove from the first ``replicas`` nodes of ``order`` that answer: (any answered, any held it)."""
        reached, found, tried = 0, False, 0
        while reached < replicas and tried < len(order):
            batch = order[tried : tried + replicas - reached]
            tried += len(batch)
            for answered, held in await asyncio.gather(*(self.drop_one(n, key) for n in batch)):
                reached += answered
                found |= held
        return reached > 0, found

    async def lease(self, order: list[str], replicas: int, key: str, wait_s: float) -> tuple[str | None, CacheGrant]:
        """Get-or-lease at the first node of ``order`` that answers: (that node, its grant); (None, an
        empty grant: fill alone) when none does."""
        for node in order:
            if node == self.name:
                return node, await self.owner.lease(key, wait_s)
            if self.peers is None:
                continue
            try:
                return node, await self.peers.lease(node, self.membership.address(node), key, wait_s)
            except (PeerCallFailed, KeyError) as exc:
                self._failed(node, "lease", exc)
        return None, CacheGrant()

    async def release(self, node: str, key: str, lease: str) -> None:
        if node == self.name:
            self.owner.release(key, lease)
            return
        if self.peers is None:
            return
        try:
            await self.peers.release(node, self.membership.address(node), key, lease)
        except (PeerCallFailed, KeyError) as exc:
            self._failed(node, "release", exc)

    def _failed(self, node: str, what: str, exc: Exception) -> None:
        if isinstance(exc, KeyError) or (isinstance(exc, PeerCallFailed) and exc.unreachable):
            self.membership.mark_down(node)
        log.debug("cache %s on %s failed: %s", what, node, exc)


def remaining(item: CacheItem, now: float) -> tuple[float | None, float]:
    """(seconds still fresh or None, seconds kept stale after that) of ``item`` at ``now``."""
    if item.stale_at is None:
        return None, 0.0
    keep = item.expires_at - item.stale_at if item.expires_at is not None else 0.0
    return item.stale_at - now, max(0.0, keep)
