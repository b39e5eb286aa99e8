"""What a task may cost at the best peer's rate, against what its transport alone costs: ``bench/floors.py``.

A script, not a test (figures depend on the machine; nothing asserts on them). Two of shoal's throughput
goals (gRPC ``CreateTask`` with 64 in flight at 1x the best peer, a producer one task at a time at 0.8x of
it) are a budget: on a machine of C cores, all processes together may spend at most C / rate of CPU per
task, and a sequential producer at most 1 / rate of wall time per submit. This prints that budget, from the
best peer of the last ``bench/run.py`` run (``--from``), beside three floors measured here:

- ``grpc``: a grpc.aio server that answers each unary call with its request (no shoal code at all), on uvloop
  in a process of its own, and a grpc.aio client on one channel with ``--in-flight`` calls at once, as
  ``bench/run.py`` sends ``CreateTask``: the CPU per call of each side.
- ``producer``: ``shoal.producer.Producer`` submitting one task at a time to a fresh store with one node
  record beating (so that the submit is accepted) and no node placing or running anything: the wall time and
  the client's and the store's CPU per submit. What the producer row could reach if running the tasks cost
  nothing.
- ``bulk``: what placing, starting, running and reporting a task costs shoal's nodes and store when tasks
  come 1,000 at a time (the batch row of the same run): the least the cluster spends per task, however they
  were submitted.

The budget is only as good as the run it comes from: run this right after ``bench/run.py``, in the same quiet
spell (the machine's speed drifts by a tenth or more between sittings).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make ``bench`` importable from the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.machine import cpu_ticks, ticks_to_s, usable_cores
from bench.procs import free_port
from bench.redis_server import RedisServer
from bench.report import best_peer, figure, write_json

DEFAULT_FROM = Path(__file__).resolve().parent / "results" / "latest.json"
DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "floors.json"
#: The request and reply of an echo call: about the size of a ``CreateTask`` for an echo task.
ECHO_BYTES = 200


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bench/floors.py", description=__doc__.splitlines()[0])
    p.add_argument("--from", dest="source", type=Path, default=DEFAULT_FROM, help="a bench/run.py JSON")
    p.add_argument("--calls", type=int, default=20_000, help="echo calls for the gRPC floor")
    p.add_argument("--in-flight", type=int, default=64, help="echo calls in flight at once")
    p.add_argument("--submits", type=int, default=10_000, help="submits for the producer floor")
    p.add_argument("--json", type=Path, default=DEFAULT_JSON, help="figures written here")
    return p.parse_args(argv)


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of process ``pid`` so far (all its threads)."""
    ticks = cpu_ticks(pid)
    if ticks is None:
        raise RuntimeError(f"process {pid} is gone")
    return ticks_to_s(ticks[1])


def _serve_echo(port: int, ready: Any) -> None:
    """The gRPC floor's server: every unary call of ``/Echo/Echo`` answered with its own request bytes."""
    import grpc
    import uvloop

    async def serve() -> None:
        async def echo(request: bytes, context: Any) -> bytes:
            return request

        same = bytes  # no (de)serialising: the request's bytes are the reply's
        handler = grpc.unary_unary_rpc_method_handler(echo, same, same)
        server = grpc.aio.server()
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("Echo", {"Echo": handler}),))
        server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        ready.set()
        await server.wait_for_termination()

    uvloop.run(serve())


async def grpc_floor(calls: int, in_flight: int) -> dict[str, float]:
    """CPU per unary call of a bare grpc.aio server and of this process as its client."""
    import grpc

    port = free_port()
    spawn = multiprocessing.get_context("spawn")  # no forked copy of this process's grpc state
    ready = spawn.Event()
    server = spawn.Process(target=_serve_echo, args=(port, ready), daemon=True)
    server.start()
    try:
        if not ready.wait(30):
            raise RuntimeError("the echo server did not start within 30 s")
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            call = channel.unary_unary("/Echo/Echo", request_serializer=bytes, response_deserializer=bytes)
            request = b"x" * ECHO_BYTES
            for _ in range(1000):  # connection open, caches warm
                await call(request)
            left = calls

            async def lane() -> None:
                nonlocal left
                while left > 0:
                    left -= 1
                    await call(request)

            assert server.pid is not None
            server_cpu, client_cpu, started = cpu_seconds(server.pid), time.process_time(), time.perf_counter()
            await asyncio.gather(*(lane() for _ in range(in_flight)))
            elapsed = time.perf_counter() - started
            return {
                "calls_per_s": calls / elapsed,
                "server_us_per_call": (cpu_seconds(server.pid) - server_cpu) / calls * 1e6,
                "client_us_per_call": (time.process_time() - client_cpu) / calls * 1e6,
            }
    finally:
        server.terminate()
        server.join(10)


async def producer_floor(url: str, redis_pid: int, submits: int) -> dict[str, float]:
    """Wall time and CPU (client, store) per ``Producer.submit``, one at a time, with no node at work."""
    from shoal.config import NodeConfig
    from shoal.keys import Keys
    from shoal.models import NodeRecord
    from shoal.producer import Producer
    from shoal.store.nodes import NodeRegistry
    from shoal.store.redis import connect, database_of

    beats = connect(url, name="bench-floors")
    registry = NodeRegistry(beats, Keys(NodeConfig.cluster, db=database_of(beats)))
    record = NodeRecord(
        name="floor", host="127.0.0.1", http="127.0.0.1:1", grpc="127.0.0.1:2", slots=8, running=0,
        pid=os.getpid(), types=("echo",), run_tasks=True, last_beat=0.0, incarnation=1,
    )  # fmt: skip

    async def beat() -> None:
        while True:
            await registry.beat(record)
            await asyncio.sleep(1.0)

    beating = asyncio.create_task(beat())
    try:
        async with await Producer.connect(url) as producer:
            for _ in range(500):  # the node's beat heard, connections open, scripts loaded
                await producer.submit("echo", "x", name="echo")
            store_cpu, client_cpu, started = cpu_seconds(redis_pid), time.process_time(), time.perf_counter()
            for _ in range(submits):
                await producer.submit("echo", "x", name="echo")
            elapsed = time.perf_counter() - started
            return {
                "submits_per_s": submits / elapsed,
                "wall_us_per_submit": elapsed / submits * 1e6,
                "client_us_per_submit": (time.process_time() - client_cpu) / submits * 1e6,
                "store_us_per_submit": (cpu_seconds(redis_pid) - store_cpu) / submits * 1e6,
            }
    finally:
        beating.cancel()
        await beats.aclose()


def budget(run: dict[str, Any], cores: int) -> dict[str, Any]:
    """The best peer's end-to-end rate in ``run``, and what a task may cost at 1x and 0.8x of it."""
    results = run["results"]
    peers = tuple(name for name in results if name != "shoal")
    rate = best_peer(results, peers, "throughput", "per_s", higher=True)
    if rate is None:
        raise ValueError("the run has no peer's end-to-end throughput")
    best = next(p for p in peers if (figure(results, (p, None), "throughput", "per_s") or {}).get("per_s") == rate)
    batch = figure(results, ("shoal", "batch"), "throughput", "per_s") if "shoal" in results else None
    by_process = (batch or {}).get("cpu_ms_per_task_by_process", {})
    return {
        "peer": best,
        "peer_per_s": rate,
        "cpu_us_per_task_at_1x": cores / rate * 1e6,
        "cpu_us_per_task_at_0.8x": cores / (0.8 * rate) * 1e6,
        "wall_us_per_submit_at_0.8x": 1 / (0.8 * rate) * 1e6,
        "bulk_us_per_task": {k: v * 1000 for k, v in by_process.items() if k in ("nodes", "redis")},
        "run_at": run.get("generated_at", "?"),
    }


def report(spend: dict[str, Any], grpc: dict[str, float], producer: dict[str, float]) -> None:
    bulk = sum(spend["bulk_us_per_task"].values())
    print(f"best peer in {spend['run_at']}: {spend['peer']}, {spend['peer_per_s']:,.0f} tasks/s end to end")
    print(
        f"gRPC, 64 in flight, at 1x: {spend['cpu_us_per_task_at_1x']:.0f} µs of CPU per task in all; a bare "
        f"grpc.aio call costs {grpc['server_us_per_call']:.0f} (server) + {grpc['client_us_per_call']:.0f} "
        f"(client), shoal's nodes and store {bulk:.0f} per task in bulk: "
        f"{grpc['server_us_per_call'] + grpc['client_us_per_call'] + bulk:.0f} before any CreateTask handling"
    )
    print(
        f"producer at 0.8x: {spend['wall_us_per_submit_at_0.8x']:.0f} µs per submit, "
        f"{spend['cpu_us_per_task_at_0.8x']:.0f} µs of CPU per task in all; a submit alone takes "
        f"{producer['wall_us_per_submit']:.0f} µs ({producer['client_us_per_submit']:.0f} client CPU, "
        f"{producer['store_us_per_submit']:.0f} store CPU) with no node at work "
        f"({producer['submits_per_s']:,.0f} submits/s)"
    )


def main(argv: list[str] | None = None) -> int:
    import uvloop

    args = parse_args(argv)
    try:
        spend = budget(json.loads(args.source.read_text()), usable_cores())
    except (OSError, ValueError, KeyError) as exc:
        print(f"bench/floors.py: no usable bench/run.py figures in {args.source}: {exc}", file=sys.stderr)
        return 2
    grpc = uvloop.run(grpc_floor(args.calls, args.in_flight))
    with tempfile.TemporaryDirectory(prefix="shoal-bench-floors-") as workdir:
        server = RedisServer(Path(workdir) / "redis")
        server.start()
        assert server.proc is not None
        try:
            producer = uvloop.run(producer_floor(server.url, server.proc.pid, args.submits))
            described = server.describe()
        finally:
            server.stop()
    report(spend, grpc, producer)
    write_json(args.json, {"budget": spend, "grpc": grpc, "producer": producer, "redis": described})
    print(f"figures written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
