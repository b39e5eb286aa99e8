"""shoal under systemd, as far as a machine without systemd as PID 1 can check it.

The notify protocol against a socket the test listens on, spoken by real node processes: READY=1 once
the node is ready, STATUS= lines, WATCHDOG=1 pings that stop while the event loop is blocked (a task
type that sleeps on the loop, ``tests/plugins/shoal_systemd_types.py``) and resume after, STOPPING=1 on
SIGTERM. The unit from ``shoal service unit`` passes ``systemd-analyze verify`` with no output at all
(bad values are only warnings there). ``shoal service install|uninstall`` with their refusals.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from shoal.cli.main import cli
from shoal.systemd.notify import Notifier, watchdog_seconds
from shoal.systemd.watchdog import Loop, stalled
from shoal.testing import TestNode, multiplier, wait_for

PLUGINS = Path(__file__).parent / "plugins"
#: The watchdog period the nodes are given: WATCHDOG=1 every half of it.
WATCHDOG_USEC = 1_000_000
BLOCK_S = 3.0


class Listener:
    """An AF_UNIX datagram socket on an abstract address, as systemd's notify socket is: every message
    received, with the wall-clock time it came."""

    def __init__(self) -> None:
        self.name = f"shoal-test-{uuid.uuid4().hex[:12]}"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + self.name)
        self.sock.settimeout(0.1)
        self.received: list[tuple[float, list[str]]] = []
        self.lock = threading.Lock()
        self.closed = False
        self.thread = threading.Thread(target=self._receive, daemon=True)
        self.thread.start()

    @property
    def env(self) -> dict[str, str]:
        return {"NOTIFY_SOCKET": "@" + self.name}

    def _receive(self) -> None:
        while not self.closed:
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            with self.lock:
                self.received.append((time.time(), data.decode().split("\n")))

    def messages(self) -> list[tuple[float, list[str]]]:
        with self.lock:
            return list(self.received)

    def times(self, line: str) -> list[float]:
        return [at for at, lines in self.messages() if line in lines]

    def values(self, key: str) -> list[str]:
        return [ln[len(key) + 1 :] for _, lines in self.messages() for ln in lines if ln.startswith(key + "=")]

    def wait(self, line: str, timeout: float = 20.0) -> float:
        return wait_for(lambda: (self.times(line) or [None])[0], timeout, f"{line} on the notify socket")

    def close(self) -> None:
        self.closed = True
        self.sock.close()
        self.thread.join(2)


def node_env(listener: Listener, watchdog: bool) -> dict[str, str]:
    env = {**listener.env, "PYTHONPATH": os.pathsep.join(filter(None, [str(PLUGINS), os.environ.get("PYTHONPATH")]))}
    if watchdog:
        env["WATCHDOG_USEC"] = str(WATCHDOG_USEC)
    return env


class Notified:
    """A node started under a test's notify socket."""

    def __init__(self, node: TestNode, listener: Listener) -> None:
        self.node, self.listener = node, listener
        self.http = httpx.Client(base_url=node.http_url, headers=node.headers(), timeout=10, trust_env=False)


@pytest.fixture(scope="module")
def master(module_redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Notified]:
    """node-1 with a notify socket and a 1 s watchdog; not waited for, so the test sees it become ready."""
    listener = Listener()
    data_dir = tmp_path_factory.mktemp("systemd")
    args = ["--task-modules", "shoal_systemd_types", "--shutdown-grace", "2"]
    node = TestNode(data_dir, module_redis_url, name="node-1", args=args, env=node_env(listener, watchdog=True))
    node.start(ready=False)
    notified = Notified(node, listener)
    yield notified
    if node.proc.alive():
        node.stop(timeout=15)
    notified.http.close()
    listener.close()


# -- the notify protocol, spoken by real nodes -------------------------------------------------------


def test_ready_only_once_the_node_is_ready(master: Notified) -> None:
    master.listener.wait("READY=1")
    # READY=1 followed readiness: /readyz answers 200 the moment it arrives, and start-up had ended.
    assert master.http.get("/readyz").status_code == 200
    assert "node node-1 ready" in master.node.log()
    ready = [lines for _, lines in master.listener.messages() if "READY=1" in lines]
    assert len(ready) == 1
    status = [ln for ln in ready[0] if ln.startswith("STATUS=")]
    assert status and status[0].startswith("STATUS=master, epoch "), ready
    assert status[0].endswith(", 1 node, 0/8 slots busy"), status


def test_watchdog_pings_stop_while_the_event_loop_is_blocked(master: Notified) -> None:
    ready_at = master.listener.wait("READY=1")
    wait_for(lambda: len([t for t in master.listener.times("WATCHDOG=1") if t > ready_at]) >= 4, 10, "pings")
    steady = [t for t in master.listener.times("WATCHDOG=1") if t > ready_at]
    # Every 0.5 s; one ping withheld now and then (a busy machine delaying the loop past 0.5 s) is no failure.
    assert max(b - a for a, b in zip(steady, steady[1:], strict=False)) < 1.6 * multiplier(), steady

    response = master.http.post("/api/v1/tasks", json={"name": "block", "type": "block_loop", "target": "-",
                                                       "params": {"seconds": BLOCK_S}})  # fmt: skip
    assert response.status_code == 201, response.text
    task_id = response.json()["id"]
    task = wait_for(lambda: (t := master.http.get(f"/api/v1/tasks/{task_id}").json())["state"] == "SUCCEED" and t,
                    20, "the blocking task to end")  # fmt: skip
    began, ended = task["started_at"], task["finished_at"]
    wait_for(lambda: len([t for t in master.listener.times("WATCHDOG=1") if t > ended]) >= 2, 5, "pings to resume")

    pings = master.listener.times("WATCHDOG=1")
    during = [t for t in pings if began + 1.0 < t < ended - 0.2]  # the loop counts as blocked after 0.5 s
    assert not during, f"pinged while the loop was blocked ({began:.2f}-{ended:.2f}): {during}"
    gap = max(b - a for a, b in zip(pings, pings[1:], strict=False) if a < ended and b > began)
    assert gap >= BLOCK_S - 1.0, f"longest gap around the block: {gap:.2f}s"
    after = [t for t in pings if t > ended]
    assert after[0] - ended < 1.5 * multiplier(), "pings did not resume promptly after the block"
    log = master.node.log()
    assert "withholding WATCHDOG=1: the event loop has been blocked" in log
    assert "shoal_systemd_types.py" in log  # the warning says where the loop was stuck
    assert "WATCHDOG=1 resumes" in log


def test_status_and_stopping_of_a_worker(master: Notified, module_redis_url: str, tmp_path: Path) -> None:
    master.listener.wait("READY=1")
    listener = Listener()
    try:
        env = node_env(listener, watchdog=False)
        worker = TestNode(master.node.data_dir, module_redis_url, name="node-2", env=env).start(ready=False)
        listener.wait("READY=1")
        ready = next(lines for _, lines in listener.messages() if "READY=1" in lines)
        assert any(ln.startswith("STATUS=worker of node-1 (epoch ") and ln.endswith(", 2 nodes, 0/8 slots busy")
                   for ln in ready), ready  # fmt: skip
        assert "WATCHDOG=1" not in {ln for _, lines in listener.messages() for ln in lines}  # none asked for
        # The master's line follows the membership (it is looked at every 2 s).
        wait_for(lambda: any(", 2 nodes," in s for s in master.listener.values("STATUS")), 10, "master: 2 nodes")

        assert worker.stop() == 0
        stopping = [lines for _, lines in listener.messages() if "STOPPING=1" in lines]
        assert len(stopping) == 1, listener.messages()
        extend = [ln for ln in stopping[0] if ln.startswith("EXTEND_TIMEOUT_USEC=")]
        assert extend and int(extend[0].split("=")[1]) > 30 * 1_000_000  # the default 30 s grace, and a margin
        assert listener.times("STOPPING=1")[0] > listener.times("READY=1")[0]
    finally:
        listener.close()
    wait_for(lambda: master.listener.values("STATUS")[-1].endswith(", 1 node, 0/8 slots busy"), 10, "master: 1 node")


# -- the protocol's pieces, in process ---------------------------------------------------------------


def test_notifier_sends_to_a_path_and_removes_the_variable(tmp_path: Path) -> None:
    path = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(path)
        env = {"NOTIFY_SOCKET": path}
        notifier = Notifier.from_environ(env)
        assert notifier is not None and "NOTIFY_SOCKET" not in env
        assert notifier.send("READY=1", "STATUS=two\nlines")
        assert server.recv(4096) == b"READY=1\nSTATUS=two lines"
        notifier.close()
    assert Notifier.from_environ({}) is None
    assert Notifier.from_environ({"NOTIFY_SOCKET": "vsock:2:1234"}) is None


def test_watchdog_variables_read_as_sd_watchdog_enabled_reads_them() -> None:
    assert watchdog_seconds({"WATCHDOG_USEC": "10000000"}) == 10.0
    assert watchdog_seconds({"WATCHDOG_USEC": "500000", "WATCHDOG_PID": str(os.getpid())}) == 0.5
    assert watchdog_seconds({"WATCHDOG_USEC": "500000", "WATCHDOG_PID": "1"}) is None  # meant for another process
    assert watchdog_seconds({}) is None
    for bad in ("0", "ten", "-5", ""):
        assert watchdog_seconds({"WATCHDOG_USEC": bad}) is None


async def test_stalled_loops_only_count_while_work_waits() -> None:
    now = 1000.0
    waiting = {"worker": 0}

    async def inbox() -> int:
        return waiting["worker"]

    async def store_down() -> int:
        raise ConnectionError("store down")

    beating = Loop("heartbeat", lambda: now - 1, limit=5)
    worker = Loop("worker", lambda: now - 30, limit=15, waiting=inbox)
    assert await stalled([beating, worker], now) is None  # idle, nothing waits
    waiting["worker"] = 3
    why = await stalled([beating, worker], now)
    assert why is not None and "worker" in why and "3 item(s) wait" in why
    assert await stalled([Loop("worker", lambda: now - 30, 15, store_down)], now) is None  # unknown: keep pinging
    assert await stalled([Loop("scheduler", lambda: None, 15, inbox)], now) is None  # not master: not watched
    assert "heartbeat loop has not advanced" in (await stalled([Loop("heartbeat", lambda: now - 40, 25)], now) or "")


# -- the unit -----------------------------------------------------------------------------------------


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SHOAL_")}
    return subprocess.run([sys.executable, "-m", "shoal", *args], capture_output=True, text=True, timeout=60,
                          env={**clean, **(env or {})})  # fmt: skip


def verify(path: Path, user: bool = False) -> str:
    env = {**os.environ, "XDG_RUNTIME_DIR": str(path.parent)} if user else None
    command = ["systemd-analyze", *(["--user"] if user else []), "verify", str(path)]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=60)
    return (done.stdout + done.stderr).strip() or ("" if done.returncode == 0 else f"rc={done.returncode}")


needs_analyze = pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                                   reason="systemd-analyze is not installed (apt-get install systemd)")  # fmt: skip


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "shoal.toml"
    path.write_text('redis = "redis://127.0.0.1:6379/0"\nslots = 4\nshutdown_grace = 50\n')
    return path


@pytest.mark.e2e
@needs_analyze
def test_the_printed_units_pass_systemd_analyze_verify(config_file: Path, tmp_path: Path) -> None:
    done = run_cli("service", "unit", "--config", str(config_file))
    assert done.returncode == 0, done.stderr
    unit = tmp_path / "shoal.service"
    unit.write_text(done.stdout)
    assert verify(unit) == ""
    lines = done.stdout.splitlines()
    for expected in ("Type=notify", "NotifyAccess=main", "WatchdogSec=10", "Restart=on-failure", "KillMode=mixed",
                     "TimeoutStopSec=65", "DynamicUser=yes", "ProtectSystem=strict", "StateDirectory=shoal",
                     "Environment=SHOAL_DATA_DIR=%S/shoal", "CapabilityBoundingSet=", "NoNewPrivileges=yes",
                     f"LoadCredential=shoal.toml:{config_file}"):  # fmt: skip
        assert expected in lines, expected
    assert f"ExecStart={sys.executable} -m shoal node --config %d/shoal.toml" in lines

    user = run_cli("service", "unit", "--user", "--config", str(config_file), "--name", "edge-1")
    assert user.returncode == 0, user.stderr
    user_unit = tmp_path / "shoal-edge-1.service"
    user_unit.write_text(user.stdout)
    assert verify(user_unit, user=True) == ""
    assert f"ExecStart={sys.executable} -m shoal node --config {config_file} --name edge-1" in user.stdout
    assert "WantedBy=default.target" in user.stdout and "DynamicUser" not in user.stdout


@pytest.mark.e2e
@needs_analyze
def test_install_and_uninstall_into_a_unit_dir(config_file: Path, tmp_path: Path) -> None:
    unit_dir = tmp_path / "units"
    done = run_cli("service", "install", "--config", str(config_file), "--unit-dir", str(unit_dir), "--json")
    assert done.returncode == 0, done.stderr
    path = unit_dir / "shoal.service"
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert path.read_text() == run_cli("service", "unit", "--config", str(config_file)).stdout
    report: dict[str, Any] = json.loads(done.stdout)
    assert report["action"] == "written" and report["verified"] is True and report["path"] == str(path)
    assert any("enable --now shoal.service" in step for step in report["next_steps"])

    again = run_cli("service", "install", "--config", str(config_file), "--unit-dir", str(unit_dir))
    assert again.returncode == 0 and again.stdout.startswith(f"unchanged: {path}"), again.stdout
    gone = run_cli("service", "uninstall", "--unit-dir", str(unit_dir))
    assert gone.returncode == 0 and gone.stdout.startswith(f"removed: {path}") and not path.exists()


@pytest.mark.e2e
def test_bad_input_exits_2_with_a_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    missing = run_cli("service", "unit", "--config", str(tmp_path / "nope.toml"))
    assert missing.returncode == 2 and "nope.toml does not exist" in missing.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text("slots = 4\ncolour = 'blue'\n")
    refused = run_cli("service", "install", "--config", str(bad), "--unit-dir", str(tmp_path / "u"))
    assert refused.returncode == 2 and "'colour'" in refused.stderr and not (tmp_path / "u").exists()
    assert "Traceback" not in missing.stderr + refused.stderr

    # A system unit needs root; the check runs before anything is written.
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    result = CliRunner().invoke(cli, ["service", "install"])
    assert result.exit_code == 2 and "needs root" in result.output and "--user" in result.output
    result = CliRunner().invoke(cli, ["service", "uninstall"])
    assert result.exit_code == 2 and "needs root" in result.output


def test_data_dir_of_the_file_gives_way_to_the_state_directory(tmp_path: Path) -> None:
    config = tmp_path / "shoal.toml"
    config.write_text('data_dir = "/srv/shoal"\n')
    result = CliRunner().invoke(cli, ["service", "unit", "--config", str(config), "--name", "edge-2"])
    assert result.exit_code == 0, result.output
    assert (
        "Environment=SHOAL_DATA_DIR=%S/shoal-edge-2" in result.stdout and "StateDirectory=shoal-edge-2" in result.stdout
    )
    assert "data_dir = /srv/shoal" in result.stderr and "overridden" in result.stderr
    assert "RestartPreventExitStatus=2" in result.stdout  # a refused option is not retried for ever
