"""Across real hosts: the master cut off from Redis and from the other nodes by a network partition.

Five hosts in network namespaces (``netlab``): Redis on host 1, three shoal nodes on hosts 2-4 (each
with its own address, default settings: beat 1 s, lease 5 s), and host 5, the test's observer
(``observer.py``), which reaches every host throughout. The partition cuts the master's host off
from host 1 and from the other nodes' hosts in both directions, so its packets are dropped (no
refusals: to the others it looks alive but silent, as a real partition does).
"""

from __future__ import annotations

import json
import os
import secrets
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from shoal.store.embedded import find_binary
from shoal.testing import multiplier, wait_for

from .netlab import Lab
from .observer import ObserverClient

pytestmark = [pytest.mark.lab, pytest.mark.e2e]

#: The master lease with default settings: dead_after (5) x heartbeat_interval (1 s).
LEASE_S = 5.0
REDIS_HOST, NODE_HOSTS, OBSERVER_HOST = 1, (2, 3, 4), 5
PREFIX = "shoal:shoal:"
HTTP_PORT = 8080
#: How long each echo task of the stream runs: long enough that the master holds some at the cut.
TASK_S = 1.0


class Shoal:
    """Redis, three nodes and the observer in ``lab``; every call goes through the observer."""

    def __init__(self, lab: Lab, root: Path) -> None:
        self.lab = lab
        self.root = root
        self.token = secrets.token_urlsafe(32)
        self.redis_url = f"redis://{lab.ip(REDIS_HOST)}:6379/0"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("SHOAL_") or k == "SHOAL_TEST_MULTIPLIER"}
        self.obs: ObserverClient
        self._records: list[list[Any]] = []

    def name(self, k: int) -> str:
        return f"node-{k}"

    def host(self, name: str) -> int:
        return int(name.rsplit("-", 1)[1])

    def url(self, k: int) -> str:
        return f"http://{self.lab.ip(k)}:{HTTP_PORT}"

    def start(self) -> None:
        lab, data = self.lab, self.root / "redis"
        data.mkdir()
        lab.spawn(REDIS_HOST, [find_binary(), "--bind", lab.ip(REDIS_HOST), "--port", "6379", "--protected-mode", "no",
                               "--appendonly", "yes", "--appendfsync", "everysec", "--save", "", "--dir", str(data),
                               "--daemonize", "no"], log=self.root / "redis.log")  # fmt: skip
        proc = lab.spawn(OBSERVER_HOST, [sys.executable, str(Path(__file__).with_name("observer.py")),
                                         "--redis", self.redis_url, "--prefix", PREFIX],
                         env={**self.env, "SHOAL_LAB_TOKEN": self.token}, log=self.root / "observer.log",
                         pipes=True)  # fmt: skip
        self.obs = ObserverClient(proc, timeout=20.0 * multiplier())
        wait_for(lambda: self.obs.call("redis", commands=[["PING"]]) == [True], 10, "Redis on host 1")
        self.obs.call("monitor")  # before any node: the record starts with the first lease
        for k in NODE_HOSTS:
            ip, data_dir = lab.ip(k), self.root / self.name(k)
            data_dir.mkdir()
            lab.spawn(k, [sys.executable, "-m", "shoal", "node", "--name", self.name(k), "--data-dir", str(data_dir),
                          "--redis", self.redis_url, "--http", f"{ip}:{HTTP_PORT}", "--grpc", f"{ip}:6666",
                          "--proxy", f"{ip}:3128", "--advertise-host", ip, "--shutdown-grace", "2"],
                      env={**self.env, "SHOAL_TOKEN": self.token}, log=data_dir / "node.log")  # fmt: skip
        for k in NODE_HOSTS:
            wait_for(lambda: self.ready(k), 30, f"{self.name(k)} to be ready")  # noqa: B023 (called at once)

    def ready(self, k: int) -> bool:
        return bool(self.obs.get(f"{self.url(k)}/readyz")["status"] == 200)

    def view(self, k: int) -> dict[str, Any] | None:
        reply = self.obs.get(f"{self.url(k)}/api/v1/cluster")
        return reply["body"] if reply["status"] == 200 else None

    def agreed(self, hosts: tuple[int, ...] = NODE_HOSTS) -> dict[str, Any] | None:
        """The view if every node in ``hosts`` shows the same master and epoch, all three nodes alive and
        exactly one of them master; else None."""
        views = [self.view(k) for k in hosts]
        first = views[0]
        if first is None or first["master"] is None:
            return None
        if any(v is None or (v["master"], v["epoch"]) != (first["master"], first["epoch"]) for v in views):
            return None
        shown = {n["name"]: n for n in first["nodes"]}
        if set(shown) != {self.name(k) for k in NODE_HOSTS} or any(n["state"] != "alive" for n in shown.values()):
            return None
        return first if [n for n, i in shown.items() if i["role"] == "master"] == [first["master"]] else None

    def records(self) -> list[list[Any]]:
        """The observer's MONITOR record so far (fetched incrementally)."""
        self._records += self.obs.call("records", since=len(self._records))
        return self._records

    def task_fields(self, ids: list[str]) -> list[list[Any]]:
        commands: list[list[Any]] = []
        for task_id in ids:
            commands.append(["HGET", f"{PREFIX}task:{task_id}", "state"])
            commands.append(["HEXISTS", f"{PREFIX}task:{task_id}", "result"])
            commands.append(["LRANGE", f"{PREFIX}attempts:{task_id}", 0, -1])
            commands.append(["HGET", f"{PREFIX}task:{task_id}", "run"])  # the latest attempt
            commands.append(["LLEN", f"{PREFIX}dupes:{task_id}"])
        replies: list[Any] = self.obs.call("redis", commands=commands, timeout=30.0)
        rows = [replies[i : i + 5] for i in range(0, len(replies), 5)]
        return [
            [state, result, [*attempts, *([run] if run else [])], dupes] for state, result, attempts, run, dupes in rows
        ]

    def logs(self) -> str:
        """The tail of every log of the lab, for a failing run."""
        parts = []
        paths = [self.root / "redis.log", self.root / "observer.log"]
        paths += [self.root / self.name(k) / "node.log" for k in NODE_HOSTS]
        for path in paths:
            if path.exists():
                lines = path.read_text(errors="replace").splitlines()[-40:]
                parts.append(f"--- {path.relative_to(self.root)} (last {len(lines)} lines)\n" + "\n".join(lines))
        return "\n".join(parts)


def placements(records: list[list[Any]]) -> list[tuple[float, str, str, int]]:
    """(Redis time, task id, node, epoch) of every placement written (the HSET of node and epoch: place.lua's,
    or submit.lua's for a task placed as it was stored)."""
    return [(r[0], r[3], f["node"], int(f["epoch"])) for r in records if r[2] == "hset"
            and (f := written(r)).get("node") and "epoch" in f]  # fmt: skip


def written(record: list[Any]) -> dict[str, str]:
    """The fields and values an HSET record wrote."""
    args = record[4]
    return dict(zip(args[::2], args[1::2], strict=False))


def lease_events(records: list[list[Any]]) -> list[tuple[float, str, str | None]]:
    """(Redis time, what, holder) of each lease write: 'won' (SET), 'renewed' (PEXPIRE), 'freed' (DEL)."""
    out: list[tuple[float, str, str | None]] = []
    holder: str | None = None
    for at, _, kind, _, args in records:
        if kind == "set":
            holder = args[0]
            out.append((at, "won", holder))
        elif kind == "pexpire":
            out.append((at, "renewed", holder))
        elif kind == "del":
            out.append((at, "freed", holder))
            holder = None
    return out


def running_on(records: list[list[Any]], node: str, since: float) -> set[str]:
    """Tasks whose latest placement is on ``node`` and whose latest state write, at or after ``since``,
    was RUNNING: started there just now."""
    where: dict[str, str] = {}
    state: dict[str, tuple[str, float]] = {}
    for r in records:
        if r[2] != "hset":
            continue
        fields = written(r)
        if "node" in fields:
            where[r[3]] = fields["node"]
        if "state" in fields:
            state[r[3]] = (fields["state"], r[0])
    return {t for t, (s, at) in state.items() if s == "RUNNING" and at >= since and where.get(t) == node}


def succeeded(records: list[list[Any]]) -> dict[str, int]:
    """Task id -> how many times its record was set to SUCCEED."""
    counts: dict[str, int] = {}
    for r in records:
        if r[2] == "hset" and written(r).get("state") == "SUCCEED":
            counts[r[3]] = counts.get(r[3], 0) + 1
    return counts


def test_partitioned_master_steps_down_and_rejoins_without_double_placement(lab: Lab, tmp_path: Path) -> None:
    """Partition the master (host M) from Redis and from the other nodes, heal, and check the fencing story.

    Clocks: every time here is Unix seconds of the one kernel clock all namespaces share; Redis's times
    come from its MONITOR feed, recorded by the observer (lease writes, placements, state writes, each
    with the instant Redis executed it).

    Let ``t_renew`` be the last renewal of the old master's lease that Redis executed (its PEXPIRE). The
    old master counts its lease from *before* it sent that renewal, so by its own clock it may place only
    until ``t_renew + 0.8 x lease``; Redis lets the lease lapse at ``t_renew + lease`` at the earliest, and
    only then may another node take it. While the cut lasts no write of the old master can reach Redis
    at all, so the placement check guards the edges: the last writes before the cut, and writes that
    TCP delivers late after the heal, which the epoch must fence. The old master's own decision to stop
    is read from the old master itself. So we assert:

    (a) the old master stops before its lease can have run out: no placement under its epoch E landed
        later than ``t_renew + lease`` (at any time, until the end of the test), and
        its own ``shoal_is_master`` gauge, sampled every 50 ms from the observer (which still reaches it),
        read 0 at a sample taken no later than ``t_renew + lease``; the new master won the lease no earlier
        than ``t_renew + lease`` (the partitioned master's port drops, it does not refuse, so nobody may
        break its lease): the two terms do not overlap;
    (b) a new master with epoch > E takes over and tasks placed under its epoch reach SUCCEED;
    (c) after the heal every node, the old master included, shows the new master and epoch, all three
        nodes alive, the old one as a worker (possibly in a new incarnation), and it never claims the
        master role again;
    (d) every task submitted (a steady stream through the two other nodes, all test long) ends SUCCEED:
        its record was set to SUCCEED exactly once, it has one result and exactly one succeeded attempt;
        none is lost. A late report from the old master of a task it ran during the partition is kept
        as a duplicate beside the record, never written over it.
    """
    shoal = Shoal(lab, tmp_path)
    try:
        shoal.start()
        _scenario(shoal)
    except BaseException:
        print(shoal.logs())
        raise


def _scenario(shoal: Shoal) -> None:
    obs, lab = shoal.obs, shoal.lab
    view = wait_for(shoal.agreed, 30, "three nodes to agree on one master", interval=0.1)
    assert view is not None
    old, epoch = view["master"], view["epoch"]
    m = shoal.host(old)
    others = [k for k in NODE_HOSTS if k != m]
    incarnation = {n["name"]: n["incarnation"] for n in view["nodes"]}
    obs.call("watch", url=shoal.url(m))
    obs.call("stream_start", urls=[shoal.url(k) for k in others], every=0.1, delay_s=TASK_S)

    # The old master is placing right up to the cut, and runs tasks of its own that it cannot report.
    def ready_to_cut() -> set[str] | None:
        records = shoal.records()
        held = running_on(records, old, since=time.time() - 0.5)
        return held if held and sum(1 for p in placements(records) if p[3] == epoch) >= 10 else None

    held = wait_for(ready_to_cut, 15, f"{old} to place 10 tasks and to have just started one", interval=0.05)
    assert held is not None
    t_cut = time.time()
    lab.partition(m, [REDIS_HOST, *others])

    def taken_over() -> dict[str, Any] | None:
        v = shoal.view(others[0])
        return v if v is not None and v["master"] not in (None, old) and v["epoch"] > epoch else None

    new_view = wait_for(taken_over, 20, "a new master to take over", interval=0.1)
    assert new_view is not None
    new, new_epoch = new_view["master"], new_view["epoch"]
    assert new in {shoal.name(k) for k in others}

    def placed_and_done() -> bool:
        records = shoal.records()
        done = succeeded(records)
        return sum(1 for p in placements(records) if p[3] == new_epoch and p[1] in done) >= 10

    wait_for(placed_and_done, 20, f"10 tasks placed by {new} (epoch {new_epoch}) to succeed", interval=0.1)

    def declared_dead() -> bool:
        v = shoal.view(others[0])
        return v is not None and any(n["name"] == old and n["state"] == "dead" for n in v["nodes"])

    wait_for(declared_dead, 20, f"{new} to declare {old} dead", interval=0.1)
    wait_for(lambda: any(s[1] == 0 and s[0] > t_cut for s in obs.call("watched", url=shoal.url(m))), 10,
             f"{old} to step down by its own clock", interval=0.1)  # fmt: skip
    t_heal = time.time()
    lab.heal()

    def rejoined() -> dict[str, Any] | None:
        v = shoal.agreed()  # every node's view, the old master's included
        return v if v is not None and (v["master"], v["epoch"]) == (new, new_epoch) else None

    healed = wait_for(rejoined, 25, f"{old} to rejoin as a worker under {new}", interval=0.1)
    assert healed is not None
    rejoined_at = time.time()
    after = {n["name"]: n for n in healed["nodes"]}
    assert after[old]["role"] == "worker" and after[new]["role"] == "master"
    assert after[old]["incarnation"] >= incarnation[old]

    # Keep the stream going a little past the heal, then let every task finish.
    wait_for(lambda: obs.call("stream_count") > 0 and time.time() > rejoined_at + 1.0, 5, "a last second of tasks")
    stream = obs.call("stream_stop")
    ids = [s[0] for s in stream["submitted"]]
    assert stream["failures"] == [], f"submissions through {others} failed: {stream['failures'][:5]}"

    def all_terminal() -> list[list[Any]] | None:
        rows = shoal.task_fields(ids)
        return rows if all(r[0] in ("SUCCEED", "RUNTIME_ERROR", "KILLED") for r in rows) else None

    rows = wait_for(all_terminal, 30, f"all {len(ids)} tasks to end", interval=0.2)
    assert rows is not None
    records = shoal.records()
    _check_fencing(shoal, records, old, epoch, new, t_cut)
    _check_tasks(ids, rows, records)
    replaced = {p[1] for p in placements(records) if p[1] in held and p[3] == new_epoch}
    assert replaced, f"none of the tasks {old} ran at the cut ({sorted(held)}) was placed again by {new}"
    samples = obs.call("watched", url=shoal.url(m))
    assert not [s for s in samples if s[1] == 1 and s[0] > t_heal], f"{old} claimed the master role again: {samples}"
    # The cut was real: nothing of the old master's reached Redis while it lasted (a write already in flight
    # at the cut may land just after it).
    mine = [r for r in records if r[2] == "script" and r[1].startswith(lab.ip(m) + ":")]
    during = [r for r in mine if t_cut + 0.5 < r[0] < t_heal]
    assert not during, f"{old} reached Redis through the partition: {during[:5]}"
    print(f"lab: {len(ids)} tasks; cut at {t_cut:.3f}, healed at {t_heal:.3f}; {old} epoch {epoch} -> "
          f"{new} epoch {new_epoch}; {old} incarnation {incarnation[old]} -> {after[old]['incarnation']}; "
          f"scripts {old} ran after the heal: {sorted({r[3] for r in mine if r[0] > t_heal})}")  # fmt: skip


def _check_fencing(shoal: Shoal, records: list[list[Any]], old: str, epoch: int, new: str, t_cut: float) -> None:
    leases = lease_events(records)
    won = [at for at, what, holder in leases if what == "won" and holder == new and at > t_cut]
    assert won, f"no lease won by {new} after the cut: {leases[-10:]}"
    t_won = won[0]
    renewals = [at for at, what, holder in leases if what == "renewed" and holder == old and at < t_won]
    assert renewals, f"{old} never renewed its lease: {leases[:10]}"
    t_renew = renewals[-1]
    deadline = t_renew + LEASE_S
    mine = [p for p in placements(records) if p[3] == epoch]
    late = [p for p in mine if p[0] > deadline]
    assert not late, f"placed under {old}'s epoch {epoch} after its lease could have run out ({deadline:.3f}): {late}"
    samples = shoal.obs.call("watched", url=shoal.url(shoal.host(old)))
    down = [at for at, value in samples if value == 0 and at > t_renew]
    assert down, f"{old}'s own gauge never read 0 after its last renewal: {samples}"
    assert down[0] <= deadline, (
        f"{old} still called itself master {down[0] - t_renew:.3f}s after its last renewal (lease {LEASE_S}s): "
        f"{samples}"
    )
    assert t_won >= deadline - 0.01, f"{new} took the lease {deadline - t_won:.3f}s before {old}'s could lapse"
    print(f"fencing: last renewal by {old} at +{t_renew - t_cut:.3f}s from the cut, its last placement at "
          f"+{max(p[0] for p in mine) - t_cut:.3f}s, its gauge read 0 by +{down[0] - t_cut:.3f}s, "
          f"{new} won at +{t_won - t_cut:.3f}s")  # fmt: skip


def _check_tasks(ids: list[str], rows: list[list[Any]], records: list[list[Any]]) -> None:
    assert len(set(ids)) == len(ids)
    done = succeeded(records)
    per_task = {}
    for task_id, (state, has_result, attempts, dupes) in zip(ids, rows, strict=True):
        outcomes = [json.loads(a).get("outcome") for a in attempts]
        per_task[task_id] = (state, has_result, outcomes, dupes, done.get(task_id, 0))
    bad = {t: v for t, v in per_task.items() if v[0] != "SUCCEED" or v[1] != 1 or v[2].count("succeeded") != 1
           or v[4] != 1}  # fmt: skip
    assert not bad, (
        f"{len(bad)} task(s) not SUCCEED exactly once (state, has result, attempt outcomes, duplicates, SUCCEED "
        f"writes): {list(bad.items())[:5]}"
    )
    placed: dict[str, int] = {}
    for _, task_id, _, _ in placements(records):
        placed[task_id] = placed.get(task_id, 0) + 1
    print(f"tasks: {len(ids)} SUCCEED once each; placed more than once: {sum(1 for n in placed.values() if n > 1)}; "
          f"late duplicates recorded: {sum(v[3] for v in per_task.values())}")  # fmt: skip
