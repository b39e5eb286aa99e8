"""``shoal store backup|restore|verify`` as the README tells an operator to run them.

A live cluster's store (an external Redis, and a node's embedded one) is backed up while tasks are in
several states, lost, restored, and a node started on it: every task is there with its state and result,
and the ones that were RUNNING or WAITING run to SUCCEED. Bad input exits 2 with one line and changes
nothing; a live store too big for the allowed write pause gives up and writes no file.
"""

from __future__ import annotations

import contextlib
import os
import re
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis
from click.testing import CliRunner

from shoal.cli.main import cli
from shoal.client import Client
from shoal.errors import EmbeddedRedisError
from shoal.models import Task
from shoal.store import backup_file
from shoal.store.backup_file import MAGIC
from shoal.store.embedded import EmbeddedRedis, ServerBinary
from shoal.testing import TestNode, free_port, multiplier, wait_for

ROOT = Path(__file__).resolve().parents[1]
PREFIX = "shoal:shoal:"
RUN_S = 2.0  # how long the tasks caught RUNNING take
QUICK = ("--heartbeat-interval", "0.5")  # a dead node is found, and a live one seen beating, sooner
NO_PREFETCH = ("--prefetch", "0")  # a task submitted while every slot runs waits in the cluster, not on the node


def shoal(*args: str, cwd: Path, server: str | None = None) -> subprocess.CompletedProcess[str]:
    """``shoal ARGS`` in a fresh process, as an operator types it (no SHOAL_* from the test's environment but
    SHOAL_REDIS_SERVER when ``server`` is given)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHOAL_")} | {"PYTHONPATH": str(ROOT / "src")}
    env |= {"SHOAL_REDIS_SERVER": server} if server else {}
    done = subprocess.run([sys.executable, "-m", "shoal", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=60 * multiplier())  # fmt: skip
    assert "Traceback" not in done.stderr, done.stderr
    return done


pytestmark = pytest.mark.every_server


def embedded_node(data_dir: Path, name: str, *args: str) -> TestNode:
    """A node that runs its own redis-server in ``data_dir`` (no store URL)."""
    return TestNode(data_dir, "", name=name, args=list(args))


def wait_states(client: Client, want: dict[str, str]) -> dict[str, Task]:
    def reached() -> dict[str, Task] | None:
        tasks = {i: client.get(i) for i in want}
        return tasks if all(t.state.name == want[i] for i, t in tasks.items()) else None

    return wait_for(reached, 15, f"states {want}", interval=0.05)


def populate(client: Client, slots: int) -> dict[str, str]:
    """Tasks in every state a backup can catch: finished three ways, ``slots`` RUNNING, one WAITING."""
    ids = {
        "done": client.submit("echo", "kept", wait=10).id,
        "failed": client.submit("fetch", f"http://127.0.0.1:{free_port()}/", wait=10).id,
        "killed": client.submit("echo", "never", params={"delay_s": 30}).id,
    }
    client.kill(ids["killed"])
    for i in range(slots):
        ids[f"running-{i}"] = client.submit("echo", f"ran-{i}", params={"delay_s": RUN_S}).id
    wait_states(client, {ids[f"running-{i}"]: "RUNNING" for i in range(slots)})
    ids["waiting"] = client.submit("echo", "placed-later").id  # every slot is taken
    want = {"done": "SUCCEED", "failed": "RUNTIME_ERROR", "killed": "KILLED", "waiting": "WAITING"}
    wait_states(client, {ids[k]: v for k, v in want.items()} | {ids[f"running-{i}"]: "RUNNING" for i in range(slots)})
    return ids


def check_restored(client: Client, ids: dict[str, str], before: dict[str, Task], lost_on: str) -> None:
    """Finished tasks exactly as they were; the RUNNING and WAITING ones ran (again) to SUCCEED."""
    after = {role: client.wait(task_id, 30 * multiplier()) for role, task_id in ids.items()}
    for role in ("done", "failed", "killed"):
        assert (after[role].state, after[role].error, after[role].history) == (
            before[role].state, before[role].error, before[role].history)  # fmt: skip
    assert client.result(ids["done"]).code == "kept"
    for role, task in after.items():
        if role.startswith("running-"):
            assert task.state.name == "SUCCEED", task
            assert client.result(task.id).code == f"ran-{role[-1]}"
            assert task.history[0].node == lost_on and task.history[0].outcome == "node lost", task.history
    assert after["waiting"].state.name == "SUCCEED" and client.result(ids["waiting"]).code == "placed-later"


def version_of(r: redis.Redis) -> tuple[int, ...]:
    info: dict[str, Any] = r.info("server")
    return tuple(int(part) for part in str(info["redis_version"]).split(".")[:2])


@contextlib.contextmanager
def restricted(admin_url: str) -> Iterator[str]:
    """The URL of a user that may not run CLIENT LIST or CLIENT PAUSE, as on some hosted services."""
    with redis.Redis.from_url(admin_url) as r:
        rules = ["reset", "on", ">pw", "~*", "&*", "+@all", "-client", "+client|setname"]
        if version_of(r) >= (7, 2):  # redis-py names its library on connect (CLIENT SETINFO) since Redis 7.2
            rules.append("+client|setinfo")
        r.execute_command("ACL", "SETUSER", "operator", *rules)
        try:
            yield re.sub(r"^redis://[^@/]*@", "redis://operator:pw@", admin_url)
        finally:
            r.execute_command("ACL", "DELUSER", "operator")


def test_a_live_external_store_restored_on_a_new_node_keeps_every_task(
    node_factory: Callable[..., TestNode], redis_url: str, redis_admin_url: str, tmp_path: Path
) -> None:
    old = node_factory("old-1", args=["--slots", "2", *NO_PREFETCH])
    with Client(old.http_url, old.token) as client:
        ids = populate(client, slots=2)
        before = {role: client.get(i) for role, i in ids.items()}

    done = shoal("store", "backup", "cluster.shoal-backup", "--redis", redis_url, "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    report = orjson.loads(done.stdout)
    want = {"SUCCEED": 1, "RUNTIME_ERROR": 1, "KILLED": 1, "RUNNING": 2, "WAITING": 1}
    assert report["tasks"] == want and report["paused_s"] is not None, report  # a live cluster: writes waited
    assert (tmp_path / "cluster.shoal-backup").stat().st_mode & 0o777 == 0o600

    with restricted(redis_admin_url) as url:  # a Redis that does not tell who is connected, nor pause writes
        refused = run("store", "restore", str(tmp_path / "cluster.shoal-backup"), "--redis", url, "--replace")
        assert refused.exit_code == 2 and "old-1" in refused.output, refused.output  # seen beating
        refused = run("store", "backup", str(tmp_path / "unpaused.shoal-backup"), "--redis", url)
        assert refused.exit_code == 2 and "refuses to pause writes" in refused.output, refused.output
        assert not (tmp_path / "unpaused.shoal-backup").exists()

    old.kill()  # the machine and its store are lost
    with redis.Redis.from_url(redis_admin_url) as r:
        r.flushall()
    done = shoal("store", "restore", "cluster.shoal-backup", "--redis", redis_url, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "2 task(s) were on nodes at backup time" in done.stdout, done.stdout

    new = node_factory(
        "new-1", args=["--slots", "2", *QUICK]
    )  # another machine: old-1 is found dead, its tasks re-placed
    with Client(new.http_url, new.token) as client:
        check_restored(client, ids, before, lost_on="old-1")
        later = client.submit("echo", "after the restore", wait=10)
        page = client.list(limit=10)
        assert later.state.name == "SUCCEED" and page.total == len(ids) + 1 and page.tasks[0].id == later.id


def test_an_embedded_store_backed_up_live_and_restored_into_a_new_data_dir(
    tmp_path: Path, redis_binary: ServerBinary
) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    server = ("--redis-server", redis_binary.path)

    def store(*args: str) -> subprocess.CompletedProcess[str]:
        return shoal("store", *args, cwd=tmp_path, server=redis_binary.path)

    node = embedded_node(
        first, "solo", "--slots", "1", "--shutdown-grace", "0.5", *server, *QUICK, *NO_PREFETCH
    ).start()
    try:
        with Client(node.http_url, node.token) as client:
            ids = populate(client, slots=1)
            before = {role: client.get(i) for role, i in ids.items()}
            done = store("backup", "solo.backup", "--data-dir", str(first))
            assert done.returncode == 0, done.stderr
            assert "5 task(s)" in done.stdout and "writes waited" in done.stdout, done.stdout

            refused = store("restore", "solo.backup", "--data-dir", str(first), "--replace")
            assert refused.returncode == 2 and "solo" in refused.stderr and "--force" in refused.stderr, refused.stderr
            assert client.list().total == len(ids)
    finally:
        assert node.stop() == 0
    assert not (first / "redis" / "url").exists(), "the url file goes with the embedded server"

    stopped = store("backup", "stopped.backup", "--data-dir", str(first))
    assert stopped.returncode == 0 and "no node was running" in stopped.stdout, stopped.stderr + stopped.stdout

    done = store("restore", "solo.backup", "--data-dir", str(second))
    assert done.returncode == 0, done.stderr
    assert "1 task(s) were on nodes at backup time" in done.stdout, done.stdout
    node = embedded_node(
        second, "solo", *server, *QUICK
    ).start()  # the same name: it hands back what its earlier life ran
    try:
        with Client(node.http_url, node.token) as client:
            check_restored(client, ids, before, lost_on="solo")
    finally:
        node.stop()


@pytest.fixture
def stored(redis_url: str, redis_admin_url: str, tmp_path: Path) -> Iterator[tuple[redis.Redis, Path]]:
    """A store with shoal keys of every kind a backup meets, another application's key, and a good backup;
    the client is the administrator's (it sees every key)."""
    r = redis.Redis.from_url(redis_admin_url)
    r.set(PREFIX + "seq", 7)
    r.hset(PREFIX + "task:t1", mapping={"state": "4", "name": "kept"})
    r.zadd(PREFIX + "index:all", {"t1": 1})
    r.xadd(PREFIX + "pending", {"id": "t1"})
    r.xgroup_create(PREFIX + "pending", "scheduler", id="0")
    r.set(PREFIX + "node:gone", "x", px=600_000)
    r.set(PREFIX + "lease", "old-master", px=5000)
    r.set("other:app", "untouched")
    assert shoal("store", "backup", "good.backup", "--redis", redis_url, cwd=tmp_path).returncode == 0
    yield r, tmp_path / "good.backup"
    r.close()


def contents(r: redis.Redis) -> dict[bytes, bytes]:
    return {key: r.dump(key) for key in sorted(r.keys("*"))}


def run(*args: str) -> Any:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_bad_restores_exit_2_with_one_line_and_change_nothing(stored: tuple[redis.Redis, Path], redis_url: str) -> None:
    r, good = stored
    data = good.read_bytes()
    folder = good.parent
    (folder / "text.backup").write_text("name,state\nt1,SUCCEED\n")
    at = len(data) - 45  # inside the last key's payload (the file ends with 4 + 8 + 32 bytes)
    (folder / "flipped.backup").write_bytes(data[:at] + bytes([data[at] ^ 1]) + data[at + 1 :])
    (folder / "short.backup").write_bytes(data[:-20])
    (folder / "long.backup").write_bytes(data + b"x")
    (folder / "header.backup").write_bytes(MAGIC + struct.pack(">I", 2**31))
    head = orjson.dumps({"format": 1, "cluster": "shoal", "created_at": 1.0, "redis_version": "6.2", "tasks": {}})
    (folder / "payload.backup").write_bytes(MAGIC + struct.pack(">I", len(head)) + head + struct.pack(">I", 3) + b"seq"
                                            + struct.pack(">q", -1) + struct.pack(">I", 2**31))  # fmt: skip
    (folder / "format.backup").write_bytes(MAGIC + struct.pack(">I", 13) + b'{"format": 9}')
    before = contents(r)
    cases = {
        "missing.backup": "cannot read",
        "text.backup": "not a shoal backup",
        "flipped.backup": "checksum does not match",
        "short.backup": "truncated",
        "long.backup": "length is wrong",
        "header.backup": "header claims 2147483648 bytes",
        "payload.backup": "payload of 2147483648 bytes",
        "format.backup": "format 9",
    }
    for name, message in cases.items():
        result = run("store", "restore", str(folder / name), "--redis", redis_url, "--replace")
        assert result.exit_code == 2 and message in result.output, (name, result.output)
        assert len(result.output.strip().splitlines()) == 1, result.output
        assert contents(r) == before, name

    result = run("store", "restore", str(good), "--redis", redis_url)
    assert result.exit_code == 2 and "already holds cluster 'shoal'" in result.output and "--replace" in result.output
    result = CliRunner().invoke(cli, ["store", "restore", str(good), "--redis", redis_url],
                                env={"SHOAL_CLUSTER": "other"})  # fmt: skip
    assert result.exit_code == 2 and "holds cluster 'shoal', not 'other'" in result.output, result.output
    assert contents(r) == before


def test_bad_backups_exit_2_and_write_nothing(stored: tuple[redis.Redis, Path], redis_url: str) -> None:
    r, good = stored
    data = good.read_bytes()
    result = run("store", "backup", str(good), "--redis", redis_url)
    assert result.exit_code == 2 and "already exists" in result.output and good.read_bytes() == data
    result = run("store", "backup", str(good.parent / "b"), "--redis", redis_url, "--max-pause", "30")
    assert result.exit_code == 2 and "--max-pause" in result.output
    result = run("store", "backup", str(good.parent / "b"), "--data-dir", str(good.parent / "nothing-here"))
    assert result.exit_code == 2 and "no store in" in result.output and not (good.parent / "nothing-here").exists()
    result = run("store", "backup", str(good.parent / "b"), "--redis", "http://127.0.0.1:1/")
    assert result.exit_code == 2 and "unsupported Redis URL scheme" in result.output
    assert sorted(p.name for p in good.parent.iterdir() if p.name.endswith("backup") or p.name == "b") == [good.name]


def test_restore_replace_puts_back_exactly_the_clusters_keys(stored: tuple[redis.Redis, Path], redis_url: str) -> None:
    r, good = stored
    saved = {k: v for k, v in contents(r).items() if k.startswith(PREFIX.encode()) and not k.endswith(b"lease")}
    r.delete(PREFIX + "task:t1")
    r.set(PREFIX + "task:t2", "newer")
    r.set("other:app", "changed since")
    verified = run("store", "verify", str(good), "--json")
    assert verified.exit_code == 0 and orjson.loads(verified.output)["keys"] == len(saved)

    result = run("store", "restore", str(good), "--redis", redis_url, "--replace")
    assert result.exit_code == 0, result.output
    now = {k: v for k, v in contents(r).items() if k.startswith(PREFIX.encode())}
    assert now == saved, "the cluster's keys as backed up, the lease left out"
    assert 0 < r.pttl(PREFIX + "node:gone") <= 600_000, "times to live go with the keys"
    assert r.xinfo_groups(PREFIX + "pending")[0]["name"] == b"scheduler", "consumer groups go with their streams"
    assert r.get("other:app") == b"changed since", "a restore touches only the cluster's keys"


def test_a_live_store_too_big_for_the_write_pause_gives_up_and_writes_nothing(
    redis_url: str, redis_admin_url: str, tmp_path: Path
) -> None:
    with redis.Redis.from_url(redis_admin_url) as r:
        with r.pipeline(transaction=False) as pipe:
            for i in range(300_000):  # several times what the fastest server copies in 0.1 s
                pipe.set(f"{PREFIX}result:{i}", "x" * 100)
            pipe.execute()
        now = r.time()
        r.zadd(PREFIX + "nodes", {"busy": now[0] + now[1] / 1e6})  # a node beating on it
        result = run("store", "backup", str(tmp_path / "big.backup"), "--redis", redis_url, "--max-pause", "0.1")
        assert result.exit_code == 1 and "did not fit in a 0.1s write pause" in result.output, result.output
        assert list(tmp_path.iterdir()) == []
        assert r.set("written", "after the pause"), "writes go on"


def test_a_live_copy_is_one_moment_of_the_store_while_scripts_write(
    redis_url: str, redis_admin_url: str, tmp_path: Path
) -> None:
    """Every write of shoal is a script; the copy must not fall between two of them, across all its batches."""
    keys = [f"{PREFIX}result:{i}" for i in range(3000)]
    stop = threading.Event()
    with redis.Redis.from_url(redis_admin_url) as r:
        r.mset(dict.fromkeys(keys, 0))
        now = r.time()
        r.zadd(PREFIX + "nodes", {"busy": now[0] + now[1] / 1e6})  # a node beating on it

        def write() -> None:
            with redis.Redis.from_url(redis_url) as w:
                bump = w.register_script("for _, k in ipairs(KEYS) do redis.call('INCR', k) end")
                while not stop.is_set():
                    bump(keys=keys)

        writer = threading.Thread(target=write)
        writer.start()
        try:
            wait_for(lambda: int(r.get(keys[-1]) or 0) > 3, 10, "the writer to be writing")
            result = run("store", "backup", str(tmp_path / "moment.backup"), "--redis", redis_url)
        finally:
            stop.set()
            writer.join(10)
        assert result.exit_code == 0 and "writes waited" in result.output, result.output
        r.flushall()
        result = run("store", "restore", str(tmp_path / "moment.backup"), "--redis", redis_url, "--force")
        assert result.exit_code == 0, result.output
        values = {int(v) for v in r.mget(keys)}
        assert len(values) == 1 and values.pop() > 3, "every key as of one moment"


@pytest.mark.e2e
def test_a_second_server_is_never_started_on_a_served_data_dir(tmp_path: Path) -> None:
    server = EmbeddedRedis(tmp_path)
    server.start()
    try:
        with pytest.raises(EmbeddedRedisError, match="already served by the redis-server at"):
            EmbeddedRedis(tmp_path).start()
    finally:
        server.stop()
    assert not (tmp_path / "redis" / "url").exists()


def crc64(data: bytes) -> int:
    """Redis's CRC-64 (Jones, reflected), which ends every DUMP payload."""
    crc = 0
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x95AC9329AC4BC9B5 if crc & 1 else 0)
    return crc


def forged(payload: bytes) -> bytes:
    """The DUMP payload of a small hash with its element count raised past its entries and the checksum
    made right again: its checksum and version pass, and only a Redis that checks a payload whole sees the
    damage (Redis 6.2 keeps such a hash as a ziplist, 7.0 as a listpack; the count is in either header)."""
    body = bytearray(payload[:-8])
    body[2 + (8 if payload[0] == 13 else 4)] += 2  # type, string length, then the header's count
    return bytes(body) + struct.pack("<Q", crc64(bytes(body)))


def test_a_forged_payload_is_refused_whole_and_the_store_keeps_serving(
    stored: tuple[redis.Redis, Path], redis_url: str
) -> None:
    r, good = stored
    r.hset(PREFIX + "task:forged", mapping={"name": "x", "state": "4"})
    payload = forged(r.dump(PREFIX + "task:forged"))
    r.delete(PREFIX + "task:forged")
    path = good.parent / "forged.backup"
    writer = backup_file.Writer(path)
    writer.begin(backup_file.Header("shoal", time.time(), "7.0.15", {"SUCCEED": 2}))
    writer.add(b"task:t1", -1, r.dump(PREFIX + "task:t1"))
    writer.add(b"task:forged", -1, payload)
    writer.commit()
    assert run("store", "verify", str(path)).exit_code == 0, "the file itself is whole: the damage is inside"

    before = contents(r)
    result = run("store", "restore", str(path), "--redis", redis_url, "--replace")
    assert result.exit_code == 2, result.output
    assert "damaged key 'task:forged'" in result.output and "nothing was restored" in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1, result.output
    assert contents(r) == before, "the store is as it was"
    assert r.ping() and r.hgetall(PREFIX + "task:t1") == {b"state": b"4", b"name": b"kept"}, "and still serves"
