"""Memory the store spends per finished task: fill a store with N finished ``echo`` tasks, read ``INFO memory``.

A script, not a test (figures depend on the server's version and allocator; nothing asserts on them):

    .venv/bin/python bench/memory.py                   # 20,000 tasks of each kind
    .venv/bin/python bench/memory.py --tasks 5000 --json out.json
    .venv/bin/python bench/memory.py --redis-server /usr/bin/valkey-server

It starts the embedded redis-server shoal would pick (or ``--redis-server``) and one ``python -m shoal node``
on it, then, one kind at a time, submits ``--tasks`` tasks through ``POST /api/v1/tasks/batch`` and waits
until all have finished. Bytes per task is ``used_memory`` after less before, over N; the keys per task
likewise from ``DBSIZE``. The kinds:

- ``echo, 10-byte result``: an ``echo`` task of a 10-byte target, which succeeds with that as its result;
- ``killed, no result``: an ``echo`` task of the same target, killed before it ran (the batch is submitted
  while the node is held busy): a finished task with no attempt and no result.

Then it shows what one finished task of each kind is made of: each of its keys with ``MEMORY USAGE`` and
encoding, and the index entries (sorted sets) that name it.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import redis

from shoal.store.embedded import EmbeddedRedis
from shoal.testing import TestNode, wait_for

TARGET = "0123456789"  # echo's result is its target: a 10-byte result
BATCH = 1000
#: Tasks that hold the node's slots while a batch to be killed goes in, so that none of it runs.
HOLD_PARAMS = {"delay_s": 600}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=20_000, help="tasks of each kind (default 20,000)")
    parser.add_argument("--redis-server", help="the server binary (default: the one shoal picks)")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    return parser.parse_args(argv)


class Cluster:
    """One node on its own store, and what the script asks of both."""

    def __init__(self, root: Path, binary: str | None) -> None:
        self.store = EmbeddedRedis(root / "redis", binary=binary)
        self.store.start()
        self.admin = redis.Redis.from_url(self.store.admin_url)
        self.node = TestNode(root / "data", self.store.url, args=["--shutdown-grace", "2", "--slots", "4"])
        self.node.start()
        self.http = httpx.Client(
            base_url=self.node.http_url, headers={"Authorization": f"Bearer {self.node.token}"}, timeout=60.0
        )

    def close(self) -> None:
        self.http.close()
        self.node.stop()
        self.store.stop()

    def memory(self) -> tuple[int, int]:
        """(used_memory, keys) once the server's figures have settled (no task moving)."""
        return int(self.admin.info("memory")["used_memory"]), int(self.admin.dbsize())

    def submit(self, n: int, params: dict[str, Any] | None = None) -> list[str]:
        spec: dict[str, Any] = {"name": "echo", "type": "echo", "target": TARGET}
        if params:
            spec["params"] = params
        ids: list[str] = []
        while len(ids) < n:
            size = min(BATCH, n - len(ids))
            r = self.http.post("/api/v1/tasks/batch", json={"tasks": [spec] * size})
            r.raise_for_status()
            ids += [t["id"] for t in r.json()["tasks"]]
        return ids

    def count(self, state: str) -> int:
        r = self.http.get("/api/v1/tasks", params={"state": state, "limit": 1})
        r.raise_for_status()
        return int(r.json()["total"])

    def kill(self, ids: list[str]) -> None:
        for k in range(0, len(ids), BATCH):
            self.http.post("/api/v1/tasks/kill", json={"ids": ids[k : k + BATCH]}).raise_for_status()

    def anatomy(self, task_id: str) -> dict[str, Any]:
        """Every key that holds something of the task, and every sorted set that names it."""
        parts: dict[str, Any] = {}
        for key in self.admin.scan_iter(match=f"*{task_id}*", count=10_000):
            name = key.decode()
            parts[name.split(":")[2] + ":<id>"] = {
                "type": self.admin.type(key).decode(),
                "encoding": self.admin.object("encoding", key).decode(),
                "bytes": int(self.admin.memory_usage(key, samples=0) or 0),
            }
        indexes = [
            key.decode().split(":", 2)[2]
            for key in self.admin.scan_iter(match="*", count=10_000, _type="zset")
            if self.admin.zscore(key, task_id) is not None
        ]
        return {"keys": parts, "indexes": sorted(indexes)}


def measure(cluster: Cluster, n: int, kind: str) -> dict[str, Any]:
    before, keys_before = cluster.memory()
    if kind == "echo":
        done = cluster.count("SUCCEED") + n
        ids = cluster.submit(n)
        wait_for(lambda: cluster.count("SUCCEED") >= done, 60 + n / 100, f"{n} echo tasks finished", interval=0.2)
    else:
        held = cluster.submit(4, HOLD_PARAMS)  # every slot busy: the next batch waits
        wait_for(lambda: cluster.count("RUNNING") >= 4, 30, "slots held", interval=0.05)
        done = cluster.count("KILLED") + n
        ids = cluster.submit(n)
        cluster.kill(ids)
        wait_for(lambda: cluster.count("KILLED") >= done, 60 + n / 100, f"{n} tasks killed", interval=0.2)
        cluster.kill(held)
        wait_for(lambda: cluster.count("RUNNING") == 0, 30, "holders killed", interval=0.05)
    time.sleep(0.5)  # let lazily freed memory and the event stream settle before reading
    after, keys_after = cluster.memory()
    return {
        "kind": kind,
        "tasks": n,
        "bytes_per_task": round((after - before) / n, 1),
        "keys_per_task": round((keys_after - keys_before) / n, 3),
        "one_task": cluster.anatomy(ids[-1]),
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="shoal-memory-") as tmp:
        cluster = Cluster(Path(tmp), args.redis_server)
        try:
            server = cluster.admin.info("server")
            name = "valkey" if "valkey_version" in server else "redis"
            version = server.get("valkey_version") or server["redis_version"]
            print(f"{name} {version} ({cluster.store.server}), {args.tasks:,} tasks of each kind")
            figures = [measure(cluster, args.tasks, "echo"), measure(cluster, args.tasks, "killed")]
        finally:
            cluster.close()
    for fig in figures:
        label = "echo, 10-byte result" if fig["kind"] == "echo" else "killed, no result"
        print(f"{label:<24} {fig['bytes_per_task']:>8,.0f} bytes/task  {fig['keys_per_task']:.2f} keys/task")
        for key, part in fig["one_task"]["keys"].items():
            print(f"    {key:<20} {part['type']:<6} {part['encoding']:<10} {part['bytes']:>6} bytes")
        print(f"    named in: {', '.join(fig['one_task']['indexes'])}")
    if args.json:
        args.json.write_text(json.dumps({"server": f"{name} {version}", "figures": figures}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
