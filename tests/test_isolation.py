"""Task isolation on real nodes, seen as a user sees it: no task, however it misbehaves, takes its node
down or runs on after it was stopped.

A killed or timed-out busy loop really stops and frees its slot; a worker process that exits or segfaults
ends its own attempt as ``crashed`` while the node and its other tasks carry on; an allocation past the
type's ``memory_mb`` ends ``over limit``; a task that kills every node running it is quarantined after
``max_lost_attempts`` across a ``shoal up`` cluster; a node stopped with a stuck task exits in time and
hands the task back; every attempt shows what it cost; and a sync task type that a worker process could
not import is refused when the node loads it. The task types live in
``tests/plugins/shoal_isolation_types.py``, loaded with ``--task-modules``.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

import shoal
from shoal.models import Task, TaskState
from shoal.store.embedded import free_port
from shoal.testing import TestNode, multiplier, wait_for

pytestmark = pytest.mark.e2e

PLUGINS = Path(__file__).parent / "plugins"
MODULE = "shoal_isolation_types"
TERMINAL = (TaskState.SUCCEED, TaskState.RUNTIME_ERROR, TaskState.KILLED)
DONE_S = 30.0
#: A stopped task's side effect must end within this many seconds of the stop.
STOPS_WITHIN_S = 3.0
#: How long a side effect must stay still to count as stopped.
QUIET_S = 1.0
MB = 1 << 20
T = TypeVar("T")


def plugin_env(*more: Path) -> dict[str, str]:
    """PYTHONPATH with the test plug-ins (and ``more`` folders) ahead of the caller's."""
    paths = [str(PLUGINS), *(str(p) for p in more), os.environ.get("PYTHONPATH", "")]
    return {"PYTHONPATH": os.pathsep.join(p for p in paths if p)}


@dataclass
class Running:
    """One node started with the isolation types, and a client of its REST API."""

    node: TestNode
    client: shoal.Client

    def wait(self, task_id: str, states: tuple[TaskState, ...] = TERMINAL, timeout: float = DONE_S) -> Task:
        def reached() -> Task | None:
            task = self.client.get(task_id)
            return task if task.state in states else None

        task = wait_for(reached, timeout, f"task {task_id} to reach {'/'.join(s.name for s in states)}")
        assert task is not None
        return task

    def node_pid(self) -> int:
        (me,) = [n for n in self.client.cluster().nodes if n.name == self.node.name]
        return me.pid


@pytest.fixture
def start(node_factory: Callable[..., TestNode]) -> Iterator[Callable[..., Running]]:
    """``start(*flags, name=, modules=, path=)``: a ready node that loads the isolation types (or ``modules``,
    found on ``path`` too), and its client."""
    started: list[Running] = []

    def make(*flags: str, name: str = "node-1", modules: str | None = MODULE, path: Path | None = None) -> Running:
        args = ["--shutdown-grace", "1", *(["--task-modules", modules] if modules else []), *flags]  # last flag wins
        node = node_factory(name=name, args=args, env=plugin_env(*([path] if path else [])))
        started.append(Running(node, shoal.Client(node.http_url, token=node.token, timeout_s=30)))
        return started[-1]

    yield make
    for running in started:
        running.client.close()


def outcomes(task: Task) -> list[str | None]:
    return [a.outcome for a in task.history]


def lines(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


def alive(pid: int) -> bool:
    """Whether process ``pid`` still runs (a zombie has ended)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return False


def last_write(path: Path, timeout: float = DONE_S) -> float:
    """When ``path`` was last written, once it has stayed unchanged for QUIET_S (wall-clock seconds)."""
    wait_for(lambda: time.time() - path.stat().st_mtime >= QUIET_S, timeout, f"{path.name} to stop changing")
    return path.stat().st_mtime


def assert_still(path: Path, seconds: float = 0.5) -> None:
    """``path`` does not change for ``seconds``: nothing writes it any more."""
    before = (path.stat().st_size, path.stat().st_mtime_ns)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        assert (path.stat().st_size, path.stat().st_mtime_ns) == before, f"{path.name} is still being written"
        time.sleep(0.05)


# -- a kill and a timeout stop the work ---------------------------------------------------------------------


def test_killed_busy_loop_stops_and_frees_its_slot(start: Callable[..., Running], tmp_path: Path) -> None:
    api = start("--slots", "1")
    out = tmp_path / "busy.txt"
    busy = api.client.submit("iso-busy", str(out)).id
    api.wait(busy, (TaskState.RUNNING,))
    wait_for(lambda: lines(out) >= 20, DONE_S, "the busy loop to write")
    worker = int(out.with_suffix(".pid").read_text())
    follower = api.client.submit("iso-sleep", "next").id
    assert api.client.get(follower).state is TaskState.WAITING, "a node with one slot took a second task"

    killed_at = time.time()
    assert api.client.kill(busy).state is TaskState.KILLED
    # The slot comes free on the node itself: the waiting task runs there, in a worker process of its own.
    done = api.wait(follower, timeout=10)
    assert done.state is TaskState.SUCCEED and done.node == "node-1", done.error
    assert api.client.result(follower).code == "next"

    stopped = last_write(out)
    assert stopped - killed_at < STOPS_WITHIN_S * multiplier(), f"the busy loop wrote for {stopped - killed_at:.1f}s"
    assert_still(out)
    assert not alive(worker), "the killed task's worker process still runs"
    task = api.client.get(busy)
    assert task.state is TaskState.KILLED and outcomes(task) == ["killed"]
    assert task.lost_attempts == 0, "a kill is not a lost attempt"


def test_timed_out_busy_loop_stops_and_ends_after_its_retries(start: Callable[..., Running], tmp_path: Path) -> None:
    api = start("--slots", "1", "--retry-backoff", "0.1")
    out = tmp_path / "busy.txt"
    task_id = api.client.submit("iso-busy", str(out), timeout_s=1, max_retries=1).id
    task = api.wait(task_id)
    assert task.state is TaskState.RUNTIME_ERROR and "timed out" in (task.error or ""), task.error
    assert outcomes(task) == ["timed out", "timed out"] and task.attempts == 2
    for attempt in task.history:
        assert attempt.wall_s is not None and attempt.wall_s >= 1.0, attempt
    assert task.finished_at is not None
    stopped = last_write(out)
    assert stopped - task.finished_at < STOPS_WITHIN_S * multiplier(), "the timed-out loop went on writing"
    assert_still(out)
    assert not alive(int(out.with_suffix(".pid").read_text())), "the timed-out task's worker process still runs"
    # The slot is free again: the next task runs on the one-slot node.
    after = api.wait(api.client.submit("iso-sleep", "after").id, timeout=10)
    assert after.state is TaskState.SUCCEED, after.error


# -- a crash is the attempt's, not the node's ---------------------------------------------------------------


def test_a_crashing_task_ends_crashed_and_the_node_and_its_other_tasks_carry_on(
    start: Callable[..., Running], tmp_path: Path
) -> None:
    api = start("--slots", "4")
    pid = api.node_pid()
    assert pid == api.node.pid
    go = tmp_path / "go"
    others = [api.client.submit("iso-wait", str(go), name=f"other-{i}").id for i in range(2)]
    for task_id in others:
        api.wait(task_id, (TaskState.RUNNING,))

    exited = api.client.submit("iso-exit", "x").id
    segv = api.client.submit("iso-segv", "x").id
    first, second = api.wait(exited), api.wait(segv)

    assert first.state is TaskState.RUNTIME_ERROR and outcomes(first) == ["crashed"], first
    (attempt,) = first.history
    assert attempt.exit_code == 1 and attempt.signal is None, attempt
    assert "exited with code 1" in (attempt.error or "") and "iso-exit leaves now" in (attempt.error or ""), attempt
    assert second.state is TaskState.RUNTIME_ERROR and outcomes(second) == ["crashed"], second
    (attempt,) = second.history
    assert attempt.signal == "SIGSEGV" and attempt.exit_code is None, attempt
    assert "SIGSEGV" in (attempt.error or "") and "iso-segv is about to crash" in (attempt.error or ""), attempt
    assert first.lost_attempts == 1 and second.lost_attempts == 1, "a crash counts toward max_lost_attempts"

    # The same node process, still serving, its other tasks still running through the crashes.
    assert api.node_pid() == pid and api.node.proc.alive()
    assert [api.client.get(t).state for t in others] == [TaskState.RUNNING] * 2
    go.write_text("")
    for task_id in others:
        task = api.wait(task_id)
        assert task.state is TaskState.SUCCEED and outcomes(task) == ["succeeded"], task
        assert task.node == "node-1"
    assert api.client.result(others[0]).meta["pid"] != pid
    again = api.wait(api.client.submit("iso-sleep", "again").id)
    assert again.state is TaskState.SUCCEED and api.node_pid() == pid


def test_an_allocation_past_memory_mb_ends_over_limit(start: Callable[..., Running]) -> None:
    api = start("--slots", "1")
    pid = api.node_pid()
    task = api.wait(api.client.submit("iso-hog", "big", params={"mb": 500}).id)
    assert task.state is TaskState.RUNTIME_ERROR and outcomes(task) == ["over limit"], task
    assert (task.error or "").startswith("memory_mb"), task.error
    assert re.search(r"\b100 Mi?B\b", task.error or ""), task.error  # the limit it passed
    assert task.lost_attempts == 0, "a limit passed is not a lost attempt"
    # Within the limit the same type runs, on the same node process.
    small = api.wait(api.client.submit("iso-hog", "small", params={"mb": 20}).id)
    assert small.state is TaskState.SUCCEED, small.error
    assert api.client.result(small.id).code == str(20 * MB)
    assert api.node_pid() == pid and api.node.proc.alive()


# -- a poison task is quarantined ---------------------------------------------------------------------------


class Up:
    """``python -m shoal up`` with its nodes on free ports, its output in files under ``tmp``."""

    def __init__(self, tmp: Path, *args: str, nodes: int) -> None:
        self.data_dir = tmp / "data"
        self.http = free_port()
        self.nodes = nodes
        self.out_path, self.err_path = tmp / "up.out", tmp / "up.err"
        env = {k: v for k, v in os.environ.items() if not k.startswith("SHOAL_") or k == "SHOAL_TEST_MULTIPLIER"}
        env |= {"NO_COLOR": "1", **plugin_env()}
        argv = [sys.executable, "-m", "shoal", "up", "--nodes", str(nodes), "--data-dir", str(self.data_dir),
                "--http-port", str(self.http), "--grpc-port", str(free_port()), "--proxy-port", str(free_port()),
                *args]  # fmt: skip
        with self.out_path.open("wb") as out, self.err_path.open("wb") as err:
            self.proc = subprocess.Popen(argv, env=env, stdout=out, stderr=err, stdin=subprocess.DEVNULL)

    def out(self) -> str:
        return self.out_path.read_text(errors="replace")

    def err(self) -> str:
        return self.err_path.read_text(errors="replace")

    def ready(self, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout * multiplier()
        while "Ctrl-C stops the cluster." not in self.out():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(
                    f"shoal up did not start (exit code {self.proc.poll()}):\n{self.out()}{self.err()}"
                )
            time.sleep(0.1)

    def restarts(self) -> list[str]:
        """shoal up's lines about a node it starts again after it exited."""
        return re.findall(r"node-\d+ exited with .*starting it again.*", self.out())

    def clients(self) -> list[shoal.Client]:
        token = (self.data_dir / "token").read_text().strip()
        return [shoal.Client(f"http://127.0.0.1:{self.http + i}", token=token, timeout_s=10) for i in range(self.nodes)]

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


class AnyNode:
    """The cluster's REST API through whichever node answers: the one asked may be the one just killed."""

    def __init__(self, clients: list[shoal.Client]) -> None:
        self.clients = clients

    def call(self, call: Callable[[shoal.Client], T]) -> T:
        def answered() -> tuple[T]:
            error: Exception = RuntimeError("no node to ask")
            for client in self.clients:
                try:
                    return (call(client),)
                except shoal.ShoalError as exc:  # killed, restarting or not ready yet: ask the next node
                    error = exc
            raise error  # wait_for asks again, and shows the last error if no node ever answers

        found = wait_for(answered, DONE_S, "a node to answer")
        assert found is not None
        return found[0]

    def submit(self, type_: str, target: str, **options: Any) -> str:
        return self.call(lambda c: c.submit(type_, target, **options)).id

    def get(self, task_id: str) -> Task:
        return self.call(lambda c: c.get(task_id))

    def finished(self, task_id: str, timeout: float = 60) -> Task:
        def ended() -> Task | None:
            task = self.get(task_id)
            return task if task.state in TERMINAL else None

        task = wait_for(ended, timeout, f"task {task_id} to end")
        assert task is not None
        return task

    def alive_nodes(self) -> int:
        return sum(n.state == "alive" for n in self.call(lambda c: c.cluster()).nodes)


def test_a_poison_task_is_quarantined_after_three_lost_attempts(tmp_path: Path, redis_url: str) -> None:
    kills = tmp_path / "kills.txt"
    up = Up(tmp_path, "--redis", redis_url, "--", "--task-modules", MODULE, "--slots", "2",
            "--shutdown-grace", "1", nodes=3)  # fmt: skip
    api = AnyNode([])
    try:
        up.ready()
        api.clients = up.clients()
        # The poison may land on the same restarted node each time, right after it is ready again: shoal up
        # restarts a node that dies after it was ready, however soon (only exits before ready are a crash loop).
        poison = api.submit("iso-poison", str(kills))
        others: list[str] = []
        deadline = time.monotonic() + 4 * DONE_S * multiplier()
        while api.get(poison).state not in TERMINAL:  # tasks keep coming while the poison kills node after node
            others.append(api.submit("echo", f"e{len(others)}", params={"delay_s": 0.2}))
            others.append(api.submit("iso-sleep", f"s{len(others)}", params={"s": 0.2}))
            assert time.monotonic() < deadline, f"the poison task never ended:\n{up.out()}{kills.read_text()}"
            time.sleep(0.5)  # paces the submissions; nothing waits on it

        task = api.get(poison)
        assert task.state is TaskState.RUNTIME_ERROR, task
        assert task.lost_attempts == 3 and outcomes(task) == ["node lost"] * 3, task
        assert task.error == "lost 3 attempts: " + ", ".join(f"{a.node} lost" for a in task.history), task.error
        killed = [line.split()[0] for line in kills.read_text().splitlines()]
        assert killed == [a.node for a in task.history], (killed, task.history)

        # Everything else submitted meanwhile succeeds, and later work too, on all three nodes again.
        for task_id in others:
            done = api.finished(task_id)
            assert done.state is TaskState.SUCCEED, done
        wait_for(lambda: api.alive_nodes() == 3, 60, "all three nodes to be alive")
        for task_id in [api.submit("iso-sleep", f"later-{i}") for i in range(6)]:
            done = api.finished(task_id)
            assert done.state is TaskState.SUCCEED, done

        # The quarantined task was never placed again: no fourth kill, no fourth restart.
        assert lines(kills) == 3, kills.read_text()
        assert len(up.restarts()) == 3, up.out()
    finally:
        up.close()
        for client in api.clients:
            client.close()
    assert up.proc.returncode == 0, up.out() + up.err()


# -- a node stopped with a stuck task -----------------------------------------------------------------------


def test_sigterm_of_a_node_with_a_stuck_task_exits_in_time_and_hands_it_back(
    start: Callable[..., Running], tmp_path: Path
) -> None:
    grace, kill_grace = 2.0, 1.0
    api = start("--slots", "1", "--shutdown-grace", f"{grace:g}", "--kill-grace", f"{kill_grace:g}")
    # A node without the type: it serves the API once node-1 is gone and never runs the task.
    other = start(name="node-2", modules=None)
    out = tmp_path / "stuck.txt"
    task_id = api.client.submit("iso-stubborn", str(out)).id
    api.wait(task_id, (TaskState.RUNNING,))
    wait_for(lambda: lines(out) >= 20, DONE_S, "the stuck task to write")
    worker = int(out.with_suffix(".pid").read_text())

    signalled_at, began = time.time(), time.monotonic()
    api.node.proc.signal(signal.SIGTERM)
    code = api.node.proc.wait((grace + 5) * multiplier())
    took = time.monotonic() - began
    assert code == 0, f"the node did not exit 0 within {grace + 5:g}s of SIGTERM ({code}):\n{api.node.log()[-3000:]}"
    assert took < (grace + 5) * multiplier()

    # The task swallowed the interruption of its SIGTERM, so it was SIGKILLed: gone, and its writes over.
    assert out.with_suffix(".interrupted").read_text() == "TaskCancelled"
    assert not alive(worker), "the stuck task's worker process outlived its node"
    stopped = last_write(out)
    assert stopped - signalled_at < (grace + kill_grace + STOPS_WITHIN_S) * multiplier()
    assert_still(out)
    task = other.client.get(task_id)
    assert task.state is TaskState.WAITING and outcomes(task) == ["handed back"], task
    assert task.lost_attempts == 0, "a task handed back is not a lost attempt"


# -- every attempt's footprint ------------------------------------------------------------------------------


def _seconds(value: float) -> str:
    """A span as ``shoal task show`` prints it."""
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.2f} s"


def _mib(size: int) -> str:
    """A size in MiB as ``shoal task show`` prints it."""
    mib = size / MB
    return f"{mib:.0f} MiB" if mib >= 100 else f"{mib:.1f} MiB"


def test_every_attempt_shows_what_it_cost(start: Callable[..., Running]) -> None:
    api = start()
    burnt = api.wait(api.client.submit("iso-burn", "cpu", params={"s": 1}).id)
    assert burnt.state is TaskState.SUCCEED, burnt.error
    (attempt,) = burnt.history
    assert attempt.cpu_s is not None and 0.8 <= attempt.cpu_s <= 1.5, attempt
    assert attempt.max_rss_bytes is not None and attempt.max_rss_bytes > 10 * MB, attempt
    assert attempt.wall_s is not None and attempt.wall_s >= 0.8, attempt
    assert attempt.exit_code is None and attempt.signal is None

    echoed = api.wait(api.client.submit("echo", "hi", params={"delay_s": 0.2}).id)
    assert echoed.state is TaskState.SUCCEED, echoed.error
    (inline,) = echoed.history
    assert inline.wall_s is not None and 0.15 <= inline.wall_s < 5, inline  # timers may fire a ms early
    assert inline.cpu_s is None and inline.max_rss_bytes is None, "an inline attempt's CPU and memory are the node's"

    # The REST answer itself carries every footprint field, null where nothing was measured.
    with httpx.Client(base_url=api.node.http_url, headers=api.node.headers(), trust_env=False) as http:
        rest = http.get(f"/api/v1/tasks/{echoed.id}").json()["history"][0]
        assert {k: rest[k] for k in ("cpu_s", "max_rss_bytes", "exit_code", "signal")} == dict.fromkeys(
            ("cpu_s", "max_rss_bytes", "exit_code", "signal")
        )
        assert rest["wall_s"] == inline.wall_s
        assert http.get(f"/api/v1/tasks/{burnt.id}").json()["history"][0]["cpu_s"] == attempt.cpu_s
        metrics = http.get("/metrics").text

    # /metrics sums the measured CPU per type; nothing is made up for the inline echo.
    cpu = re.search(r'^shoal_attempt_cpu_seconds_total\{type="iso-burn"\} (\S+)$', metrics, re.MULTILINE)
    assert cpu is not None and float(cpu.group(1)) == pytest.approx(attempt.cpu_s, abs=1e-3), metrics
    assert re.search(r'^shoal_attempt_max_rss_bytes_count\{type="iso-burn"\} 1\.0$', metrics, re.MULTILINE), metrics
    assert 'shoal_attempt_cpu_seconds_total{type="echo"}' not in metrics, metrics

    env = {k: v for k, v in os.environ.items() if not k.startswith("SHOAL_")}
    env |= {"SHOAL_API": api.node.http_url, "SHOAL_TOKEN": api.node.token, "NO_COLOR": "1", "COLUMNS": "250"}
    shown = subprocess.run([sys.executable, "-m", "shoal", "task", "show", burnt.id], env=env, capture_output=True,
                           text=True, timeout=60 * multiplier())  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    (row,) = [line for line in shown.stdout.splitlines() if " succeeded " in f" {line} "]
    assert _seconds(attempt.cpu_s) in row and _mib(attempt.max_rss_bytes) in row, shown.stdout
    assert _seconds(attempt.wall_s) in row, shown.stdout


# -- a sync type a worker cannot import is refused ----------------------------------------------------------


BAD_MODULES = {
    "lambda": ('shout = task_type("iso-lambda")(lambda ctx: ctx.target.upper())\n', "'<lambda>'"),
    "nested": (
        "def make():\n"
        '    @task_type("iso-nested")\n'
        "    def inner(ctx):\n"
        "        return ctx.target\n"
        "    return inner\n"
        "\n"
        "inner = make()\n",
        "'make.<locals>.inner'",
    ),
    "rebound": (
        '@task_type("iso-rebound")\ndef original(ctx):\n    return ctx.target\n\nalias, original = original, None\n',
        "'original'",
    ),
}


@pytest.mark.parametrize("kind", sorted(BAD_MODULES))
def test_a_sync_type_a_worker_cannot_import_is_refused_at_load(
    node_factory: Callable[..., TestNode], tmp_path: Path, kind: str
) -> None:
    source, names = BAD_MODULES[kind]
    folder = tmp_path / "modules"
    folder.mkdir()
    module = f"shoal_iso_bad_{kind}"
    (folder / f"{module}.py").write_text(f"from shoal import task_type\n\n{source}")
    node = node_factory(args=["--task-modules", module], ready=False, env=plugin_env(folder))
    code = node.proc.wait(30 * multiplier())
    log = node.log()
    assert code == 2, f"exit code {code}:\n{log[-3000:]}"
    errors = [line for line in log.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "Traceback" not in log, log
    (line,) = errors
    assert f"task type 'iso-{kind}'" in line and names in line and repr(module) in line, line
    assert "isolation='inline'" in line, line


def test_the_same_function_marked_inline_loads_and_runs(start: Callable[..., Running], tmp_path: Path) -> None:
    folder = tmp_path / "modules"
    folder.mkdir()
    inline = 'shout = task_type("iso-lambda", isolation="inline")(lambda ctx: ctx.target.upper())\n'
    (folder / "shoal_iso_inline_lambda.py").write_text(f"from shoal import task_type\n\n{inline}")
    api = start(modules="shoal_iso_inline_lambda", path=folder)
    task = api.wait(api.client.submit("iso-lambda", "quiet").id)
    assert task.state is TaskState.SUCCEED, task.error
    assert api.client.result(task.id).code == "QUIET"
