"""Fixtures for the cluster tests: several real ``python -m shoal node`` processes on the suite's Redis.

``cluster.start(3)`` starts node-a, node-b and node-c at once (shared data directory, so one token) and
waits until each is ready; ``cluster.add(name, data_dir=...)`` starts one more, e.g. with a token of its
own. Every node is stopped at the end of the test, a paused one (SIGSTOP) resumed first.
The helpers read what a user sees (``GET /api/v1/cluster``, the tasks over REST) and, where a test must
look under the API (the fencing epoch on a task, the membership timeline), the Redis keys themselves.
"""

from __future__ import annotations

import json
import signal
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import redis

from shoal.testing import TestNode, wait_for

T = TypeVar("T")

#: Names in the order nodes are added; with equal priority the first stands first for master.
NAMES = ("node-a", "node-b", "node-c", "node-d", "node-e")
#: Keys of the default cluster ("shoal") in Redis.
PREFIX = "shoal:shoal:"
TERMINAL = ("SUCCEED", "RUNTIME_ERROR", "KILLED")
#: Short grace, so that a node stopped at the end of a test does not wait for long tasks.
GRACE_ARGS = ["--shutdown-grace", "2"]


def until(predicate: Callable[[], T | None], timeout: float, message: str, interval: float = 0.05) -> T:
    """``wait_for`` for a predicate that returns what it found, or None while there is nothing yet."""
    value = wait_for(predicate, timeout, message, interval=interval)
    assert value is not None
    return value


class Cluster:
    """The nodes of one test, and the calls the tests make on them."""

    def __init__(self, redis_url: str, root: Path) -> None:
        self.redis_url = redis_url
        self.root = root
        self.data_dir = root / "data"
        self.data_dir.mkdir(exist_ok=True)
        self.nodes: dict[str, TestNode] = {}
        self.redis = redis.Redis.from_url(redis_url, decode_responses=True)
        self._http: dict[str, httpx.Client] = {}

    # -- processes -------------------------------------------------------------------------------

    def start(self, n: int = 3, args: list[str] | None = None) -> list[TestNode]:
        """Start ``n`` more nodes at the same time and wait until all are ready."""
        names = NAMES[len(self.nodes) : len(self.nodes) + n]
        started = [self.add(name, args=args, ready=False) for name in names]
        for node in started:
            node.wait_ready(30.0)
        return started

    def add(
        self, name: str, *, args: list[str] | None = None, data_dir: Path | None = None, ready: bool = True
    ) -> TestNode:
        """Start one node; ``data_dir`` of its own gives it its own token file."""
        node = TestNode(data_dir or self.data_dir, self.redis_url, name=name, args=[*GRACE_ARGS, *(args or [])])
        self.nodes[name] = node
        return node.start(ready=ready, timeout=30.0)

    def live(self, but: Iterable[TestNode] = ()) -> list[TestNode]:
        skip = {n.name for n in but}
        return [n for n in self.nodes.values() if n.proc.alive() and n.name not in skip]

    def close(self) -> None:
        for node in self.nodes.values():
            if node.proc.alive():
                node.proc.signal(signal.SIGCONT)  # a paused node cannot handle SIGTERM
        for node in self.nodes.values():
            if node.proc.alive():
                node.stop(timeout=15)
        for client in self._http.values():
            client.close()
        self.redis.close()

    # -- REST ------------------------------------------------------------------------------------

    def http(self, node: TestNode) -> httpx.Client:
        if node.name not in self._http:
            self._http[node.name] = httpx.Client(
                base_url=node.http_url, headers=node.headers(), timeout=10.0, trust_env=False
            )
        return self._http[node.name]

    def view(self, node: TestNode) -> dict[str, Any]:
        """``GET /api/v1/cluster`` as ``node`` answers it."""
        response = self.http(node).get("/api/v1/cluster")
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    def node_info(self, via: TestNode, name: str) -> dict[str, Any] | None:
        for info in self.view(via)["nodes"]:
            if info["name"] == name:
                return dict(info)
        return None

    def agreed(self, nodes: list[TestNode] | None = None) -> dict[str, Any] | None:
        """The view, if every node in ``nodes`` (default: all running) shows the same master and epoch,
        each of them alive, and exactly one master among them; else None."""
        nodes = self.live() if nodes is None else nodes
        views = [self.view(n) for n in nodes]
        first = views[0]
        if first["master"] is None or any(
            (v["master"], v["epoch"]) != (first["master"], first["epoch"]) for v in views
        ):
            return None
        names = {n.name for n in nodes}
        shown = {i["name"]: i for i in first["nodes"] if i["name"] in names}
        if set(shown) != names or any(i["state"] != "alive" for i in shown.values()):
            return None
        if [i["name"] for i in shown.values() if i["role"] == "master"] != [first["master"]]:
            return None
        return first

    def wait_agreed(self, nodes: list[TestNode] | None = None, timeout: float = 20.0) -> dict[str, Any]:
        return until(lambda: self.agreed(nodes), timeout, "the nodes to agree on one master")

    def submit(self, node: TestNode, target: str = "hi", delay_s: float = 0, **extra: Any) -> str:
        body = {"name": "echo", "type": "echo", "target": target, "params": {"delay_s": delay_s}, **extra}
        response = self.http(node).post("/api/v1/tasks", json=body)
        assert response.status_code == 201, response.text
        return str(response.json()["id"])

    def submit_across(self, nodes: list[TestNode], count: int, delay_s: float | Iterable[float] = 0,
                      prefix: str = "t") -> list[str]:  # fmt: skip
        """``count`` echo tasks, submitted through each node in turn; the target names each task."""
        delays = [delay_s] * count if isinstance(delay_s, int | float) else list(delay_s)
        return [self.submit(nodes[i % len(nodes)], f"{prefix}-{i}", delays[i]) for i in range(count)]

    def task(self, via: TestNode, task_id: str) -> dict[str, Any]:
        response = self.http(via).get(f"/api/v1/tasks/{task_id}")
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    def result(self, via: TestNode, task_id: str) -> dict[str, Any]:
        response = self.http(via).get(f"/api/v1/tasks/{task_id}/result")
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    def count(self, via: TestNode, state: str) -> int:
        response = self.http(via).get("/api/v1/tasks", params={"state": state, "limit": 1})
        assert response.status_code == 200, response.text
        return int(response.json()["total"])

    def wait_all_ended(self, via: TestNode, ids: list[str], timeout: float = 60.0) -> list[dict[str, Any]]:
        """Wait until every task in ``ids`` is terminal; return them (the test checks which state)."""

        done: set[str] = set()

        def progress() -> bool:
            for task_id in ids:
                if task_id not in done and self.task(via, task_id)["state"] in TERMINAL:
                    done.add(task_id)
            return len(done) == len(ids)

        try:
            wait_for(progress, timeout, f"{len(ids)} tasks to end", interval=0.2)
        except TimeoutError as exc:
            raise AssertionError(f"{exc}; not ended: {self.describe([i for i in ids if i not in done])}") from None
        return [self.task(via, i) for i in ids]

    def describe(self, ids: list[str]) -> str:
        """Where the given tasks are, straight from Redis, for a failure message."""
        where: Counter[tuple[str | None, ...]] = Counter()
        for task_id in ids:
            fields = self.task_hash(task_id)
            where[(fields.get("state"), fields.get("node"), fields.get("epoch"))] += 1
        master = self.redis.mget(f"{PREFIX}lease", f"{PREFIX}epoch")
        types = sorted(self.redis.smembers(f"{PREFIX}pending-types"))
        pending = {
            t: (
                self.redis.xlen(f"{PREFIX}pending:{t}"),
                self.redis.xpending(f"{PREFIX}pending:{t}", "scheduler")["pending"],
            )
            for t in types
        }
        nodes = {n: self.redis.hgetall(f"{PREFIX}node:{n}") for n in self.nodes}
        states = {n: (f.get("state"), f.get("incarnation"), f.get("state_incarnation")) for n, f in nodes.items()}
        assigned = {n: self.redis.scard(f"{PREFIX}assigned:{n}") for n in self.nodes}
        return (f"{len(ids)} by (state, node, epoch): {dict(where)}; lease, epoch: {master}; "
                f"pending streams (entries, unacked) by type: {pending}; "
                f"nodes (state, incarnation, verdict on): {states}; assigned: {assigned}")  # fmt: skip

    def running_on(self, via: TestNode, name: str) -> int:
        response = self.http(via).get("/api/v1/tasks", params={"state": "RUNNING", "limit": 1000})
        assert response.status_code == 200, response.text
        return sum(1 for t in response.json()["tasks"] if t["node"] == name)

    # -- under the API -----------------------------------------------------------------------------

    def task_hash(self, task_id: str) -> dict[str, str]:
        fields: dict[str, str] = self.redis.hgetall(f"{PREFIX}task:{task_id}")  # type: ignore[assignment]
        return fields

    def dupes(self, task_id: str) -> list[str]:
        entries: list[str] = self.redis.lrange(f"{PREFIX}dupes:{task_id}", 0, -1)  # type: ignore[assignment]
        return entries

    def timeline(self) -> list[dict[str, Any]]:
        """The membership timeline, oldest first (as NodeRegistry.timeline() reads it, in that order)."""
        entries: Any = self.redis.xrange(f"{PREFIX}timeline")
        events = []
        for _, fields in entries:
            event: dict[str, Any] = dict(fields)
            event["epoch"] = int(event.get("epoch") or 0)
            event["at"] = float(event.get("at") or 0)
            event["extra"] = json.loads(event.get("extra") or "{}")
            events.append(event)
        return events

    def events(self, kind: str, node: str | None = None) -> list[dict[str, Any]]:
        return [e for e in self.timeline() if e["kind"] == kind and (node is None or e["node"] == node)]


@pytest.fixture
def cluster(redis_url: str, tmp_path: Path) -> Iterator[Cluster]:
    """Real node processes on the test's (flushed) Redis; all stopped afterwards."""
    nodes = Cluster(redis_url, tmp_path)
    yield nodes
    nodes.close()
