"""A whole local cluster on loopback: one embedded redis-server and N ``python -m shoal node`` processes.

Used by ``shoal up``, by the tests and by the benchmark. Node i listens on each base port + i - 1 and
shares the data directory's token, which it reads from the file at each start (a rotation rewrites it).
A node that exits on its own after running a while is started again (with a growing delay), since a
cluster started with one command should keep running by itself; a node that keeps dying right at start
is a crash loop, which stops the cluster with the end of its log instead.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from shoal.auth import load_or_create_token
from shoal.store.embedded import EmbeddedRedis, die_with_parent

log = logging.getLogger("shoal.launcher")

#: A node that exits this many times in a row before it was ready is in a crash loop. One that dies after
#: it was ready (a task that kills its node, say) is started again: the task is quarantined after its
#: max_lost_attempts, and the node must come back for the rest of the cluster's work.
QUICK_EXITS = 3
#: Lines of a crashed node's log shown with the error.
LOG_TAIL_LINES = 20
#: How long past the nodes' own shutdown_grace the launcher waits before it SIGKILLs one.
STOP_MARGIN_S = 15.0
#: When stopping: the first "waiting for" line after this long, then one every STOP_REPORT_S.
FIRST_REPORT_S = 1.0
STOP_REPORT_S = 5.0
#: ``wait_ready``'s timeout is for up to this many nodes; each node beyond adds its share. Nodes start
#: together and share the machine's cores, so fifty take several times as long as ten: with a fixed limit,
#: ``shoal up --nodes 20`` on two cores gave up after 30 s while its nodes were still starting.
READY_NODES_PER_TIMEOUT = 10


class PortTaken(RuntimeError):
    """A port the cluster would listen on is taken (or planned twice); nothing was started."""


class CrashLoop(RuntimeError):
    """A node keeps exiting at start: restarting it again would not help."""


@dataclass
class NodeProcess:
    """One node process and where it listens.

    ``tied``: the node gets a process group of its own, so that a terminal's Ctrl-C reaches only the
    launcher (which passes on one SIGTERM, and a second one only when asked to hurry), and the kernel
    SIGTERMs it if the launcher dies; start such nodes from a thread that lives as long as the launcher.
    """

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
    tied: bool = False
    started_at: float = 0.0
    ready: bool = False  # answered /readyz as itself since its last start
    quick_exits: int = 0  # exits in a row, each before it was ready

    @property
    def http_url(self) -> str:
        return f"http://{self.http}"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def start(self) -> None:
        log_file = self.log_path.open("ab")
        self.process = subprocess.Popen(
            self.args,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=self.tied,
            preexec_fn=die_with_parent() if self.tied else None,
        )
        self.started_at = time.monotonic()
        self.ready = False
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

    def crashed(self, how: str) -> CrashLoop:
        """The error for a node that will not be restarted: its exit and the end of its log."""
        code = self.process.returncode if self.process else None
        if code is not None and code < 0:
            exited = f"was killed by {signal.Signals(-code).name}"
        else:
            exited = f"exited with code {code}"
        tail = "\n".join("    " + line for line in log_tail(self.log_path, LOG_TAIL_LINES))
        return CrashLoop(f"{self.name} {exited} {how}; the last lines of {self.log_path}:\n{tail}")


def log_tail(path: Path, lines: int) -> list[str]:
    try:
        with path.open("rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - 64 * 1024))
            text = f.read().decode(errors="replace")
    except OSError:
        return []
    return text.splitlines()[-lines:]


def ready_limit(timeout: float, nodes: int) -> float:
    """Seconds to wait for ``nodes`` nodes started at once, ``timeout`` being enough for up to
    READY_NODES_PER_TIMEOUT of them."""
    return timeout * max(1.0, nodes / READY_NODES_PER_TIMEOUT)


@dataclass
class LocalCluster:
    """Embedded Redis plus ``nodes`` node processes, all on 127.0.0.1, data and logs under ``data_dir``.

    ``shutdown_grace`` is the nodes' own (their config's): ``stop`` waits that long plus a margin before it
    kills one. ``proxy`` says whether the nodes open their proxy port. ``say`` prints progress for people.
    """

    data_dir: Path
    nodes: int = 3
    http_port: int = 8080
    grpc_port: int = 6666
    proxy_port: int = 3128
    redis_url: str | None = None
    node_args: list[str] = field(default_factory=list)
    redis: EmbeddedRedis | None = None
    processes: list[NodeProcess] = field(default_factory=list)
    shutdown_grace: float = 30.0
    proxy: bool = True
    say: Callable[[str], None] = log.warning

    @property
    def token_path(self) -> Path:
        return self.data_dir / "token"

    def planned_ports(self) -> list[tuple[int, str, str]]:
        """(port, "node-i listener", the ``shoal up`` option that sets it) for every listener of every node."""
        bases = [("http", self.http_port), ("grpc", self.grpc_port)]
        bases += [("proxy", self.proxy_port)] if self.proxy else []
        return [(base + i, f"node-{i + 1} {kind}", f"--{kind}-port") for i in range(self.nodes) for kind, base in bases]

    def check_ports(self) -> None:
        """Refuse to start (PortTaken) when a port is out of range, planned twice or already in use."""
        hint = "node i listens on each of --http-port, --grpc-port and --proxy-port + i - 1"
        seen: dict[int, str] = {}
        for port, what, option in self.planned_ports():
            if port > 65535:
                raise PortTaken(f"port {port} for {what} is above 65535: choose a lower {option} ({hint})")
            if port in seen:
                raise PortTaken(f"port {port} would serve both {seen[port]} and {what}: choose ports further "
                                f"apart ({hint})")  # fmt: skip
            seen[port] = what
        for port, what, option in self.planned_ports():
            if in_use(port):
                raise PortTaken(f"port {port} for {what} is in use by {port_holder(port)}: stop it or choose "
                                f"another {option} ({hint})")  # fmt: skip

    def start(self) -> None:
        self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        load_or_create_token(self.data_dir)
        url = self.redis_url
        if url is None:
            self.redis = EmbeddedRedis(self.data_dir)
            self.redis.start()
            url = self.redis.url
        (self.data_dir / "logs").mkdir(exist_ok=True)
        # No SHOAL_TOKEN: a node reads the token from the shared DATA_DIR/token each time it starts, so one
        # restarted after a rotation (which rewrites that file) comes back with the current token.
        env = {**{k: v for k, v in os.environ.items() if k != "SHOAL_TOKEN"}, "SHOAL_REDIS": url}
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
                tied=True,
            )
            proc.args = [sys.executable, "-m", "shoal", "node", "--name", name, "--data-dir", str(self.data_dir),
                         "--http", proc.http, "--grpc", proc.grpc, "--proxy", proc.proxy, *self.node_args]  # fmt: skip
            proc.start()
            self.processes.append(proc)

    def wait_ready(self, timeout: float = 15.0, cancel: threading.Event | None = None) -> None:
        """Wait until every node answers /readyz with 200 *as itself* (its name and pid), since another
        process on the same port proves nothing. A node that exits first raises CrashLoop; TimeoutError names
        the nodes still waited for. Returns early once ``cancel`` is set.

        ``timeout`` is for a cluster of up to READY_NODES_PER_TIMEOUT nodes; a larger one gets as much more
        in proportion (see ``ready_limit``)."""
        timeout = ready_limit(timeout, self.nodes)
        deadline = time.monotonic() + timeout
        waiting = list(self.processes)
        others: dict[str, str] = {}
        with httpx.Client(timeout=1.0, trust_env=False) as client:
            while waiting and not (cancel is not None and cancel.is_set()):
                for proc in list(waiting):
                    if not proc.alive():
                        raise proc.crashed("before it was ready")
                    answer = _probe(client, proc)
                    if answer is None:
                        proc.ready = True
                        waiting.remove(proc)
                    elif answer:
                        others[proc.name] = answer
                if waiting and time.monotonic() > deadline:
                    names = ", ".join(p.name + (f" ({others[p.name]})" if p.name in others else "") for p in waiting)
                    raise TimeoutError(f"not ready after {timeout:g}s: {names}; logs in {self.data_dir / 'logs'}")
                if waiting:
                    time.sleep(0.05)

    def supervise(self, client: httpx.Client | None = None) -> None:
        """Start again any node that exited by itself, waiting longer after each of its restarts; raise
        CrashLoop for a node that exited QUICK_EXITS times in a row before it was ready. ``client`` asks
        restarted nodes whether they are ready yet."""
        now = time.monotonic()
        for proc in self.processes:
            if proc.alive():
                if not proc.ready and client is not None:
                    proc.ready = _probe(client, proc) is None
                continue
            if proc.process is None:
                continue
            if proc.next_start == 0.0:
                proc.quick_exits = 0 if proc.ready else proc.quick_exits + 1
                if proc.quick_exits >= QUICK_EXITS:
                    raise proc.crashed(f"{QUICK_EXITS} times in a row before it was ready")
                delay = min(30.0, 0.5 * 2**proc.restarts)
                proc.next_start = now + delay
                self.say(f"{proc.name} exited with {proc.process.returncode}; starting it again in {delay:.1f}s")
            elif now >= proc.next_start:
                proc.restarts += 1
                proc.next_start = 0.0
                proc.start()

    def stop(self, hurry: threading.Event | None = None) -> list[str]:
        """SIGTERM every node and wait for them to finish or hand back their tasks, then stop Redis.

        The wait outlasts the nodes' own shutdown_grace by STOP_MARGIN_S, so that no node is killed in the
        middle of its orderly stop; meanwhile it says what it waits for. Once ``hurry`` is set the nodes get a
        second SIGTERM, which makes them hand back their running tasks at once. A node still running at the
        deadline is SIGKILLed; the names of those are returned.
        """
        start = time.monotonic()
        deadline = start + self.shutdown_grace + STOP_MARGIN_S
        report_at = start + FIRST_REPORT_S
        hurried = False
        for proc in self.processes:
            proc.signal(signal.SIGTERM)
        while (left := [p for p in self.processes if p.alive()]) and time.monotonic() < deadline:
            if hurry is not None and hurry.is_set() and not hurried:
                hurried = True
                for proc in left:
                    proc.signal(signal.SIGTERM)
                self.say(f"hurrying: {', '.join(p.name for p in left)} hand back their running tasks now")
            if time.monotonic() >= report_at:
                self.say(self._waiting_line(left, deadline))
                report_at = time.monotonic() + STOP_REPORT_S
            time.sleep(0.1)
        killed = []
        for proc in self.processes:
            if proc.alive():
                proc.signal(signal.SIGKILL)
                proc.wait(5)
                killed.append(proc.name)
                self.say(f"killed {proc.name} (pid {proc.pid}): still running {time.monotonic() - start:.0f}s "
                         "after SIGTERM")  # fmt: skip
        if self.redis is not None:
            self.redis.stop()
        return killed

    def _waiting_line(self, left: list[NodeProcess], deadline: float) -> str:
        """ "waiting for node-2 (3 tasks running), node-3 (1 task running)": counts from the nodes, best effort."""
        running = self._running_counts(left)
        parts = []
        for proc in left:
            count = running.get(proc.name)
            tasks = f"{count} task{'' if count == 1 else 's'}"
            parts.append(proc.name if count is None else f"{proc.name} ({tasks} running)")
        return f"waiting for {', '.join(parts)}; SIGKILL in {max(0.0, deadline - time.monotonic()):.0f}s"

    def _running_counts(self, nodes: list[NodeProcess]) -> dict[str, int]:
        """Tasks running per node, from the first node whose REST API answers; {} when none does."""
        try:
            token = self.token_path.read_text().strip()
        except OSError:
            return {}
        with httpx.Client(timeout=1.0, trust_env=False, headers={"Authorization": f"Bearer {token}"}) as client:
            for proc in nodes:
                with contextlib.suppress(httpx.HTTPError, ValueError, KeyError, TypeError):
                    view = client.get(f"{proc.http_url}/api/v1/cluster").raise_for_status().json()
                    return {str(n["name"]): int(n["running"]) for n in view["nodes"]}
        return {}


def _probe(client: httpx.Client, proc: NodeProcess) -> str | None:
    """None when ``proc`` answers /readyz as ready and as itself; else what answers instead ("" if nothing
    or not ready yet)."""
    try:
        response = client.get(f"{proc.http_url}/readyz")
        body = response.json() if response.status_code == 200 else {}
    except (httpx.HTTPError, ValueError):
        return ""
    if not isinstance(body, dict) or response.status_code != 200:
        return ""
    if body.get("node") == proc.name and body.get("pid") == proc.pid:
        return None
    return f"{proc.http} is answered by another process: node {body.get('node')!r}, pid {body.get('pid')}"


def in_use(port: int, host: str = "127.0.0.1") -> bool:
    """Whether binding ``host:port`` fails because something holds it (a listener, not a TIME_WAIT)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            return exc.errno == errno.EADDRINUSE
    return False


def port_holder(port: int) -> str:
    """'pid N (command line)' of the process listening on ``port``, found through /proc (Linux, and only
    processes this user may inspect); 'another process' when it cannot be told."""
    pid = listener_pid(port)
    if pid is None:
        return "another process"
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
        command = " ".join(raw.decode(errors="replace").split())  # one line, whatever the arguments hold
    except OSError:
        command = ""
    if len(command) > 200:
        command = command[:199] + "…"
    return f"pid {pid} ({command})" if command else f"pid {pid}"


def listener_pid(port: int) -> int | None:
    """The pid holding a TCP socket that listens on ``port`` (any address), or None if not found."""
    sockets = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                cols = line.split()
                if len(cols) > 9 and cols[3] == "0A" and int(cols[1].rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
                    sockets.add(f"socket:[{cols[9]}]")
    if not sockets:
        return None
    for fd_dir in Path("/proc").glob("[0-9]*/fd"):
        with contextlib.suppress(OSError):
            for fd in fd_dir.iterdir():
                with contextlib.suppress(OSError):
                    if os.readlink(fd) in sockets:
                        return int(fd_dir.parent.name)
    return None
