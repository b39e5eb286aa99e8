"""A store that survives its own machine: two shoal nodes on a ``redis+sentinel://`` URL (a real master,
replica and three sentinels on loopback, passwords on Redis and on the sentinels), and the Redis master
killed with SIGKILL. The cluster carries on with the promoted replica: every task acknowledged before the
kill (and replicated, see the WAIT) ends SUCCEED, new tasks are accepted and run within seconds, no node
crashes, and never do two nodes act as master at once.

The store client also leaves a master the sentinels moved away from while it still runs, and reads
READONLY (a demoted master) and NOREPLICAS as a store down for a moment, even from inside a script. Bad
Redis URLs are refused at start with exit code 2, no password reaches a log, and unix:// URLs work.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis_sentinel import SentinelSet

from shoal.cli.main import cli
from shoal.errors import InvalidInput
from shoal.store import sentinel as store_sentinel
from shoal.store.embedded import ServerBinary, find_binary
from shoal.store.redis import STORE_DOWN, check_url, connect, redacted
from shoal.store.refusals import StoreRefused
from shoal.store.sentinel import parse
from shoal.testing import TestNode, multiplier, wait_for

#: Seconds from the SIGKILL of the Redis master by which the cluster must take tasks again (the
#: sentinels need about 2.3 s with down-after-milliseconds 1000).
ACCEPT_WITHIN = 10.0
TERMINAL = ("SUCCEED", "RUNTIME_ERROR", "KILLED")


pytestmark = pytest.mark.every_server


@pytest.fixture
def sentinels(tmp_path: Path, redis_binary: ServerBinary) -> Iterator[SentinelSet]:
    deployment = SentinelSet(tmp_path / "redis", binary=redis_binary.path)
    try:
        yield deployment.start()
    finally:
        deployment.stop()


class Api:
    """REST calls on the nodes, the way a user makes them."""

    def __init__(self, nodes: list[TestNode]) -> None:
        self.nodes = nodes
        self.http = [httpx.Client(base_url=n.http_url, headers=n.headers(), timeout=10.0, trust_env=False)
                     for n in nodes]  # fmt: skip
        self.statuses: list[int] = []

    def close(self) -> None:
        for client in self.http:
            client.close()

    def post(self, i: int, target: str, delay_s: float = 0) -> httpx.Response:
        body = {"name": "echo", "type": "echo", "target": target, "params": {"delay_s": delay_s}}
        response = self.http[i % len(self.http)].post("/api/v1/tasks", json=body)
        self.statuses.append(response.status_code)
        return response

    def submit(self, count: int, prefix: str, delay_s: float = 0) -> list[str]:
        ids = []
        for i in range(count):
            response = self.post(i, f"{prefix}-{i}", delay_s)
            assert response.status_code == 201, response.text
            ids.append(response.json()["id"])
        return ids

    def task(self, task_id: str) -> dict[str, Any]:
        response = self.http[0].get(f"/api/v1/tasks/{task_id}")
        assert response.status_code == 200, f"{task_id}: {response.status_code} {response.text}"
        body: dict[str, Any] = response.json()
        return body

    def wait_succeeded(self, ids: list[str], timeout: float) -> list[dict[str, Any]]:
        ended: dict[str, dict[str, Any]] = {}

        def all_ended() -> bool:
            for task_id in ids:
                if task_id not in ended:
                    task = self.task(task_id)
                    if task["state"] in TERMINAL:
                        ended[task_id] = task
            return len(ended) == len(ids)

        wait_for(all_ended, timeout, f"{len(ids)} tasks to end ({len(ids) - len(ended)} left)", interval=0.1)
        failed = [t for t in ended.values() if t["state"] != "SUCCEED"]
        assert not failed, failed[:3]
        return [ended[i] for i in ids]

    def views(self) -> list[dict[str, Any]]:
        views = []
        for client in self.http:
            response = client.get("/api/v1/cluster")
            assert response.status_code == 200, response.text
            views.append(response.json())
        return views

    def agreed(self) -> dict[str, Any] | None:
        """The view if both nodes show the same master and epoch, both alive, and one master role."""
        views = self.views()
        first = views[0]
        if first["master"] is None or any(
            (v["master"], v["epoch"]) != (first["master"], first["epoch"]) for v in views
        ):
            return None
        states = {n["name"]: (n["state"], n["role"]) for n in first["nodes"]}
        if any(states.get(n.name, ("", ""))[0] != "alive" for n in self.nodes):
            return None
        return first if [name for name, (_, role) in states.items() if role == "master"] == [first["master"]] else None

    def acting_masters(self) -> list[str]:
        """The nodes that act as master right now, each by its own account (its ``shoal_is_master`` gauge)."""
        acting = []
        for node, client in zip(self.nodes, self.http, strict=True):
            text = client.get("/metrics").text
            if re.search(r"^shoal_is_master 1(\.0)?$", text, re.MULTILINE):
                acting.append(node.name)
        return acting

    def timeline(self) -> list[dict[str, Any]]:
        response = self.http[0].get("/api/v1/cluster/timeline", params={"limit": 200})
        assert response.status_code == 200, response.text
        events: list[dict[str, Any]] = response.json()["events"]
        return events


def test_the_cluster_carries_on_when_the_redis_master_is_killed(sentinels: SentinelSet, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    nodes = [TestNode(data, sentinels.url, name=f"node-{c}", args=["--shutdown-grace", "2"]) for c in "ab"]
    api = Api(nodes)
    try:
        for node in nodes:
            node.start(ready=False)
        for node in nodes:
            node.wait_ready(30.0)
        before = wait_for(api.agreed, 15.0, "both nodes to agree on one master")
        pids = [n.pid for n in nodes]

        # Before the kill: tasks that end, then tasks still running (16 slots) or waiting when it comes.
        early = api.submit(10, "early")
        api.wait_succeeded(early, 15.0)
        in_flight = api.submit(20, "in-flight", delay_s=1.5)
        assert sentinels.replicated() >= 1, "the replica must hold every acknowledged task before the kill"

        old_port, killed_at = sentinels.kill_master()
        accepted_after, probe, probes = None, None, 0
        acting: set[tuple[str, ...]] = set()
        while accepted_after is None:
            assert time.monotonic() - killed_at < ACCEPT_WITHIN * multiplier(), (
                f"no task accepted {ACCEPT_WITHIN:g}s after the kill; statuses {sorted(set(api.statuses))}"
            )
            acting.add(tuple(api.acting_masters()))
            response = api.post(probes, f"probe-{probes}")
            probes += 1
            if response.status_code == 201:
                accepted_after, probe = time.monotonic() - killed_at, response.json()["id"]
            else:  # the store is down for a moment: a clear 503, never a 500
                assert response.status_code == 503, response.text
                time.sleep(0.05)
        assert probe is not None
        api.wait_succeeded([probe], 10.0)
        succeeded_after = time.monotonic() - killed_at

        assert sentinels.master_port() not in (None, old_port)
        late = api.submit(10, "late")
        api.wait_succeeded(early + in_flight + late, 30.0)

        # Nothing crashed, and the cluster still has one master that both nodes agree on.
        assert [n.pid for n in nodes] == pids and all(n.proc.alive() for n in nodes)
        after = wait_for(api.agreed, 10.0, "both nodes to agree on one master after the failover")
        assert after["epoch"] >= before["epoch"]
        assert all(len(a) <= 1 for a in acting), f"two nodes acted as master at once: {acting}"
        # The epoch fence: every election took a new epoch, and no task ran twice.
        elected = [e["epoch"] for e in api.timeline() if e["kind"] == "elected"]
        assert len(elected) == len(set(elected)), elected
        for task_id in early + in_flight + late:
            task = api.task(task_id)
            assert task["attempts"] == 1, task
            result = api.http[1].get(f"/api/v1/tasks/{task_id}/result").json()
            assert (result["code"], result["duplicates"]) == (task["target"], 0), result

        for node in nodes:  # passwords stay out of the logs
            assert "redis-pw" not in node.log() and "sentinel-pw" not in node.log()
        print(f"kill -9 of the Redis master: tasks accepted again after {accepted_after:.2f}s, "
              f"first one SUCCEED after {succeeded_after:.2f}s ({probes} submits tried)")  # fmt: skip
    finally:
        api.close()
        for node in nodes:
            if node.proc.alive():
                node.stop(timeout=15)


async def test_the_store_follows_the_master_the_sentinels_name(
    sentinels: SentinelSet, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A master that still runs after the sentinels moved away from it (a switch-over, or one cut off from
    them) is left within a second; one that was demoted is left at its first READONLY, even from inside a
    script; a master short of replicas (NOREPLICAS) reads as a store that is down for a moment."""
    first, second = sentinels.master_port(), sentinels.replica_port()
    assert first is not None
    client = connect(sentinels.url, name="shoal-test")
    try:
        await client.set("where", "first")
        sentinels.repoint(second)  # the first still answers, as a master: no error would move the pool
        took, errors = await lands_on(client, sentinels, second)
        assert took < 2.0 * multiplier(), took
        # A command under way when the pool moves fails as if the store had gone away: shoal retries those.
        assert all(isinstance(e, RedisConnectionError) for e in errors), errors

        # Now only a READONLY reply can move the pool: the sentinels name the first again, the second is
        # demoted under the pool's open connections.
        monkeypatch.setattr(store_sentinel, "CHECK_EVERY", 3600.0)
        sentinels.repoint(first)
        sentinels.demote(second, to=first)
        took, errors = await lands_on(client, sentinels, first)
        # READONLY, as shoal reads it (Redis 6.2 wraps it in the script's error), or as redis-py's Sentinel
        # connection reads it (Redis 7 returns it as is): both a store down for a moment, both move the pool.
        assert errors and all(demoted_master(e) for e in errors), errors

        # A master short of the replicas it must have (min-replicas-to-write) refuses writes: store down too.
        with sentinels.client(first) as direct:
            direct.config_set("min-replicas-to-write", 2)
            with pytest.raises(StoreRefused, match="NOREPLICAS"):
                await client.eval(INCR, 1, "probe")
            direct.config_set("min-replicas-to-write", 0)
    finally:
        await client.aclose()


#: A write in a script, as every state change in shoal is: Redis 6 wraps a refusal inside a script's error.
INCR = "return redis.call('incr', KEYS[1])"


def demoted_master(error: Exception) -> bool:
    if isinstance(error, StoreRefused):
        return "READONLY" in str(error)
    return isinstance(error, RedisConnectionError) and "previous master is now a slave" in str(error)


async def lands_on(client: Redis, sentinels: SentinelSet, port: int) -> tuple[float, list[Exception]]:
    """Write through ``client`` until a write lands on ``port``; the seconds that took and the errors seen."""
    start, errors = time.monotonic(), []
    with sentinels.client(port) as direct:
        while time.monotonic() - start < 10 * multiplier():
            try:
                value = await client.eval(INCR, 1, "probe")
                if direct.get("probe") == str(value):
                    return time.monotonic() - start, errors
            except STORE_DOWN as exc:
                errors.append(exc)
            await asyncio.sleep(0.02)
    raise AssertionError(f"no write reached port {port} within 10s; errors {errors[:3]}")


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("redis+sentinel://127.0.0.1:26379", "names the service"),
        ("redis+sentinel://:secret@127.0.0.1:port/mymaster", "is not host:port"),
        ("redis+sentinel://127.0.0.1:26379/mymaster/x", "db number"),
        ("redis+sentinel://127.0.0.1:26379/mymaster?sentinel_pasword=secret", "unknown parameter"),
        ("http://127.0.0.1:6379", "unsupported Redis URL scheme"),
    ],
)
def test_a_bad_redis_url_is_refused_at_start(url: str, message: str, tmp_path: Path) -> None:
    for command in (["node", "--data-dir", str(tmp_path)], ["up", "--data-dir", str(tmp_path / "up")]):
        result = CliRunner().invoke(cli, [*command, "--redis", url])
        assert result.exit_code == 2, result.output
        assert message in result.output and "secret" not in result.output
    assert not (tmp_path / "up").exists()


@pytest.mark.e2e
async def test_a_unix_socket_url_reaches_redis(tmp_path: Path) -> None:
    """``unix://`` takes the same connection options as TCP, less the TCP-only keepalive."""
    sock = tmp_path / "redis.sock"
    args = [find_binary(), "--port", "0", "--unixsocket", str(sock), "--save", "", "--dir", str(tmp_path)]
    server = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        wait_for(sock.exists, 10.0, "the Unix socket")
        client = connect(f"unix://{sock}?db=1")
        try:
            assert await client.eval(INCR, 1, "n") == 1
        finally:
            await client.aclose()
    finally:
        server.kill()
        server.wait()


def test_sentinel_urls_are_read_and_redacted() -> None:
    url = "redis+sentinel://app:p%40ss@10.0.0.1:26379,[::1]:26380,sentinel-3/jobs/2?sentinel_password=s3"
    u = parse(url)
    assert u.sentinels == (("10.0.0.1", 26379), ("::1", 26380), ("sentinel-3", 26379))
    assert (u.service, u.db, u.username, u.password, u.sentinel_password) == ("jobs", 2, "app", "p@ss", "s3")
    assert (
        redacted(url) == "redis+sentinel://app:***@10.0.0.1:26379,[::1]:26380,sentinel-3/jobs/2?sentinel_password=***"
    )
    assert redacted("redis://:pw@h:6379/0") == "redis://:***@h:6379/0"
    check_url("redis+sentinel://127.0.0.1/mymaster")
    with pytest.raises(InvalidInput):
        check_url("redis+sentinel://127.0.0.1:0/mymaster")
