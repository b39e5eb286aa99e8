"""The selftest's own cluster: an embedded redis-server and N node processes in a fresh directory, each
process under separate control so that faults can hit one at a time (SIGKILL, SIGSTOP/SIGCONT, a store
crash and its restart on the same port and data).

Start and restart processes from the thread that made the cluster, which lives as long as the run: the
children die with that thread (PR_SET_PDEATHSIG), so none outlives a selftest that is itself killed.
"""

from __future__ import annotations

import contextlib
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
from shoal.selftest.netns import NetLab
from shoal.selftest.relay import Relay
from shoal.store.embedded import EmbeddedRedis, free_port

T = TypeVar("T")

#: The module of the selftest's task type, loaded by every node.
TASK_MODULE = "shoal.selftest.tasks"


def wait_until(predicate: Callable[[], T], timeout: float, what: str, interval: float = 0.05) -> T:
    """Poll ``predicate`` until it returns something truthy; TimeoutError naming ``what`` otherwise."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while True:
        try:
            value = predicate()
            if value:
                return value
        except Exception as exc:  # a process starting, a store restarting
            last = exc
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"{what} did not happen within {timeout:g}s" + (f" (last error: {last})" if last else "")
            )
        time.sleep(interval)


class SelftestCluster:
    """One store and ``nodes`` node processes under ``data_dir``; every method is called from one thread.

    With a ``lab``, node K runs in the lab's host K on its own address (default ports), and reaches the
    store through a relay on the selftest's lab address; ``partition`` then cuts a node off."""

    def __init__(
        self, data_dir: Path, *, nodes: int, node_args: list[str] | None = None, lab: NetLab | None = None
    ) -> None:
        self.data_dir = data_dir
        self.lab = lab
        self.relay: Relay | None = None
        self.token = load_or_create_token(data_dir)
        self.store = EmbeddedRedis(data_dir, fsync="everysec")
        self.nodes: list[NodeProcess] = []
        self.stopped: set[str] = set()  # nodes held by SIGSTOP
        self._count = nodes
        self._node_args = node_args or []

    def start(self, timeout: float = 60.0) -> None:
        self.store.start()
        (self.data_dir / "logs").mkdir(exist_ok=True)
        store_url = self.store.url
        if self.lab is not None:
            self.lab.up()
            self.relay = Relay(self.lab.self_ip, self.store.port).start()
            store_url = store_url.replace(f"@127.0.0.1:{self.store.port}/", f"@{self.lab.self_ip}:{self.relay.port}/")
        # Only the store's URL (by environment, so its password is in no process list): none of the
        # caller's SHOAL_* settings may change how the selftest's nodes behave.
        env = {k: v for k, v in os.environ.items() if not k.startswith("SHOAL_")} | {"SHOAL_REDIS": store_url}
        for i in range(self._count):
            name = f"node-{i + 1}"
            where: list[str] = []
            if self.lab is not None:
                ip = self.lab.ip(i + 1)
                http, grpc, proxy = f"{ip}:8080", f"{ip}:6666", f"{ip}:3128"
                where = ["--advertise-host", ip]
            else:
                http, grpc, proxy = (f"127.0.0.1:{free_port()}" for _ in range(3))
            inside = self.lab.prefix(i + 1) if self.lab is not None else []
            args = [*inside, sys.executable, "-m", "shoal", "node", "--name", name, "--data-dir", str(self.data_dir),
                    "--http", http, "--grpc", grpc, "--proxy", proxy, *where, "--task-modules", TASK_MODULE,
                    *self._node_args]  # fmt: skip
            proc = NodeProcess(name=name, http=http, grpc=grpc, proxy=proxy, args=args, env=env,
                               log_path=self.data_dir / "logs" / f"{name}.log", tied=True)  # fmt: skip
            proc.start()
            self.nodes.append(proc)
        self.wait_ready(timeout)

    @property
    def urls(self) -> list[str]:
        return [p.http_url for p in self.nodes]

    def node(self, name: str) -> NodeProcess:
        return next(p for p in self.nodes if p.name == name)

    def wait_ready(self, timeout: float) -> None:
        """Every node alive and answering /readyz (store reachable, a master known)."""
        with httpx.Client(timeout=1.0, trust_env=False) as client:
            for proc in self.nodes:
                wait_until(lambda p=proc: self._ready(client, p), timeout, f"{proc.name} to be ready")  # type: ignore[misc]

    def _ready(self, client: httpx.Client, proc: NodeProcess) -> bool:
        if not proc.alive():
            raise RuntimeError(
                f"{proc.name} exited with {proc.process and proc.process.returncode}; see {proc.log_path}"
            )
        return client.get(f"{proc.http_url}/readyz").status_code == 200

    def master(self) -> str | None:
        """The master's name as a running node tells it; None when none answers or none is master."""
        headers = {"Authorization": f"Bearer {self.token}"}
        with httpx.Client(timeout=1.0, trust_env=False, headers=headers) as client:
            for proc in self.nodes:
                if not proc.alive() or proc.name in self.stopped:
                    continue
                with contextlib.suppress(httpx.HTTPError, ValueError):
                    master = client.get(f"{proc.http_url}/api/v1/cluster").raise_for_status().json().get("master")
                    return str(master) if master else None
        return None

    # -- faults ----------------------------------------------------------------------------------------

    def kill(self, name: str) -> int | None:
        """SIGKILL a node; its pid."""
        proc = self.node(name)
        pid = proc.pid
        self.cont(name)  # a stopped process dies of SIGKILL too, but say so in one place
        proc.signal(signal.SIGKILL)
        proc.wait(10)
        return pid

    def restart(self, name: str) -> int | None:
        proc = self.node(name)
        if not proc.alive():
            proc.start()
        return proc.pid

    def stop(self, name: str) -> int | None:
        proc = self.node(name)
        proc.signal(signal.SIGSTOP)
        self.stopped.add(name)
        return proc.pid

    def cont(self, name: str) -> None:
        if name in self.stopped:
            self.node(name).signal(signal.SIGCONT)
            self.stopped.discard(name)

    def partition(self, name: str) -> int | None:
        """Cut a node off from the other nodes and from the store (not from the workload); its pid."""
        assert self.lab is not None and self.relay is not None, "partitions need the namespace lab"
        self.lab.partition(int(name.rsplit("-", 1)[1]), self.relay.port)
        return self.node(name).pid

    def heal_partitions(self) -> None:
        if self.lab is not None:
            self.lab.heal()

    def crash_store(self) -> int | None:
        """SIGKILL the store: no shutdown, so whatever its append-only file had not written is lost."""
        proc = self.store.process
        if proc is None:
            return None
        proc.kill()
        proc.wait(10)
        self.store.process = None
        return proc.pid

    def restart_store(self, timeout: float = 30.0) -> int | None:
        """Start the store again on the same port and data (it replays its append-only file)."""
        if self.store.process is None:
            self.store = EmbeddedRedis(self.data_dir, port=self.store.port, fsync="everysec")
            self.store.start(timeout)
        return self.store.process.pid if self.store.process else None

    def heal(self, timeout: float) -> None:
        """Undo every fault still in force: the store up, every node continued or started, all ready."""
        self.heal_partitions()
        self.restart_store()
        for proc in self.nodes:
            self.cont(proc.name)
            self.restart(proc.name)
        self.wait_ready(timeout)

    def close(self, grace: float = 20.0) -> None:
        """SIGTERM the nodes, SIGKILL what remains after ``grace`` seconds, then stop the store."""
        for proc in self.nodes:
            self.cont(proc.name)
            proc.signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        for proc in self.nodes:
            if proc.wait(max(0.1, deadline - time.monotonic())) is None:
                proc.signal(signal.SIGKILL)
                proc.wait(5)
        self.store.stop()
        if self.relay is not None:
            self.relay.close()
        if self.lab is not None:
            self.lab.down()
