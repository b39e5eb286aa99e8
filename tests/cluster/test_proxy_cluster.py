"""The HTTP cache across a real three-node cluster: concurrent misses for one URL through the proxies of
different nodes, and many fetch tasks of a few URLs, each reach the origin once per URL."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest

from shoal.testing import wait_for

from .conftest import Cluster

pytestmark = pytest.mark.cluster
#: No per-host fetch limit: every fetch here goes to the test's one origin, and at the polite default (4 starts
#: a second) the hundred of them would take 25 s; politeness has tests of its own (tests/test_placement.py).
ARGS = ["--heartbeat-interval", "0.25", "--fetch-host-concurrency", "0", "--fetch-host-rate-per-s", "0"]


@pytest.fixture(scope="module")
def proxies(module_redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    cluster = Cluster(module_redis_url, tmp_path_factory.mktemp("proxy-cluster"))
    try:
        nodes = cluster.start(3, args=ARGS)
        cluster.wait_agreed()

        def every_node_sees_three_cache_members() -> bool:
            return all(len(cluster.http(n).get("/api/v1/cache").json()["nodes"]) == 3 for n in nodes)

        wait_for(every_node_sees_three_cache_members, 10, "the cache membership on every node")
        yield cluster
    finally:
        cluster.close()


def page(origin: Any, **params: str) -> str:
    return f"{origin.url}/cacheable?{urlencode({'k': uuid.uuid4().hex[:8], **params})}"


def hits(origin: Any, url: str) -> int:
    return int(origin.hits_of(url.removeprefix(origin.url)))


def test_concurrent_misses_through_three_proxies_reach_the_origin_once(proxies: Cluster, origin: Any) -> None:
    url = page(origin, cc="max-age=60", delay="0.5")

    async def run() -> list[httpx.Response]:
        clients = [
            httpx.AsyncClient(
                proxy=f"http://u:{n.token}@127.0.0.1:{n.proxy_port}",
                trust_env=False,
                timeout=20,
                limits=httpx.Limits(max_connections=50),
            )  # fmt: skip
            for n in proxies.nodes.values()
        ]
        try:
            return await asyncio.gather(*(clients[i % 3].get(url) for i in range(50)))
        finally:
            await asyncio.gather(*(c.aclose() for c in clients))

    responses = asyncio.run(run())
    assert [r.status_code for r in responses] == [200] * 50
    assert len({r.text for r in responses}) == 1 and responses[0].text.startswith("v1 ")
    assert Counter(r.headers["x-cache"] for r in responses) == {"MISS": 1, "HIT": 49}
    assert {r.headers["via"] for r in responses} == {f"1.1 shoal-{name}" for name in proxies.nodes}
    assert hits(origin, url) == 1


def test_a_hundred_fetch_tasks_of_ten_urls_reach_the_origin_ten_times(proxies: Cluster, origin: Any) -> None:
    urls = [page(origin, cc="max-age=60", delay="0.2") for _ in range(10)]
    nodes = list(proxies.nodes.values())
    ids = []
    for i in range(100):
        body = {"name": "page", "type": "fetch", "target": urls[i % 10]}
        response = proxies.http(nodes[i % 3]).post("/api/v1/tasks", json=body)
        assert response.status_code == 201, response.text
        ids.append(response.json()["id"])
    tasks = proxies.wait_all_ended(nodes[0], ids, timeout=60)
    assert [t["state"] for t in tasks] == ["SUCCEED"] * 100, [t["error"] for t in tasks if t["error"]][:3]
    assert [hits(origin, u) for u in urls] == [1] * 10
    results = [proxies.result(nodes[0], i) for i in ids]
    assert Counter(r["meta"]["cache"] for r in results) == {"MISS": 10, "HIT": 90}
    assert all(r["code"] == results[i % 10]["code"] for i, r in enumerate(results))
