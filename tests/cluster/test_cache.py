"""The cluster cache on real node processes: one three-node cluster shared by the module's tests.

The nodes beat every 0.25 s and keep a small shard (1 MiB, values up to 256 KiB), so a few hundred
KiB are enough to see eviction. The last test kills a node, so it stays last.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import grpc
import httpx
import pytest

from shoal.cache import ring
from shoal.cache.keys import http_key
from shoal.rpc.convert import cache_grpc, cache_pb
from shoal.testing import TestNode, wait_for

from .conftest import Cluster

ARGS = ["--heartbeat-interval", "0.25", "--cache-bytes", str(1 << 20), "--cache-max-value", str(256 << 10),
        "--slots", "12"]  # fmt: skip
NAMES = ["node-a", "node-b", "node-c"]


@pytest.fixture(scope="module")
def cache_cluster(module_redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    cluster = Cluster(module_redis_url, tmp_path_factory.mktemp("cache-cluster"))
    try:
        cluster.start(3, args=ARGS)
        cluster.wait_agreed()
        # every node's ring holds all three (Cache.Stats lists the members a node sees)
        wait_for(lambda: all(members_seen(n) == set(NAMES) for n in cluster.nodes.values()), 10, "full rings")
        yield cluster
    finally:
        cluster.close()


def rest(cluster: Cluster, name: str) -> httpx.Client:
    return cluster.http(cluster.nodes[name])


def grpc_get(node: TestNode, key: str) -> bytes | None:
    with grpc.insecure_channel(node.grpc_addr) as channel:
        try:
            entry = cache_grpc.CacheStub(channel).Get(
                cache_pb.CacheKey(key=key), metadata=(("authorization", f"Bearer {node.token}"),), timeout=5
            )
        except grpc.RpcError as err:
            if err.code() == grpc.StatusCode.NOT_FOUND:
                return None
            raise
    return bytes(entry.value)


def members_seen(node: TestNode) -> set[str]:
    with grpc.insecure_channel(node.grpc_addr) as channel:
        stats = cache_grpc.CacheStub(channel).Stats(
            cache_pb.CacheStatsRequest(), metadata=(("authorization", f"Bearer {node.token}"),), timeout=5
        )
    return set(stats.nodes)


def shards(cluster: Cluster, via: str = "node-a") -> dict[str, dict[str, Any]]:
    return {n["name"]: n.get("cache") or {} for n in cluster.view(cluster.nodes[via])["nodes"]}


def test_a_key_set_through_one_node_is_read_through_every_other(cache_cluster: Cluster) -> None:
    c = cache_cluster
    keys = {f"shared-{i}": f"value {i}".encode() for i in range(12)}
    for key, value in keys.items():
        assert rest(c, "node-a").put(f"/api/v1/cache/{key}", content=value, params={"ttl": 300}).status_code == 204
    for name in NAMES:
        for key, value in keys.items():
            assert grpc_get(c.nodes[name], key) == value, (key, name)
            assert rest(c, name).get(f"/api/v1/cache/{key}").content == value
    # each key is held by two nodes: the published shard stats add up to that
    wait_for(lambda: sum(s.get("items", 0) for s in shards(c).values()) == 2 * len(keys), 5, "stats in /cluster")
    stats = shards(c)
    assert set(stats) == set(NAMES) and all(s["capacity"] == 1 << 20 for s in stats.values())
    assert rest(c, "node-b").delete("/api/v1/cache/shared-0").status_code in (200, 204)
    assert grpc_get(c.nodes["node-c"], "shared-0") is None and grpc_get(c.nodes["node-a"], "shared-0") is None


def test_fetches_of_one_url_land_on_its_owner(cache_cluster: Cluster, origin: Any) -> None:
    c = cache_cluster
    url = f"{origin.url}/hello?placement"
    owner = ring.owner(http_key(url), NAMES)
    body = {"name": "fetch", "type": "fetch", "target": url}
    ids = [c.http(c.nodes[NAMES[i % 3]]).post("/api/v1/tasks", json=body).json()["id"] for i in range(10)]
    tasks = c.wait_all_ended(c.nodes["node-a"], ids, timeout=30)
    assert [t["node"] for t in tasks] == [owner] * 10
    assert all(t["state"] == "SUCCEED" for t in tasks)


def test_lru_eviction_at_the_byte_bound_and_ttl_expiry(cache_cluster: Cluster) -> None:
    c = cache_cluster
    # 15 values of 100 KiB, all owned by node-a and node-b: 1.5 MiB for a 1 MiB shard on each
    keys = [k for k in (f"lru-{i}" for i in range(400)) if set(ring.owners(k, NAMES, 2)) == {"node-a", "node-b"}][:15]
    value = b"v" * (100 << 10)
    for key in keys:
        assert rest(c, "node-c").put(f"/api/v1/cache/{key}", content=value).status_code == 204
    assert [rest(c, "node-c").get(f"/api/v1/cache/{k}").status_code for k in keys[:4]] == [404] * 4
    assert [rest(c, "node-c").get(f"/api/v1/cache/{k}").status_code for k in keys[-5:]] == [200] * 5

    def evicted() -> bool:
        stats = shards(c)
        return all(stats[n].get("evictions", 0) >= 5 and stats[n]["bytes"] <= 1 << 20 for n in ("node-a", "node-b"))

    wait_for(evicted, 5, "evictions on node-a and node-b in /cluster")
    too_big = rest(c, "node-b").put("/api/v1/cache/too-big", content=b"x" * ((256 << 10) + 1))
    assert too_big.status_code == 413, too_big.text

    assert rest(c, "node-a").put("/api/v1/cache/brief", content=b"short-lived", params={"ttl": 1}).status_code == 204
    assert rest(c, "node-b").get("/api/v1/cache/brief").content == b"short-lived"
    started = time.monotonic()
    wait_for(lambda: rest(c, "node-c").get("/api/v1/cache/brief").status_code == 404, 5, "the key to expire")
    assert time.monotonic() - started > 0.5


def test_killing_a_keys_owner_loses_no_key(cache_cluster: Cluster) -> None:
    c = cache_cluster
    master = c.wait_agreed()["master"]
    victim = next(n for n in ("node-c", "node-b") if n != master)
    survivors = [n for n in NAMES if n != victim]
    keys = {f"durable-{i}": f"kept {i}".encode() for i in range(20)}
    for key, value in keys.items():
        assert rest(c, survivors[0]).put(f"/api/v1/cache/{key}", content=value).status_code == 204
    owned = [k for k in keys if ring.owner(k, NAMES) == victim]
    assert len(owned) >= 3
    c.nodes[victim].kill()
    # at once, before the cluster has noticed: reads fall over to the replica
    for name in survivors:
        for key, value in keys.items():
            assert grpc_get(c.nodes[name], key) == value, (key, name)
    # and after the cluster has dropped it from the membership
    wait_for(lambda: (c.node_info(c.nodes[survivors[0]], victim) or {})["state"] != "alive", 10, f"{victim} suspected")
    for name in survivors:
        for key, value in keys.items():
            assert rest(c, name).get(f"/api/v1/cache/{key}").content == value, (key, name)
