"""shoal: ``shoal up --nodes N`` (N = ``options["nodes"]``, default 1) on its embedded Redis, driven over REST.

``shoal up`` runs in its own process group; ready means every node's ``GET /readyz`` answers 200 (store
reachable, a master known) and ``GET /api/v1/cluster`` shows all N nodes alive. With several nodes the
submission lanes are spread round robin over the nodes' ports, as a load balancer in front would.
REST goes through httpx with HTTP/1.1 keep-alive: one ``AsyncClient`` of one connection per submission
lane, because httpcore's pool scans all its connections on every request (with 64 pooled connections the
client spent ~7 ms of CPU per request and was the bottleneck, not the node).
Completion of a batch is read from the task index, not from each task:
``GET /api/v1/tasks?state=SUCCEED&limit=1`` answers ``total`` in one cheap call, polled every
``Settings.poll_interval`` seconds (20 ms), which bounds the error on an end-to-end time to one interval.

Options beside ``nodes`` and ``shoal_ref``: ``node_args`` (given to every node after ``--``, e.g.
``["--task-modules", "bench.noop_types"]``) and ``pythonpath`` (directories put after the shoal code on
the nodes' PYTHONPATH, where such modules are found). A client submits ``echo`` tasks unless told another
type with ``use_type``.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson

from bench.adapters.base import Batch, Settings
from bench.procs import REAPER, descendants, free_port_block, wait_until
from bench.redis_server import live_settings, redis_version
from bench.source import PACKAGE_ROOT, shoal_source

ECHO = {"name": "echo", "type": "echo", "target": "x"}
ECHO_BODY = orjson.dumps(ECHO)
FAILED_STATES = ("RUNTIME_ERROR", "KILLED")


@dataclass
class Counts:
    succeeded: int
    failed: int


async def wait_counts(read: Any, batch: Batch, poll: float, timeout: float, who: str) -> None:
    """Poll ``read() -> Counts`` until the batch's tasks have all succeeded; raise if any failed.

    Failed states are read on every 25th poll only: they should never move, and every read costs the
    node a little of the time the batch is being measured on.
    """
    base: Counts = batch.baseline
    target = base.succeeded + batch.accepted
    deadline = time.monotonic() + timeout
    polls = 0
    while True:
        counts = await read(polls % 25 == 24)
        if counts.succeeded >= target:
            return
        if counts.failed > base.failed:
            raise RuntimeError(f"{who}: {counts.failed - base.failed} tasks failed or were killed")
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"{who}: {counts.succeeded - base.succeeded} of {batch.accepted} done after {timeout:.0f} s"
            )
        polls += 1
        await asyncio.sleep(poll)


class ShoalSystem:
    name = "shoal"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.data_dir = settings.workdir / "data"
        self.nodes = int(settings.options.get("nodes") or 1)
        base = free_port_block(3 * self.nodes)  # node i listens on each first port + i
        self.http_port, self.grpc_port, self.proxy_port = base, base + self.nodes, base + 2 * self.nodes
        self.http_urls = [f"http://127.0.0.1:{self.http_port + i}" for i in range(self.nodes)]
        self.grpc_addrs = [f"127.0.0.1:{self.grpc_port + i}" for i in range(self.nodes)]
        self.http_url, self.grpc_addr = self.http_urls[0], self.grpc_addrs[0]
        self.token = ""
        self.proc: Any = None
        self._clients: list[Any] = []
        self.src, self.source = shoal_source(settings.options.get("shoal_ref"), settings.workdir)

    async def start(self) -> None:
        shutil.rmtree(self.data_dir, ignore_errors=True)  # a kept --workdir must not bring back old tasks
        if self.src != PACKAGE_ROOT:  # this process imports the gRPC stubs: take them from the same code
            sys.path.insert(0, str(self.src))
        argv = [
            sys.executable,
            "-m",
            "shoal",
            "up",
            "--nodes",
            str(self.nodes),
            "--data-dir",
            str(self.data_dir),
            "--http-port",
            str(self.http_port),
            "--grpc-port",
            str(self.grpc_port),
            "--proxy-port",
            str(self.proxy_port),
        ]
        node_args = [str(arg) for arg in self.settings.options.get("node_args") or ()]
        if node_args:
            argv += ["--", *node_args]
        paths = [str(self.src), *(str(p) for p in self.settings.options.get("pythonpath") or ())]
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(paths))
        log = self.settings.workdir / "shoal-up.log"
        # grace: shoal up may wait for the nodes' shutdown_grace (30 s) + 15 s before it gives up on one
        self.proc = REAPER.spawn("shoal up", argv, log=log, env=env, cwd=self.src, grace=50.0)
        wait_until(self._ready, 90.0, "shoal up", self.proc, interval=0.1)
        self.token = (self.data_dir / "token").read_text().strip()
        wait_until(self._all_alive, 60.0, f"{self.nodes} nodes alive", self.proc, interval=0.1)
        from bench.adapters.shoal_grpc import ShoalGrpc

        self._clients = [ShoalRest(self, "wait"), ShoalRest(self, "result"), ShoalGrpc(self)]
        for client in self._clients:
            await client.connect()

    def _ready(self) -> bool:
        try:
            return all(httpx.get(f"{url}/readyz", timeout=1.0).status_code == 200 for url in self.http_urls)
        except httpx.HTTPError:
            return False

    def _all_alive(self) -> bool:
        """Every node admitted and shown alive, so that the master places on all of them from the start."""
        try:
            r = httpx.get(f"{self.http_url}/api/v1/cluster", headers={"Authorization": f"Bearer {self.token}"},
                          timeout=1.0)  # fmt: skip
        except httpx.HTTPError:
            return False
        view = r.json() if r.status_code == 200 else {}
        alive = [n for n in view.get("nodes", []) if n.get("state") == "alive"]
        return view.get("master") is not None and len(alive) >= self.nodes

    async def stop(self) -> None:
        for client in self._clients:
            await client.close()
        if self.proc is not None:
            REAPER.stop(self.proc)
            self.proc = None

    def clients(self) -> list[Any]:
        return list(self._clients)

    def store_address(self) -> tuple[str, int] | None:
        return embedded_redis_address(self.proc.pid) if self.proc else None

    def describe(self) -> dict[str, Any]:
        from shoal.version import __version__

        info: dict[str, Any] = {"version": __version__, **self.source, "nodes": self.nodes}
        info.update(embedded_redis(self.proc.pid if self.proc else None))
        return info


def embedded_redis_address(root_pid: int) -> tuple[str, int] | None:
    """(host, port) from the title of the redis-server among ``shoal up``'s descendants."""
    for pid in descendants(root_pid):
        try:
            title = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().split()
        except OSError:
            continue
        if len(title) > 1 and title[0].endswith("redis-server"):
            host, _, port = title[1].rpartition(":")
            if port.isdigit():
                return host or "127.0.0.1", int(port)
    return None


def embedded_redis(root_pid: int | None) -> dict[str, Any]:
    """The redis-server among ``shoal up``'s descendants: its binary and its live settings."""
    if root_pid is None:
        return {}
    for pid in descendants(root_pid):
        try:
            title = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().split()
            if not title or not title[0].endswith("redis-server"):
                continue
            exe = Path(title[0])  # as started: Debian's redis-server is a link to a binary of another name
        except OSError:
            continue
        host, _, port = title[1].rpartition(":") if len(title) > 1 else ("", "", "")
        info: dict[str, Any] = {"redis_binary": str(exe)}
        info.update(live_settings(host or "127.0.0.1", int(port)) if port.isdigit() else {"redis": redis_version(exe)})
        return info
    return {}


class ShoalRest:
    """REST through httpx. ``mode`` is how a round trip learns its task is done:

    - ``wait``: ``POST /api/v1/tasks?wait=10`` answers with the task once it is terminal (its result is
      stored by then, but not sent: the task JSON has no result).
    - ``result``: ``POST /api/v1/tasks`` then ``GET /api/v1/tasks/{id}/result?wait=10``, which sends
      the result's ``code``: the same thing Celery's ``.get()`` hands back.
    """

    def __init__(self, system: ShoalSystem, mode: str) -> None:
        self.system = system
        self.mode = mode
        if mode == "wait":
            self.path = "REST"
            self.workloads = frozenset({"accept", "throughput", "latency"})
            self.note = "httpx, HTTP/1.1 keep-alive; latency: POST ?wait=10 returns the terminal task"
        else:
            self.path = "REST+result"
            self.workloads = frozenset({"latency"})
            self.note = "latency: POST, then GET /tasks/{id}/result?wait=10 returns the result code"
        self.http: httpx.AsyncClient | None = None
        self.lanes: list[httpx.AsyncClient] = []
        self._baseline = Counts(0, 0)
        self.body = ECHO_BODY

    def use_type(self, task_type: str) -> None:
        """Submit tasks of ``task_type`` (one that returns its target, as ``echo`` does) from now on."""
        self.body = orjson.dumps({**ECHO, "name": task_type, "type": task_type})

    async def connect(self) -> None:
        urls = self.system.http_urls
        self.http = self._client(1, urls[0])
        self.lanes = [self._client(1, urls[i % len(urls)]) for i in range(self.system.settings.concurrency)]

    def _client(self, connections: int, base_url: str) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=base_url,
            headers={"Authorization": f"Bearer {self.system.token}", "Content-Type": "application/json"},
            limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections),
            timeout=httpx.Timeout(30.0),
        )

    async def _count(self, state: str) -> int:
        assert self.http is not None
        r = await self.http.get("/api/v1/tasks", params={"state": state, "limit": 1})
        r.raise_for_status()
        return int(orjson.loads(r.content)["total"])

    async def counts(self, with_failed: bool = True) -> Counts:
        failed = sum([await self._count(s) for s in FAILED_STATES]) if with_failed else 0
        return Counts(await self._count("SUCCEED"), failed)

    async def prepare(self) -> None:
        self._baseline = await self.counts()

    async def submit_many(self, n: int, concurrency: int) -> Batch:
        batch = Batch(accepted=0, baseline=self._baseline)
        body, left = self.body, n

        async def lane(http: httpx.AsyncClient) -> None:
            nonlocal left
            while left > 0:
                left -= 1
                r = await http.post("/api/v1/tasks", content=body)
                if r.status_code == 201:
                    batch.accepted += 1
                else:
                    batch.failed += 1
                    batch.errors.append(f"{r.status_code} {r.text[:200]}")

        await asyncio.gather(*(lane(http) for http in self.lanes[: min(concurrency, n)]))
        return batch

    async def wait_all(self, batch: Batch, timeout: float) -> None:
        async def read(with_failed: bool) -> Counts:
            return await self.counts(with_failed)

        await wait_counts(read, batch, self.system.settings.poll_interval, timeout, "shoal REST")

    async def roundtrip(self, timeout: float) -> None:
        assert self.http is not None
        if self.mode == "wait":
            r = await self.http.post("/api/v1/tasks", params={"wait": timeout}, content=self.body)
            if r.status_code != 201 or orjson.loads(r.content)["state"] != "SUCCEED":
                raise RuntimeError(f"shoal REST: {r.status_code} {r.text[:300]}")
            return
        r = await self.http.post("/api/v1/tasks", content=self.body)
        if r.status_code != 201:
            raise RuntimeError(f"shoal REST: {r.status_code} {r.text[:300]}")
        task_id = orjson.loads(r.content)["id"]
        r = await self.http.get(f"/api/v1/tasks/{task_id}/result", params={"wait": timeout})
        if r.status_code != 200 or orjson.loads(r.content)["code"] != "x":
            raise RuntimeError(f"shoal REST result: {r.status_code} {r.text[:300]}")

    async def close(self) -> None:
        for http in [*self.lanes, *([self.http] if self.http else [])]:
            await http.aclose()
        self.http, self.lanes = None, []
