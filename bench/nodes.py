"""A cluster for failover measurements: one redis-server and N ``python -m shoal node`` processes, unsupervised.

``shoal up`` starts a node again when it dies, which is right for a user and wrong for a measurement of
what the others do once it is gone, so this starts each node itself (``bench.procs.REAPER``, its own
session, stopped on any exit) on the bench's own redis-server (the binary and durability settings shoal
embeds). A node killed with ``kill()`` stays dead. Nodes share one data directory, hence one token.

Reads go where a user would look (``GET /api/v1/cluster``) and, for what the API does not show (the
epoch that placed a task, the membership timeline, a node's last beat), to the Redis keys themselves.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import redis.asyncio as aioredis

from bench.procs import REAPER, free_port_block
from bench.redis_server import RedisServer

#: Keys of the default cluster ("shoal") in Redis.
PREFIX = "shoal:shoal:"
TERMINAL = ("SUCCEED", "RUNTIME_ERROR", "KILLED")


@dataclass
class Node:
    name: str
    http_url: str
    grpc_addr: str
    proc: subprocess.Popen[bytes]
    log: Path

    def alive(self) -> bool:
        return self.proc.poll() is None


class NodeSet:
    """Redis plus named nodes; every node gets ``node_args`` (e.g. ``--heartbeat-interval 1``)."""

    def __init__(self, workdir: Path, src: Path, node_args: list[str] | None = None) -> None:
        self.workdir = workdir
        self.src = src
        self.node_args = node_args or []
        self.data_dir = workdir / "data"
        self.redis_server = RedisServer(workdir / "redis")
        self.nodes: dict[str, Node] = {}
        self.token = ""
        self.redis: aioredis.Redis | None = None
        self.http: httpx.AsyncClient | None = None

    async def start(self, names: list[str], timeout: float = 60.0) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.redis_server.start()
        self.redis = aioredis.Redis.from_url(self.redis_server.url, decode_responses=True)
        self.token = _token(self.src, self.data_dir)
        self.http = httpx.AsyncClient(headers={"Authorization": f"Bearer {self.token}"}, timeout=5.0, trust_env=False)
        for name in names:
            self._spawn(name)
        await self.wait_ready(timeout)

    def _spawn(self, name: str) -> None:
        # Below the ephemeral range: a port the kernel just called free there can be taken by anyone's
        # outgoing connection before the node binds it (it happened on the shared machine).
        http = free_port_block(3)
        grpc, proxy = http + 1, http + 2
        argv = [sys.executable, "-m", "shoal", "node", "--name", name, "--data-dir", str(self.data_dir),
                "--redis", self.redis_server.url, "--http", f"127.0.0.1:{http}", "--grpc", f"127.0.0.1:{grpc}",
                "--proxy", f"127.0.0.1:{proxy}", "--shutdown-grace", "2", *self.node_args]  # fmt: skip
        env = {k: v for k, v in os.environ.items() if not k.startswith("SHOAL_")}
        env["PYTHONPATH"] = str(self.src)
        log = self.workdir / f"{name}.log"
        proc = REAPER.spawn(name, argv, log=log, env=env, cwd=self.src, grace=10.0)
        self.nodes[name] = Node(name, f"http://127.0.0.1:{http}", f"127.0.0.1:{grpc}", proc, log)

    async def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        waiting = [n for n in self.nodes.values() if n.alive()]
        while waiting:
            for node in list(waiting):
                if not node.alive():
                    raise RuntimeError(f"{node.name} exited with {node.proc.returncode}; see {node.log}")
                try:
                    if (await self.client.get(f"{node.http_url}/readyz")).status_code == 200:
                        waiting.remove(node)
                except httpx.HTTPError:
                    pass
            if waiting and time.monotonic() > deadline:
                raise TimeoutError(f"not ready after {timeout:.0f} s: {[n.name for n in waiting]}")
            await asyncio.sleep(0.05)

    @property
    def client(self) -> httpx.AsyncClient:
        assert self.http is not None, "start() first"
        return self.http

    @property
    def store(self) -> aioredis.Redis:
        assert self.redis is not None, "start() first"
        return self.redis

    def live(self, but: str | None = None) -> list[Node]:
        return [n for n in self.nodes.values() if n.alive() and n.name != but]

    def kill(self, name: str) -> float:
        """SIGKILL one node; returns the wall-clock time of the kill (the clock Redis's TIME reads too)."""
        node = self.nodes[name]
        killed_at = time.time()
        os.kill(node.proc.pid, signal.SIGKILL)
        node.proc.wait(10)
        return killed_at

    async def view(self, node: Node) -> dict[str, Any]:
        response = await self.client.get(f"{node.http_url}/api/v1/cluster")
        response.raise_for_status()
        body: dict[str, Any] = response.json()
        return body

    async def agreed(self) -> dict[str, Any] | None:
        """The view if every live node shows the same master and epoch, the master among them, all alive."""
        live = self.live()
        try:
            views = [await self.view(n) for n in live]
        except httpx.HTTPError:
            return None
        first = views[0]
        if first["master"] not in {n.name for n in live}:
            return None
        if any((v["master"], v["epoch"]) != (first["master"], first["epoch"]) for v in views):
            return None
        states = {i["name"]: i["state"] for i in first["nodes"]}
        return first if all(states.get(n.name) == "alive" for n in live) else None

    async def wait_agreed(self, timeout: float = 60.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            view = await self.agreed()
            if view is not None:
                return view
            if time.monotonic() > deadline:
                raise TimeoutError(f"the nodes did not agree on one master within {timeout:.0f} s")
            await asyncio.sleep(0.05)

    async def submit(self, node: Node, body: dict[str, Any]) -> str | None:
        """Submit one task through ``node``; its id, or None if refused or unreachable."""
        try:
            response = await self.client.post(f"{node.http_url}/api/v1/tasks", json=body)
        except httpx.HTTPError:
            return None
        return str(response.json()["id"]) if response.status_code == 201 else None

    async def tasks(self, ids: list[str], *fields: str) -> list[list[str | None]]:
        """``fields`` of each task hash, in one round trip."""
        async with self.store.pipeline(transaction=False) as pipe:
            for task_id in ids:
                pipe.hmget(f"{PREFIX}task:{task_id}", list(fields))
            return list(await pipe.execute())

    async def timeline_since(self, since: float) -> list[dict[str, Any]]:
        """Membership events at or after ``since`` (Unix seconds), oldest first."""
        entries: Any = await self.store.xrange(f"{PREFIX}timeline", min=f"{int(since * 1000)}-0")
        events = []
        for _entry_id, fields in entries:
            event: dict[str, Any] = dict(fields)
            event["at"] = float(event.get("at", 0))
            events.append(event)
        return events

    async def last_beat(self, name: str) -> float | None:
        score = await self.store.zscore(f"{PREFIX}nodes", name)
        return None if score is None else float(score)

    async def stop(self) -> None:
        for node in self.nodes.values():
            REAPER.stop(node.proc)
        self.nodes.clear()
        if self.http is not None:
            await self.http.aclose()
        if self.redis is not None:
            await self.redis.aclose()
        self.redis_server.stop()


def _token(src: Path, data_dir: Path) -> str:
    """The cluster token, created once before the nodes start so they do not race to write it."""
    out = subprocess.run(
        [sys.executable, "-c", "import sys; from pathlib import Path; from shoal.auth import load_or_create_token;"
         " print(load_or_create_token(Path(sys.argv[1])))", str(data_dir)],
        env={**os.environ, "PYTHONPATH": str(src)}, cwd=src, capture_output=True, text=True, check=True,
    )  # fmt: skip
    return out.stdout.strip()
