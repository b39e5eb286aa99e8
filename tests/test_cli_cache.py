"""``shoal cache get|set|rm|stats`` and the cache column of ``shoal cluster status``, as real processes
against one real node: bytes in and out unchanged, exit 1 for a missing key, exit 2 for bad input."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from shoal.client import Client
from shoal.testing import TestNode, wait_for

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[1]
BINARY = bytes(range(256)) + b"\r\n\x00 end"


@pytest.fixture(scope="module")
def node(module_redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestNode]:
    started = TestNode(tmp_path_factory.mktemp("cli-cache"), module_redis_url, name="cli-cache-1").start()
    yield started
    started.stop(timeout=15)


def shoal(node: TestNode, cwd: Path, *args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHOAL_") or k == "SHOAL_TEST_MULTIPLIER"}
    env |= {"PYTHONPATH": str(ROOT / "src"), "NO_COLOR": "1", "COLUMNS": "200"}
    env |= {"SHOAL_API": node.http_url, "SHOAL_TOKEN": node.token}
    done = subprocess.run([sys.executable, "-m", "shoal", *args], cwd=cwd, env=env, input=stdin,
                          capture_output=True, timeout=60)  # fmt: skip
    assert b"Traceback" not in done.stderr, done.stderr.decode()
    return done


def test_set_get_rm_keep_bytes_intact(node: TestNode, tmp_path: Path) -> None:
    (tmp_path / "in.bin").write_bytes(BINARY)
    assert shoal(node, tmp_path, "cache", "set", "files/one", "--file", "in.bin").returncode == 0
    assert shoal(node, tmp_path, "cache", "set", "piped/ü", "-", stdin=BINARY[::-1]).returncode == 0
    stored = shoal(node, tmp_path, "cache", "set", "greeting", "hello wörld", "--ttl", "600")
    assert stored.returncode == 0 and stored.stderr.decode().strip() == "stored 12 bytes under 'greeting' for 600s"
    with Client(node.http_url, node.token) as c:
        assert c.cache_get("greeting") == "hello wörld".encode()

    assert shoal(node, tmp_path, "cache", "get", "files/one").stdout == BINARY
    assert shoal(node, tmp_path, "cache", "get", "piped/ü", "--output", "out.bin").stdout == b""
    assert (tmp_path / "out.bin").read_bytes() == BINARY[::-1]

    assert shoal(node, tmp_path, "cache", "rm", "files/one").returncode == 0
    for missing in (["get", "files/one"], ["rm", "files/one"]):
        done = shoal(node, tmp_path, "cache", *missing)
        assert done.returncode == 1 and done.stdout == b""
        assert done.stderr.decode().strip() == "Error: no value in the cache for key 'files/one'"


def test_a_ttl_runs_out(node: TestNode, tmp_path: Path) -> None:
    assert shoal(node, tmp_path, "cache", "set", "brief", "x", "--ttl", "0.5").returncode == 0
    with Client(node.http_url, node.token) as c:
        wait_for(lambda: c.cache_get("brief") is None, 10, "the value to expire")


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["set", "k"], "give the value once"),
        (["set", "k", "v", "--ttl", "-3"], "ttl must be above 0"),
        (["set", "k", "v", "--file", "nowhere.bin"], "does not exist"),
        (["set", "a\tb", "v"], "control characters"),
    ],
)
def test_bad_input_exits_2_and_changes_nothing(node: TestNode, tmp_path: Path, args: list[str], words: str) -> None:
    done = shoal(node, tmp_path, "cache", *args)
    assert done.returncode == 2, done.stderr
    assert words in done.stderr.decode()
    with Client(node.http_url, node.token) as c:
        assert c.cache_get("k") is None


def test_stats_and_cluster_status_show_the_shard(node: TestNode, tmp_path: Path) -> None:
    with Client(node.http_url, node.token) as c:
        c.cache_set("counted", b"y" * 1000)
        for _ in range(3):
            c.cache_get("counted")
        c.cache_get("not-there")
    data = orjson.loads(shoal(node, tmp_path, "cache", "stats", "--json").stdout)
    mine: dict[str, Any] = data["nodes"][node.name]
    assert mine["items"] >= 1 and mine["hits"] >= 3 and mine["misses"] >= 1 and mine["bytes"] >= 1000

    table = shoal(node, tmp_path, "cache", "stats").stdout.decode()
    header, row = table.splitlines()[0], next(line for line in table.splitlines() if node.name in line)
    assert header.split() == ["NODE", "ITEMS", "USED", "/", "CAPACITY", "HITS", "MISSES", "HIT", "RATIO", "EVICTIONS"]
    assert "256 MiB" in row and "%" in row

    def status_shows_cache() -> str | None:
        out = shoal(node, tmp_path, "cluster", "status").stdout.decode()
        return out if "CACHE" in out and " items, " in out else None

    out = wait_for(status_shows_cache, 10, "cluster status to show the cache")
    assert "hits" in next(line for line in out.splitlines() if line.startswith(node.name))
