"""Errors that name the right failure: ``NoLiveNode`` takes what no live node did as its detail, and a cache
write that reaches none of its key's nodes is ``NoLiveNode`` (the cluster's nodes failed it), not
``StoreUnavailable`` (which tells users that Redis is down).

The cache test runs a real ``ClusterCache`` whose other members are gRPC addresses nothing listens on, behind
the real REST app, and asks it as users do: over HTTP and through the Python client.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry

from shoal.cache.cluster import ClusterCache
from shoal.cache.membership import Membership
from shoal.cache.shard import Shard
from shoal.client import AsyncClient
from shoal.errors import NoLiveNode, StoreUnavailable
from shoal.rpc.cache_peers import CachePeers
from shoal.rpc.peers import PeerClient
from shoal.rpc.tokens import TokenKeeper
from shoal.store.embedded import free_port
from shoal.web.app import create_app
from shoal.web.errors import shoal_error_response

TOKEN = "cleanup-errors-token-0123456789"


class NoTasks:
    """The task and cluster APIs: the cache routes never reach them."""

    def __getattr__(self, name: str) -> Any:
        pytest.fail(f"the cache routes reached the task or cluster API ({name})")


def test_no_live_node_says_what_no_node_did_and_stays_a_503() -> None:
    alone = NoLiveNode()
    assert alone.message == "no live node in the cluster: no node has sent a heartbeat lately; try again shortly"
    refused = NoLiveNode("runs tasks: 2 node(s) beat, none of them runs tasks")
    assert refused.message == "no live node runs tasks: 2 node(s) beat, none of them runs tasks; try again shortly"
    assert str(refused) == refused.message and refused.detail.startswith("runs tasks")
    answer = shoal_error_response(refused)
    assert answer.status_code == 503 and refused.grpc_code == "UNAVAILABLE"
    assert answer.body == (b'{"error":"no_live_node","message":"' + refused.message.encode() + b'"}')


@pytest.fixture
async def cut_off() -> AsyncIterator[ClusterCache]:
    """Member ``a`` of a three-node cache whose other two members do not answer."""
    peers = PeerClient(TokenKeeper(TOKEN), "a")
    cache = ClusterCache(
        name="a",
        shard=Shard(1 << 20, 64 * 1024),
        membership=Membership("a", "127.0.0.1:1", alive_within=5),
        peers=CachePeers(peers, timeout_s=1.0),
        replicas=2,
    )
    cache.membership.set({"b": f"127.0.0.1:{free_port()}", "c": f"127.0.0.1:{free_port()}"})
    yield cache
    await peers.close()
    await cache.close()


@pytest.fixture
async def app(cut_off: ClusterCache) -> httpx.ASGITransport:
    app = create_app(tasks=NoTasks(), cluster=NoTasks(), token=TOKEN, registry=CollectorRegistry(), cache=cut_off)  # type: ignore[arg-type]
    return httpx.ASGITransport(app=app)


async def test_a_cache_write_no_node_answers_is_no_live_node_not_a_store_outage(app: httpx.ASGITransport) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with httpx.AsyncClient(transport=app, base_url="http://node.test", headers=headers) as raw:
        put = await raw.put("/api/v1/cache/greeting", content=b"hello")
        dropped = await raw.delete("/api/v1/cache/greeting")
    assert put.status_code == 503, put.text
    assert put.json() == {
        "error": "no_live_node",
        "message": "no live node could store cache key 'greeting': none of the nodes that hold it answered; "
        "try again shortly",
    }
    assert dropped.status_code == 503 and dropped.json()["error"] == "no_live_node"
    assert "could drop cache key 'greeting'" in dropped.json()["message"]
    async with AsyncClient("http://node.test", TOKEN, transport=app) as client:
        with pytest.raises(NoLiveNode) as caught:
            await client.cache_set("greeting", b"hello")
    assert not isinstance(caught.value, StoreUnavailable) and "cache key 'greeting'" in caught.value.message
