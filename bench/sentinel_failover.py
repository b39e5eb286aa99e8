"""What losing the Redis master costs a shoal cluster on a Sentinel URL, measured (not asserted).

Each run starts a fresh master, replica and three sentinels (tests/redis_sentinel.py: quorum 2,
down-after-milliseconds 1000) and two ``shoal node`` processes on the ``redis+sentinel://`` URL, then:

- ``failover`` (default): kill -9 the Redis master once the replica has everything (WAIT), and time from
  the SIGKILL: the sentinels naming the replica, the first task accepted again (201), that task SUCCEED;
- ``--loss``: submit continuously from several clients and kill -9 the master with no WAIT first; count
  the tasks whose 201 came back but that the promoted replica does not have (and any left unfinished);
- ``--switchover``: the same load through ``SENTINEL FAILOVER`` (the master is demoted, not killed).

    .venv/bin/python bench/sentinel_failover.py --runs 5
    .venv/bin/python bench/sentinel_failover.py --loss --runs 3
    .venv/bin/python bench/sentinel_failover.py --switchover --runs 3
    .venv/bin/python bench/sentinel_failover.py --switchover --min-replicas 1 --runs 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

if __package__ in (None, ""):  # run as a script: make ``tests`` and ``shoal`` importable from the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from shoal.testing import TestNode, wait_for
from tests.redis_sentinel import SERVICE, SentinelSet

TERMINAL = ("SUCCEED", "RUNTIME_ERROR", "KILLED")


class Run:
    """One deployment and two nodes; ``close()`` stops everything."""

    def __init__(self, root: Path, min_replicas: int = 0) -> None:
        self.redis = SentinelSet(root / "redis", min_replicas=min_replicas).start()
        data = root / "data"
        data.mkdir()
        self.nodes = [TestNode(data, self.redis.url, name=f"node-{c}", args=["--shutdown-grace", "1"]) for c in "ab"]
        for node in self.nodes:
            node.start(ready=False)
        for node in self.nodes:
            node.wait_ready(30.0)
        self.http = [self.client(i) for i in range(2)]

    def client(self, i: int) -> httpx.Client:
        node = self.nodes[i % 2]
        return httpx.Client(base_url=node.http_url, headers=node.headers(), timeout=10.0, trust_env=False)

    def close(self) -> None:
        for c in self.http:
            c.close()
        for node in self.nodes:
            node.stop(15)
        self.redis.stop()

    def submit(self, client: httpx.Client, target: str) -> httpx.Response:
        body = {"name": "echo", "type": "echo", "target": target}
        return client.post("/api/v1/tasks", json=body)

    def state(self, task_id: str) -> str:
        response = self.http[0].get(f"/api/v1/tasks/{task_id}")
        return str(response.json()["state"]) if response.status_code == 200 else str(response.status_code)


def failover(run: Run) -> dict[str, float]:
    """Seconds from the SIGKILL to promotion, to the first 201, and to that task's SUCCEED."""
    ids = [run.submit(run.http[i % 2], f"warm-{i}").json()["id"] for i in range(20)]
    wait_for(lambda: all(run.state(i) == "SUCCEED" for i in ids), 15, "the warm-up tasks")
    assert run.redis.replicated() >= 1
    old, killed = run.redis.kill_master()
    figures: dict[str, float] = {}
    probe, i = None, 0
    while "succeed_s" not in figures and time.monotonic() - killed < 30:
        if "promoted_s" not in figures:
            port = run.redis.master_port()
            if port not in (None, old):
                figures["promoted_s"] = time.monotonic() - killed
        if probe is None:
            response = run.submit(run.http[i % 2], f"probe-{i}")
            i += 1
            if response.status_code == 201:
                figures["accepted_s"] = time.monotonic() - killed
                probe = response.json()["id"]
        elif run.state(probe) == "SUCCEED":
            figures["succeed_s"] = time.monotonic() - killed
        time.sleep(0.02)
    return figures


def under_load(run: Run, switchover: bool, lanes: int) -> dict[str, Any]:
    """Submit from ``lanes`` clients, lose the master two seconds in, go on for six more; then count."""
    acked: list[tuple[str, float]] = []
    lock, stop = threading.Lock(), threading.Event()
    statuses: Counter[int] = Counter()

    def lane(n: int) -> None:
        client, k = run.client(n), 0
        while not stop.is_set():
            try:
                response = run.submit(client, f"lane{n}-{k}")
            except httpx.HTTPError:
                continue
            k += 1
            with lock:
                statuses[response.status_code] += 1
                if response.status_code == 201:
                    acked.append((response.json()["id"], time.monotonic()))
        client.close()

    threads = [threading.Thread(target=lane, args=(n,)) for n in range(lanes)]
    for t in threads:
        t.start()
    time.sleep(2.0)
    if switchover:
        with run.redis.client(run.redis.sentinel_ports[0]) as c:
            wait_for(lambda: c.sentinel_failover(SERVICE), 30, "a sentinel to start the switch-over", 0.2)
        at = time.monotonic()
    else:
        _, at = run.redis.kill_master()
    time.sleep(6.0 if not switchover else 12.0)
    stop.set()
    for t in threads:
        t.join()
    time.sleep(3.0)  # let the last ones run
    states = {task_id: run.state(task_id) for task_id, _ in acked}
    lost = [(i, t - at) for i, t in acked if states[i] == "404"]
    unfinished = Counter(s for s in states.values() if s not in (*TERMINAL, "404"))
    before = [t for _, t in acked if t < at]
    return {
        "acked": len(acked),
        "acked_before": len(before),
        "rate_per_s": round(len(before) / 2.0),
        "lost": len(lost),
        "lost_acked_from_s": round(min((d for _, d in lost), default=0.0), 3),
        "lost_acked_until_s": round(max((d for _, d in lost), default=0.0), 3),
        "unfinished": dict(unfinished),
        "statuses": dict(statuses),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=5)
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--loss", action="store_true", help="kill -9 under load, no WAIT: count lost 201s")
    mode.add_argument("--switchover", action="store_true", help="SENTINEL FAILOVER under load: count lost 201s")
    ap.add_argument("--lanes", type=int, default=8, help="clients submitting at once (--loss, --switchover)")
    ap.add_argument("--min-replicas", type=int, default=0, help="min-replicas-to-write of the Redis servers")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "sentinel.json")
    a = ap.parse_args()
    kind = "loss" if a.loss else "switchover" if a.switchover else "failover"
    kind += f"-min-replicas-{a.min_replicas}" if a.min_replicas else ""
    results = []
    for n in range(a.runs):
        with tempfile.TemporaryDirectory(prefix="shoal-sentinel-") as d:
            run = Run(Path(d), a.min_replicas)
            try:
                figures = under_load(run, a.switchover, a.lanes) if a.loss or a.switchover else failover(run)
            finally:
                run.close()
        print(f"run {n + 1}: {figures}", flush=True)
        results.append(figures)
    summary = {}
    for key in results[0]:
        values = [r[key] for r in results if isinstance(r.get(key), int | float)]
        if values:
            summary[key] = {"median": round(statistics.median(values), 3), "min": min(values), "max": max(values)}
    print(f"{kind}, {a.runs} runs: {summary}")
    previous = json.loads(a.out.read_text()) if a.out.exists() else {}
    previous[kind] = {"runs": results, "summary": summary, "at": time.strftime("%Y-%m-%d %H:%M")}
    a.out.write_text(json.dumps(previous, indent=2) + "\n")


if __name__ == "__main__":
    main()
