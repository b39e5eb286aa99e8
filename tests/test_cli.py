"""The ``shoal`` user commands as a person or a script runs them: real processes against a real node.

Checked: exit codes (0 ok, 1 failed, 2 bad usage or input), stdout for data (``--json`` parses), one line
on stderr for errors and never a traceback.
"""

from __future__ import annotations

import contextlib
import os
import pty
import subprocess
import sys
import termios
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest

from shoal.testing import free_port

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[1]
SCALE = float(os.environ.get("SHOAL_TEST_MULTIPLIER", "1"))
DONE_S = 20.0 * SCALE
UNKNOWN_ID = str(uuid.UUID(int=0xC0FFEE))


class Run:
    """Runs ``python -m shoal`` in a scratch directory, talking to ``node`` unless told otherwise."""

    def __init__(self, cwd: Path, node: Any | None) -> None:
        self.cwd = cwd
        self.node = node

    def environ(self, env: dict[str, str] | None = None) -> dict[str, str]:
        base = {k: v for k, v in os.environ.items() if not k.startswith("SHOAL_") or k == "SHOAL_TEST_MULTIPLIER"}
        base |= {"PYTHONPATH": str(ROOT / "src"), "NO_COLOR": "1", "COLUMNS": "200"}
        if self.node is not None:
            base |= {"SHOAL_API": self.node.http_url, "SHOAL_TOKEN": self.node.token}
        return base | (env or {})

    def __call__(self, *args: str, env: dict[str, str] | None = None, timeout: float = DONE_S + 30) -> Any:
        done = subprocess.run(
            [sys.executable, "-m", "shoal", *args],
            cwd=self.cwd,
            env=self.environ(env),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        assert "Traceback" not in done.stderr, done.stderr
        return done

    def on_terminal(self, *args: str) -> bytes:
        """What the command writes to stdout when stdout is a terminal (a pseudo-terminal, with no newline
        translation, so that the bytes compare as written)."""
        leader, follower = pty.openpty()
        mode = termios.tcgetattr(follower)
        mode[1] &= ~termios.OPOST
        termios.tcsetattr(follower, termios.TCSANOW, mode)
        with subprocess.Popen([sys.executable, "-m", "shoal", *args], cwd=self.cwd, env=self.environ(),
                              stdout=follower, stderr=subprocess.PIPE) as proc:  # fmt: skip
            os.close(follower)
            written = b""
            with contextlib.suppress(OSError):  # EIO once the command has exited and the terminal is closed
                while chunk := os.read(leader, 65536):
                    written += chunk
            os.close(leader)
            assert proc.wait(DONE_S) == 0, proc.stderr.read() if proc.stderr else ""
        return written

    def json(self, *args: str) -> Any:
        done = self(*args, "--json")
        assert done.returncode == 0, done.stderr
        return orjson.loads(done.stdout)


@pytest.fixture
def shoal(shoal_node: Any, tmp_path: Path) -> Run:
    return Run(tmp_path, shoal_node)


def one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), stderr
    return lines[0]


def test_version_and_help(tmp_path: Path) -> None:
    run = Run(tmp_path, None)
    version = run("--version")
    assert version.returncode == 0 and version.stdout.startswith("shoal, version ")
    helped = run("--help")
    assert helped.returncode == 0
    for command in ("task", "cluster", "node", "up"):
        assert f"  {command} " in helped.stdout
    assert run("task", "--help").returncode == 0


def test_submit_wait_prints_the_final_state_and_the_code(shoal: Run, origin: Any) -> None:
    done = shoal("task", "submit", "echo", "hello", "--wait")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "SUCCEED  code: hello\n"  # the line the README shows
    assert done.stderr.startswith("submitted ")

    page = shoal("task", "submit", "fetch", f"{origin.url}/big?bytes=5000", "--wait")
    assert page.returncode == 0, page.stderr
    task_id = page.stderr.split()[1]
    assert page.stdout == f"SUCCEED  code: 4.9 KiB in 1 line (shoal task result {task_id} prints it)\n"

    failed = shoal("task", "submit", "fetch", f"http://127.0.0.1:{free_port()}/", "--wait")  # nothing listens
    assert failed.returncode == 1, failed.stderr
    assert failed.stdout.startswith("RUNTIME_ERROR  error: ") and failed.stdout.count("\n") == 1, failed.stdout
    assert failed.stdout.endswith("\n")

    data = shoal.json("task", "submit", "fetch", f"{origin.url}/hello", "--name", "front", "--wait")
    assert data["task"]["state"] == "SUCCEED" and data["task"]["name"] == "front"
    assert data["result"]["code"] == "hello shoal"


@pytest.mark.parametrize(
    ("code", "shown"),
    [
        ("hello", "SUCCEED  code: hello"),
        ("", "SUCCEED  code: (empty)"),
        ("<html>\n<p>hi</p>\n</html>\n", "SUCCEED  code: 25 B in 3 lines (shoal task result ID prints it)"),
        ("\x00\x1b[31m\ufffd", "SUCCEED  code: 9 B in 1 line (shoal task result ID prints it)"),
    ],
)
def test_outcome_line_shows_a_short_code_and_describes_any_other(code: str, shown: str) -> None:
    from shoal.cli.task import outcome_line
    from shoal.models import Task, TaskState

    task = Task(id="ID", name="n", type="echo", target="t", params={}, state=TaskState.SUCCEED, node="node-1",
                attempts=1, max_retries=0, timeout_s=None, created_at=0, started_at=0, finished_at=0,
                error=None)  # fmt: skip
    assert outcome_line(task, code) == shown


def test_task_show_gives_each_attempt_its_footprint_in_human_units() -> None:
    from rich.console import Console

    from shoal.cli import _output as o
    from shoal.models import Attempt, Task, TaskState

    history = (
        Attempt(
            1,
            "node-2",
            0,
            1,
            "crashed",
            "crashed: worker process killed by SIGSEGV",
            wall_s=0.8123,
            cpu_s=0.51,
            max_rss_bytes=700 * 2**20,
            signal="SIGSEGV",
        ),
        Attempt(2, "node-1", 1, 2, "crashed", "crashed: exit code 3", exit_code=3),
        Attempt(9, "node-3", 2, 3, "node lost", "node lost: 5 beats missed"),
        Attempt(10, "node-3", 3, 130, "succeeded", "", wall_s=125.3, cpu_s=3.2, max_rss_bytes=1536),
    )
    task = Task(id="ID", name="n", type="shout", target="t", params={}, state=TaskState.SUCCEED, node="node-3",
                attempts=10, max_retries=5, timeout_s=None, created_at=0, started_at=3, finished_at=130, error=None,
                history=history, max_lost_attempts=4, lost_attempts=3, attempts_dropped=6)  # fmt: skip
    console = Console(width=200, record=True, no_color=True)
    console.print(o.task_detail(task))
    lines = [line.strip() for line in console.export_text().splitlines()]
    assert any(line.split() == ["lost", "3", "(quarantined", "at", "4)"] for line in lines)
    assert "attempts (6 between the first and the latest not kept)" in lines
    rows = {line.split()[0]: line.split() for line in lines if line.split() and line.split()[0].isdigit()}
    # #, node, started and finished (each "20791d ago"), then the outcome and the footprint
    assert rows["1"][6:14] == ["crashed", "(SIGSEGV)", "812", "ms", "510", "ms", "700", "MiB"]
    assert rows["2"][6:13] == ["crashed", "(exit", "code", "3)", "-", "-", "-"]
    assert rows["9"][6:11] == ["node", "lost", "-", "-", "-"]
    assert rows["10"][6:13] == ["succeeded", "2m", "05s", "3.20", "s", "1.5", "KiB"]


def test_results_and_values_end_their_line_on_a_terminal_and_stay_exact_in_a_pipe(shoal: Run) -> None:
    assert shoal.on_terminal("task", "submit", "echo", "hello", "--wait") == b"SUCCEED  code: hello\n"
    task_id = shoal.json("task", "submit", "echo", "hello", "--wait")["task"]["id"]
    assert shoal.on_terminal("task", "result", task_id) == b"hello\n"
    assert shoal("task", "result", task_id).stdout == "hello"

    assert shoal("cache", "set", "greeting", "hello").returncode == 0
    assert shoal("cache", "set", "lines", "one\ntwo\n").returncode == 0
    assert shoal.on_terminal("cache", "get", "greeting") == b"hello\n"
    assert shoal.on_terminal("cache", "get", "lines") == b"one\ntwo\n"  # no second newline
    assert shoal("cache", "get", "greeting").stdout == "hello"


def test_task_commands_round_trip(shoal: Run, origin: Any) -> None:
    created = shoal.json(
        "task", "submit", "fetch", f"{origin.url}/slow?s=60", "--param", "n=3", "--param", "tag=x", "--retries", "1",
        "--max-lost-attempts", "2",
    )  # fmt: skip
    task_id = created["id"]
    assert created["name"] == "fetch" and created["params"] == {"n": 3, "tag": "x"} and created["max_retries"] == 1
    assert created["max_lost_attempts"] == 2 and created["lost_attempts"] == 0 and created["attempts_dropped"] == 0

    listed = shoal.json("task", "list")
    assert listed["total"] == 1 and [t["id"] for t in listed["tasks"]] == [task_id]
    table = shoal("task", "list")
    assert table.returncode == 0 and task_id in table.stdout and "STATE" in table.stdout
    assert shoal.json("task", "list", "--state", "succeed")["total"] == 0

    shown = shoal("task", "show", task_id)
    assert shown.returncode == 0 and task_id in shown.stdout and "fetch" in shown.stdout
    assert "0 (quarantined at 2)" in shown.stdout
    assert shoal.json("task", "show", task_id)["id"] == task_id

    killed = shoal("task", "kill", task_id)
    assert killed.returncode == 0 and "killed" in killed.stdout
    again = shoal("task", "kill", task_id)
    assert again.returncode == 1 and "KILLED" in one_error_line(again.stderr)
    no_result = shoal("task", "result", task_id)
    assert no_result.returncode == 1 and "no result" in one_error_line(no_result.stderr)

    removed = shoal("task", "rm", task_id)
    assert removed.returncode == 0 and task_id in removed.stdout
    gone = shoal("task", "show", task_id)
    assert gone.returncode == 1 and "no task" in one_error_line(gone.stderr)


def test_result_wait_and_watch_follow_tasks_to_the_end(shoal: Run, origin: Any) -> None:
    first = shoal.json("task", "submit", "fetch", f"{origin.url}/slow?s=1")["id"]
    result = shoal("task", "result", first, "--wait")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "slow done"  # exactly the code: safe to redirect to a file
    assert shoal.json("task", "result", first)["code"] == "slow done"

    second = shoal.json("task", "submit", "fetch", f"{origin.url}/slow?s=1")["id"]
    watched = shoal("task", "watch", second, "--json")
    assert watched.returncode == 0, watched.stderr
    lines = [orjson.loads(line) for line in watched.stdout.splitlines()]
    assert lines and all(line["id"] == second for line in lines)
    assert lines[-1]["state"] == "SUCCEED"

    third = shoal.json("task", "submit", "fetch", f"{origin.url}/slow?s=1")["id"]
    table = shoal("task", "watch", third, first)
    assert table.returncode == 0, table.stderr
    assert third in table.stdout and "SUCCEED" in table.stdout and "2 ended" in table.stdout


def test_kill_and_rm_many(shoal: Run, origin: Any) -> None:
    a = shoal.json("task", "submit", "fetch", f"{origin.url}/slow?s=60")["id"]
    b = shoal.json("task", "submit", "fetch", f"{origin.url}/slow?s=60")["id"]
    partly = shoal("task", "kill", a, b, UNKNOWN_ID, "--json")
    assert partly.returncode == 1  # one of them could not be killed
    assert orjson.loads(partly.stdout) == {"succeed": {a: True, b: True, UNKNOWN_ID: False}}
    assert "1 of 3" in one_error_line(partly.stderr)
    removed = shoal("task", "rm", a, b)
    assert removed.returncode == 0 and a in removed.stdout and b in removed.stdout
    assert shoal.json("task", "list")["total"] == 0


def test_bad_input_exits_2_and_changes_nothing(shoal: Run, origin: Any) -> None:
    kept = shoal.json("task", "submit", "fetch", f"{origin.url}/hello", "--wait")["task"]["id"]
    usage = shoal("task", "submit", "fetch")  # TARGET missing
    assert usage.returncode == 2 and "TARGET" in usage.stderr
    for args, says in [
        (("task", "list", "--state", "bogus"), "unknown state"),
        (("task", "submit", "fetch", f"{origin.url}/hello", "--param", "novalue"), "KEY=VALUE"),
        (("task", "submit", "nosuchtype", f"{origin.url}/hello"), "unknown task type"),
        (("task", "submit", "fetch", "  "), "is required"),
        (("task", "show", "not-an-id"), "malformed task id"),
        (("task", "kill", "not-an-id"), "malformed task id"),
        (("task", "watch", "not-an-id"), "malformed task id"),
    ]:
        done = shoal(*args)
        assert done.returncode == 2, (args, done.stdout, done.stderr)
        assert says in one_error_line(done.stderr), args
    limit = shoal("task", "list", "--limit", "0")
    assert limit.returncode == 2 and "--limit" in limit.stderr
    lost = shoal("task", "submit", "fetch", f"{origin.url}/hello", "--max-lost-attempts", "0")
    assert lost.returncode == 2 and "--max-lost-attempts" in lost.stderr
    after = shoal.json("task", "list")
    assert after["total"] == 1 and after["tasks"][0]["id"] == kept and after["tasks"][0]["state"] == "SUCCEED"


def test_failures_exit_1_with_one_clear_line(shoal: Run, tmp_path: Path) -> None:
    port = free_port()
    refused = shoal("task", "list", env={"SHOAL_API": f"http://127.0.0.1:{port}"})
    assert refused.returncode == 1
    assert f"http://127.0.0.1:{port}" in one_error_line(refused.stderr)
    wrong = shoal("cluster", "status", env={"SHOAL_TOKEN": "wrong"})
    assert wrong.returncode == 1 and "unauthorized" in one_error_line(wrong.stderr)
    missing = shoal("task", "show", UNKNOWN_ID)
    assert missing.returncode == 1 and UNKNOWN_ID in one_error_line(missing.stderr)


def test_cluster_status(shoal: Run, shoal_node: Any) -> None:
    table = shoal("cluster", "status")
    assert table.returncode == 0, table.stderr
    assert shoal_node.name in table.stdout and "master" in table.stdout and "alive" in table.stdout
    data = shoal.json("cluster", "status")
    assert data["master"] == shoal_node.name and data["ready"] is True
    assert shoal_node.name in [n["name"] for n in data["nodes"]]


def test_api_and_token_from_flags_and_token_file(shoal_node: Any, tmp_path: Path) -> None:
    bare = Run(tmp_path, None)  # no SHOAL_API, no SHOAL_TOKEN
    api, token = shoal_node.http_url, shoal_node.token
    flagged = bare("--api", api, "--token", token, "task", "list", "--json")
    assert flagged.returncode == 0 and flagged.stderr.count("warning: --token shows the cluster token") == 1
    assert token not in flagged.stderr and flagged.stdout.startswith("{")
    assert bare("task", "list", "--api", api, "--token", token, "--json").returncode == 0
    no_token = bare("task", "list", "--api", api)
    assert no_token.returncode == 1 and "no token found" in one_error_line(no_token.stderr)
    (tmp_path / ".shoal").mkdir()
    (tmp_path / ".shoal" / "token").write_text(token + "\n")
    from_file = bare("task", "list", "--api", api, "--json")
    assert from_file.returncode == 0 and orjson.loads(from_file.stdout)["total"] == 0
    assert "warning" not in from_file.stderr
