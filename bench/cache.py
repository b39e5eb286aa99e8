"""Cache and proxy benchmark: ``.venv/bin/python bench/cache.py [--nodes 1] [--ops 5000] [--quick]``.

Figures (written to ``bench/results/cache.json``), each beside a baseline taken in the same run:

- cache SET and GET operations per second from one client process, through gRPC (``shoal.v1.Cache``) and
  through REST (``/api/v1/cache/{key}``), at 1 and at ``--concurrency`` operations in flight, beside
  redis-py GET/SET against the Redis the nodes use (the same machine, the same client process);
- proxy latency (p50/p99 of sequential GETs over one keep-alive connection): a cache hit and a miss through
  a node's proxy, beside a direct request to the same local origin (``bench/origin.py``, another process).

The nodes (``bench.nodes``) run with default settings on their own redis-server; with ``--nodes`` above 1
each key lives on ``cache_replicas`` (2) of them, so a SET writes twice and a GET may cross to another node.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make ``bench`` importable from the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import grpc
import httpx
import redis.asyncio as aioredis

from bench.machine import OtherLoad, machine_info
from bench.nodes import NodeSet
from bench.procs import REAPER, free_port, port_open, wait_until
from bench.report import write_json
from bench.run import run_bench
from bench.workloads import percentile
from shoal.rpc._gen.shoal.v1 import cache_pb2, cache_pb2_grpc

DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "cache.json"
Op = Callable[[int], Awaitable[None]]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, default=1, help="shoal nodes (default 1)")
    parser.add_argument("--ops", type=int, default=5000, help="operations per cache figure")
    parser.add_argument("--value-bytes", type=int, default=1024)
    parser.add_argument("--concurrency", type=int, default=32, help="operations in flight for the parallel figures")
    parser.add_argument("--requests", type=int, default=500, help="sequential requests per proxy figure")
    parser.add_argument("--page-bytes", type=int, default=10 * 1024, help="size of the origin's pages")
    parser.add_argument("--quick", action="store_true", help="1,000 ops and 100 requests: a smoke run")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON)
    parser.add_argument("--workdir", type=Path, default=None, help="keep data and logs here")
    args = parser.parse_args(argv)
    if args.quick:
        args.ops, args.requests = 1000, 100
    return args


async def rate(op: Op, ops: int, concurrency: int) -> dict[str, float]:
    """``ops`` calls of ``op(i)`` with ``concurrency`` lanes; operations per second and client CPU."""
    counter = iter(range(ops))

    async def lane() -> None:
        for i in counter:
            await op(i)

    cpu0, t0 = time.process_time(), time.perf_counter()
    await asyncio.gather(*(lane() for _ in range(concurrency)))
    elapsed = time.perf_counter() - t0
    return {"per_s": ops / elapsed, "client_cpu_pct": 100.0 * (time.process_time() - cpu0) / elapsed}


class Targets:
    """The three ways to the same kind of store: redis-py, shoal over gRPC, shoal over REST (one client per lane)."""

    def __init__(self, nodes: NodeSet, value: bytes, lanes: int) -> None:
        node = next(iter(nodes.nodes.values()))
        self.value = value
        self.redis = aioredis.Redis.from_url(nodes.redis_server.url, max_connections=lanes + 4)
        self.channel = grpc.aio.insecure_channel(node.grpc_addr)
        self.stub = cache_pb2_grpc.CacheStub(self.channel)
        self.metadata = (("authorization", f"Bearer {nodes.token}"),)
        headers = {"Authorization": f"Bearer {nodes.token}"}
        self.rest = [
            httpx.AsyncClient(base_url=node.http_url, headers=headers, trust_env=False, timeout=10,
                              limits=httpx.Limits(max_connections=1))
            for _ in range(lanes)
        ]  # fmt: skip
        self._next = 0

    def _client(self) -> httpx.AsyncClient:
        self._next = (self._next + 1) % len(self.rest)
        return self.rest[self._next]

    async def redis_set(self, i: int) -> None:
        await self.redis.set(f"bench:{i}", self.value)

    async def redis_get(self, i: int) -> None:
        assert await self.redis.get(f"bench:{i}") is not None

    async def grpc_set(self, i: int) -> None:
        await self.stub.Set(cache_pb2.CacheWrite(key=f"bench:{i}", value=self.value), metadata=self.metadata)

    async def grpc_get(self, i: int) -> None:
        entry = await self.stub.Get(cache_pb2.CacheKey(key=f"bench:{i}"), metadata=self.metadata)
        assert len(entry.value) == len(self.value)

    async def rest_set(self, i: int) -> None:
        (await self._client().put(f"/api/v1/cache/rest:{i}", content=self.value)).raise_for_status()

    async def rest_get(self, i: int) -> None:
        response = await self._client().get(f"/api/v1/cache/rest:{i}")
        response.raise_for_status()
        assert len(response.content) == len(self.value)

    async def close(self) -> None:
        await self.redis.aclose()
        await self.channel.close(None)
        await asyncio.gather(*(c.aclose() for c in self.rest))


async def cache_figures(nodes: NodeSet, args: argparse.Namespace) -> dict[str, Any]:
    targets = Targets(nodes, b"v" * args.value_bytes, args.concurrency)
    figures: dict[str, Any] = {}
    try:
        for concurrency in (1, args.concurrency):
            for way in ("redis", "grpc", "rest"):
                for verb in ("set", "get"):  # SET first: the GETs then find every key
                    op = getattr(targets, f"{way}_{verb}")
                    await rate(op, min(200, args.ops), concurrency)  # warm-up: connections, code paths
                    load = OtherLoad()
                    load.start()
                    fig = await rate(op, args.ops, concurrency)
                    fig["other_cpu_pct"] = load.stop()
                    figures[f"{way}_{verb}_c{concurrency}"] = fig
    finally:
        await targets.close()
    return figures


def latencies(client: httpx.Client, urls: list[str], expect: str | None) -> dict[str, float]:
    """p50/p99 in ms of sequential GETs; ``expect`` is the X-Cache every answer must carry."""
    spent = []
    for url in urls:
        t0 = time.perf_counter()
        response = client.get(url)
        spent.append((time.perf_counter() - t0) * 1000)
        response.raise_for_status()
        if expect is not None and response.headers.get("x-cache") != expect:
            raise RuntimeError(f"{url}: X-Cache {response.headers.get('x-cache')!r}, expected {expect}")
    spent.sort()
    return {"p50_ms": percentile(spent, 0.5), "p99_ms": percentile(spent, 0.99), "requests": len(spent)}


def proxy_figures(nodes: NodeSet, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    port = free_port()
    origin_log = workdir / "origin.log"
    script = Path(__file__).resolve().parent / "origin.py"
    proc = REAPER.spawn("origin", [sys.executable, str(script), str(port), "--size", str(args.page_bytes)],
                        log=origin_log, grace=2.0)  # fmt: skip
    wait_until(lambda: port_open(port), 10, "origin", proc)
    node = next(iter(nodes.nodes.values()))
    proxy_port = int(node.http_url.rsplit(":", 1)[1]) + 2  # bench.nodes puts the proxy there
    origin = f"http://127.0.0.1:{port}"
    proxy = f"http://bench:{nodes.token}@127.0.0.1:{proxy_port}"
    n = args.requests
    figures: dict[str, Any] = {}
    with httpx.Client(trust_env=False, timeout=10) as direct, httpx.Client(proxy=proxy, timeout=10) as through:
        latencies(direct, [f"{origin}/page?n=warm{i}" for i in range(20)], None)
        latencies(through, [f"{origin}/page?n=warm{i}" for i in range(20)], None)
        figures["direct"] = latencies(direct, [f"{origin}/page?n={i}" for i in range(n)], None)
        figures["miss"] = latencies(through, [f"{origin}/page?n=miss{i}" for i in range(n)], "MISS")
        figures["hit"] = latencies(through, [f"{origin}/page?n=miss{i % 50}" for i in range(n)], "HIT")
        figures["no_store"] = latencies(through, [f"{origin}/private?n={i}" for i in range(n)], "MISS")
    REAPER.stop(proc)
    return figures


def report(result: dict[str, Any]) -> str:
    c, p = result["cache"], result["proxy"]
    par = result["args"]["concurrency"]
    lines = [f"cache operations/s, one client process, {result['args']['value_bytes']} B values, "
             f"{result['args']['nodes']} node(s)",
             f"{'':24}{'redis-py':>10}{'gRPC':>10}{'REST':>10}{'gRPC/redis':>12}{'REST/redis':>12}"]  # fmt: skip
    for concurrency in (1, par):
        for verb in ("set", "get"):
            r, g, h = (c[f"{w}_{verb}_c{concurrency}"]["per_s"] for w in ("redis", "grpc", "rest"))
            label = f"{verb.upper()} ({concurrency} in flight)"
            lines.append(f"{label:24}{r:>10.0f}{g:>10.0f}{h:>10.0f}{g / r:>11.2f}x{h / r:>11.2f}x")
    lines.append(f"proxy latency, sequential GETs of {result['args']['page_bytes'] // 1024} KiB pages")
    lines.append(f"{'':24}{'p50 ms':>10}{'p99 ms':>10}{'p50/direct':>12}")
    base = p["direct"]["p50_ms"]
    for name in ("direct", "hit", "miss", "no_store"):
        fig = p[name]
        lines.append(f"{name:24}{fig['p50_ms']:>10.2f}{fig['p99_ms']:>10.2f}{fig['p50_ms'] / base:>11.2f}x")
    busy = max(f["other_cpu_pct"] for f in c.values())
    if busy > 10:
        lines.append(f"note: other processes used up to {busy:.0f} % of a core meanwhile; figures are low")
    return "\n".join(lines)


async def main_async(args: argparse.Namespace, workdir: Path) -> int:
    src = Path(__file__).resolve().parents[1]
    nodes = NodeSet(workdir, src)
    try:
        await nodes.start([f"node-{i + 1}" for i in range(args.nodes)])
        if args.nodes > 1:
            await nodes.wait_agreed()
        result: dict[str, Any] = {"machine": machine_info(), "args": {k: str(v) if isinstance(v, Path) else v
                                                                       for k, v in vars(args).items()}}  # fmt: skip
        result["cache"] = await cache_figures(nodes, args)
        result["proxy"] = await asyncio.to_thread(proxy_figures, nodes, args, workdir)
    finally:
        await nodes.stop()
    print(report(result))
    write_json(args.json, result)
    print(f"figures: {args.json}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_bench(main_async, parse_args(argv), "shoal-bench-cache-")


if __name__ == "__main__":
    sys.exit(main())
