"""Helpers for tests and benchmarks that run real shoal processes: waiting with deadlines, free ports,
and one node process on a given Redis. Package code never imports this module."""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import httpx

from shoal.auth import load_or_create_token
from shoal.launcher import NodeProcess
from shoal.store.embedded import free_port

T = TypeVar("T")

__all__ = ["TestNode", "free_port", "multiplier", "wait_for"]


def multiplier() -> float:
    """``SHOAL_TEST_MULTIPLIER`` stretches every deadline on a slow machine."""
    return float(os.environ.get("SHOAL_TEST_MULTIPLIER", "1"))


def wait_for(
    predicate: Callable[[], T], timeout: float = 10.0, message: str = "condition", interval: float = 0.02
) -> T:
    """Poll ``predicate`` until it returns something truthy; raise TimeoutError with ``message`` otherwise."""
    deadline = time.monotonic() + timeout * multiplier()
    last_error: Exception | None = None
    while True:
        try:
            value = predicate()
            if value:
                return value
        except Exception as exc:  # e.g. a connection refused while a process starts
            last_error = exc
        if time.monotonic() > deadline:
            detail = f" (last error: {last_error!r})" if last_error else ""
            raise TimeoutError(f"timed out after {timeout * multiplier():g}s waiting for {message}{detail}")
        time.sleep(interval)


class TestNode:
    """A real ``python -m shoal node`` process on ``redis_url`` (empty: its own embedded store), with free
    loopback ports. The URL goes by environment, so its password is in no process list."""

    __test__ = False  # not a pytest test class

    def __init__(self, data_dir: Path, redis_url: str, *, name: str = "node-1", args: list[str] | None = None,
                 env: dict[str, str] | None = None) -> None:  # fmt: skip
        self.name = name
        self.data_dir = data_dir
        self.redis_url = redis_url
        self.token = load_or_create_token(data_dir)
        self.http_port, self.grpc_port, self.proxy_port = free_port(), free_port(), free_port()
        self.http_url = f"http://127.0.0.1:{self.http_port}"
        self.grpc_addr = f"127.0.0.1:{self.grpc_port}"
        base_env = {k: v for k, v in os.environ.items() if not k.startswith("SHOAL_") or k == "SHOAL_TEST_MULTIPLIER"}
        self.proc = NodeProcess(
            name=name,
            http=f"127.0.0.1:{self.http_port}",
            grpc=self.grpc_addr,
            proxy=f"127.0.0.1:{self.proxy_port}",
            args=[
                sys.executable,
                "-m",
                "shoal",
                "node",
                "--name",
                name,
                "--data-dir",
                str(data_dir),
                "--http",
                f"127.0.0.1:{self.http_port}",
                "--grpc",
                self.grpc_addr,
                "--proxy",
                f"127.0.0.1:{self.proxy_port}",
                *(args or []),
            ],  # fmt: skip
            # the store URL (its password too) by environment, not in the process list; none: its own store
            env={**base_env, **({"SHOAL_REDIS": redis_url} if redis_url else {}), **(env or {})},
            log_path=data_dir / f"{name}.log",
        )

    @property
    def pid(self) -> int | None:
        return self.proc.pid

    def start(self, ready: bool = True, timeout: float = 20.0) -> TestNode:
        self.proc.start()
        if ready:
            self.wait_ready(timeout)
        return self

    def ready(self) -> bool:
        if not self.proc.alive():
            raise RuntimeError(f"{self.name} exited with {self.proc.process and self.proc.process.returncode}:\n"
                               + self.log()[-3000:])  # fmt: skip
        return httpx.get(f"{self.http_url}/readyz", timeout=1.0, trust_env=False).status_code == 200

    def wait_ready(self, timeout: float = 20.0) -> None:
        wait_for(self.ready, timeout, f"{self.name} to be ready")

    def log(self) -> str:
        try:
            return self.proc.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM and wait: the node finishes or hands back its tasks and exits."""
        self.proc.signal(signal.SIGTERM)
        code = self.proc.wait(timeout * multiplier())
        if code is None:  # shown with the failing test's output: where the stop hung
            waited = timeout * multiplier()
            print(f"{self.name} did not stop within {waited:g}s of SIGTERM; its log ends:\n{self.log()[-4000:]}")
            self.kill()
        return code

    def kill(self) -> None:
        """SIGKILL: the node dies with whatever it holds."""
        self.proc.signal(signal.SIGKILL)
        self.proc.wait(10)

    def restart(self, timeout: float = 20.0) -> TestNode:
        if self.proc.alive():
            self.stop()
        return self.start(timeout=timeout)

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}
