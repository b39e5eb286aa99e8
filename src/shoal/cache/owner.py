"""This node as the owner of cache keys: its shard, and the fill leases that make one fill per key.

When callers anywhere in the cluster miss the same key at once, each asks the key's owner for a lease
(``lease``). The first gets it and fills; the others wait on the lease until the holder stores the value
(any ``store`` of the key answers them) and get it as a hit. If the holder keeps nothing (``release``),
or has not stored within ``hold_s``, or a waiter's own ``wait_s`` runs out, the waiter is told to fill
on its own: a lost filler costs at most one wait, never a hang. A lease not answered within ``hold_s``
lapses, and the next caller gets a new one. Lapsed leases are dropped as leases are asked for, whatever
their key, so the leases of fillers that died on keys no one asks for again do not pile up.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from shoal.cache.shard import Shard, item_for
from shoal.models import CacheGrant, CacheItem


@dataclass(slots=True)
class _Lease:
    token: str
    until: float  # monotonic
    done: asyncio.Future[CacheItem | None]


class ShardOwner:
    """Implements ``CacheOwnerAPI`` over ``shard``. Call it from one event loop; any number of callers.

    Parameters:
        shard: this node's shard.
        hold_s: how long a lease holder may take to fill before its lease lapses.
        clock: Unix seconds, for TTLs.
        timer: monotonic seconds, for lease expiry.
    """

    def __init__(
        self,
        shard: Shard,
        *,
        hold_s: float,
        clock: Callable[[], float] = time.time,
        timer: Callable[[], float] = time.monotonic,
    ) -> None:
        self.shard = shard
        self.hold_s = hold_s
        self._clock = clock
        self._timer = timer
        # In the order they lapse: every lease lasts hold_s, and a new lease on a key is added at the end.
        self._leases: dict[str, _Lease] = {}
        self.granted = 0
        self.waited = 0
        self.lapsed = 0

    def __repr__(self) -> str:
        return f"<ShardOwner leases={len(self._leases)} granted={self.granted} waited={self.waited}>"

    def load(self, key: str) -> CacheItem | None:
        return self.shard.get(key)

    def store(self, key: str, value: bytes, ttl_s: float | None, keep_s: float) -> None:
        self.put(key, item_for(value, ttl_s, keep_s, self._clock()))

    def put(self, key: str, item: CacheItem) -> None:
        """Keep ``item`` and answer the lease on ``key``, if any, with it."""
        self.shard.set(key, item)
        lease = self._leases.pop(key, None)
        if lease is not None and not lease.done.done():
            lease.done.set_result(item)

    def drop(self, key: str) -> bool:
        return self.shard.delete(key)

    async def lease(self, key: str, wait_s: float) -> CacheGrant:
        item = self.shard.get(key)
        if item is not None and item.fresh(self._clock()):
            return CacheGrant(item, hit=True)
        now = self._timer()
        self._drop_lapsed(now)
        current = self._leases.get(key)
        if current is None:
            token = secrets.token_urlsafe(12)
            self._leases[key] = _Lease(token, now + self.hold_s, asyncio.get_running_loop().create_future())
            self.granted += 1
            return CacheGrant(item, lease=token)
        self.waited += 1
        budget = max(0.0, min(wait_s, current.until - now))
        await asyncio.wait([current.done], timeout=budget)
        if current.done.done():
            stored = current.done.result()
            if stored is not None and stored.fresh(self._clock()):
                return CacheGrant(stored, hit=True)
        return CacheGrant(self.shard.peek(key))

    def release(self, key: str, lease: str) -> None:
        current = self._leases.get(key)
        if current is not None and current.token == lease:
            self._end(key, current)

    def leases(self) -> int:
        """Fill leases held now."""
        self._drop_lapsed(self._timer())
        return len(self._leases)

    def _drop_lapsed(self, now: float) -> None:
        """End the leases whose holder has not answered within hold_s (it failed, or died filling)."""
        while self._leases:
            key, oldest = next(iter(self._leases.items()))
            if oldest.until > now:
                return
            self.lapsed += 1
            self._end(key, oldest)

    def _end(self, key: str, lease: _Lease) -> None:
        """Drop the lease; its waiters fill on their own."""
        if self._leases.get(key) is lease:
            del self._leases[key]
        if not lease.done.done():
            lease.done.set_result(None)
