"""What the peers (Celery, Dramatiq, taskiq) share: a redis-server of their own and one worker command.

Each peer runs on a ``RedisServer`` (the binary and durability settings every system of the run gets) as
broker and result backend, and one worker command of two processes, started with ``bench.procs.REAPER``
in its own process group. ``hold`` freezes that whole group (SIGSTOP: the processes keep their connections
and state but run nothing) and ``release`` lets it go on (SIGCONT); the client, which talks to Redis
directly, queues tasks meanwhile. A subclass names its worker command and its client.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any, Protocol

from bench.adapters.base import Client, Settings
from bench.procs import REAPER
from bench.redis_server import RedisServer

ROOT = Path(__file__).resolve().parents[2]
#: Worker processes of every system: two, for the machine's two cores.
PROCESSES = 2


class PeerClient(Client, Protocol):
    """A peer's client also connects to the system's Redis once it runs."""

    async def connect(self, url: str) -> None: ...


class PeerSystem:
    """A Redis plus one worker command; subclasses set ``name`` and ``client`` and give ``worker_argv``."""

    name = "peer"
    client: PeerClient

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.redis = RedisServer(settings.workdir / "redis")
        self.worker: subprocess.Popen[bytes] | None = None

    def worker_argv(self) -> list[str]:
        raise NotImplementedError

    def worker_env(self) -> dict[str, str]:
        """The worker imports its app from ``bench.adapters`` and finds its Redis in ``BENCH_REDIS_URL``."""
        return dict(os.environ, BENCH_REDIS_URL=self.redis.url, PYTHONPATH=str(ROOT))

    async def start(self) -> None:
        self.redis.start()
        await self.client.connect(self.redis.url)
        self.worker = REAPER.spawn(
            f"{self.name} worker", self.worker_argv(), log=self.log, env=self.worker_env(), cwd=ROOT, grace=20.0
        )
        await self.wait_ready(timeout=60.0)

    async def wait_ready(self, timeout: float) -> None:
        """Ready means a task went through: the worker consumes and the result backend answers."""
        deadline = time.monotonic() + timeout
        while True:
            if self.worker is None or self.worker.poll() is not None:
                code = None if self.worker is None else self.worker.returncode
                raise RuntimeError(f"{self.name} worker exited with code {code}; see {self.log}")
            try:
                await self.client.roundtrip(2.0)
                return
            except Exception:  # each library times out in its own way; all mean "not yet"
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.1)

    @property
    def log(self) -> Path:
        return self.settings.workdir / f"{self.name}-worker.log"

    async def hold(self) -> None:
        assert self.worker is not None, "start() first"
        os.killpg(self.worker.pid, signal.SIGSTOP)  # the worker leads its own group (REAPER.spawn)

    async def release(self) -> None:
        assert self.worker is not None, "start() first"
        os.killpg(self.worker.pid, signal.SIGCONT)

    async def stop(self) -> None:
        await self.client.close()
        if self.worker is not None:
            REAPER.stop(self.worker)
            self.worker = None
        self.redis.stop()

    def clients(self) -> list[Any]:
        return [self.client]

    def processes(self) -> dict[str, int]:
        found = {"redis": self.redis.proc.pid} if self.redis.proc else {}
        return found | ({"workers": self.worker.pid} if self.worker else {})

    def store_address(self) -> tuple[str, int] | None:
        return self.redis.address

    def describe(self) -> dict[str, Any]:
        return {"worker": " ".join(self.worker_argv()[1:]), **self.redis.describe()}
