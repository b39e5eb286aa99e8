"""``shoal up`` as a new user meets it: ports checked before anything starts, readiness only from its own
nodes, a crash loop that stops instead of spinning, a stop that lets running tasks finish (and a second
signal that hands them back), node options after ``--``, output that a file gets whole and at once, and
nothing left running when the launcher is killed.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orjson
import pytest
from redis.asyncio import Redis

import shoal
from shoal import launcher
from shoal.cli.up import _node_config
from shoal.keys import Keys
from shoal.launcher import CrashLoop, LocalCluster, NodeProcess, listener_pid
from shoal.models import Task, TaskState
from shoal.store.embedded import free_port
from shoal.store.tasks import TaskStore
from shoal.testing import multiplier, wait_for

pytestmark = pytest.mark.e2e


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHOAL_") or k == "SHOAL_TEST_MULTIPLIER"}
    return env | {"NO_COLOR": "1"}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie has exited too
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False


def _argv(data_dir: Path, ports: tuple[int, int, int], *args: str, nodes: int = 1) -> list[str]:
    """``shoal up`` with node i on each of the (http, grpc, proxy) ``ports`` + i - 1."""
    http, grpc, proxy = (str(port) for port in ports)
    return [sys.executable, "-m", "shoal", "up", "--nodes", str(nodes), "--data-dir", str(data_dir),
            "--http-port", http, "--grpc-port", grpc, "--proxy-port", proxy, *args]  # fmt: skip


def _run(argv: list[str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, env=_env(), capture_output=True, text=True, timeout=timeout * multiplier())


class Up:
    """One ``python -m shoal up`` process on free ports, stdout and stderr in files under ``tmp``."""

    def __init__(self, tmp: Path, *args: str, data_dir: Path | None = None, nodes: int = 1) -> None:
        self.data_dir = data_dir or tmp / "data"
        self.ports = (free_port(), free_port(), free_port())
        self.http = self.ports[0]
        self.out_path, self.err_path = tmp / "up.out", tmp / "up.err"
        argv = _argv(self.data_dir, self.ports, *args, nodes=nodes)
        with self.out_path.open("wb") as out, self.err_path.open("wb") as err:
            self.proc = subprocess.Popen(argv, env=_env(), stdout=out, stderr=err, stdin=subprocess.DEVNULL)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http}"

    def out(self) -> str:
        return self.out_path.read_text(errors="replace")

    def err(self) -> str:
        return self.err_path.read_text(errors="replace")

    def wait_for_output(self, text: str, timeout: float = 60) -> str:
        """The output once it shows ``text``; fails at once if shoal up exits first."""
        deadline = time.monotonic() + timeout * multiplier()
        while text not in (out := self.out()):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"no {text!r} from shoal up (exit code {self.proc.poll()}):\n{out}\n{self.err()}")
            time.sleep(0.1)
        return out

    def ready(self) -> str:
        return self.wait_for_output("Ctrl-C stops the cluster.")

    def node_pids(self) -> list[int]:
        return [int(pid) for pid in re.findall(r"node-\d+\s+│\s+(\d+)\s+│", self.out())]

    def client(self) -> shoal.Client:
        return shoal.Client(self.url, token=(self.data_dir / "token").read_text().strip(), timeout_s=10)

    def wait(self, timeout: float) -> int:
        return self.proc.wait(timeout * multiplier())

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


@pytest.fixture
def ups(tmp_path: Path) -> Iterator[list[Up]]:
    """Every ``shoal up`` a test starts is stopped afterwards."""
    started: list[Up] = []
    yield started
    for up in started:
        up.close()


def _stored(redis_url: str, task_id: str) -> Task:
    """The task as the store holds it, with every attempt (read after the cluster has stopped)."""

    async def get() -> Task:
        redis = Redis.from_url(redis_url)
        try:
            return await TaskStore(redis, Keys("shoal"), result_max_bytes=1024 * 1024).get(task_id)
        finally:
            await redis.aclose()

    return asyncio.run(get())


def _running(client: shoal.Client, task_id: str) -> bool:
    return client.get(task_id).state is TaskState.RUNNING


# -- ports ---------------------------------------------------------------------------------------------


def test_a_taken_port_is_refused_before_anything_starts(tmp_path: Path) -> None:
    holder = socket.socket()
    holder.bind(("127.0.0.1", free_port()))
    holder.listen()
    port = holder.getsockname()[1]
    data_dir = tmp_path / "data"
    try:
        began = time.monotonic()
        done = _run(_argv(data_dir, (free_port(), free_port(), port - 1), nodes=2))
    finally:
        holder.close()
    assert done.returncode == 1, done.stderr
    assert time.monotonic() - began < 15 * multiplier()
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("Error: ") and f"port {port} " in line and "node-2 proxy" in line, line
    assert f"pid {os.getpid()} " in line and "--proxy-port" in line, line
    assert not (data_dir / "redis" / "url").exists() and not (data_dir / "logs").exists(), "nothing was started"


def test_the_holder_of_a_port_is_found() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert listener_pid(port) == os.getpid()
        assert launcher.in_use(port)
        assert str(os.getpid()) in launcher.port_holder(port)
    assert not launcher.in_use(port)


def test_ports_planned_twice_or_past_65535_are_refused(tmp_path: Path) -> None:
    clash = LocalCluster(tmp_path, nodes=2, http_port=40000, grpc_port=40001, proxy_port=50000)
    with pytest.raises(launcher.PortTaken, match="port 40001 would serve both node-1 grpc and node-2 http"):
        clash.check_ports()
    with pytest.raises(launcher.PortTaken, match="port 65536 for node-2 http is above 65535"):
        LocalCluster(tmp_path, nodes=2, http_port=65535, grpc_port=40000, proxy_port=50000).check_ports()
    no_proxy = LocalCluster(tmp_path, nodes=1, http_port=free_port(), grpc_port=free_port(), proxy_port=1, proxy=False)
    no_proxy.check_ports()  # a node without its proxy does not need the (privileged) port 1


# -- readiness -----------------------------------------------------------------------------------------


class _Impostor(BaseHTTPRequestHandler):
    """Answers 200 to /readyz as whatever ``server.body`` says."""

    def do_GET(self) -> None:
        body = orjson.dumps(self.server.body)  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_readiness_counts_only_the_node_that_was_started(tmp_path: Path) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Impostor)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    cluster = LocalCluster(tmp_path, nodes=1, http_port=port)
    proc = NodeProcess("node-1", f"127.0.0.1:{port}", "-", "-", [sys.executable, "-c", "import time; time.sleep(60)"],
                       dict(os.environ), tmp_path / "node-1.log")  # fmt: skip
    proc.start()
    cluster.processes.append(proc)
    try:
        for body in ({"status": "ready"}, {"status": "ready", "node": "node-1", "pid": os.getpid()}):
            server.body = body  # type: ignore[attr-defined]
            with pytest.raises(TimeoutError, match="node-1"):
                cluster.wait_ready(1.0)
        server.body = {"status": "ready", "node": "node-1", "pid": proc.pid}  # type: ignore[attr-defined]
        cluster.wait_ready(5.0)
        assert proc.ready
    finally:
        server.shutdown()
        server.server_close()
        proc.signal(signal.SIGKILL)
        proc.wait(10)


def test_readiness_waits_longer_for_a_larger_cluster(tmp_path: Path) -> None:
    """Nodes started together share the cores: twenty get twice the timeout meant for ten."""
    cluster = LocalCluster(tmp_path, nodes=2 * launcher.READY_NODES_PER_TIMEOUT, http_port=free_port())
    proc = NodeProcess("node-1", f"127.0.0.1:{cluster.http_port}", "-", "-",
                       [sys.executable, "-c", "import time; time.sleep(60)"], dict(os.environ),
                       tmp_path / "node-1.log")  # fmt: skip
    proc.start()
    cluster.processes.append(proc)
    try:
        started = time.monotonic()
        with pytest.raises(TimeoutError, match=r"not ready after 0\.6s: node-1"):
            cluster.wait_ready(0.3)
        assert time.monotonic() - started >= 0.6
    finally:
        proc.signal(signal.SIGKILL)
        proc.wait(10)


# -- crash loops ---------------------------------------------------------------------------------------


def test_a_node_that_cannot_start_stops_the_cluster_with_its_log(tmp_path: Path) -> None:
    ports = (free_port(), free_port(), free_port())
    done = _run(_argv(tmp_path / "data", ports, "--", "--task-modules", "no_such_module", nodes=2), timeout=90)
    assert done.returncode == 1, done.stderr
    assert re.search(r"Error: node-\d exited with code 2 before it was ready", done.stderr), done.stderr
    assert "cannot import task module 'no_such_module'" in done.stderr, done.stderr
    assert "node(s) ready" not in done.stdout
    assert not (tmp_path / "data" / "redis" / "url").exists(), "the embedded redis-server was stopped"


def _exiting(tmp_path: Path, code: int) -> NodeProcess:
    return NodeProcess("node-1", "-", "-", "-", [sys.executable, "-c", f"print('bad start'); raise SystemExit({code})"],
                       dict(os.environ), tmp_path / "node-1.log")  # fmt: skip


def test_quick_exits_in_a_row_are_a_crash_loop(tmp_path: Path) -> None:
    cluster = LocalCluster(tmp_path, nodes=1)
    proc = _exiting(tmp_path, 3)
    cluster.processes.append(proc)
    proc.start()

    def crashed() -> CrashLoop | None:
        try:
            cluster.supervise()
        except CrashLoop as exc:
            return exc
        return None

    error = wait_for(crashed, 30, "the crash loop to be seen")
    assert proc.restarts == launcher.QUICK_EXITS - 1
    assert "node-1 exited with code 3 3 times in a row before it was ready" in str(error), str(error)
    assert "bad start" in str(error), str(error)


def test_a_node_that_was_ready_is_restarted_however_often_it_dies(tmp_path: Path) -> None:
    """A task that kills its node makes it exit soon after each start: that is for quarantine to stop, and
    the node must come back for the rest of the work. Only exits before it was ready are a crash loop."""
    said: list[str] = []
    cluster = LocalCluster(tmp_path, nodes=1, say=said.append)
    proc = _exiting(tmp_path, 3)
    cluster.processes.append(proc)
    proc.start()
    for _ in range(launcher.QUICK_EXITS + 1):
        assert proc.wait(30) == 3
        proc.ready = True  # as if it had answered /readyz before it died
        cluster.supervise()  # no CrashLoop: started again after a delay
        assert proc.quick_exits == 0 and proc.next_start > 0
        proc.next_start = time.monotonic()  # the delay is over
        cluster.supervise()
    assert proc.restarts == launcher.QUICK_EXITS + 1 and proc.wait(30) == 3
    assert said and "node-1 exited with 3; starting it again" in said[0]


# -- stopping ------------------------------------------------------------------------------------------


def _stubborn(tmp_path: Path, seconds: float) -> NodeProcess:
    """A node stand-in that takes ``seconds`` to stop after SIGTERM (like a node whose tasks run on)."""
    code = ("import signal, sys, time; signal.signal(signal.SIGTERM, lambda *a: None); print('up', flush=True); "
            f"time.sleep({seconds})")  # fmt: skip
    proc = NodeProcess("node-1", "127.0.0.1:1", "-", "-", [sys.executable, "-c", code], dict(os.environ),
                       tmp_path / "node-1.log")  # fmt: skip
    proc.start()
    wait_for(lambda: "up" in proc.log_path.read_text(), 20, "the stand-in to run")
    return proc


def test_stop_waits_past_the_nodes_grace_and_says_for_what(tmp_path: Path) -> None:
    said: list[str] = []
    cluster = LocalCluster(tmp_path, nodes=1, shutdown_grace=0.5, say=said.append)
    cluster.processes.append(_stubborn(tmp_path, 3))
    assert cluster.stop() == [], said  # 3 s > the grace, but within grace + margin: never killed
    assert any(line.startswith("waiting for node-1") for line in said), said


def test_stop_kills_only_after_the_deadline_and_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(launcher, "STOP_MARGIN_S", 1.0)
    said: list[str] = []
    cluster = LocalCluster(tmp_path, nodes=1, shutdown_grace=0.5, say=said.append)
    proc = _stubborn(tmp_path, 120)
    cluster.processes.append(proc)
    began = time.monotonic()
    assert cluster.stop() == ["node-1"]
    assert time.monotonic() - began >= 1.5
    assert not proc.alive() and any(line.startswith(f"killed node-1 (pid {proc.pid})") for line in said), said


def test_the_launcher_knows_the_grace_the_nodes_get(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ports = (8080, 6666, 3128)
    assert _node_config((), tmp_path, None, *ports).shutdown_grace == 30
    assert _node_config(("--shutdown-grace", "60"), tmp_path, None, *ports).shutdown_grace == 60
    monkeypatch.setenv("SHOAL_SHUTDOWN_GRACE", "45")
    assert _node_config((), tmp_path, None, *ports).shutdown_grace == 45
    (tmp_path / "node.toml").write_text("shutdown_grace = 50\nproxy_enabled = false\n")
    from_file = _node_config(("--config", str(tmp_path / "node.toml")), tmp_path, None, *ports)
    assert from_file.shutdown_grace == 45 and not from_file.proxy_enabled  # env over file, as for a node


def test_sigterm_lets_running_tasks_finish(tmp_path: Path, redis_url: str, ups: list[Up]) -> None:
    up = Up(tmp_path, "--redis", redis_url, "--", "--slots", "3")
    ups.append(up)
    up.ready()
    with up.client() as client:
        assert [n.slots for n in client.cluster().nodes] == [3], "node options reach the nodes"
        task = client.submit("echo", "slow", params={"delay_s": 4})
        wait_for(lambda: _running(client, task.id), 20, "the task to run")

    again = _run(_argv(tmp_path / "again", up.ports, "--redis", redis_url))  # the same ports: refused up front
    (pid,) = up.node_pids()
    assert again.returncode == 1 and f"port {up.http} for node-1 http is in use by pid {pid} " in again.stderr

    up.proc.send_signal(signal.SIGTERM)
    assert up.wait(40) == 0, up.err()
    out = up.out()
    assert "waiting for node-1 (1 task running)" in out and "killed" not in out, out
    stored = _stored(redis_url, task.id)
    assert stored.state is TaskState.SUCCEED and [a.outcome for a in stored.history] == ["succeeded"]


def test_a_second_sigterm_hands_running_tasks_back_at_once(tmp_path: Path, redis_url: str, ups: list[Up]) -> None:
    up = Up(tmp_path, "--redis", redis_url, "--", "--shutdown-grace", "60")
    ups.append(up)
    up.ready()
    with up.client() as client:
        task = client.submit("echo", "long", params={"delay_s": 120})
        wait_for(lambda: _running(client, task.id), 20, "the task to run")
    up.proc.send_signal(signal.SIGTERM)
    up.wait_for_output("running tasks get up to 60s to finish", 10)
    began = time.monotonic()
    up.proc.send_signal(signal.SIGTERM)
    assert up.wait(10) == 0, up.out() + up.err()
    assert time.monotonic() - began < 10 * multiplier()
    out = up.out()
    assert "hurrying: node-1 hand back their running tasks now" in out and "killed" not in out, out
    stored = _stored(redis_url, task.id)
    assert stored.state is TaskState.WAITING, stored
    assert [(a.outcome, a.error) for a in stored.history] == [("handed back", "node stopped before the task finished")]


# -- node options --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--", "--slots", "x"], "option 'slots' in flag --slots: 'x' is not a valid int"),
        (["--", "--no-such-flag"], "node option: No such option '--no-such-flag'"),
        (["--", "--http", "127.0.0.1:9999"], "--http is set by shoal up for each node: use shoal up --http-port"),
        (["--", "--data-dir", "x"], "use shoal up --data-dir"),
        (["--", "--redis", "redis://127.0.0.1:1/0"], "use shoal up --redis"),
        (["--", "--name", "x"], "shoal up names its nodes"),
    ],
)  # fmt: skip
def test_bad_node_options_are_refused_before_anything_starts(tmp_path: Path, args: list[str], says: str) -> None:
    done = _run([sys.executable, "-m", "shoal", "up", "--data-dir", str(tmp_path / "data"), *args])
    assert done.returncode == 2, done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("Error: ") and says in line, line
    assert not (tmp_path / "data").exists()


def test_node_options_are_explained(tmp_path: Path) -> None:
    before = _run([sys.executable, "-m", "shoal", "up", "--slots", "4"])
    assert before.returncode == 2 and "give it after --, as in: shoal up -- --slots" in before.stderr
    helped = _run([sys.executable, "-m", "shoal", "up", "--help"])
    assert helped.returncode == 0 and "[-- NODE OPTIONS...]" in helped.stdout
    assert "SHOAL_*" in helped.stdout and "pass through to the nodes" in " ".join(helped.stdout.split())


# -- output and ownership ------------------------------------------------------------------------------


def test_output_to_a_file_is_whole_and_written_at_once(tmp_path: Path, ups: list[Up]) -> None:
    deep = tmp_path / ("a-directory-with-a-name-long-enough-to-overflow-eighty-columns-" * 2) / "data"
    up = Up(tmp_path, data_dir=deep, nodes=2)
    ups.append(up)
    out = up.ready()  # shown while shoal up still runs: every line flushed, not kept in a buffer
    for i in (1, 2):
        assert str(deep / "logs" / f"node-{i}.log") in out, out
        assert f"http://127.0.0.1:{up.http + i - 1}" in out and f"127.0.0.1:{up.ports[1] + i - 1}" in out, out
    assert f"token:  {(deep / 'token').resolve()}  " in out and "…" not in out, out
    up.proc.send_signal(signal.SIGTERM)
    assert up.wait(40) == 0 and up.out().rstrip().endswith("stopped."), up.err()


def test_a_killed_launcher_takes_its_redis_and_nodes_along(tmp_path: Path, ups: list[Up]) -> None:
    up = Up(tmp_path, nodes=2)
    ups.append(up)
    up.ready()
    port = int((up.data_dir / "redis" / "url").read_text().strip().rsplit(":", 1)[1].split("/")[0])
    redis_pid = listener_pid(port)
    assert redis_pid is not None and _alive(redis_pid)
    pids = [redis_pid, *up.node_pids()]
    assert len(pids) == 3
    up.proc.send_signal(signal.SIGKILL)
    up.wait(10)
    wait_for(lambda: not any(_alive(pid) for pid in pids), 30, "the redis-server and the nodes to be gone")
