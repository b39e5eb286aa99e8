"""What the task center reads beyond the seed's API, against a real node: search, counts, throughput and
node events on the event stream; and the search's scan bound, on the store itself."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest
from redis.asyncio import Redis

from shoal.keys import Keys
from shoal.models import TaskSpec, TaskState
from shoal.store import search
from shoal.store.tasks import TaskStore
from shoal.testing import wait_for
from shoal.throughput import Throughput

pytestmark = pytest.mark.e2e


@pytest.fixture
def api(shoal_node: Any) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=shoal_node.http_url, headers=shoal_node.headers(), timeout=30) as client:
        yield client


def make(api: httpx.Client, name: str, target: str) -> str:
    response = api.post("/api/v1/tasks", json={"name": name, "type": "echo", "target": target})
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def test_search_matches_name_or_target_in_any_case_and_pages(api: httpx.Client) -> None:
    ids = [make(api, f"Nightly report {i}", f"job-{i}") for i in range(5)]
    make(api, "other", "the REPORT archive")
    make(api, "unrelated", "nothing here")

    found = api.get("/api/v1/tasks", params={"q": "report"}).json()
    assert found["total"] == 6 and found["complete"] is True
    assert [t["name"] for t in found["tasks"]][:2] == ["other", "Nightly report 4"]

    first = api.get("/api/v1/tasks", params={"q": "NIGHTLY", "limit": 2}).json()
    assert [t["id"] for t in first["tasks"]] == [ids[4], ids[3]] and first["total"] == 5
    second = api.get("/api/v1/tasks", params={"q": "NIGHTLY", "limit": 2, "cursor": first["next_cursor"]}).json()
    assert [t["id"] for t in second["tasks"]] == [ids[2], ids[1]] and second["total"] == 5
    third = api.get("/api/v1/tasks", params={"q": "NIGHTLY", "limit": 2, "cursor": second["next_cursor"]}).json()
    assert [t["id"] for t in third["tasks"]] == [ids[0]] and third["next_cursor"] is None

    by_target = api.get("/api/v1/tasks", params={"q": "job-3"}).json()
    assert [t["id"] for t in by_target["tasks"]] == [ids[3]]
    none = api.get("/api/v1/tasks", params={"q": "absent", "state": "KILLED"}).json()
    assert none == {"tasks": [], "total": 0, "next_cursor": None, "complete": True}
    plain = api.get("/api/v1/tasks").json()
    assert "complete" not in plain and plain["total"] == 7

    too_long = api.get("/api/v1/tasks", params={"q": "x" * 201})
    assert too_long.status_code == 400 and "q is 201 characters" in too_long.json()["message"]


def test_a_search_by_name_prefix_reads_the_name_index_and_counts_every_match(api: httpx.Client) -> None:
    ids = [make(api, f"Nightly report {i}", f"job-{i}") for i in range(5)]
    make(api, "nightly-backup", "the report archive")
    make(api, "a nightly report", "elsewhere")
    found = api.get("/api/v1/tasks", params={"name": "NIGHTLY R"}).json()
    assert found["total"] == 5 and found["complete"] is True, "the start of the name only, not its middle"
    assert [t["id"] for t in found["tasks"]] == ids[::-1], "newest first"
    assert api.get("/api/v1/tasks", params={"name": "nightly"}).json()["total"] == 6
    assert api.get("/api/v1/tasks", params={"name": "job-"}).json()["total"] == 0, "not the target"

    first = api.get("/api/v1/tasks", params={"name": "nightly report", "limit": 3}).json()
    second = api.get("/api/v1/tasks", params={"name": "nightly report", "limit": 3, "cursor": first["next_cursor"]})
    assert [t["id"] for t in first["tasks"] + second.json()["tasks"]] == ids[::-1]
    assert second.json()["next_cursor"] is None and second.json()["total"] == 5

    assert api.delete(f"/api/v1/tasks/{ids[0]}").status_code == 204
    wait_for(lambda: api.get("/api/v1/tasks", params={"name": "nightly report", "state": "SUCCEED"}).json()["total"]
             == 4, 20, "the four left to succeed")  # fmt: skip
    assert api.get("/api/v1/tasks", params={"name": "nightly report", "state": "KILLED"}).json()["total"] == 0

    both = api.get("/api/v1/tasks", params={"name": "nightly", "q": "report"}).json()
    assert both["total"] == 5 and both["complete"] is True, "the scan, matching both: 4 names, 1 target"
    assert api.get("/api/v1/tasks", params={"name": "nightly", "q": "archive"}).json()["total"] == 1
    bad = api.get("/api/v1/tasks", params={"name": "x" * 201})
    assert bad.status_code == 400 and "name is 201 characters" in bad.json()["message"]


def test_counts_and_throughput(api: httpx.Client) -> None:
    ids = [make(api, f"count {i}", "t") for i in range(3)]
    wait_for(lambda: api.get("/api/v1/tasks/counts").json()["SUCCEED"] == 3, 20, "3 tasks to succeed")
    counts = api.get("/api/v1/tasks/counts").json()
    assert counts == {"WAITING": 0, "INQUEUE": 0, "RUNNING": 0, "RUNTIME_ERROR": 0, "SUCCEED": 3, "KILLED": 0,
                      "total": 3}  # fmt: skip
    series = api.get("/api/v1/tasks/throughput", params={"seconds": 60}).json()
    assert len(series["succeeded"]) == 60 and len(series["failed"]) == 60 and series["interval_s"] == 1
    assert sum(series["succeeded"]) == len(ids)  # every node sees every event
    assert api.get("/api/v1/tasks/throughput", params={"seconds": 0}).status_code == 400


def test_the_event_stream_carries_node_beats(shoal_node: Any) -> None:
    seen: list[dict[str, Any]] = []
    done = threading.Event()

    def listen() -> None:
        with httpx.Client(base_url=shoal_node.http_url, headers=shoal_node.headers(), timeout=30) as client:
            with client.stream("GET", "/api/v1/events") as response:
                event = ""
                for line in response.iter_lines():
                    if line.startswith("event: "):
                        event = line[7:]
                    elif line.startswith("data: ") and event == "node":
                        seen.append(orjson.loads(line[6:]))
                        if len(seen) >= 2:
                            done.set()
                            return

    threading.Thread(target=listen, daemon=True).start()
    assert done.wait(20), "no node events on the stream"
    beat = seen[0]
    assert beat["kind"] == "beat" and beat["node"] == shoal_node.name and beat["running"] == 0
    assert isinstance(beat["at"], float) and beat["incarnation"] >= 1


async def test_a_search_looks_at_no_more_than_its_bound(redis_url: str) -> None:
    redis = Redis.from_url(redis_url)
    try:
        store = TaskStore(redis, Keys("searchtest"), result_max_bytes=1024)
        await store.create([TaskSpec(name=f"alpha {i}", type="echo", target="x") for i in range(30)])
        await store.create([TaskSpec(name=f"beta {i}", type="echo", target="x") for i in range(10)])
        page, complete = await search.search(store, None, "alpha", 5, None, scan=25)
        assert not complete and page.total == 15 and len(page.tasks) == 5  # the newest 25: 10 beta, 15 alpha
        page, complete = await search.search(store, None, "alpha", 50, None, scan=40)
        assert complete and page.total == 30 and page.next_cursor is None
        page, complete = await search.search(store, TaskState.WAITING, "BETA 9", 5, None)
        assert complete and [t.name for t in page.tasks] == ["beta 9"]
        await store.create([TaskSpec(name="Ünïcode STRASSE", type="echo", target="x")])
        for query in ("ünï", "straße", "CODE STR"):  # matched here (Unicode folding) or in Redis (ASCII)
            page, _ = await search.search(store, None, query, 5, None)
            assert [t.name for t in page.tasks] == ["Ünïcode STRASSE"], query
    finally:
        await redis.aclose()


async def test_a_name_prefix_shared_by_more_tasks_than_it_reads_walks_the_listing(redis_url: str) -> None:
    """Past ``read`` matches the search walks the listing newest first, matching the name's start: the page
    is the same, and the total, from the name index, still exact (but in a state, counted by the walk)."""
    redis = Redis.from_url(redis_url)
    try:
        store = TaskStore(redis, Keys("namestest"), result_max_bytes=1024)
        alpha = await store.create([TaskSpec(name=f"Alpha {i}", type="echo", target="alpha") for i in range(12)])
        await store.create([TaskSpec(name=f"beta alpha {i}", type="echo", target="alpha") for i in range(5)])
        await store.kill(alpha[0].id)
        newest = [t.id for t in reversed(alpha)]
        for read in (100, 3):  # the index read whole; the walk
            page, complete = await search.search_names(store, None, "alpha", 4, None, read=read)
            assert complete and page.total == 12 and [t.id for t in page.tasks] == newest[:4], read
            rest, _ = await search.search_names(store, None, "alpha", 50, page.next_cursor, read=read)
            assert [t.id for t in rest.tasks] == newest[4:] and rest.next_cursor is None, read
            killed, complete = await search.search_names(store, TaskState.KILLED, "ALPHA", 5, None, read=read)
            assert complete and killed.total == 1 and [t.id for t in killed.tasks] == [alpha[0].id], read
        await store.delete(alpha[1].id)
        assert (await search.search_names(store, None, "alpha", 5, None))[0].total == 11
    finally:
        await redis.aclose()


def test_throughput_counts_ends_per_second_and_forgets_old_seconds() -> None:
    now = [1000.5]
    rate = Throughput(window_s=10, clock=lambda: now[0])
    for state in (TaskState.SUCCEED, TaskState.SUCCEED, TaskState.RUNTIME_ERROR, TaskState.RUNNING):
        rate.add(state, 1000.2)
    rate.add(TaskState.SUCCEED, 999.9)
    series = rate.series(3)
    assert series["end"] == 1000 and series["succeeded"] == [0, 1, 2] and series["failed"] == [0, 0, 1]
    now[0] = 1004.0
    assert rate.series(6)["succeeded"] == [1, 2, 0, 0, 0, 0]
    now[0] = 1030.0  # everything is older than the window now
    assert sum(rate.series(10)["succeeded"]) == 0
