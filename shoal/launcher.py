"""A whole local cluster on loopback: one embedded redis-server and N ``python -m shoal node`` processes.

Used by ``shoal up``, by the tests and by the benchmark. Node i listens on each base port + i - 1 and
shares the data directory's token. A node that exits on its own is started again (with a growing
delay), since a cluster started with one command should keep running by itself.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from shoal.auth import load_or_create_token
from shoal.store.embedded import EmbeddedRedis

log = logging.getLogger("shoal.launcher")


@dataclass
class NodeProcess:
    """One node process and where it listens."""

    name: str
    http: str
    grpc: str
    proxy: str
    args: list[str]
    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    next_start: float = 0.0

    @property
    def http_url(self) -> str:
        return f"http://{self.http}"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def start(self) -> None:
        log_file = self.log_path.open("ab")
        self.process = subprocess.Popen(
            self.args, env=self.env, stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT
        )
        log_file.close()

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def signal(self, sig: int) -> None:
        if self.alive():
            assert self.process is not None
            self.process.send_signal(sig)

    def wait(self, timeout: float) -> int | None:
        if self.process is None:
            return None
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            return None


@dataclass
class LocalCluster:
    """Embedded Redis plus ``nodes`` node processes, all on 127.0.0.1, data and logs under ``data_dir``."""

    data_dir: Path
    nodes: int = 3
    http_port: int = 8080
    grpc_port: int = 6666
    proxy_port: int = 3128
    redis_url: str | None = None
    node_args: list[str] = field(default_factory=list)
    redis: EmbeddedRedis | None = None
    processes: list[NodeProcess] = field(default_factory=list)

    @property
    def token_path(self) -> Path:
        return self.data_dir / "token"

    def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        token = load_or_create_token(self.data_dir)
        url = self.redis_url
        if url is None:
            self.redis = EmbeddedRedis(self.data_dir)
            self.redis.start()
            url = self.redis.url
        (self.data_dir / "logs").mkdir(exist_ok=True)
        env = {**os.environ, "SHOAL_TOKEN": token, "SHOAL_REDIS": url}
        for i in range(self.nodes):
            name = f"node-{i + 1}"
            proc = NodeProcess(
                name=name,
                http=f"127.0.0.1:{self.http_port + i}",
                grpc=f"127.0.0.1:{self.grpc_port + i}",
                proxy=f"127.0.0.1:{self.proxy_port + i}",
                args=[],
                env=env,
                log_path=self.data_dir / "logs" / f"{name}.log",
            )
            proc.args = [sys.executable, "-m", "shoal", "node", "--name", name, "--data-dir", str(self.data_dir),
                         "--http", proc.http, "--grpc", proc.grpc, "--proxy", proc.proxy, *self.node_args]  # fmt: skip
            proc.start()
            self.processes.append(proc)

    def wait_ready(self, timeout: float = 15.0) -> None:
        """Wait until every node answers /readyz with 200; raise TimeoutError naming the ones that don't."""
        deadline = time.monotonic() + timeout
        waiting = list(self.processes)
        with httpx.Client(timeout=1.0, trust_env=False) as client:
            while waiting:
                for proc in list(waiting):
                    if not proc.alive():
                        raise RuntimeError(f"{proc.name} exited; see {proc.log_path}")
                    try:
                        if client.get(f"{proc.http_url}/readyz").status_code == 200:
                            waiting.remove(proc)
                    except httpx.HTTPError:
                        pass
                if waiting and time.monotonic() > deadline:
                    names = ", ".join(p.name for p in waiting)
                    raise TimeoutError(f"not ready after {timeout:g}s: {names}; logs in {self.data_dir / 'logs'}")
                if waiting:
                    time.sleep(0.05)

    def supervise(self) -> None:
        """Start again any node that exited by itself, waiting longer after each of its restarts."""
        now = time.monotonic()
        for proc in self.processes:
            if proc.alive() or proc.process is None:
                continue
            if proc.next_start == 0.0:
                delay = min(30.0, 0.5 * 2**proc.restarts)
                proc.next_start = now + delay
                log.warning("%s exited with %s; starting it again in %.1fs", proc.name, proc.process.returncode, delay)
            elif now >= proc.next_start:
                proc.restarts += 1
                proc.next_start = 0.0
                proc.start()

    def stop(self, grace: float = 30.0) -> None:
        """SIGTERM every node, wait for them (SIGKILL after ``grace``), then stop Redis."""
        for proc in self.processes:
            proc.signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        for proc in self.processes:
            if proc.wait(max(0.1, deadline - time.monotonic())) is None:
                proc.signal(signal.SIGKILL)
                proc.wait(5)
        if self.redis is not None:
            self.redis.stop()
