"""shoal: ``shoal up --nodes N`` (N = ``options["nodes"]``, default 1; run.py asks for 2) on the run's Redis.

The cluster keeps its tasks in a ``bench.redis_server.RedisServer`` given with ``--redis``: the binary
and durability settings every system of the run gets (shoal's embedded store would run the same binary
with the same settings, but behind passwords the benchmark would have to read). ``shoal up`` runs in its
own process group; ready means every node's ``GET /readyz`` answers 200 and ``GET /api/v1/cluster`` shows
all N nodes alive. With several nodes, submission lanes are spread round robin over the nodes' APIs, as a
load balancer in front would.

Client paths (each names the workloads it takes part in; a path whose API this shoal lacks is skipped,
with the reason, rather than failed):

- ``batch``: ``POST /api/v1/tasks/batch``, 1,000 tasks per call, one call in flight per node.
- ``gRPC`` (``bench.adapters.shoal_grpc``): ``CreateTask``, 64 in flight; latency: one ``CreateTask`` with
  ``wait_s``, which answers with the task and its result.
- ``producer``: ``shoal.producer.Producer``, which submits straight to the store as the peers' clients
  write to their broker, one call at a time; latency: ``Producer.run`` (submit, then wait for the task's
  end event and read the task with its result).
- ``sequential``: shoal's own client (``shoal.client.AsyncClient.submit``), one call at a time, as the
  peers' clients send.
- ``REST``: latency through ``POST /api/v1/tasks?wait=10&result=true`` (the task with its result).

REST goes through httpx with HTTP/1.1 keep-alive: one ``AsyncClient`` of one connection per lane, because
httpcore's pool scans all its connections on every request (with 64 pooled connections the client spent
~7 ms of CPU per request and was the bottleneck, not the node). Completion of a batch is read from the
task index: ``GET /api/v1/tasks?state=SUCCEED&limit=1`` answers ``total`` in one cheap call, polled every
``Settings.poll_interval`` (20 ms), which bounds the error on an end-to-end time to one interval.

The drain run holds the workers back by keeping every slot busy: ``hold`` fills each node's slots with
echo tasks that sleep an hour, so submissions are stored and wait in the master's backlog; ``release``
kills those tasks (``POST /api/v1/tasks/kill``), which frees every slot at once. The killed tasks are left
out of the failure counts.

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
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import orjson

from bench.adapters.base import Batch, Settings
from bench.procs import REAPER, free_port_block, wait_until
from bench.redis_server import RedisServer
from bench.source import PACKAGE_ROOT, shoal_source

ECHO = {"name": "echo", "type": "echo", "target": "x"}
ECHO_BODY = orjson.dumps(ECHO)
FAILED_STATES = ("RUNTIME_ERROR", "KILLED")
#: Tasks per ``POST /api/v1/tasks/batch`` (the API takes 1 to 1,000).
BATCH_SIZE = 1000
#: How long a task that holds a slot during the drain run sleeps, at most (echo's own bound).
HOLD_S = 3600.0


@dataclass
class Counts:
    succeeded: int
    failed: int


async def wait_counts(
    read: Callable[[bool], Awaitable[Counts]], batch: Batch, poll: float, timeout: float, who: str
) -> None:
    """Poll ``read(with_failed) -> Counts`` until the batch's tasks have all succeeded; raise if any failed.

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
            done = counts.succeeded - base.succeeded
            raise TimeoutError(f"{who}: {done} of {batch.accepted} done after {timeout:.0f} s")
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
        self.redis = RedisServer(settings.workdir / "redis")
        self.token = ""
        self.proc: Any = None
        self.held: list[str] = []  # the tasks that keep every slot busy while the workers are held
        self.killed_by_bench = 0  # tasks the benchmark killed itself: not failures
        self._clients: list[Any] = []
        self.src, self.source = shoal_source(settings.options.get("shoal_ref"), settings.workdir)

    async def start(self) -> None:
        shutil.rmtree(self.data_dir, ignore_errors=True)  # a kept --workdir must not bring back old tasks
        if self.src != PACKAGE_ROOT:  # this process imports the gRPC stubs: take them from the same code
            sys.path.insert(0, str(self.src))
        self.redis.start()
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
            "--redis",
            self.redis.url,
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

        self._clients = [ShoalBatch(self), ShoalGrpc(self), ShoalProducer(self), ShoalSequential(self), ShoalRest(self)]
        for client in self._clients:
            await client.connect()

    def _ready(self) -> bool:
        try:
            return all(httpx.get(f"{url}/readyz", timeout=1.0).status_code == 200 for url in self.http_urls)
        except httpx.HTTPError:
            return False

    def cluster_view(self) -> dict[str, Any]:
        """``GET /api/v1/cluster`` of the first node, {} if it does not answer."""
        try:
            r = httpx.get(f"{self.http_url}/api/v1/cluster", headers=self.auth, timeout=1.0)
        except httpx.HTTPError:
            return {}
        view: dict[str, Any] = r.json() if r.status_code == 200 else {}
        return view

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def _all_alive(self) -> bool:
        """Every node admitted and shown alive, so that the master places on all of them from the start."""
        view = self.cluster_view()
        alive = [n for n in view.get("nodes", []) if n.get("state") == "alive"]
        return view.get("master") is not None and len(alive) >= self.nodes

    async def hold(self) -> None:
        """Fill every slot of every node with an echo task that sleeps ``HOLD_S``; return once all run."""
        slots = sum(int(n.get("slots", 0)) for n in self.cluster_view().get("nodes", []))
        blocker = orjson.dumps({**ECHO, "name": "bench-hold", "params": {"delay_s": HOLD_S}})
        async with httpx.AsyncClient(base_url=self.http_url, headers=self.auth, timeout=30.0) as http:
            for _ in range(slots):
                r = await http.post("/api/v1/tasks", content=blocker, headers={"Content-Type": "application/json"})
                r.raise_for_status()
                self.held.append(r.json()["id"])
            deadline = time.monotonic() + 30.0
            while True:
                r = await http.get("/api/v1/tasks", params={"state": "RUNNING", "limit": 1})
                if r.status_code == 200 and r.json()["total"] >= slots:
                    return
                if time.monotonic() > deadline:
                    raise TimeoutError(f"shoal: {slots} slot-holding tasks not all running after 30 s")
                await asyncio.sleep(0.05)

    async def release(self) -> None:
        """Kill the slot-holding tasks: every slot frees at once."""
        async with httpx.AsyncClient(base_url=self.http_url, headers=self.auth, timeout=30.0) as http:
            r = await http.post("/api/v1/tasks/kill", json={"ids": self.held})
            r.raise_for_status()
        self.killed_by_bench += sum(1 for ok in r.json()["succeed"].values() if ok)
        self.held = []

    async def stop(self) -> None:
        for client in self._clients:
            await client.close()
        if self.proc is not None:
            REAPER.stop(self.proc)
            self.proc = None
        self.redis.stop()

    def clients(self) -> list[Any]:
        return list(self._clients)

    def processes(self) -> dict[str, int]:
        found = {"redis": self.redis.proc.pid} if self.redis.proc else {}
        return found | ({"nodes": self.proc.pid} if self.proc else {})

    def store_address(self) -> tuple[str, int] | None:
        return self.redis.address

    def describe(self) -> dict[str, Any]:
        from shoal.version import __version__

        return {"version": __version__, **self.source, "nodes": self.nodes, **self.redis.describe()}


class RestLanes:
    """What the REST paths share: one keep-alive connection per lane, lanes spread over the nodes, and the
    completion count read from the task index."""

    path = "REST"

    def __init__(self, system: ShoalSystem) -> None:
        self.system = system
        self.http: httpx.AsyncClient | None = None
        self.lanes: list[httpx.AsyncClient] = []
        self._baseline = Counts(0, 0)
        self.body = ECHO_BODY

    def use_type(self, task_type: str) -> None:
        """Submit tasks of ``task_type`` (one that returns its target, as ``echo`` does) from now on."""
        self.body = orjson.dumps({**ECHO, "name": task_type, "type": task_type})

    async def connect(self) -> None:
        urls = self.system.http_urls
        self.http = self._client(urls[0])
        self.lanes = [self._client(urls[i % len(urls)]) for i in range(self.system.settings.concurrency)]

    def _client(self, base_url: str) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=base_url,
            headers={**self.system.auth, "Content-Type": "application/json"},
            limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
            timeout=httpx.Timeout(30.0),
        )

    async def _count(self, state: str) -> int:
        assert self.http is not None
        r = await self.http.get("/api/v1/tasks", params={"state": state, "limit": 1})
        r.raise_for_status()
        return int(orjson.loads(r.content)["total"])

    async def counts(self, with_failed: bool = True) -> Counts:
        failed = sum([await self._count(s) for s in FAILED_STATES]) - self.system.killed_by_bench if with_failed else 0
        return Counts(await self._count("SUCCEED"), failed)

    async def prepare(self) -> None:
        self._baseline = await self.counts()

    async def submit_singles(self, n: int, concurrency: int) -> Batch:
        """``n`` single ``POST /api/v1/tasks``, ``concurrency`` lanes at once."""
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
        await wait_counts(self.counts, batch, self.system.settings.poll_interval, timeout, f"shoal {self.path}")

    async def close(self) -> None:
        for http in [*self.lanes, *([self.http] if self.http else [])]:
            await http.aclose()
        self.http, self.lanes = None, []


class ShoalBatch(RestLanes):
    """``POST /api/v1/tasks/batch`` of ``BATCH_SIZE`` tasks per call, one call in flight per node."""

    path = "batch"
    note = f"httpx; POST /api/v1/tasks/batch, {BATCH_SIZE} tasks per call, one call in flight per node"

    def __init__(self, system: ShoalSystem) -> None:
        super().__init__(system)
        self.workloads = frozenset({"throughput", "drain"})
        self.skipped: dict[str, str] = {}
        self.has_batch = True

    async def connect(self) -> None:
        await super().connect()
        assert self.http is not None
        r = await self.http.post("/api/v1/tasks/batch", content=b'{"tasks": []}')
        self.has_batch = r.status_code not in (404, 405)  # an empty batch is refused (4xx) where it exists
        if not self.has_batch:
            self.workloads = frozenset({"drain"})  # the drain's backlog is queued untimed, by single POSTs
            self.note = "no batch API: the drain's backlog queued by single POSTs, 64 in flight (untimed)"
            self.skipped = {"throughput": "POST /api/v1/tasks/batch is not in this shoal yet"}

    async def submit_many(self, n: int, concurrency: int) -> Batch:
        if not self.has_batch:
            return await self.submit_singles(n, concurrency)
        batch = Batch(accepted=0, baseline=self._baseline)
        head, tail = b'{"tasks": [', b"]}"
        left = n

        async def lane(http: httpx.AsyncClient) -> None:
            nonlocal left
            while left > 0:
                size = min(BATCH_SIZE, left)
                left -= size
                r = await http.post("/api/v1/tasks/batch", content=head + b",".join([self.body] * size) + tail)
                if r.status_code == 201:
                    batch.accepted += len(orjson.loads(r.content)["tasks"])
                else:
                    batch.failed += size
                    batch.errors.append(f"{r.status_code} {r.text[:200]}")

        await asyncio.gather(*(lane(http) for http in self.lanes[: len(self.system.http_urls)]))
        return batch

    async def roundtrip(self, timeout: float) -> None:
        raise NotImplementedError("the batch path takes no part in the latency run")


class ShoalRest(RestLanes):
    """Single ``POST /api/v1/tasks`` over 64 lanes (the scale and isolation benchmarks), and the REST latency
    round trip: ``POST /api/v1/tasks?wait=10&result=true``, which answers with the task and its result."""

    path = "REST"
    note = "httpx, HTTP/1.1 keep-alive; latency: POST /api/v1/tasks?wait=10&result=true (task and result)"

    def __init__(self, system: ShoalSystem) -> None:
        super().__init__(system)
        self.workloads = frozenset({"latency"})
        self.skipped: dict[str, str] = {}

    async def connect(self) -> None:
        await super().connect()
        assert self.http is not None
        r = await self.http.post("/api/v1/tasks", params={"wait": 10, "result": "true"}, content=self.body)
        if r.status_code != 201 or "result" not in orjson.loads(r.content):
            self.workloads = frozenset()
            self.skipped = {"latency": "POST /api/v1/tasks?result=true (task and result) is not in this shoal yet"}

    async def submit_many(self, n: int, concurrency: int) -> Batch:
        return await self.submit_singles(n, concurrency)

    async def roundtrip(self, timeout: float) -> None:
        assert self.http is not None
        r = await self.http.post("/api/v1/tasks", params={"wait": timeout, "result": "true"}, content=self.body)
        task = orjson.loads(r.content) if r.status_code == 201 else {}
        if (task.get("result") or {}).get("code") != "x":
            raise RuntimeError(f"shoal REST: {r.status_code} {r.text[:300]}")


class ShoalSequential(RestLanes):
    """shoal's own client, ``shoal.client.AsyncClient.submit``, one call at a time on the first node."""

    path = "sequential"
    workloads = frozenset({"throughput"})
    skipped: dict[str, str] = {}
    note = "shoal.client.AsyncClient.submit, one call at a time (as the peers' clients send)"

    def __init__(self, system: ShoalSystem) -> None:
        super().__init__(system)
        self.client: Any = None

    async def connect(self) -> None:
        from shoal.client import AsyncClient

        await super().connect()
        self.client = AsyncClient(self.system.http_url, self.system.token)

    async def submit_many(self, n: int, concurrency: int) -> Batch:
        batch = Batch(accepted=0, baseline=self._baseline)
        for _ in range(n):
            await self.client.submit(ECHO["type"], ECHO["target"], name=ECHO["name"])
            batch.accepted += 1
        return batch

    async def roundtrip(self, timeout: float) -> None:
        raise NotImplementedError("the sequential path takes no part in the latency run")

    async def close(self) -> None:
        if self.client is not None:
            await self.client.aclose()
            self.client = None
        await super().close()


class ShoalProducer(RestLanes):
    """``shoal.producer.Producer`` on the run's Redis, one submit at a time, as the peers' clients send."""

    path = "producer"
    workloads = frozenset({"throughput", "latency"})
    skipped: dict[str, str] = {}
    note = "shoal.producer.Producer.submit straight to the store, one call at a time; latency: Producer.run"

    def __init__(self, system: ShoalSystem) -> None:
        super().__init__(system)
        self.producer: Any = None
        self.task_type = ECHO["type"]

    def use_type(self, task_type: str) -> None:
        super().use_type(task_type)
        self.task_type = task_type

    async def connect(self) -> None:
        await super().connect()
        try:
            from shoal.producer import Producer
        except ImportError:
            self.skipped = dict.fromkeys(self.workloads, "this shoal has no shoal.producer")
            return
        self.producer = await Producer.connect(self.system.redis.url)

    async def submit_many(self, n: int, concurrency: int) -> Batch:
        batch = Batch(accepted=0, baseline=self._baseline)
        for _ in range(n):
            await self.producer.submit(self.task_type, ECHO["target"], name=ECHO["name"])
            batch.accepted += 1
        return batch

    async def roundtrip(self, timeout: float) -> None:
        task, result = await self.producer.run(self.task_type, ECHO["target"], name=ECHO["name"], timeout_s=timeout)
        if result is None or result.code != ECHO["target"]:
            raise RuntimeError(f"shoal producer: {task.state.name} {task.error}")

    async def close(self) -> None:
        if self.producer is not None:
            await self.producer.aclose()
            self.producer = None
        await super().close()
