"""The cache's pure parts: the shard (LRU by bytes, TTL with a stale window, size limit, stats), the
rendezvous ring (a join or leave moves only its own share), and the fill leases of a key's owner."""

from __future__ import annotations

import asyncio
import random

import pytest

from shoal.cache import ring
from shoal.cache.owner import ShardOwner
from shoal.cache.shard import ITEM_OVERHEAD, Shard, item_for
from shoal.errors import InvalidInput, ValueTooLarge
from shoal.models import CacheItem


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


# -- shard -----------------------------------------------------------------------------------------


def test_lru_eviction_at_the_byte_bound() -> None:
    size = Shard.size_of("k00", b"x" * 100)
    shard = Shard(capacity=10 * size, max_value=1000)
    for i in range(10):
        shard.set(f"k{i:02}", CacheItem(b"x" * 100))
    assert len(shard) == 10 and shard.bytes == 10 * size
    assert shard.get("k00") is not None  # k00 is now the most recently used; k01 the least
    shard.set("k10", CacheItem(b"x" * 100))
    assert "k01" not in shard and "k00" in shard and "k10" in shard
    assert shard.stats()["evictions"] == 1 and shard.bytes <= shard.capacity
    shard.set("big", CacheItem(b"y" * 1000))  # needs the room of five small ones
    assert shard.bytes <= shard.capacity
    assert shard.keys() == ["k07", "k08", "k09", "k00", "k10", "big"]  # the least recently used went
    assert shard.stats()["evictions"] == 6


def test_sizes_count_key_value_and_overhead() -> None:
    shard = Shard(capacity=1 << 20, max_value=1 << 16)
    shard.set("ключ", CacheItem(b"abc"))
    assert shard.bytes == len("ключ".encode()) + 3 + ITEM_OVERHEAD
    shard.set("ключ", CacheItem(b"abcdef"))  # replacing an item counts it once
    assert shard.bytes == len("ключ".encode()) + 6 + ITEM_OVERHEAD
    assert shard.delete("ключ") and shard.bytes == 0 and not shard.delete("ключ")


def test_a_value_over_the_limit_is_refused_with_413() -> None:
    shard = Shard(capacity=1 << 20, max_value=1024)
    with pytest.raises(ValueTooLarge) as info:
        shard.set("k", CacheItem(b"x" * 1025))
    assert info.value.http_status == 413 and info.value.grpc_code == "RESOURCE_EXHAUSTED"
    assert isinstance(info.value, InvalidInput) and "1024" in info.value.message
    shard.set("k", CacheItem(b"x" * 1024))
    assert len(shard) == 1


def test_ttl_fresh_then_stale_then_gone() -> None:
    clock = Clock()
    shard = Shard(capacity=1 << 20, max_value=1024, clock=clock)
    shard.set("k", item_for(b"v", ttl_s=10, keep_s=5, now=clock.now))
    shard.set("forever", item_for(b"v", ttl_s=None, keep_s=5, now=clock.now))
    item = shard.get("k")
    assert item is not None and item.fresh(clock.now)
    clock.now += 12
    stale = shard.get("k")
    assert stale is not None and not stale.fresh(clock.now) and stale.value == b"v"
    clock.now += 4
    assert shard.get("k") is None
    assert shard.get("forever") is not None
    stats = shard.stats()
    assert (stats["hits"], stats["misses"], stats["expired"]) == (2, 2, 1)


def test_sweep_removes_expired_items_without_looking_them_up() -> None:
    clock = Clock()
    shard = Shard(capacity=1 << 20, max_value=1024, clock=clock)
    for i in range(100):
        shard.set(f"k{i}", item_for(b"v", ttl_s=1 + i % 2, keep_s=0, now=clock.now))
    shard.set("k0", item_for(b"v", ttl_s=100, keep_s=0, now=clock.now))  # renewed: its old expiry is void
    clock.now += 1.5
    assert shard.sweep() == 49
    assert len(shard) == 51 and "k0" in shard and "k2" not in shard and "k1" in shard
    clock.now += 1
    assert shard.sweep() == 50 and len(shard) == 1 and shard.stats()["expired"] == 99


# -- ring ------------------------------------------------------------------------------------------


def test_owners_are_the_same_whatever_the_order_of_names() -> None:
    names = [f"node-{i}" for i in range(5)]
    for key in ("a", "b", "http:http://x/"):
        shuffled = names[:]
        random.Random(key).shuffle(shuffled)
        assert ring.owners(key, names, 2) == ring.owners(key, shuffled, 2)
        assert ring.owner(key, names) == ring.owners(key, names, 3)[0]
    assert ring.owners("k", ["only"], 3) == ["only"]
    assert ring.owner("k", []) is None


def test_a_join_or_a_leave_moves_only_its_own_share() -> None:
    keys = [f"key-{i}" for i in range(6000)]
    five = [f"node-{i}" for i in range(5)]
    six = [*five, "node-5"]
    before = {k: ring.owner(k, five) for k in keys}
    after = {k: ring.owner(k, six) for k in keys}
    moved = [k for k in keys if before[k] != after[k]]
    assert all(after[k] == "node-5" for k in moved)  # only to the newcomer
    assert abs(len(moved) / len(keys) - 1 / 6) < 0.03  # and about its fair share
    shares = {n: sum(1 for k in keys if before[k] == n) / len(keys) for n in five}
    assert all(abs(s - 0.2) < 0.03 for s in shares.values()), shares
    # node-2 leaves: only its keys move, spread over the others
    four = [n for n in five if n != "node-2"]
    left = {k: ring.owner(k, four) for k in keys}
    assert all(left[k] == before[k] for k in keys if before[k] != "node-2")
    # with replicas, a key's owner set changes only by the newcomer
    for k in keys[:500]:
        old, new = set(ring.owners(k, five, 2)), set(ring.owners(k, six, 2))
        assert new - old <= {"node-5"} and len(old - new) == len(new - old)


# -- fill leases at a key's owner ------------------------------------------------------------------


async def test_one_lease_and_the_waiters_get_what_is_stored() -> None:
    owner = ShardOwner(Shard(1 << 20, 1024), hold_s=5)
    first = await owner.lease("k", wait_s=5)
    assert first.lease and first.item is None and not first.hit
    waiters = [asyncio.create_task(owner.lease("k", wait_s=5)) for _ in range(20)]
    await asyncio.sleep(0.01)
    assert not any(w.done() for w in waiters)
    owner.store("k", b"filled", ttl_s=60, keep_s=0)
    grants = await asyncio.gather(*waiters)
    assert all(g.hit and g.item is not None and g.item.value == b"filled" for g in grants)
    assert owner.granted == 1 and owner.leases() == 0
    assert (await owner.lease("k", wait_s=5)).hit


async def test_a_released_or_lapsed_lease_sends_the_waiters_to_fill_alone() -> None:
    owner = ShardOwner(Shard(1 << 20, 1024), hold_s=0.2)
    owner.store("k", b"old", ttl_s=0.01, keep_s=60)
    await asyncio.sleep(0.02)
    grant = await owner.lease("k", wait_s=5)
    assert grant.lease and grant.item is not None and grant.item.value == b"old"  # the stale item travels
    waiter = asyncio.create_task(owner.lease("k", wait_s=5))
    await asyncio.sleep(0.01)
    owner.release("k", "not-the-token")
    assert not waiter.done()
    owner.release("k", grant.lease)
    alone = await waiter
    assert not alone.hit and not alone.lease and alone.item is not None and alone.item.value == b"old"
    # a holder that never answers: its waiters are let go when the lease lapses, and a new lease is given
    again = await owner.lease("k", wait_s=5)
    assert again.lease
    started = asyncio.get_running_loop().time()
    late = await owner.lease("k", wait_s=5)
    assert not late.hit and not late.lease and asyncio.get_running_loop().time() - started < 1
    assert (await owner.lease("k", wait_s=5)).lease and owner.lapsed == 1
