"""A worker cut off from the store, its peers still reaching it: it stops its tasks before the master may
place them elsewhere (self-fencing), so no task runs on two nodes at once.

node-a reaches the store only through a relay on loopback that the test can cut: while cut, the relay
forwards nothing and answers nothing (connections stay open, as across a network partition), so node-a's
beats stop reaching the store while every node still reaches node-a over gRPC. Tasks are the selftest's:
each execution writes a start line and an end line (with its outcome) to a journal file, which tells
what really ran, and when, even while the store cannot be told.

Heartbeats of 0.2 s and ``dead_after`` 5: the master may declare node-a dead once the store has heard
nothing from it for 1 s (3 s while node-a still answers probes); node-a must stop its tasks before 1 s.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import orjson
import pytest

from shoal.testing import TestNode, wait_for

from .conftest import GRACE_ARGS, Cluster, until

INTERVAL, DEAD_AFTER = 0.2, 5
BEATS = ["--heartbeat-interval", str(INTERVAL), "--dead-after", str(DEAD_AFTER)]
WORKER = [*BEATS, "--no-master-eligible", "--task-modules", "shoal.selftest.tasks", "--slots", "2"]
#: The silence after which the master may declare a node dead and place its tasks elsewhere.
SILENCE_LIMIT_S = INTERVAL * DEAD_AFTER


class CuttableRelay:
    """Forwards loopback connections to the store; ``cut()`` holds every byte both ways until ``heal()``."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.server.getsockname()[1]
        self.open = threading.Event()
        self.open.set()
        self.closed = False
        self.sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def cut(self) -> float:
        self.open.clear()
        return time.time()

    def heal(self) -> float:
        self.open.set()
        return time.time()

    def close(self) -> None:
        self.closed = True
        self.open.set()
        for sock in [self.server, *self.sockets]:
            with contextlib.suppress(OSError):
                sock.close()

    def _accept(self) -> None:
        while not self.closed:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            self.open.wait()  # a connection made during the cut gets no answer until it heals
            if self.closed:
                client.close()
                return
            upstream = socket.create_connection(self.target)
            self.sockets += [client, upstream]
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(src, dst), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                self.open.wait()
                dst.sendall(data)
        for sock in (src, dst):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()


@pytest.fixture
def relay(redis_url: str) -> Iterator[CuttableRelay]:
    parts = urlsplit(redis_url)
    cut = CuttableRelay((parts.hostname or "127.0.0.1", parts.port or 6379))
    yield cut
    cut.close()


def through(redis_url: str, relay: CuttableRelay) -> str:
    """``redis_url`` with its host and port replaced by the relay's (its credentials kept)."""
    parts = urlsplit(redis_url)
    credentials = parts.netloc.rpartition("@")[0]
    netloc = f"{credentials}@127.0.0.1:{relay.port}" if credentials else f"127.0.0.1:{relay.port}"
    return urlunsplit(parts._replace(netloc=netloc))


def journal(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()] if path.exists() else []


def event(path: Path, task_id: str, kind: str, node: str) -> dict[str, Any] | None:
    found = [e for e in journal(path) if e["task"] == task_id and e["event"] == kind and e["node"] == node]
    return found[0] if found else None


def cut_off_worker(cluster: Cluster, relay: CuttableRelay) -> TestNode:
    """node-a: a worker that reaches the store only through the relay (and may never become master)."""
    node = TestNode(cluster.data_dir, through(cluster.redis_url, relay), name="node-a", args=[*GRACE_ARGS, *WORKER])
    cluster.nodes[node.name] = node
    return node.start(timeout=30.0)


def submit(cluster: Cluster, via: TestNode, path: Path, delay_s: float) -> str:
    body = {"name": "long", "type": "selftest", "target": "long", "params": {"journal": str(path), "delay_s": delay_s}}
    response = cluster.http(via).post("/api/v1/tasks", json=body)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def test_a_worker_cut_off_from_the_store_stops_its_task_before_another_node_runs_it(
    cluster: Cluster, relay: CuttableRelay, tmp_path: Path
) -> None:
    master = cluster.add("node-m", args=[*BEATS, "--no-run-tasks"])
    worker = cut_off_worker(cluster, relay)
    path = tmp_path / "journal"
    task_id = submit(cluster, master, path, delay_s=30)
    until(lambda: event(path, task_id, "start", "node-a"), 20, "the task to start on node-a")
    cluster.add("node-c", args=WORKER)  # where the master can place it once node-a is declared dead

    cut_at = relay.cut()
    second = until(lambda: event(path, task_id, "start", "node-c"), 30, "the task to be placed again, on node-c")
    ended = until(lambda: event(path, task_id, "end", "node-a"), 5, "node-a to stop the task")
    healed_at = relay.heal()

    assert ended["outcome"] == "cancelled"
    assert ended["at"] < cut_at + SILENCE_LIMIT_S, "node-a ran its task past the silence the master tolerates"
    assert ended["at"] < second["at"], f"the task ran on node-a until {ended['at']} and on node-c from {second['at']}"
    # node-a comes back (a new incarnation, its stopped task given elsewhere): the task is node-c's alone.
    wait_for(lambda: (cluster.node_info(master, "node-a") or {}).get("state") == "alive", 30, "node-a back")
    assert cluster.task(master, task_id)["node"] == "node-c"
    assert healed_at > second["at"]
    assert "stopped 1 running task(s)" in worker.log()


def test_a_short_cut_hands_the_stopped_task_back_at_once_and_it_runs_again(
    cluster: Cluster, relay: CuttableRelay, tmp_path: Path
) -> None:
    """Cut for longer than node-a waits but shorter than the master waits for a node that answers probes:
    node-a is never declared dead, so its stopped task is still placed on it; it hands it back as soon as
    it reaches the store again, not held against the task, and the task runs again and succeeds."""
    master = cluster.add("node-m", args=[*BEATS, "--no-run-tasks"])
    cut_off_worker(cluster, relay)
    path = tmp_path / "journal"
    task_id = submit(cluster, master, path, delay_s=4)
    until(lambda: event(path, task_id, "start", "node-a"), 20, "the task to start on node-a")

    cut_at = relay.cut()
    ended = until(lambda: event(path, task_id, "end", "node-a"), 5, "node-a to stop the task")
    relay.heal()
    assert ended["outcome"] == "cancelled" and ended["at"] < cut_at + SILENCE_LIMIT_S

    wait_for(lambda: cluster.task(master, task_id)["state"] == "SUCCEED", 30, "the task to run again and succeed")
    task = cluster.task(master, task_id)
    first = task["history"][0]
    assert first["outcome"] == "handed back", first
    assert "could not reach the store" in first["error"], first
    assert task["history"][-1]["outcome"] == "succeeded"
    dead = cluster.events("dead", "node-a")
    assert not dead, f"node-a was declared dead, so this test did not check the hand-back: {dead}"


def test_a_worker_held_up_past_its_limit_but_still_reaching_the_store_keeps_its_task(
    cluster: Cluster, relay: CuttableRelay, tmp_path: Path
) -> None:
    """A node whose event loop was held up (here: SIGSTOP for a little longer than its fence waits, well
    short of what the master waits for a node that does not answer probes) still reaches the store: it
    beats once more before it would stop anything, gets through, and its task runs on to success."""
    master = cluster.add("node-m", args=[*BEATS, "--no-run-tasks"])
    worker = cut_off_worker(cluster, relay)
    path = tmp_path / "journal"
    task_id = submit(cluster, master, path, delay_s=3)
    until(lambda: event(path, task_id, "start", "node-a"), 20, "the task to start on node-a")

    assert worker.pid is not None
    os.kill(worker.pid, signal.SIGSTOP)
    time.sleep(SILENCE_LIMIT_S)  # the fence's limit is one beat less; the master's, a probe's time more
    os.kill(worker.pid, signal.SIGCONT)

    wait_for(lambda: cluster.task(master, task_id)["state"] == "SUCCEED", 30, "the task to succeed")
    task = cluster.task(master, task_id)
    assert task["attempts"] == 1, task["history"]
    assert [e["outcome"] for e in journal(path) if e["event"] == "end"] == ["succeeded"]
    assert not cluster.events("dead", "node-a")
