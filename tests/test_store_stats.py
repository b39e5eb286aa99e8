"""``GET /api/v1/store`` and ``shoal store stats`` as an operator reads them: what the store runs, holds and
keeps, from a live node and, with the nodes down, from the store's own configuration.

The figures are checked against the store itself (read as its administrator) and against the tasks the
test ran; the CLI prints the object the API answers. Bad input exits 2 with one line.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import redis
from click.testing import CliRunner

from shoal.cli.main import cli
from shoal.client import Client
from shoal.models import TaskState
from shoal.store.embedded import EmbeddedRedis, ServerBinary
from shoal.store.stats import server_of
from shoal.testing import TestNode, multiplier, wait_for

ROOT = Path(__file__).resolve().parents[1]
STATES = {state.name for state in TaskState}
WEEK_S = 7 * 86_400.0


def shoal(*args: str, cwd: Path, server: str | None = None) -> subprocess.CompletedProcess[str]:
    """``shoal ARGS`` in a fresh process, as an operator types it (no SHOAL_* from the test's environment but
    SHOAL_REDIS_SERVER when ``server`` is given)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHOAL_")} | {"PYTHONPATH": str(ROOT / "src")}
    env |= {"SHOAL_REDIS_SERVER": server} if server else {}
    done = subprocess.run([sys.executable, "-m", "shoal", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=60 * multiplier())  # fmt: skip
    assert "Traceback" not in done.stderr, done.stderr
    return done


@pytest.fixture
def hour_node(node_factory: Callable[..., TestNode]) -> TestNode:
    """A node that keeps finished tasks for an hour."""
    return node_factory(args=["--retention", "1h"])


@pytest.fixture
def api(hour_node: TestNode) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {hour_node.token}"}
    with httpx.Client(base_url=hour_node.http_url, headers=headers, timeout=30) as client:
        yield client


def store_stats(api: httpx.Client) -> dict[str, Any]:
    response = api.get("/api/v1/store")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def finish_two(node: TestNode) -> tuple[float, float]:
    """One task that succeeds and one killed before it is done; when each ended."""
    with Client(node.http_url, node.token) as client:
        done = client.submit("echo", "hello", wait=20 * multiplier())
        doomed = client.submit("echo", "never", params={"delay_s": 30})
        client.kill(doomed.id)
        killed = client.wait(doomed.id, 20 * multiplier())
    assert done.state is TaskState.SUCCEED and done.finished_at is not None
    assert killed.state is TaskState.KILLED and killed.finished_at is not None
    return done.finished_at, killed.finished_at


@pytest.mark.every_server
def test_the_store_route_tells_the_server_its_keys_and_the_tasks_as_they_finish(
    api: httpx.Client, hour_node: TestNode, redis_server: EmbeddedRedis, redis_binary: ServerBinary
) -> None:
    before = store_stats(api)
    assert set(before) == {"server", "used_memory_bytes", "keys", "tasks", "oldest_finished_at", "retention_s"}
    assert before["server"] == {"name": redis_binary.product.lower(), "version": redis_binary.version_text}
    assert before["tasks"] == dict.fromkeys(STATES, 0)
    assert before["oldest_finished_at"] is None
    assert before["retention_s"] == 3600  # the node's --retention 1h

    with redis.Redis.from_url(redis_server.admin_url) as admin:
        used = int(admin.info("memory")["used_memory"])
        assert 0.5 * used < before["used_memory_bytes"] < 2 * used
        wait_for(lambda: store_stats(api)["keys"] == admin.dbsize(), 10, "keys = the store's DBSIZE")

    done_at, killed_at = finish_two(hour_node)
    after = store_stats(api)
    assert after["tasks"] == {**dict.fromkeys(STATES, 0), "SUCCEED": 1, "KILLED": 1}
    assert after["oldest_finished_at"] == pytest.approx(min(done_at, killed_at), abs=0.01)
    assert after["keys"] > before["keys"]  # the tasks and their indexes


def test_the_store_route_wants_the_token(hour_node: TestNode) -> None:
    with httpx.Client(base_url=hour_node.http_url, timeout=10) as anonymous:
        for headers in ({}, {"Authorization": "Bearer wrong"}):
            response = anonymous.get("/api/v1/store", headers=headers)
            assert response.status_code == 401, response.text
            assert response.headers["www-authenticate"] == "Bearer"
            assert response.json()["error"] == "unauthorized"


def test_the_cli_prints_what_the_route_answers(api: httpx.Client, hour_node: TestNode, tmp_path: Path) -> None:
    finish_two(hour_node)
    served = store_stats(api)
    done = shoal("store", "stats", "--redis", hour_node.redis_url, "--retention", "1h", "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    printed = orjson.loads(done.stdout)
    moving = ("used_memory_bytes", "keys")  # heartbeats and the CLI's own connection change these
    assert {k: v for k, v in printed.items() if k not in moving} == {k: v for k, v in served.items() if k not in moving}
    assert isinstance(printed["keys"], int) and printed["used_memory_bytes"] > 0

    table = shoal("store", "stats", "--redis", hour_node.redis_url, cwd=tmp_path)
    assert table.returncode == 0, table.stderr
    lines = {line.split()[0]: line.split()[1:] for line in table.stdout.splitlines() if line.strip()}
    assert lines["server"] == [served["server"]["name"], served["server"]["version"]]
    assert lines["SUCCEED"] == ["1"] and lines["KILLED"] == ["1"] and lines["RUNNING"] == ["0"]
    assert lines["tasks"] == ["2"] and lines["keys"][0].isdigit()
    assert "7d (604800 s)" in table.stdout  # no --retention and no config: the default, 7 days
    oldest = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(served["oldest_finished_at"]))
    assert lines["oldest"][:3] == ["finished", *oldest.split()]


def test_the_cli_reads_a_stopped_nodes_data_dir(tmp_path: Path, redis_binary: ServerBinary) -> None:
    data_dir = tmp_path / "data"
    node = TestNode(data_dir, "", name="solo", args=["--redis-server", redis_binary.path]).start()
    try:
        done_at, killed_at = finish_two(node)
    finally:
        assert node.stop() == 0

    printed = shoal("store", "stats", "--data-dir", str(data_dir), "--retention", "0", "--json", cwd=tmp_path,
                    server=redis_binary.path)  # fmt: skip
    assert printed.returncode == 0, printed.stderr
    stats = orjson.loads(printed.stdout)
    assert stats["tasks"] == {**dict.fromkeys(STATES, 0), "SUCCEED": 1, "KILLED": 1}
    assert stats["oldest_finished_at"] == pytest.approx(min(done_at, killed_at), abs=0.01)
    assert stats["retention_s"] == 0 and stats["keys"] > 0
    assert stats["server"]["name"] == redis_binary.product.lower()

    config = tmp_path / "node.toml"
    config.write_text(f'data_dir = "{data_dir}"\nretention = "12h"\n')
    table = shoal("store", "stats", "--config", str(config), cwd=tmp_path, server=redis_binary.path)
    assert table.returncode == 0, table.stderr
    assert "12h (43200 s)" in table.stdout and "stopped; opened for this" in table.stdout


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("--redis", "http://127.0.0.1:6379"), "unsupported Redis URL scheme 'http'"),
        (("--redis", "redis://127.0.0.1:notaport"), "bad Redis URL"),
        (("--redis", "redis://127.0.0.1:6379", "--retention", "soon"), "retention"),
        (("--redis", "redis://127.0.0.1:6379", "--retention", "-1"), "retention"),
    ],
)
def test_bad_input_exits_2_with_a_message(args: tuple[str, ...], says: str) -> None:
    done = CliRunner().invoke(cli, ["store", "stats", *args], env={"SHOAL_REDIS": None, "SHOAL_CONFIG": None})
    assert done.exit_code == 2, done.output
    assert says in done.stderr and done.stdout == ""
    assert "Traceback" not in done.output


def test_a_data_dir_without_a_store_exits_2(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    done = CliRunner().invoke(cli, ["store", "stats", "--data-dir", str(empty)], env={"SHOAL_REDIS": None})
    assert done.exit_code == 2, done.output
    assert f"no store in {empty / 'redis'}" in done.stderr and done.stdout == ""
    assert not empty.exists()  # nothing was created


def test_valkey_is_told_from_redis_by_its_own_name_and_version() -> None:
    # As INFO server reads on Valkey 8 (it also reports the Redis version it is compatible with).
    valkey = {"redis_version": "7.2.4", "server_name": "valkey", "valkey_version": "8.0.1"}
    assert server_of(valkey) == ("valkey", "8.0.1")
    assert server_of({"redis_version": "7.0.15", "redis_mode": "standalone"}) == ("redis", "7.0.15")
