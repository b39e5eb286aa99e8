"""Membership seen from outside: three nodes agree on one master, a node without the cluster token is
refused and gets no work, and an operator hands the master role to a chosen node over gRPC."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import redis

from shoal.rpc.peers import PeerClient
from shoal.rpc.tokens import TokenKeeper

from .conftest import PREFIX, Cluster, until

pytestmark = [pytest.mark.cluster, pytest.mark.e2e]


def test_three_nodes_agree_on_one_master(cluster: Cluster) -> None:
    nodes = cluster.start(3)
    view = cluster.wait_agreed()

    assert view["master"] in {n.name for n in nodes}
    assert view["epoch"] >= 1
    assert sorted(i["name"] for i in view["nodes"]) == ["node-a", "node-b", "node-c"]
    for info in view["nodes"]:
        assert info["state"] == "alive", info
        assert info["role"] == ("master" if info["name"] == view["master"] else "worker")
        assert info["incarnation"] >= 1
    # One term only: a single election on the timeline, at the epoch every node shows.
    elected = cluster.events("elected")
    assert [(e["node"], e["epoch"]) for e in elected] == [(view["master"], view["epoch"])]


def test_a_node_with_a_wrong_token_is_rejected_and_gets_no_task(cluster: Cluster, tmp_path: Path) -> None:
    a, b, _ = cluster.start(3)
    cluster.wait_agreed()
    own_dir = tmp_path / "stranger"
    own_dir.mkdir()
    stranger = cluster.add("node-x", data_dir=own_dir)
    assert stranger.token != a.token

    def rejected() -> dict[str, Any] | None:
        info = cluster.node_info(a, "node-x")
        return info if info and info["state"] == "rejected" else None

    info = until(rejected, 15, "node-x to be shown rejected")
    assert "verification failed" in info["reason"], info
    assert "credentials" in info["reason"] or "token" in info["reason"], info
    assert info["role"] == "worker"
    assert [e for e in cluster.events("rejected", "node-x") if e["rule"] == info["reason"]]

    ids = cluster.submit_across([a, b], 30, delay_s=0.2)
    tasks = cluster.wait_all_ended(a, ids, timeout=30)
    assert [t["state"] for t in tasks] == ["SUCCEED"] * 30
    assert not [t for t in tasks if t["node"] == "node-x"]
    assert not [i for i in ids if cluster.result(a, i)["node"] == "node-x"]
    # Still rejected, still not a candidate for anything.
    assert (cluster.node_info(a, "node-x") or {}).get("state") == "rejected"
    assert cluster.view(a)["master"] != "node-x"


def test_request_election_hands_the_master_role_to_the_chosen_node(cluster: Cluster) -> None:
    cluster.start(3)
    before = cluster.wait_agreed()
    master = cluster.nodes[before["master"]]
    # The last in the standing order, so that only the request can make it master next.
    chosen = max((n for n in cluster.nodes.values() if n.name != master.name), key=lambda n: n.name)

    async def ask() -> bool:
        client = PeerClient(TokenKeeper(master.token), "operator")
        try:
            return await client.request_election(master.name, master.grpc_addr, chosen.name, timeout_s=5)
        finally:
            await client.close()

    assert asyncio.run(ask()) is True

    def chosen_is_master() -> dict[str, Any] | None:
        view = cluster.agreed()
        return view if view and view["master"] == chosen.name else None

    after = until(chosen_is_master, 10, f"{chosen.name} to be master")
    assert after["epoch"] > before["epoch"]
    assert cluster.events("elected", chosen.name)[-1]["epoch"] == after["epoch"]


def test_request_election_signed_with_another_token_changes_nothing(cluster: Cluster) -> None:
    cluster.start(2)
    before = cluster.wait_agreed()
    master = cluster.nodes[before["master"]]
    other = next(n for n in cluster.nodes.values() if n.name != master.name)

    async def ask() -> bool:
        client = PeerClient(TokenKeeper("not-the-cluster-token-" + "x" * 20), "intruder")
        try:
            return await client.request_election(master.name, master.grpc_addr, other.name, timeout_s=5)
        finally:
            await client.close()

    assert asyncio.run(ask()) is False
    assert cluster.agreed() is not None
    assert (cluster.view(other)["master"], cluster.view(other)["epoch"]) == (master.name, before["epoch"])


def test_no_node_hears_every_beat_unless_its_live_nodes_view_is_open(cluster: Cluster, redis_admin_url: str) -> None:
    """Every node beats on ``public``, but a node subscribes to it only while a live view of the nodes is
    open on it (an SSE stream of ``/api/v1/events``): otherwise each beat would go to every node, and
    pub/sub traffic would grow with the square of the cluster's size. Election requests have their own
    channel, which every node hears."""
    a, _, _ = cluster.start(3)
    cluster.wait_agreed()
    public, elections = f"{PREFIX}public", f"{PREFIX}elections"

    admin = redis.Redis.from_url(redis_admin_url, decode_responses=True)

    def subscribers() -> dict[str, int]:
        return {str(k): int(v) for k, v in admin.pubsub_numsub(public, elections)}

    assert subscribers() == {public: 0, elections: 3}
    with cluster.http(a).stream("GET", "/api/v1/events") as response:
        assert response.status_code == 200
        until(lambda: subscribers()[public] == 1 or None, 10, "node-a to subscribe to the beats")
        lines = response.iter_lines()
        beat = until(lambda: next(line for line in lines if line.startswith("event: node")), 10, "a node event")
        assert beat
    until(lambda: subscribers() == {public: 0, elections: 3} or None, 10, "node-a to unsubscribe")
    admin.close()
