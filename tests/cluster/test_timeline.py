"""The membership timeline keeps the order things happened in, with the store's clock: an election comes
before the admissions its master made and a master found gone before the election that follows, in the
API (newest first), in ``shoal cluster timeline`` (oldest first, to the millisecond) and in ``at``."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest
from redis.asyncio import Redis

from shoal.keys import Keys
from shoal.store.nodes import NodeRegistry

from .conftest import Cluster, until

pytestmark = [pytest.mark.cluster, pytest.mark.e2e]

#: A membership verdict the master writes under its epoch.
VERDICTS = ("alive", "suspect", "dead", "rejected")


def order(event: dict[str, Any]) -> tuple[int, int]:
    """Where an event stands: its stream entry ID, the store's clock in ms then a counter."""
    ms, _, n = event["id"].partition("-")
    return int(ms), int(n)


def check_true_order(newest_first: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The events oldest first, after checking that the list, the IDs and ``at`` all agree, and that each
    election comes before every verdict its master made."""
    assert [order(e) for e in newest_first] == sorted((order(e) for e in newest_first), reverse=True)
    assert len({order(e) for e in newest_first}) == len(newest_first)
    events = newest_first[::-1]
    assert [e["at"] for e in events] == sorted(e["at"] for e in events), events
    for i, event in enumerate(events):
        if event["kind"] in VERDICTS:
            elected = [j for j, e in enumerate(events) if e["kind"] == "elected" and e["epoch"] == event["epoch"]]
            assert elected and elected[0] < i, f"verdict before its master's election: {events}"
    return events


def shoal_cli(*args: str, token: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHOAL_")} | {"NO_COLOR": "1", "COLUMNS": "200"}
    env["SHOAL_TOKEN"] = token
    done = subprocess.run([sys.executable, "-m", "shoal", *args], capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 0 and not done.stderr, done.stderr
    return done.stdout


def test_each_election_comes_before_the_admissions_of_its_master(cluster: Cluster) -> None:
    nodes = cluster.start(3)
    view = cluster.wait_agreed()
    node = nodes[0]
    headers = {"Authorization": f"Bearer {node.token}"}

    def all_admitted() -> list[dict[str, Any]] | None:
        answer = httpx.get(f"{node.http_url}/api/v1/cluster/timeline", headers=headers, trust_env=False)
        events: list[dict[str, Any]] = answer.json()["events"]
        return events if {e["node"] for e in events if e["kind"] == "alive"} == {n.name for n in nodes} else None

    events = check_true_order(until(all_admitted, 15, "every node admitted on the timeline"))
    assert events[0]["kind"] == "elected" and events[0]["node"] == view["master"], events
    # the master admits itself, then the nodes that proved they hold the token
    assert [e["kind"] for e in events[:4]] == ["elected", "alive", "alive", "alive"], events
    assert events[1]["node"] == view["master"] and events[1]["rule"] == "the master itself"

    api = ("--api", node.http_url)
    assert orjson.loads(shoal_cli("cluster", "timeline", "--json", *api, token=node.token)) == events
    lines = shoal_cli("cluster", "timeline", *api, token=node.token).splitlines()
    assert len(lines) == len(events)
    for line, event in zip(lines, events, strict=True):
        when = time.strftime("%H:%M:%S", time.localtime(event["at"])) + f".{int(event['at'] * 1000) % 1000:03d}"
        assert re.match(rf"{re.escape(when)}  {re.escape(event['kind'])} +{re.escape(event['node'])} +epoch", line)


@pytest.fixture
async def registry(redis_url: str) -> AsyncIterator[NodeRegistry]:
    client = Redis.from_url(redis_url)
    yield NodeRegistry(client, Keys("shoal"))
    await client.aclose()


async def test_a_master_found_gone_is_noted_before_the_election_that_follows(registry: NodeRegistry) -> None:
    first = await registry.take_lease("node-a", 30)
    assert await registry.break_lease("node-a", "no beat for 2.0s and its gRPC port refuses connections")
    second = await registry.take_lease("node-b", 30)
    await registry.note("re-placed", "node-a", "3 task(s) back to WAITING", second.epoch, {"count": 3})
    assert not await registry.break_lease("node-a", "not the holder any more")

    events = check_true_order(await registry.timeline())
    assert [(e["kind"], e["node"], e["epoch"]) for e in events] == [
        ("elected", "node-a", first.epoch),
        ("master lost", "node-a", 0),
        ("elected", "node-b", second.epoch),
        ("re-placed", "node-a", second.epoch),
    ]
    assert events[1]["rule"] == "no beat for 2.0s and its gRPC port refuses connections"
    assert events[3]["extra"] == {"count": 3}
