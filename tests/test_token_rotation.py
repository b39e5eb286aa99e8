"""Rotating the cluster token under ``shoal up``: a node restarted afterwards comes back with the new token,
and rotations started at once never leave the nodes on different tokens.

One real ``shoal up`` with three nodes serves the whole module (its tests run in order and share it).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from shoal.keys import Keys
from shoal.launcher import in_use
from shoal.store.embedded import free_port
from shoal.testing import multiplier, wait_for

pytestmark = pytest.mark.e2e

NODES = 3


def free_run(count: int, avoid: set[int]) -> int:
    """A port such that it and the next ``count - 1`` are free (node i of shoal up listens on base + i - 1)."""
    while True:
        base = free_port()
        run = set(range(base, base + count))
        if base + count < 65535 and not run & avoid and not any(in_use(p) for p in run):
            avoid |= run
            return base


@dataclass
class Up:
    """A running ``shoal up``: its process, data directory and the HTTP address of each node."""

    proc: subprocess.Popen[bytes]
    data_dir: Path
    http: list[str]

    def token(self) -> str:
        return (self.data_dir / "token").read_text().strip()

    def store(self) -> redis.Redis:
        return redis.Redis.from_url((self.data_dir / "redis" / "url").read_text().strip())


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Up]:
    tmp = tmp_path_factory.mktemp("up")
    taken: set[int] = set()
    http, grpc, proxy = (free_run(NODES, taken) for _ in range(3))
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHOAL_") or k == "SHOAL_TEST_MULTIPLIER"}
    argv = [sys.executable, "-m", "shoal", "up", "--nodes", str(NODES), "--data-dir", str(tmp / "data"),
            "--http-port", str(http), "--grpc-port", str(grpc), "--proxy-port", str(proxy),
            "--", "--shutdown-grace", "2"]  # fmt: skip
    with (tmp / "up.log").open("wb") as log:
        proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    cluster = Up(proc, tmp / "data", [f"http://127.0.0.1:{http + i}" for i in range(NODES)])
    try:
        wait_for(lambda: all(ready(url) for url in cluster.http), 60, "every node of shoal up to be ready")
        yield cluster
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60 * multiplier())
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def ready(url: str) -> bool:
    return httpx.get(f"{url}/readyz", timeout=2).status_code == 200


def get(url: str, path: str, token: str) -> httpx.Response:
    return httpx.get(f"{url}{path}", headers={"Authorization": f"Bearer {token}"}, timeout=10)


def rotate(url: str, token: str) -> httpx.Response:
    return httpx.post(f"{url}/api/v1/cluster/token", headers={"Authorization": f"Bearer {token}"}, timeout=30)


def all_alive(up: Up, token: str) -> bool:
    view = get(up.http[0], "/api/v1/cluster", token).json()
    return len(view["nodes"]) == NODES and all(n["state"] == "alive" for n in view["nodes"])


def test_a_node_restarted_after_a_rotation_comes_back_with_the_new_token(up: Up) -> None:
    old = up.token()
    wait_for(lambda: all_alive(up, old), 30, "all three nodes alive")
    answer = rotate(up.http[0], old)
    assert answer.status_code == 200, answer.text
    new = answer.json()["token"]
    assert answer.json()["succeed"] == {f"node-{i + 1}": True for i in range(NODES)}
    wait_for(lambda: up.token() == new, 10, "the token file to hold the new token")

    victim = up.http[1]
    pid = httpx.get(f"{victim}/healthz", timeout=5).json()["pid"]
    os.kill(pid, signal.SIGKILL)  # shoal up starts it again by itself

    def restarted() -> bool:
        return httpx.get(f"{victim}/healthz", timeout=2).json()["pid"] != pid and ready(victim)

    wait_for(restarted, 60, "shoal up to start node-2 again")
    # It serves with the new token, and only with it: it read the token file, not what it was started with.
    assert get(victim, "/api/v1/tasks", new).status_code == 200
    assert get(victim, "/api/v1/tasks", old).status_code == 401
    made = httpx.post(f"{victim}/api/v1/tasks", json={"name": "after", "type": "echo", "target": "back"},
                      headers={"Authorization": f"Bearer {new}"}, timeout=10)  # fmt: skip
    assert made.status_code == 201, made.text
    done = wait_for(lambda: (t := get(victim, f"/api/v1/tasks/{made.json()['id']}", new).json())["state"] == "SUCCEED"
                    and t, 30, "the task to succeed")  # fmt: skip
    assert done["state"] == "SUCCEED"

    def rejoined() -> bool:  # the master admitted it again: it proved it holds the cluster's token
        nodes = {n["name"]: n for n in get(up.http[0], "/api/v1/cluster", new).json()["nodes"]}
        return nodes["node-2"]["pid"] != pid and nodes["node-2"]["state"] == "alive"

    wait_for(rejoined, 30, "node-2 to rejoin the cluster")


def test_a_rotation_while_another_runs_is_refused_with_409(up: Up) -> None:
    token = up.token()
    lease = Keys("shoal").rotation
    with up.store() as store:
        assert store.set(lease, "node-9 held-by-the-test", nx=True, px=60_000)
        try:
            refused = rotate(up.http[2], token)
            assert refused.status_code == 409, refused.text
            assert refused.json()["error"] == "rotation_in_progress"
            assert "already under way (started on node-9)" in refused.json()["message"]
            assert up.token() == token and get(up.http[2], "/api/v1/tasks", token).status_code == 200
        finally:
            store.delete(lease)
    assert rotate(up.http[2], token).status_code == 200


def test_rotations_started_at_once_leave_every_node_on_the_same_token(up: Up) -> None:
    token = up.token()
    start = threading.Barrier(NODES)
    answers: list[Any] = [None] * NODES

    def one(i: int) -> None:
        start.wait()
        answers[i] = rotate(up.http[i], token)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(NODES)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60 * multiplier())
    codes = sorted(a.status_code for a in answers)
    assert set(codes) <= {200, 401, 409} and 200 in codes, [a.text for a in answers]
    # One that arrives after two rotations have run one after the other holds a token two rotations old,
    # which no node accepts any more: 401, and only then.
    assert 401 not in codes or codes.count(200) >= 2, [a.text for a in answers]
    for refused in (a for a in answers if a.status_code == 409):
        assert "already under way" in refused.json()["message"]
    made = {a.json()["token"] for a in answers if a.status_code == 200}
    final = up.token()
    assert final in made
    for url in up.http:  # every node takes the token the cluster ended on
        assert get(url, "/api/v1/tasks", final).status_code == 200, url
