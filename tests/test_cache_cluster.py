"""The cluster cache across real in-process gRPC servers: three ``ClusterCache`` members on loopback.

Each member is a real ``start_rpc_server`` serving its cache (Cache, CacheShards), reaching the others
through a real ``PeerClient``. The membership is set by hand (the registry's part is tested with real
node processes in tests/cluster/test_cache.py), so these tests can look at one-fill-per-miss closely.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc
import grpc.aio
import pytest

from shoal.cache import ring
from shoal.cache.cluster import ClusterCache
from shoal.cache.membership import Membership
from shoal.cache.shard import Shard
from shoal.errors import TaskNotFound, ValueTooLarge
from shoal.models import CacheItem, Fill
from shoal.rpc.cache_peers import CachePeers
from shoal.rpc.convert import cache_grpc, cache_pb
from shoal.rpc.peers import PeerClient
from shoal.rpc.server import RpcServer, start_rpc_server
from shoal.rpc.tokens import TokenKeeper

TOKEN = "cache-token-0123456789abcdef"
NAMES = ("a", "b", "c")


class NoTasks:
    """The Tasks service's TaskAPI: no task (these tests never reach it)."""

    async def get(self, task_id: str) -> Any:
        raise TaskNotFound(task_id)


@dataclass
class Member:
    cache: ClusterCache
    rpc: RpcServer
    peers: PeerClient


@pytest.fixture
async def members() -> AsyncIterator[dict[str, Member]]:
    started: dict[str, Member] = {}
    keeper = TokenKeeper(TOKEN)
    for name in NAMES:
        peers = PeerClient(keeper, name)
        cache = ClusterCache(
            name=name,
            shard=Shard(1 << 20, 64 * 1024),
            membership=Membership(name, "", alive_within=5, down_s=5),
            peers=CachePeers(peers, timeout_s=1.0),
            replicas=2,
            hold_s=3.0,
        )
        rpc = await start_rpc_server(
            tasks=NoTasks(),  # type: ignore[arg-type]
            token=keeper,
            bind="127.0.0.1:0",
            cache=cache,
            cache_owner=cache.owner,
            cache_max_value=64 * 1024,
            node_name=name,
        )
        cache.membership.my_addr = rpc.address
        started[name] = Member(cache, rpc, peers)
    addrs = {name: m.rpc.address for name, m in started.items()}
    for m in started.values():
        m.cache.membership.set(addrs)
    yield started
    for m in started.values():
        await m.rpc.stop(None)
        await m.peers.close()
        await m.cache.close()


def owners(key: str) -> list[str]:
    return ring.owners(key, NAMES, 2)


async def test_a_key_set_through_one_member_is_read_through_every_other(members: dict[str, Member]) -> None:
    await members["a"].cache.set("greeting", b"hello", ttl_s=60)
    for name in NAMES:
        item = await members[name].cache.get("greeting")
        assert item is not None and item.value == b"hello" and item.fresh(item.stale_at - 1)  # type: ignore[operator]
    held = [n for n in NAMES if members[n].cache.shard.peek("greeting") is not None]
    assert held == sorted(owners("greeting"))  # on its two owners, not on the third member
    assert await members["c"].cache.delete("greeting")
    assert [await members[n].cache.get("greeting") for n in NAMES] == [None, None, None]
    assert not await members["b"].cache.delete("greeting")
    with pytest.raises(ValueTooLarge):
        await members["a"].cache.set("big", b"x" * (64 * 1024 + 1))


async def test_concurrent_misses_anywhere_run_one_fill(members: dict[str, Member]) -> None:
    fills = 0

    async def fill(stale: CacheItem | None) -> Fill:
        nonlocal fills
        fills += 1
        await asyncio.sleep(0.2)
        return Fill(b"filled once", ttl_s=60)

    calls = [members[NAMES[i % 3]].cache.get_or_fill("page", fill) for i in range(60)]
    results = await asyncio.gather(*calls)
    assert fills == 1
    assert all(value == b"filled once" for value, _ in results)
    assert sum(1 for _, hit in results if not hit) == 1  # the filler's own call is the one miss
    assert sum(m.cache.stats()["fills"] for m in members.values()) == 1
    assert all(m.cache.owner.leases() == 0 for m in members.values())
    # now a hit everywhere, with no fill
    assert await members["c"].cache.get_or_fill("page", fill) == (b"filled once", True)
    assert fills == 1


async def test_a_fill_that_keeps_nothing_or_fails_lets_every_waiter_fill_alone(members: dict[str, Member]) -> None:
    fills = 0

    async def private(stale: CacheItem | None) -> Fill:
        nonlocal fills
        fills += 1
        await asyncio.sleep(0.1)
        return Fill(b"for you only", store=False)

    results = await asyncio.wait_for(
        asyncio.gather(*(members[NAMES[i % 3]].cache.get_or_fill("private", private) for i in range(9))), 5
    )
    assert fills == 9 and all(r == (b"for you only", False) for r in results)
    assert [await members[n].cache.get("private") for n in NAMES] == [None, None, None]

    attempts = 0

    async def flaky(stale: CacheItem | None) -> Fill:
        nonlocal attempts
        attempts += 1
        await asyncio.sleep(0.1)
        if attempts == 1:
            raise RuntimeError("origin down")
        return Fill(b"second try", ttl_s=60)

    results2 = await asyncio.wait_for(
        asyncio.gather(
            *(members[NAMES[i % 3]].cache.get_or_fill("flaky", flaky) for i in range(6)), return_exceptions=True
        ),
        5,
    )
    errors = [r for r in results2 if isinstance(r, BaseException)]
    assert len(errors) == 1 and str(errors[0]) == "origin down"
    assert all(r[0] == b"second try" for r in results2 if not isinstance(r, BaseException))
    assert all(m.cache.owner.leases() == 0 for m in members.values())


async def test_the_stale_item_reaches_the_filler_for_revalidation(members: dict[str, Member]) -> None:
    await members["a"].cache.set("doc", b"v1", ttl_s=0.05, keep_s=60)
    await asyncio.sleep(0.1)
    seen: list[CacheItem | None] = []

    async def revalidate(stale: CacheItem | None) -> Fill:
        seen.append(stale)
        return Fill(stale.value if stale else b"none", ttl_s=60)

    value, hit = await members["b"].cache.get_or_fill("doc", revalidate)
    assert (value, hit) == (b"v1", False)
    assert seen[0] is not None and seen[0].value == b"v1" and not seen[0].fresh(time.time())
    item = await members["c"].cache.get("doc")
    assert item is not None and item.value == b"v1" and item.stale_at is not None


async def test_reads_writes_and_fills_go_on_when_the_owner_is_gone(members: dict[str, Member]) -> None:
    keys = [f"k{i}" for i in range(30)]
    for key in keys:
        await members["a"].cache.set(key, key.encode())
    dead = "b"
    await members[dead].rpc.stop(None)
    survivors = [n for n in NAMES if n != dead]
    for key in keys:
        for name in survivors:
            item = await members[name].cache.get(key)
            assert item is not None and item.value == key.encode(), (key, name)
    owned = next(k for k in keys if owners(k)[0] == dead)
    await members["a"].cache.set(owned, b"new")  # lands on the next two members instead
    assert sum(members[n].cache.shard.peek(owned) == CacheItem(b"new") for n in survivors) == 2
    fills = 0

    async def fill(stale: CacheItem | None) -> Fill:
        nonlocal fills
        fills += 1
        await asyncio.sleep(0.1)
        return Fill(b"filled", ttl_s=60)

    fresh_key = next(f"x{i}" for i in range(100) if owners(f"x{i}")[0] == dead)
    results = await asyncio.gather(*(members[survivors[i % 2]].cache.get_or_fill(fresh_key, fill) for i in range(10)))
    assert fills == 1 and all(v == b"filled" for v, _ in results)


async def test_grpc_cache_service_for_users(members: dict[str, Member]) -> None:
    md = (("authorization", f"Bearer {TOKEN}"),)
    async with grpc.aio.insecure_channel(members["a"].rpc.address) as channel:
        stub = cache_grpc.CacheStub(channel)
        await stub.Set(cache_pb.CacheWrite(key="u", value=b"user value", ttl_s=30), metadata=md)
        entry = await stub.Get(cache_pb.CacheKey(key="u"), metadata=md)
        assert entry.found and entry.fresh and entry.value == b"user value" and 29 < entry.fresh_s <= 30
        stats = await stub.Stats(cache_pb.CacheStatsRequest(), metadata=md)
        assert stats.node == "a" and stats.nodes["a"].capacity == 1 << 20
        assert (await stub.Delete(cache_pb.CacheKey(key="u"), metadata=md)).found
        cases: list[tuple[Any, grpc.StatusCode, str]] = [
            (stub.Get(cache_pb.CacheKey(key="u"), metadata=md), grpc.StatusCode.NOT_FOUND, "no cache entry"),
            (stub.Get(cache_pb.CacheKey(key="a\nb"), metadata=md), grpc.StatusCode.INVALID_ARGUMENT, "control"),
            (
                stub.Set(cache_pb.CacheWrite(key="t", value=b"x", ttl_s=-1), metadata=md),
                grpc.StatusCode.INVALID_ARGUMENT,
                "ttl",
            ),
            (
                stub.Set(cache_pb.CacheWrite(key="t", value=b"x" * (64 * 1024 + 1)), metadata=md),
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                "over the limit of 65536 bytes",
            ),
            (stub.Get(cache_pb.CacheKey(key="u")), grpc.StatusCode.UNAUTHENTICATED, "missing credentials"),
            (
                cache_grpc.CacheShardsStub(channel).Load(cache_pb.CacheKey(key="u"), metadata=md),
                grpc.StatusCode.UNAUTHENTICATED,
                "node credentials only",
            ),
        ]
        for call, code, text in cases:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await call
            assert info.value.code() == code and text in (info.value.details() or ""), info.value


async def test_a_new_owner_takes_its_keys_from_a_replica_instead_of_filling(members: dict[str, Member]) -> None:
    two = {n: members[n].rpc.address for n in ("a", "b")}
    key = next(k for k in (f"moved-{i}" for i in range(200)) if owners(k)[0] == "c")
    for name in ("a", "b"):
        members[name].cache.membership.set(two)  # c has not joined yet: a and b hold the key
    await members["a"].cache.set(key, b"from before", ttl_s=60)
    fills = 0

    async def fill(stale: CacheItem | None) -> Fill:
        nonlocal fills
        fills += 1
        return Fill(b"refilled", ttl_s=60)

    for name in ("a", "b"):
        members[name].cache.membership.set({**two, "c": members["c"].rpc.address})  # c joins and owns the key
    assert await members["a"].cache.get_or_fill(key, fill) == (b"from before", True)
    assert fills == 0 and members["c"].cache.shard.peek(key) is not None  # now on its new owner too
