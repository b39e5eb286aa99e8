"""The embedded store is closed: a password of its own, a user that may send only shoal's commands, files
for their owner alone, and no password in any process's arguments; a data directory from before all that
keeps its tasks and is closed on its next start.

The URL in ``DATA_DIR/redis/url`` (0600) is the contract: with it an operator reaches the store
(``redis-cli -u "$(cat DATA_DIR/redis/url)"``) as shoal's user, who cannot manage the server.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis
from redis.asyncio import Redis as AsyncRedis

from shoal.client import Client
from shoal.keys import Keys
from shoal.models import TaskSpec
from shoal.store import acl
from shoal.store.embedded import EmbeddedRedis, ServerBinary, find_server
from shoal.store.tasks import TaskStore
from shoal.testing import TestNode, free_port, multiplier, wait_for

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "src" / "shoal" / "store"


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("SHOAL_") or k == "SHOAL_TEST_MULTIPLIER"}


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def refusals(admin_url: str) -> list[str]:
    """What the server refused shoal's user since it started (ACL LOG)."""
    with redis.Redis.from_url(admin_url) as admin:
        return [f"{e['reason']} {e['object']}" for e in admin.acl_log(128) if e["username"] == acl.USER]


def admin_url_of(data_dir: Path) -> str:
    url = (data_dir / "redis" / "url").read_text().strip()
    password = (data_dir / "redis" / "admin-password").read_text().strip()
    return re.sub(r"^redis://[^@]*@", f"redis://default:{password}@", url)


def test_every_command_the_scripts_call_is_allowed() -> None:
    """A script's call the ACL refuses fails only when it runs (and inside ``pcall``, silently)."""
    files = [*(SCRIPTS / "scripts").glob("*.lua"), *(ROOT / "src" / "shoal").rglob("*.py")]  # scripts in Python too
    sources = [p.read_text() for p in files]
    calls = {
        (m[0].lower(), m[1].lower()) for s in sources for m in re.findall(r"redis\.p?call\('(\w+)'(?:, *'(\w+)')?", s)
    }
    assert len(calls) > 20, calls
    missing = {
        f"{c}|{sub}" if sub else c for c, sub in calls if c not in acl.COMMANDS and f"{c}|{sub}" not in acl.COMMANDS
    }
    assert not missing, f"scripts call {sorted(missing)}, which shoal.store.acl.COMMANDS does not allow"


@pytest.fixture
def served(tmp_path: Path, redis_binary: ServerBinary) -> Iterator[EmbeddedRedis]:
    server = EmbeddedRedis(tmp_path / "data", binary=redis_binary.path)
    server.start()
    yield server
    server.stop()


@pytest.mark.every_server
def test_the_url_user_reaches_the_store_but_cannot_manage_the_server(served: EmbeddedRedis) -> None:
    url_file = served.dir / "url"
    url = url_file.read_text().strip()
    assert url == served.url and url.startswith(f"redis://{acl.USER}:") and mode(url_file) == 0o600
    with redis.Redis.from_url(url) as r:
        assert r.set("shoal:probe", "yes") and r.get("shoal:probe") == b"yes"
        for command in (
            ("CONFIG", "SET", "dir", "/tmp"),
            ("CONFIG", "GET", "requirepass"),
            ("MODULE", "LOAD", "/tmp/module.so"),
            ("DEBUG", "SLEEP", "0"),
            ("SHUTDOWN", "NOSAVE"),
            ("FLUSHALL",),
            ("ACL", "SETUSER", "default", "nopass"),
            ("KEYS", "*"),
            ("SET", "not-shoal", "x"),  # only shoal's keys
        ):
            with pytest.raises(redis.ResponseError):
                r.execute_command(*command)
        assert r.ping() and r.get("shoal:probe") == b"yes", "the server still serves, its data intact"
    with pytest.raises(redis.AuthenticationError), redis.Redis(port=served.port) as anonymous:
        anonymous.get("shoal:probe")
    with redis.Redis.from_url(served.admin_url) as admin:
        assert admin.config_get("sanitize-dump-payload") == {"sanitize-dump-payload": "yes"}
    cli = shutil.which("redis-cli")
    if cli is not None:  # the contract, as an operator types it
        shell = subprocess.run(["sh", "-c", f'"{cli}" -u "$(cat "{url_file}")" get shoal:probe'],
                               capture_output=True, text=True, timeout=10)  # fmt: skip
        assert shell.stdout.strip() == "yes", shell.stdout + shell.stderr


@pytest.mark.every_server
def test_passwords_are_in_no_process_list_and_the_files_are_the_owners_alone(served: EmbeddedRedis) -> None:
    assert served.process is not None
    secrets = [(served.dir / name).read_text().strip() for name in ("password", "admin-password")]
    listed = subprocess.run(["ps", "-ww", "-o", "args=", "-p", str(served.process.pid)], capture_output=True,
                            text=True, timeout=10).stdout  # fmt: skip
    argv = Path(f"/proc/{served.process.pid}/cmdline").read_bytes().decode(errors="replace")
    assert Path(served.process.args[0]).name in listed, listed  # redis-server or valkey-server
    for secret in secrets:
        assert len(secret) >= 32 and secret not in listed and secret not in argv
        assert secret not in (served.dir / "redis.conf").read_text(), "the config file keeps hashes only"
    with redis.Redis.from_url(served.url) as r:
        r.set("shoal:written", "so that the append-only file has data")
    assert mode(served.data_dir) == 0o700 and mode(served.dir) == 0o700
    found = {p.relative_to(served.dir).as_posix(): mode(p) for p in served.dir.rglob("*")}
    for name in ("password", "admin-password", "redis.conf", "url", "redis.log"):
        assert found.get(name) == 0o600, (name, found)
    assert any(name.startswith("appendonly") for name in found), found
    assert all(m == (0o700 if (served.dir / name).is_dir() else 0o600) for name, m in found.items()), found


@pytest.mark.e2e
def test_an_older_data_directory_keeps_its_tasks_and_is_closed_on_its_next_start(tmp_path: Path) -> None:
    """A data directory as shoal made it before: no password, everything readable by all."""
    data = tmp_path / "data"
    old_dir = data / "redis"
    old_dir.mkdir(parents=True)
    os.chmod(data, 0o755)
    os.chmod(old_dir, 0o755)
    port = free_port()
    old = subprocess.Popen(
        [find_server().path, "--bind", "127.0.0.1", "--port", str(port), "--dir", str(old_dir), "--appendonly", "yes",
         "--save", "", "--logfile", "redis.log"],
        stdout=subprocess.DEVNULL, umask=0o022,
    )  # fmt: skip
    try:
        wait_for(lambda: redis.Redis(port=port).ping(), 10, "the old-style redis-server")

        async def submit() -> list[str]:
            client = AsyncRedis(port=port)
            try:
                store = TaskStore(client, Keys("shoal"), result_max_bytes=4096)
                tasks = await store.create(
                    [TaskSpec(name=f"old-{i}", type="echo", target=f"kept {i}") for i in range(3)]
                )
                return [t.id for t in tasks]
            finally:
                await client.aclose()

        ids = asyncio.run(submit())
    finally:
        old.terminate()
        old.wait(10)
    assert mode(old_dir / "redis.log") & 0o044, "the old way: readable by all"

    node = TestNode(data, "", name="upgraded")  # its own embedded store, on the old directory
    node.start()
    try:
        with Client(node.http_url, node.token) as client:
            done = [client.wait(task_id, 20 * multiplier()) for task_id in ids]
            assert [(t.name, t.state.name) for t in done] == [(f"old-{i}", "SUCCEED") for i in range(3)]
            assert [client.result(task_id).code for task_id in ids] == [f"kept {i}" for i in range(3)]
        password = (old_dir / "password").read_text().strip()
        url = (old_dir / "url").read_text().strip()
        assert re.fullmatch(rf"redis://{acl.USER}:{re.escape(password)}@127\.0\.0\.1:\d+/0", url), url
        assert mode(data) == 0o700 and mode(old_dir) == 0o700
        assert {p.name: mode(p) for p in old_dir.rglob("*") if p.is_file() and mode(p) != 0o600} == {}
        with pytest.raises(redis.AuthenticationError), redis.Redis(port=int(url.rsplit(":", 1)[1].split("/")[0])) as r:
            r.ping()
    finally:
        assert node.stop() == 0


@pytest.fixture
def up(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], Path, int, str]]:
    """``shoal up`` with two nodes on its embedded store; (process, data dir, first http port, its output)."""
    data, http = tmp_path / "up", free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "shoal", "up", "--nodes", "2", "--data-dir", str(data), "--http-port", str(http),
         "--grpc-port", str(free_port()), "--proxy-port", str(free_port()), "--", "--heartbeat-interval", "0.5"],
        env={**_env(), "COLUMNS": "200"}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )  # fmt: skip
    assert proc.stdout is not None
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if "Ctrl-C" in line:
            break
    try:
        yield proc, data, http, "".join(lines)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(60)
        proc.stdout.close()


@pytest.mark.e2e
def test_a_whole_cluster_runs_as_the_url_user_and_is_refused_nothing(
    up: tuple[subprocess.Popen[str], Path, int, str],
) -> None:
    """Everything a cluster does to its store, from two nodes and the tools, as shoal's user: submit, run,
    kill, delete, list and search, the cache, a hand-over of the master, a node killed while it runs a task
    (its task placed again), a live backup; the server refuses none of it."""
    proc, data, http, shown = up
    password = (data / "redis" / "password").read_text().strip()
    assert password not in shown and f"redis://{acl.USER}:***@127.0.0.1:" in shown, shown
    listed = subprocess.run(["ps", "-ww", "-e", "-o", "args="], capture_output=True, text=True, timeout=10).stdout
    assert "shoal node --name node-2" in listed and password not in listed, "no password in any process list"
    token = (data / "token").read_text().strip()
    base = f"http://127.0.0.1:{http}"
    with Client(base, token) as client:
        done = client.submit("echo", "hello", wait=10)
        assert done.state.name == "SUCCEED" and client.result(done.id).code == "hello"
        killed = client.submit("echo", "never", params={"delay_s": 60})
        wait_for(lambda: client.get(killed.id).state.name == "RUNNING", 15, "the task to run")
        assert client.kill(killed.id).state.name in ("KILLED", "RUNNING")
        wait_for(lambda: client.get(killed.id).state.name == "KILLED", 15, "the kill")
        gone = client.submit("echo", "gone", wait=10)
        client.delete(gone.id)
        found = httpx.get(f"{base}/api/v1/tasks", params={"q": "hello"}, headers={"Authorization": f"Bearer {token}"})
        assert found.status_code == 200 and [t["id"] for t in found.json()["tasks"]] == [done.id], found.text
        client.cache_set("greeting", b"hi", ttl=60)
        assert client.cache_get("greeting") == b"hi"
        view = client.cluster()
        other = next(n.name for n in view.nodes if n.name != view.master)
        assert client.hand_over(other)[0] == other

        lost = client.submit("echo", "survives", params={"delay_s": 1})
        runner = wait_for(lambda: client.get(lost.id).node, 15, "the task to be placed")
        wait_for(lambda: client.get(lost.id).state.name == "RUNNING", 15, "the task to run")
        pid = next(n.pid for n in client.cluster().nodes if n.name == runner)
    survivor = f"http://127.0.0.1:{http + (1 if runner == 'node-1' else 0)}"  # node i listens on http + i - 1
    os.kill(pid, signal.SIGKILL)
    with Client(survivor, token) as client:
        again = client.wait(lost.id, 60 * multiplier())
        assert again.state.name == "SUCCEED" and again.attempts >= 2, again

    command = ["store", "backup", str(data.parent / "live.backup"), "--data-dir", str(data)]
    backup = subprocess.run([sys.executable, "-m", "shoal", *command], env=_env(), capture_output=True, text=True,
                            timeout=60)  # fmt: skip
    assert backup.returncode == 0 and "writes waited" in backup.stdout, backup.stdout + backup.stderr

    admin_url = admin_url_of(data)
    with redis.Redis.from_url(admin_url, decode_responses=True) as admin:
        nodes = [c for c in admin.client_list() if c["name"].startswith("shoal-node-")]
    assert nodes and {c["user"] for c in nodes} == {acl.USER}, nodes
    assert refusals(admin_url) == []
    assert proc.poll() is None
