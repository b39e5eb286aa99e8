"""A store of a million finished tasks: listing, search, start-up, the task center's first screen, backup.

A script, not a test (figures depend on the machine; nothing asserts on them; each is printed beside its goal):

    .venv/bin/python bench/million.py                          # 1,000,000 tasks, 1 node (10-20 minutes)
    .venv/bin/python bench/million.py --tasks 50000 --json out.json
    .venv/bin/python bench/million.py --tasks 200000 --nodes 3 --requests 500 --loads 5 --no-ui

It starts the benchmark's redis-server (``bench/redis_server.py``: append-only file, no snapshots) and
fills it in this process through shoal's own store code, with the writes a cluster makes: the master's
lease and roster (``NodeRegistry.take_lease``, ``TaskStore.publish_roster``), submits of 1,000 tasks per
call that place them on three nodes at once (``TaskStore.create``), the nodes' starts and reports
(``begin_many``, ``finish_many``), users' kills (``kill``), and the nodes' inbox orders read and
acknowledged (``read_orders``, ``ack_orders``). The store then holds what such a cluster leaves: every
task finished, nothing queued. The fill rate is printed as it goes. The mix: names from 300 distinct
prefixes (``fetch-news-eu 1234``), targets ``item-N`` (N < 1000), 90 % SUCCEED with a 10-byte result,
7 % RUNTIME_ERROR, 3 % KILLED (two thirds before they ran, one third while running). Then, on that store:

- ``used_memory`` grown over the fill, per task;
- ``shoal up --nodes N`` (the store's URL in ``SHOAL_REDIS``): seconds from the spawn until every node's
  ``/readyz`` answers 200 (goal < 5 s), and until ``/api/v1/cluster`` shows a master and every node alive;
- ``GET /api/v1/tasks`` through httpx, ``--requests`` times each, one at a time, after 10 untimed ones:
  the first page (goal p99 < 20 ms), a state filter cycling the three final states (< 20 ms), and a search
  by a random name prefix, ``name=`` (< 100 ms); p50, p99 and max in ms (nearest rank). Beside them, for
  reference, the same prefix as a text search, ``q=`` (a bounded scan: name or target contains it), and a
  page of one row (``limit=1``): what a request costs with almost no task to read. Each
  figure records the CPU other processes used meanwhile (``bench.machine.OtherLoad``, % of one core): on a
  shared machine that, not the store, may be what a figure shows;
- the task center's first screen in Chromium, measured by ``bench.ui_load.first_screen`` (goal < 1 s);
- ``shoal store backup`` while the cluster runs (time, file size, how long writes waited) and, if that is
  given up (a store too big to copy within ``--max-pause``), again with the nodes stopped; then ``shoal
  store restore`` of that file into a second, empty redis-server, and its ``used_memory``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import redis

if __package__ in (None, ""):  # run as a script: make ``bench`` importable from the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.machine import OtherLoad
from bench.procs import REAPER, free_port_block, wait_until
from bench.redis_server import RedisServer
from bench.report import percentiles
from shoal.keys import Keys
from shoal.models import AttemptOutcome, Footprint, TaskResult, TaskSpec, TaskState
from shoal.store import schema
from shoal.store.nodes import NodeRegistry
from shoal.store.redis import connect
from shoal.store.tasks import Report, TaskStore

CLUSTER = "shoal"
#: The nodes the filled tasks ran on: the names ``shoal up`` gives its first three.
FILL_NODES = ("node-1", "node-2", "node-3")
#: Tasks per submit call (and per start and report call of each node).
BATCH = 1000
LEASE_S = 30.0
VERBS = ("fetch", "crawl", "index", "resize", "report", "sync", "backup", "mail", "score", "export")
NOUNS = ("news", "prices", "users", "images", "orders", "logs", "feeds", "invoices", "maps", "videos")
REGIONS = ("eu", "us", "ap")
PREFIXES = [f"{v}-{n}-{r}" for v in VERBS for n in NOUNS for r in REGIONS]  # 300, none inside another
#: How finished tasks end, in shares that add up to 1.
FATES = {"SUCCEED": 0.90, "RUNTIME_ERROR": 0.07, "KILLED before it ran": 0.02, "KILLED while running": 0.01}
ERRORS = ("upstream answered 503", "timed out after 30 s", "connection refused", "ValueError: bad record")
#: Each kind of listing timed, with its goal for p99 in ms (None: a reference without a goal).
GOALS_MS: dict[str, float | None] = {"first page": 20.0, "state filter": 20.0, "name search": 100.0,
                                     "text search (q=)": None, "one row (limit=1)": None}  # fmt: skip
READY_GOAL_S = 5.0
FIRST_SCREEN_GOAL_MS = 1000.0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=1_000_000, help="finished tasks in the store (default 1,000,000)")
    parser.add_argument("--nodes", type=int, default=1, help="nodes of the cluster started on the store (default 1)")
    parser.add_argument("--requests", type=int, default=300, help="timed requests of each kind (default 300)")
    parser.add_argument("--loads", type=int, default=10, help="page loads per first-screen figure (default 10)")
    parser.add_argument("--no-ui", action="store_true", help="skip the first screen in Chromium")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    parser.add_argument("--seed", type=int, default=1, help="of the mix of names and fates")
    parser.add_argument("--workdir", type=Path, help="keep the stores, data dirs, logs and backup here")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args(argv)
    if args.tasks < 1 or args.nodes < 1 or args.requests < 1 or args.loads < 1:
        parser.error("--tasks, --nodes, --requests and --loads must be at least 1")
    return args


# -- the fill ------------------------------------------------------------------------------------------


@dataclass
class Fill:
    tasks: int = 0
    seconds: float = 0.0
    states: dict[str, int] | None = None


def fates(rng: random.Random, n: int) -> list[str]:
    return rng.choices(list(FATES), weights=list(FATES.values()), k=n)


async def fill(url: str, n: int, seed: int, progress: Callable[[int, float], None]) -> Fill:
    """Store ``n`` finished tasks as a master and three nodes would, a batch at a time (never all in memory)."""
    client = connect(url, name="bench-fill")
    keys = Keys(CLUSTER)
    tasks = TaskStore(client, keys, result_max_bytes=16 * 1024 * 1024)
    registry = NodeRegistry(client, keys)
    rng = random.Random(seed)
    started = time.perf_counter()
    try:
        await schema.ensure(tasks)
        lease = await registry.take_lease(FILL_NODES[0], LEASE_S, term=0)
        if lease.verdict != "won":
            raise RuntimeError(f"the store's master lease is held by {lease.holder}: not an empty store")
        epoch = lease.epoch
        for node in FILL_NODES:
            await tasks.ensure_groups(node)
        roster = [(node, BATCH, ("*",)) for node in FILL_NODES]
        done = 0
        while done < n:
            size = min(BATCH, n - done)
            await registry.take_lease(FILL_NODES[0], LEASE_S, term=epoch)
            await tasks.publish_roster(epoch, roster, (), LEASE_S)
            await _one_batch(tasks, rng, done, size)
            done += size
            progress(done, time.perf_counter() - started)
        await tasks.withdraw_roster(epoch)
        await registry.release_lease(FILL_NODES[0], epoch=epoch)
        seconds = time.perf_counter() - started
        counts = await tasks.counts()
    finally:
        await client.aclose()
    return Fill(tasks=n, seconds=seconds, states={k: v for k, v in counts.items() if v})


async def _one_batch(tasks: TaskStore, rng: random.Random, first: int, size: int) -> None:
    specs = [
        TaskSpec(name=f"{rng.choice(PREFIXES)} {first + k}", type="echo", target=f"item-{rng.randrange(1000)}")
        for k in range(size)
    ]
    created = await tasks.create(specs)
    unplaced = [t.id for t in created if t.state is not TaskState.INQUEUE]
    if unplaced:
        raise RuntimeError(f"{len(unplaced)} tasks were not placed at once (is a cluster running on this store?)")
    fate = dict(zip((t.id for t in created), fates(rng, size), strict=True))
    for task in created:
        if fate[task.id] == "KILLED before it ran":
            await tasks.kill(task.id)
    by_node: dict[str, list[str]] = {}
    for task in created:
        if fate[task.id] != "KILLED before it ran":
            by_node.setdefault(str(task.node), []).append(task.id)
    for node, ids in by_node.items():
        begun = await tasks.begin_many(node, [(task_id, False) for task_id in ids])
        reports = []
        for task_id, started in zip(ids, begun, strict=True):
            if started is None:
                raise RuntimeError(f"task {task_id} did not start on {node}")
            if fate[task_id] == "KILLED while running":
                await tasks.kill(task_id)  # its node cancels it and reports nothing, as a worker does
                continue
            wall = round(rng.uniform(0.0002, 0.002), 4)
            footprint = Footprint(wall_s=wall, loop_blocked_s=wall)
            if fate[task_id] == "SUCCEED":
                code = f"r{rng.randrange(10**9):09d}"  # a 10-byte result
                result = TaskResult(task_id, code, node, started.attempts, time.time())
                reports.append(Report(task_id, started.attempts, AttemptOutcome.SUCCEEDED, "", result, footprint))
            else:
                error = rng.choice(ERRORS)
                reports.append(Report(task_id, started.attempts, AttemptOutcome.FAILED, error, None, footprint))
        verdicts = await tasks.finish_many(node, reports)
        wrong = [v for v in verdicts if v.verdict != "done"]
        if wrong:
            raise RuntimeError(f"{len(wrong)} reports on {node} not taken: {wrong[:3]}")
        orders = await tasks.read_orders(node, again=False, count=100 * BATCH, block_ms=1)
        await tasks.ack_orders(node, orders)


# -- the cluster on the filled store -------------------------------------------------------------------


class Cluster:
    """``shoal up --nodes N`` on the store's URL (from SHOAL_REDIS, so no URL shows on a command line)."""

    def __init__(self, root: Path, url: str, nodes: int) -> None:
        self.data_dir = root / "data"
        self.nodes = nodes
        base = free_port_block(3 * nodes)
        self.http_urls = [f"http://127.0.0.1:{base + i}" for i in range(nodes)]
        ports = ["--http-port", str(base), "--grpc-port", str(base + nodes), "--proxy-port", str(base + 2 * nodes)]
        self.argv = [sys.executable, "-m", "shoal", "up", "--nodes", str(nodes), "--data-dir", str(self.data_dir),
                     *ports]  # fmt: skip
        self.env = dict(os.environ, SHOAL_REDIS=url)
        self.log = root / "shoal-up.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.token = ""

    @property
    def http_url(self) -> str:
        return self.http_urls[0]

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def start(self) -> dict[str, float]:
        """Start it; seconds until every node is ready, and until a master and every node show alive."""
        others = OtherLoad()
        others.start()
        started = time.perf_counter()
        self.proc = REAPER.spawn("shoal up", self.argv, log=self.log, env=self.env, grace=50.0)
        wait_until(self._ready, 300.0, "shoal up", self.proc, interval=0.02)
        ready = time.perf_counter() - started
        self.token = (self.data_dir / "token").read_text().strip()
        wait_until(self._all_alive, 120.0, f"{self.nodes} nodes alive", self.proc, interval=0.02)
        alive = time.perf_counter() - started
        return {"ready_s": round(ready, 2), "all_alive_s": round(alive, 2), "other_cpu_pct": round(others.stop())}

    def _ready(self) -> bool:
        try:
            return all(httpx.get(f"{u}/readyz", timeout=1.0, trust_env=False).status_code == 200
                       for u in self.http_urls)  # fmt: skip
        except httpx.HTTPError:
            return False

    def _all_alive(self) -> bool:
        try:
            r = httpx.get(f"{self.http_url}/api/v1/cluster", headers=self.headers, timeout=2.0, trust_env=False)
        except httpx.HTTPError:
            return False
        view = r.json() if r.status_code == 200 else {}
        alive = [n for n in view.get("nodes", []) if n.get("state") == "alive"]
        return view.get("master") is not None and len(alive) >= self.nodes

    def stop(self) -> None:
        if self.proc is not None:
            REAPER.stop(self.proc)
            self.proc = None


def requests_of(kind: str, rng: random.Random) -> Iterator[dict[str, str]]:
    """The query parameters of each request of ``kind``, for ever."""
    states = ("SUCCEED", "RUNTIME_ERROR", "KILLED")
    for i in range(sys.maxsize):
        if kind == "first page":
            yield {}
        elif kind == "one row (limit=1)":
            yield {"limit": "1"}
        elif kind == "state filter":
            yield {"state": states[i % len(states)]}
        elif kind == "name search":
            yield {"name": rng.choice(PREFIXES)}
        else:
            yield {"q": rng.choice(PREFIXES)}


def latencies(cluster: Cluster, count: int, seed: int) -> dict[str, dict[str, Any]]:
    """Each kind of listing ``count`` times, one request at a time, after 10 untimed ones."""
    figures: dict[str, dict[str, Any]] = {}
    rng = random.Random(seed)
    with httpx.Client(base_url=cluster.http_url, headers=cluster.headers, timeout=30.0, trust_env=False) as http:
        for kind in GOALS_MS:
            asked = requests_of(kind, rng)
            times: list[float] = []
            last: dict[str, Any] = {}
            incomplete = 0
            others = OtherLoad()
            for i in range(10 + count):
                if i == 10:
                    others.start()
                params = next(asked)
                started = time.perf_counter()
                r = http.get("/api/v1/tasks", params=params)
                took = (time.perf_counter() - started) * 1000
                if r.status_code != 200:
                    raise RuntimeError(f"{kind}: GET /api/v1/tasks {params} answered {r.status_code}: {r.text[:200]}")
                last = r.json()
                incomplete += last.get("complete") is False
                if i >= 10:
                    times.append(took)
            fig: dict[str, Any] = {**percentiles(times), "goal_p99_ms": GOALS_MS[kind], "rows": len(last["tasks"]),
                                   "total": last["total"], "other_cpu_pct": round(others.stop())}  # fmt: skip
            if "search" in kind:
                fig["incomplete_answers"] = incomplete
            figures[kind] = fig
    return figures


def first_screens(cluster: Cluster, loads: int, chromium: str) -> dict[str, Any]:
    """``bench.ui_load.first_screen`` on this cluster's first node, signed in as a browser is."""
    from playwright.sync_api import sync_playwright

    from bench.ui_load import CHROMIUM_ARGS, first_screen

    with httpx.Client(base_url=cluster.http_url, timeout=30.0, trust_env=False) as http:
        signin = http.post("/signin", data={"token": cluster.token, "next": "/"},
                           headers={"Origin": cluster.http_url})  # fmt: skip
        if signin.status_code != 303 or not signin.cookies:
            raise RuntimeError(f"sign-in refused: {signin.status_code} {signin.text[:200]}")
        cookie, session_id = next(iter(signin.cookies.items()))
    host = cluster.http_url.split("//", 1)[1].split(":")[0]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_ARGS)

        def new_context() -> Any:
            context = browser.new_context(viewport={"width": 1280, "height": 900}, bypass_csp=True)
            context.add_cookies([{"name": cookie, "value": session_id, "domain": host, "path": "/", "httpOnly": True,
                                  "sameSite": "Strict"}])  # fmt: skip
            return context

        try:
            return first_screen(new_context, cluster.http_url, loads)
        finally:
            browser.close()


# -- backup and restore ---------------------------------------------------------------------------------


def shoal_store(verb: str, file: Path, url: str, *extra: str) -> dict[str, Any]:
    """``shoal store VERB FILE --json`` on the store at ``url`` (in SHOAL_REDIS): its answer and wall time."""
    argv = [sys.executable, "-m", "shoal", "store", verb, str(file), "--json", *extra]
    started = time.perf_counter()
    done = subprocess.run(argv, env=dict(os.environ, SHOAL_REDIS=url), capture_output=True, text=True)
    seconds = round(time.perf_counter() - started, 2)
    if done.returncode != 0:
        return {"seconds": seconds, "exit": done.returncode, "refused": (done.stderr or done.stdout).strip()[-400:]}
    answer: dict[str, Any] = json.loads(done.stdout)
    return {"seconds": seconds, **answer}


def backup(url: str, file: Path) -> dict[str, Any]:
    fig = shoal_store("backup", file, url)
    if file.exists():
        fig["file_bytes"] = file.stat().st_size
    return fig


def server_name(url: str) -> str:
    """``valkey 8.1.1`` or ``redis 7.0.15``, as the server names itself (Valkey also answers a redis_version)."""
    admin = redis.Redis.from_url(url)
    try:
        info: dict[str, Any] = admin.info("server")
    finally:
        admin.close()
    if "valkey_version" in info:
        return f"valkey {info['valkey_version']}"
    return f"redis {info['redis_version']}"


def memory(url: str) -> tuple[int, int]:
    """(used_memory, keys) of the server at ``url``."""
    admin = redis.Redis.from_url(url)
    try:
        return int(admin.info("memory")["used_memory"]), int(admin.dbsize())
    finally:
        admin.close()


# -- the run --------------------------------------------------------------------------------------------


def run(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    store = RedisServer(root / "redis")
    store.start()
    result: dict[str, Any] = {"tasks": args.tasks, "nodes": args.nodes, "server": server_name(store.url),
                              "server_settings": store.describe()}  # fmt: skip
    cluster = Cluster(root, store.url, args.nodes)
    try:
        empty_memory, empty_keys = memory(store.url)
        every = max(BATCH, args.tasks // 10 // BATCH * BATCH)

        def progress(done: int, seconds: float) -> None:
            if done % every == 0 or done == args.tasks:
                print(f"  filled {done:>9,} tasks in {seconds:6.1f} s ({done / seconds:,.0f} tasks/s)", flush=True)

        print(f"filling {args.tasks:,} finished tasks into {store.url}", flush=True)
        filled = asyncio.run(fill(store.url, args.tasks, args.seed, progress))
        time.sleep(0.5)  # lazily freed memory settles
        used, keys = memory(store.url)
        result["fill"] = {"seconds": round(filled.seconds, 1), "tasks_per_s": round(args.tasks / filled.seconds),
                          "states": filled.states}  # fmt: skip
        result["memory"] = {"used_memory": used, "bytes_per_task": round((used - empty_memory) / args.tasks, 1),
                            "keys_per_task": round((keys - empty_keys) / args.tasks, 3)}  # fmt: skip

        print(f"starting shoal up --nodes {args.nodes} on it", flush=True)
        result["start"] = {**cluster.start(), "goal_s": READY_GOAL_S}
        print("timing GET /api/v1/tasks", flush=True)
        result["latency_ms"] = latencies(cluster, args.requests, args.seed)
        if not args.no_ui:
            print("timing the first screen in Chromium", flush=True)
            result["first_screen"] = first_screens(cluster, args.loads, args.chromium)

        print("shoal store backup, nodes running", flush=True)
        live_file = root / "live.backup"
        result["backup_live"] = backup(store.url, live_file)
        cluster.stop()
        file = live_file
        if not live_file.exists():
            print("shoal store backup, nodes stopped", flush=True)
            file = root / "stopped.backup"
            result["backup_stopped"] = backup(store.url, file)
        store.stop()  # its memory is the restored store's now
        if file.exists():
            print("shoal store restore into an empty redis-server", flush=True)
            target = RedisServer(root / "restored")
            target.start()
            try:
                result["restore"] = shoal_store("restore", file, target.url)
                result["restore"]["used_memory"] = memory(target.url)[0]
            finally:
                target.stop()
    finally:
        cluster.stop()
        store.stop()
    return result


def verdict(value: float, goal: float) -> str:
    return "ok" if value < goal else "MISSES"


def report(result: dict[str, Any]) -> None:
    fill_, mem = result["fill"], result["memory"]
    print(f"\n{result['server']}, {result['tasks']:,} finished tasks, {result['nodes']} node(s)")
    print(f"fill: {fill_['seconds']} s, {fill_['tasks_per_s']:,} tasks/s; states {fill_['states']}")
    print(f"memory: used_memory {mem['used_memory'] / 2**20:,.1f} MiB, {mem['bytes_per_task']:,.0f} bytes/task, "
          f"{mem['keys_per_task']} keys/task")  # fmt: skip
    start = result["start"]
    print(f"shoal up: ready in {start['ready_s']} s (goal < {start['goal_s']:g} s: "
          f"{verdict(start['ready_s'], start['goal_s'])}), a master and all nodes alive at "
          f"{start['all_alive_s']} s; other processes used {start['other_cpu_pct']} % CPU meanwhile")  # fmt: skip
    print(f"\n{'GET /api/v1/tasks, ms':<24} {'p50':>7} {'p99':>7} {'max':>7}  other CPU  goal p99")
    for kind, f in result["latency_ms"].items():
        extra = f", {f['incomplete_answers']} of {f['n'] + 10} incomplete" if "incomplete_answers" in f else ""
        goal = "" if f["goal_p99_ms"] is None else f"< {f['goal_p99_ms']:g}: {verdict(f['p99'], f['goal_p99_ms'])} "
        print(f"  {kind:<22} {f['p50']:7.1f} {f['p99']:7.1f} {f['max']:7.1f}  {f['other_cpu_pct']:>7} %  "
              f"{goal}({f['rows']} rows of total {f['total']:,}{extra})")  # fmt: skip
    if "first_screen" in result:
        print(f"\n{'first screen, ms':<24} {'median':>7} {'p95':>7} {'max':>7}  goal < {FIRST_SCREEN_GOAL_MS:g}")
        for label, figures in result["first_screen"].items():
            for kind in ("in_page_ms", "wall_ms"):
                f = figures[kind]
                print(f"  {label:<17} {kind[:-3]:<7} {f['median']:7.1f} {f['p95']:7.1f} {f['max']:7.1f}  "
                      f"{verdict(f['max'], FIRST_SCREEN_GOAL_MS)}")  # fmt: skip
    print()
    for key, label in (("backup_live", "backup, nodes running"), ("backup_stopped", "backup, nodes stopped")):
        if key in result:
            b = result[key]
            if "refused" in b:
                print(f"{label}: given up after {b['seconds']} s (exit {b['exit']}): {b['refused']}")
                continue
            paused = "no node running: no pause"
            if b.get("paused_s") is not None:
                paused = f"writes waited {b['paused_s']:.2f} s"
            print(f"{label}: {b['seconds']} s, {b['keys']:,} keys, file {b['file_bytes'] / 2**20:,.1f} MiB, {paused}")
    if "restore" in result:
        r = result["restore"]
        if "refused" in r:
            print(f"restore: refused after {r['seconds']} s (exit {r['exit']}): {r['refused']}")
        else:
            print(f"restore into an empty server: {r['seconds']} s, {r['keys']:,} keys, "
                  f"used_memory {r['used_memory'] / 2**20:,.1f} MiB")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.workdir:
        args.workdir.mkdir(parents=True, exist_ok=True)
        for old in ("live.backup", "stopped.backup"):  # a backup never overwrites a file
            (args.workdir / old).unlink(missing_ok=True)
        result = run(args, args.workdir)
    else:
        with tempfile.TemporaryDirectory(prefix="shoal-million-") as tmp:
            result = run(args, Path(tmp))
    report(result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
