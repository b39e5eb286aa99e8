"""The workload: a few threads that submit tasks with known outcomes to random nodes through the public
REST API, kill and delete some of them, and record every answer with its time.

An answer is an acknowledgement only when the API said yes. A request refused (a 4xx, or no connection at
all) changed nothing. A request without an answer (a timeout, a 5xx while the store was down) may or may
not have taken effect: it is recorded as unknown, which promises nothing and claims nothing.
"""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path
from typing import Any

from shoal.client import Client
from shoal.client.errors import ApiUnreachable
from shoal.errors import ShoalError
from shoal.selftest.history import Ack, Op, Status
from shoal.selftest.tasks import TYPE

#: Seconds a request may take before its outcome is unknown.
REQUEST_TIMEOUT_S = 3.0
#: Pause between two requests of one thread, in seconds.
PAUSE_S = (0.05, 0.25)
#: How the next request is chosen: operation -> weight.
MIX = {"flaky": 45, "echo": 10, "sleeper": 10, "kill": 20, "delete": 15}


def _status(exc: ShoalError) -> Status:
    """What an error says about whether the request took effect."""
    if isinstance(exc, ApiUnreachable):
        return "refused" if "refused" in exc.reason else "unknown"
    http = getattr(exc, "status", None) or getattr(exc, "http_status", None) or 500
    return "refused" if 400 <= int(http) < 500 else "unknown"


class Workload:
    """``threads`` client threads over ``urls``; ``acks`` grows as they run (append is thread-safe)."""

    def __init__(self, urls: list[str], token: str, journal: Path, *, seed: int, threads: int = 4) -> None:
        self.urls = urls
        self.journal = journal
        self.clients = {url: Client(url, token, timeout_s=REQUEST_TIMEOUT_S) for url in urls}
        self.acks: list[Ack] = []
        self.seed = seed
        self.stopping = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(i,), name=f"selftest-workload-{i}", daemon=True)
                         for i in range(threads)]  # fmt: skip
        self._lock = threading.Lock()
        self._live: list[str] = []  # acknowledged tasks not yet killed or deleted, newest last

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self, timeout: float = REQUEST_TIMEOUT_S * 3) -> None:
        self.stopping.set()
        for thread in self._threads:
            thread.join(timeout)
        for client in self.clients.values():
            client.close()

    def _run(self, index: int) -> None:
        rng = random.Random(self.seed * 1000 + index)
        ops, weights = zip(*MIX.items(), strict=True)
        while not self.stopping.is_set():
            op = rng.choices(ops, weights)[0]
            url = rng.choice(self.urls)
            if op in ("kill", "delete"):
                self._act(rng, op, url)
            else:
                self._submit(rng, op, url)
            self.stopping.wait(rng.uniform(*PAUSE_S))

    def _submit(self, rng: random.Random, kind: str, url: str) -> None:
        if kind == "echo":
            spec: dict[str, Any] = {"kind": "echo", "fail_first": 0, "max_retries": 0, "delay_s": 0}
            call: dict[str, Any] = {"type": "echo", "target": f"echo-{rng.randrange(10**9)}"}
        else:
            fail_first = rng.choice((0, 0, 0, 1, 2)) if kind == "flaky" else 0
            retries = fail_first - 1 if fail_first and rng.random() < 0.3 else fail_first
            delay = round(rng.uniform(3.0, 6.0) if kind == "sleeper" else rng.uniform(0.0, 1.0), 3)
            spec = {"kind": kind, "fail_first": fail_first, "max_retries": retries, "delay_s": delay}
            params = {"journal": str(self.journal), "delay_s": delay, "fail_first": fail_first}
            call = {"type": TYPE, "target": kind, "params": params, "max_retries": retries}
        sent = time.time()
        try:
            task = self.clients[url].submit(**call)
        except ShoalError as exc:
            self._record(Ack("submit", _status(exc), sent, time.time(), url, None, spec, str(exc)))
            return
        self._record(Ack("submit", "ok", sent, time.time(), url, task.id, spec))
        with self._lock:
            self._live.append(task.id)

    def _act(self, rng: random.Random, op: Op, url: str) -> None:
        with self._lock:
            if not self._live:
                return
            # mostly recent tasks, which are likely still waiting or running
            task_id = self._live.pop(max(0, len(self._live) - 1 - int(rng.expovariate(0.2))))
        sent = time.time()
        try:
            if op == "kill":
                self.clients[url].kill(task_id)
            else:
                self.clients[url].delete(task_id)
        except ShoalError as exc:
            self._record(Ack(op, _status(exc), sent, time.time(), url, task_id, {}, str(exc)))
            return
        self._record(Ack(op, "ok", sent, time.time(), url, task_id))

    def _record(self, ack: Ack) -> None:
        with self._lock:
            self.acks.append(ack)
