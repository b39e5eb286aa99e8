"""This node's shard of the cluster cache: a dict in memory, bounded by bytes, least recently used first out.

An item is fresh until its ``stale_at``, then stale (still served, so that a filler can revalidate it)
until its ``expires_at``, then gone. Expired items are removed when they are looked up, and by
``sweep()``, which the cache calls about once a second and which only visits items that have expired
(a heap ordered by expiry), so it costs nothing when nothing expires.

The size of an item counts its key, its value and ``ITEM_OVERHEAD`` bytes for the bookkeeping around
them; the shard evicts from the least recently used end until the total fits ``capacity``. No I/O, no
awaits: every method runs to completion on the event loop, so the shard needs no lock.
"""

from __future__ import annotations

import heapq
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from shoal.errors import ValueTooLarge
from shoal.models import CacheItem

#: Bytes counted for each item beside its key and value: the dict slot, the item, the heap entry.
ITEM_OVERHEAD = 128
#: The expiry heap is rebuilt once it holds this many times more entries than there are items.
HEAP_SLACK = 2


@dataclass(slots=True)
class _Entry:
    item: CacheItem
    size: int


class Shard:
    """A bounded LRU map of keys to ``CacheItem``. Not thread-safe; call it from one event loop.

    Parameters:
        capacity: most bytes held (keys, values and per-item overhead).
        max_value: largest value accepted; ``set`` refuses bigger ones with ``ValueTooLarge``.
        clock: Unix seconds (items carry wall-clock times so they mean the same on every node).
    """

    def __init__(self, capacity: int, max_value: int, *, clock: Callable[[], float] = time.time) -> None:
        if capacity < 1 or max_value < 1:
            raise ValueError("capacity and max_value must be positive")
        self.capacity = capacity
        self.max_value = max_value
        self._clock = clock
        self._items: OrderedDict[str, _Entry] = OrderedDict()
        self._expiry: list[tuple[float, str]] = []
        self.bytes = 0
        self.hits = 0
        self.misses = 0
        self.evictions = 0
        self.expired = 0
        self.fills = 0

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: str) -> bool:
        return self.peek(key) is not None

    def __repr__(self) -> str:
        return (
            f"<Shard items={len(self._items)} bytes={self.bytes}/{self.capacity} hits={self.hits} misses={self.misses}>"
        )

    @staticmethod
    def size_of(key: str, value: bytes) -> int:
        return len(key.encode()) + len(value) + ITEM_OVERHEAD

    def get(self, key: str) -> CacheItem | None:
        """The item, fresh or stale, counted as a hit (fresh) or a miss (stale or absent), and made most
        recently used; None when absent or expired."""
        item = self.peek(key)
        if item is None or not item.fresh(self._clock()):
            self.misses += 1
        else:
            self.hits += 1
        if item is not None:
            self._items.move_to_end(key)
        return item

    def peek(self, key: str) -> CacheItem | None:
        """The item without counting the look-up or touching its recency; None when absent or expired."""
        entry = self._items.get(key)
        if entry is None:
            return None
        expires = entry.item.expires_at
        if expires is not None and expires <= self._clock():
            self._remove(key)
            self.expired += 1
            return None
        return entry.item

    def set(self, key: str, item: CacheItem) -> None:
        """Store ``item`` under ``key`` as the most recently used, evicting others until it fits.

        Raises:
            ValueTooLarge: the value is above ``max_value``, or the item alone would not fit ``capacity``.
        """
        if len(item.value) > self.max_value:
            raise ValueTooLarge(len(item.value), self.max_value)
        size = self.size_of(key, item.value)
        if size > self.capacity:
            raise ValueTooLarge(len(item.value), self.capacity - self.size_of(key, b""))
        if item.expires_at is not None and item.expires_at <= self._clock():
            self.delete(key)  # already expired: storing it would only evict live items
            return
        self._remove(key)
        self._items[key] = _Entry(item, size)
        self.bytes += size
        if item.expires_at is not None:
            heapq.heappush(self._expiry, (item.expires_at, key))
            if len(self._expiry) > HEAP_SLACK * len(self._items) + 64:
                self._rebuild_heap()
        while self.bytes > self.capacity:
            oldest = next(iter(self._items))
            self._remove(oldest)
            self.evictions += 1

    def delete(self, key: str) -> bool:
        """Remove ``key``; True if it was there (and not yet expired)."""
        present = self.peek(key) is not None
        self._remove(key)
        return present

    def sweep(self, most: int = 10_000) -> int:
        """Remove up to ``most`` expired items; return how many went."""
        now = self._clock()
        removed = 0
        while self._expiry and self._expiry[0][0] <= now and removed < most:
            expires_at, key = heapq.heappop(self._expiry)
            entry = self._items.get(key)
            if entry is not None and entry.item.expires_at == expires_at:
                self._remove(key)
                self.expired += 1
                removed += 1
        return removed

    def stats(self) -> dict[str, int]:
        return {
            "items": len(self._items),
            "bytes": self.bytes,
            "capacity": self.capacity,
            "hits": self.hits,
            "misses": self.misses,
            "evictions": self.evictions,
            "expired": self.expired,
            "fills": self.fills,
        }

    def keys(self) -> list[str]:
        """Keys from least to most recently used (expired ones not yet swept included)."""
        return list(self._items)

    def _remove(self, key: str) -> None:
        entry = self._items.pop(key, None)
        if entry is not None:
            self.bytes -= entry.size

    def _rebuild_heap(self) -> None:
        self._expiry = [(e.item.expires_at, k) for k, e in self._items.items() if e.item.expires_at is not None]
        heapq.heapify(self._expiry)


def item_for(value: bytes, ttl_s: float | None, keep_s: float, now: float) -> CacheItem:
    """The item for a value stored now: fresh for ``ttl_s`` (None: until evicted), then stale ``keep_s``."""
    if ttl_s is None:
        return CacheItem(value)
    stale_at = now + ttl_s
    return CacheItem(value, stale_at=stale_at, expires_at=stale_at + max(0.0, keep_s))
