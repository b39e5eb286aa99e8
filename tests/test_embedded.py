"""A node and ``shoal up`` with the Redis they start themselves, and nodes on a password-protected Redis."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from shoal.store.embedded import EmbeddedRedis, find_binary
from shoal.testing import TestNode, free_port, wait_for


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
        port = int(re.search(r"embedded redis-server on 127\.0\.0\.1:(\d+)", text).group(1))  # type: ignore[union-attr]
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
        client.set("kept", "yes")
    server.stop()
    server.start()
    try:
        with redis.Redis.from_url(server.url) as client:
            assert client.get("kept") == b"yes"
    finally:
        server.stop()
