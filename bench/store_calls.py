"""What one store call costs the calling process in CPU: ``.venv/bin/python bench/store_calls.py [--calls N]``.

A script, not a test (figures depend on the machine; nothing asserts on them). On a fresh redis-server, one
coroutine on uvloop sends ``--calls`` EVALSHA of a one-line script in a row, through each client below, and
the figure is the process's CPU time per call (best of ``--rounds``), which the store's own work hardly
touches: what a node pays in Python for each of its three or so store calls per task.

- ``shoal``: ``shoal.store.redis.connect``, as a node connects (shoal.store.deadlines keeps the time limits);
- ``redis-py, blocking pool``: redis-py's BlockingConnectionPool with a socket timeout, as shoal connected
  before it kept the limits itself;
- ``redis-py, no limits``: redis-py's plain pool with no socket timeout, a floor (no call is bounded).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make ``bench`` importable from the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.redis_server import RedisServer
from bench.report import write_json

DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "store_calls.json"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bench/store_calls.py", description=__doc__.splitlines()[0])
    p.add_argument("--calls", type=int, default=20_000, help="store calls per round")
    p.add_argument("--rounds", type=int, default=3, help="rounds per client; the best is kept")
    p.add_argument("--json", type=Path, default=DEFAULT_JSON, help="figures written here")
    return p.parse_args(argv)


def clients(url: str) -> dict[str, Callable[[], Any]]:
    from redis.asyncio import BlockingConnectionPool, ConnectionPool

    from shoal.store.client import StoreClient
    from shoal.store.redis import SOCKET_TIMEOUT, connect

    options: dict[str, Any] = {"health_check_interval": 30, "socket_connect_timeout": 5, "socket_keepalive": True}
    return {
        "shoal": lambda: connect(url, name="bench"),
        "redis-py, blocking pool": lambda: StoreClient.from_pool(
            BlockingConnectionPool.from_url(url, timeout=SOCKET_TIMEOUT, socket_timeout=SOCKET_TIMEOUT, **options)
        ),
        "redis-py, no limits": lambda: StoreClient.from_pool(ConnectionPool.from_url(url, **options)),
    }


async def cpu_per_call(client: Any, calls: int, rounds: int) -> float:
    """Microseconds of this process's CPU per EVALSHA, the best of ``rounds``."""
    sha = await client.script_load("return 1")
    for _ in range(min(calls, 1000)):  # connections open, caches warm
        await client.evalsha(sha, 0, "shoal")
    best = float("inf")
    for _ in range(rounds):
        started = time.process_time()
        for _ in range(calls):
            await client.evalsha(sha, 0, "shoal")
        best = min(best, (time.process_time() - started) / calls * 1e6)
    return best


async def measure(url: str, calls: int, rounds: int) -> dict[str, float]:
    figures = {}
    for name, make in clients(url).items():
        client = make()
        try:
            figures[name] = await cpu_per_call(client, calls, rounds)
        finally:
            await client.aclose()
        print(f"{name:26s} {figures[name]:7.1f} µs of CPU per call", flush=True)
    return figures


def main(argv: list[str] | None = None) -> int:
    import uvloop

    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="shoal-bench-calls-") as workdir:
        server = RedisServer(Path(workdir) / "redis")
        server.start()
        try:
            figures = uvloop.run(measure(server.url, args.calls, args.rounds))
            described = server.describe()
        finally:
            server.stop()
    write_json(args.json, {"calls": args.calls, "rounds": args.rounds, "redis": described, "us_per_call": figures})
    print(f"figures written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
