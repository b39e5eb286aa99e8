"""Steady state under load: does a cluster with ``retention`` keep its store flat while tasks pour through?

A script, not a test (figures depend on the machine and the server; nothing asserts on them):

    .venv/bin/python bench/soak.py                                  # 1,000,000 tasks, retention 60s, 3 nodes
    .venv/bin/python bench/soak.py --tasks 60000 --retention 10s --json soak.json --plot soak.svg
    .venv/bin/python bench/soak.py --tasks 60000 --retention 10s --rate 1000   # paced: a steady throughput

It starts its own redis-server (``bench.redis_server.RedisServer``: append-only file, fsync every second)
and ``shoal up --nodes N`` on it, the store's URL and the retention given as ``SHOAL_REDIS`` and
``SHOAL_RETENTION`` in the environment (never on a command line). Then it drives ``echo`` tasks in through
``POST /api/v1/tasks/batch``, one lane per node, keeping at most ``--window`` tasks unfinished
(WAITING, INQUEUE or RUNNING, read from the store's state indexes every 0.1 s): a batch goes in as soon as
as many tasks have finished, so nothing piles up waiting and what the store holds is what retention keeps.
``--rate`` also paces the submissions to a steady average.

Every ``--every`` seconds (5) it samples the store: ``used_memory`` (``INFO memory``), ``DBSIZE``, tasks by
state and tasks done so far (submitted less unfinished). Retention starts to bite when the store holds
fewer finished tasks than have finished (the master's sweep removed some). At the end it prints tasks/s,
the used_memory series and its flatness over the second half of the run, (max - min) / mean (the goal
is at most 0.20), beside the same spread of the bytes used per task held and of tasks/s: retention keeps
about tasks/s times ``retention`` tasks, so used_memory follows the throughput, and a store that grows
shows in the bytes per task, not a throughput that wanders. It also shows what the store's keys are made
of (count and ``MEMORY USAGE`` per key pattern) at the middle, at the end of the run, and once retention
has swept every finished task; with ``--json`` it writes all of it, with ``--plot`` an SVG of used_memory
(MB) and tasks done against time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import re
import shutil
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import redis.asyncio as aioredis

if __package__ in (None, ""):  # run as a script: make ``bench`` importable from the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.procs import REAPER, free_port_block, wait_until
from bench.redis_server import RedisServer
from bench.source import shoal_source

ECHO = orjson.dumps({"name": "echo", "type": "echo", "target": "0123456789"})
UNFINISHED = ("WAITING", "INQUEUE", "RUNNING")
FINISHED = ("SUCCEED", "RUNTIME_ERROR", "KILLED")
GOAL = 0.20
#: Key kinds with one key per task, session or node, grouped as ``kind:{id}`` or ``kind:{node}``.
PER_ITEM = {"task": "id", "attempts": "id", "result": "id", "dupes": "id", "session": "id",
            "node": "node", "inbox": "node", "assigned": "node"}  # fmt: skip
MB = 1024 * 1024
#: What MEMORY STATS says used_memory is made of (the allocator's own figures left out: not used_memory).
USED_MEMORY_PARTS = ("dataset.bytes", "overhead.total", "clients.normal", "aof.buffer", "lua.caches",
                     "functions.caches", "keys.count")  # fmt: skip


def duration(text: str) -> float:
    """Seconds from ``60``, ``60s``, ``15m`` or ``1h``."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([smh]?)", text.strip())
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration such as 60, 60s, 15m or 1h")
    return float(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[match.group(2)]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=1_000_000, help="echo tasks in all (default 1,000,000)")
    parser.add_argument("--retention", type=duration, default=60.0, help="the cluster's retention (default 60s)")
    parser.add_argument("--nodes", type=int, default=3, help="node processes of shoal up (default 3)")
    parser.add_argument("--window", type=int, default=4000, help="most tasks unfinished at once (default 4,000)")
    parser.add_argument("--batch", type=int, default=500, help="tasks per batch call, 1 to 1,000 (default 500)")
    parser.add_argument("--rate", type=float, default=0.0,
                        help="tasks/s at most, on average (default 0: as fast as the window allows)")  # fmt: skip
    parser.add_argument("--every", type=float, default=5.0, help="seconds between samples (default 5)")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument("--plot", type=Path, help="write an SVG plot of used_memory to this file")
    parser.add_argument("--shoal-ref", default=None, help="run this git commit (e.g. HEAD), not the working tree")
    parser.add_argument("--workdir", type=Path, help="keep the store's and nodes' files and logs here")
    args = parser.parse_args(argv)
    if args.tasks < 1 or args.nodes < 1 or args.window < 1 or not 1 <= args.batch <= 1000 or args.every <= 0:
        parser.error("--tasks, --nodes, --window and --every must be positive, --batch 1 to 1,000")
    if args.retention < 1:
        parser.error("--retention must be at least 1 second (0 would keep every task: nothing to soak)")
    return args


@dataclass
class Sample:
    """One reading of the store, ``t`` seconds after the first submission."""

    t: float
    used_memory: int
    keys: int
    tasks: dict[str, int]
    done: int
    submitted: int
    oldest_finished_age_s: float | None
    memory_parts: dict[str, int] = field(default_factory=dict)


class Cluster:
    """The run's redis-server and ``shoal up`` on it, started and stopped together."""

    def __init__(self, workdir: Path, nodes: int, retention_s: float, ref: str | None) -> None:
        self.workdir, self.nodes, self.retention_s = workdir, nodes, retention_s
        self.package_root, self.source = shoal_source(ref, workdir)  # what runs, known before it starts
        self.redis = RedisServer(workdir / "redis")
        self.http_urls: list[str] = []
        self.token = ""
        self.proc: Any = None

    def start(self) -> None:
        self.redis.start()
        base = free_port_block(3 * self.nodes)
        self.http_urls = [f"http://127.0.0.1:{base + i}" for i in range(self.nodes)]
        data = self.workdir / "data"
        shutil.rmtree(data, ignore_errors=True)
        argv = [sys.executable, "-m", "shoal", "up", "--nodes", str(self.nodes), "--data-dir", str(data),
                "--http-port", str(base), "--grpc-port", str(base + self.nodes),
                "--proxy-port", str(base + 2 * self.nodes)]  # fmt: skip
        env = {k: v for k, v in os.environ.items() if not k.startswith("SHOAL_")}
        env |= {"SHOAL_REDIS": self.redis.url, "SHOAL_RETENTION": f"{self.retention_s:g}s",
                "PYTHONPATH": str(self.package_root)}  # fmt: skip
        self.proc = REAPER.spawn("shoal up", argv, log=self.workdir / "shoal-up.log", env=env, cwd=self.package_root,
                                 grace=50.0)  # fmt: skip
        wait_until(self._ready, 90.0, "shoal up", self.proc, interval=0.2)
        self.token = (data / "token").read_text().strip()
        wait_until(self._all_alive, 60.0, f"{self.nodes} nodes alive", self.proc, interval=0.2)

    def _ready(self) -> bool:
        try:
            return all(httpx.get(f"{url}/readyz", timeout=1.0).status_code == 200 for url in self.http_urls)
        except httpx.HTTPError:
            return False

    def _all_alive(self) -> bool:
        try:
            r = httpx.get(f"{self.http_urls[0]}/api/v1/cluster", headers=self.auth, timeout=1.0)
        except httpx.HTTPError:
            return False
        view = r.json() if r.status_code == 200 else {}
        alive = [n for n in view.get("nodes", []) if n.get("state") == "alive"]
        return view.get("master") is not None and len(alive) >= self.nodes

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def stop(self) -> None:
        if self.proc is not None:
            REAPER.stop(self.proc)
            self.proc = None
        self.redis.stop()


class Soak:
    """Submits through one lane per node within the window, and reads the store; one event loop."""

    def __init__(self, cluster: Cluster, args: argparse.Namespace, prefix: str = "shoal:shoal:") -> None:
        self.cluster, self.args, self.prefix = cluster, args, prefix
        self.admin = aioredis.Redis.from_url(cluster.redis.url)
        self.submitted = 0
        self.in_flight_calls = 0  # tasks of batch calls not yet answered
        self.unfinished = 0  # WAITING + INQUEUE + RUNNING, as last read (plus batches answered since)
        self.finished_kept = 0  # SUCCEED + RUNTIME_ERROR + KILLED in the store, as last read
        self.failed_seen = 0
        self.errors: list[str] = []
        self.started = 0.0
        self.first_sweep_s: float | None = None
        self.samples: list[Sample] = []
        self.breakdowns: dict[str, dict[str, Any]] = {}

    @property
    def done(self) -> int:
        return self.submitted - self.unfinished

    def now(self) -> float:
        return time.monotonic() - self.started

    async def read_counts(self) -> dict[str, int]:
        async with self.admin.pipeline(transaction=False) as pipe:
            for state in (*UNFINISHED, *FINISHED):
                pipe.zcard(f"{self.prefix}index:{state}")
            replies = await pipe.execute()
        return dict(zip((*UNFINISHED, *FINISHED), (int(n) for n in replies), strict=True))

    async def watch(self, until: asyncio.Event) -> None:
        """Every 0.1 s: unfinished and finished tasks in the store; note when the sweep first removed some."""
        while not until.is_set():
            submitted = self.submitted  # read before the counts: a batch answered meanwhile is counted unfinished
            counts = await self.read_counts()
            # a batch the store holds but has not answered yet is in the counts and not in ``submitted``
            self.unfinished = min(sum(counts[s] for s in UNFINISHED) + (self.submitted - submitted), self.submitted)
            self.finished_kept = sum(counts[s] for s in FINISHED)
            self.failed_seen = max(self.failed_seen, counts["RUNTIME_ERROR"] + counts["KILLED"])
            if self.first_sweep_s is None and self.finished_kept < self.submitted - self.unfinished:
                self.first_sweep_s = self.now()
            await asyncio.sleep(0.1)

    async def lane(self, url: str) -> None:
        """Submit batches to one node while the window has room for one."""
        batch = self.args.batch
        headers = {**self.cluster.auth, "Content-Type": "application/json"}
        async with httpx.AsyncClient(base_url=url, timeout=60.0, trust_env=False, headers=headers) as http:
            while self.submitted + self.in_flight_calls < self.args.tasks:
                size = min(batch, self.args.tasks - self.submitted - self.in_flight_calls)
                full = self.unfinished + self.in_flight_calls + size > self.args.window
                early = (
                    self.args.rate > 0 and self.submitted + self.in_flight_calls + size > self.args.rate * self.now()
                )
                if full or early:
                    await asyncio.sleep(0.02)
                    continue
                self.in_flight_calls += size
                try:
                    r = await http.post(
                        "/api/v1/tasks/batch", content=b'{"tasks": [' + b",".join([ECHO] * size) + b"]}"
                    )
                finally:
                    self.in_flight_calls -= size
                if r.status_code != 201:
                    self.errors.append(f"{r.status_code} {r.text[:200]}")
                    if len(self.errors) > 20:
                        raise RuntimeError(f"batch calls refused: {self.errors[:3]}")
                    await asyncio.sleep(1.0)
                    continue
                accepted = len(orjson.loads(r.content)["tasks"])
                self.submitted += accepted
                self.unfinished += accepted  # until the watcher's next reading

    async def sample(self) -> Sample:
        """INFO memory and DBSIZE from the server; tasks by state and the oldest finished task from
        ``GET /api/v1/store``, which knows where the store keeps them."""
        async with self.admin.pipeline(transaction=False) as pipe:
            pipe.info("memory")
            pipe.dbsize()
            pipe.time()
            memory, keys, clock = await pipe.execute()
        async with httpx.AsyncClient(timeout=30.0, trust_env=False, headers=self.cluster.auth) as http:
            r = await http.get(f"{self.cluster.http_urls[0]}/api/v1/store")
            r.raise_for_status()
        store = r.json()
        counts = {state: int(store["tasks"].get(state, 0)) for state in (*UNFINISHED, *FINISHED)}
        oldest = store.get("oldest_finished_at")
        server_now = clock[0] + clock[1] / 1e6
        parts = ("used_memory_dataset", "used_memory_overhead", "mem_clients_normal", "mem_aof_buffer",
                 "used_memory_scripts", "used_memory_rss")  # fmt: skip
        return Sample(
            t=round(self.now(), 2),
            used_memory=int(memory["used_memory"]),
            keys=int(keys),
            tasks=counts,
            done=self.done,
            submitted=self.submitted,
            oldest_finished_age_s=None if oldest is None else max(0.0, round(server_now - float(oldest), 1)),
            memory_parts={k: int(memory[k]) for k in parts if k in memory},
        )

    async def sampler(self, until: asyncio.Event) -> None:
        """A sample every ``--every`` seconds; the key breakdown once half the tasks are done, beside it so
        that its SCAN does not space the samples out."""
        middle: asyncio.Task[None] | None = None
        while not until.is_set():
            self.samples.append(await self.sample())
            if middle is None and self.done >= self.args.tasks // 2:
                middle = asyncio.create_task(self.take_breakdown("middle"))
            try:
                await asyncio.wait_for(until.wait(), self.args.every)
            except TimeoutError:
                pass
        if middle is not None:
            await middle

    async def take_breakdown(self, moment: str) -> None:
        self.breakdowns[moment] = await self.breakdown()

    async def breakdown(self) -> dict[str, Any]:
        """Keys and ``MEMORY USAGE`` by key pattern (a task's keys as ``task:{id}``), with SCAN."""
        count: Counter[str] = Counter()
        size: Counter[str] = Counter()
        batch: list[bytes] = []

        async def measure() -> None:
            async with self.admin.pipeline(transaction=False) as pipe:
                for key in batch:
                    pipe.memory_usage(key, samples=0)
                sizes = await pipe.execute()
            for key, n in zip(batch, sizes, strict=True):
                pattern = key_pattern(key.decode(errors="replace"), self.prefix)
                count[pattern] += 1
                size[pattern] += int(n or 0)
            batch.clear()

        async for key in self.admin.scan_iter(count=5000):
            batch.append(key)
            if len(batch) >= 1000:
                await measure()
        if batch:
            await measure()
        return {p: {"keys": count[p], "bytes": size[p]} for p in sorted(size, key=lambda p: -size[p])}

    async def run(self) -> dict[str, Any]:
        info = await self.admin.info("server")
        stats_before = await self.admin.memory_stats()
        server = f"valkey {info['valkey_version']}" if "valkey_version" in info else f"redis {info['redis_version']}"
        await asyncio.sleep(2.0)  # a moment for the nodes' first writes (schema, roster, beats) to settle
        baseline = await self.sample()
        self.started = time.monotonic()
        stop_watch, stop_samples = asyncio.Event(), asyncio.Event()
        watcher = asyncio.create_task(self.watch(stop_watch))
        sampler = asyncio.create_task(self.sampler(stop_samples))
        progress = asyncio.create_task(self.report_progress(stop_samples))
        await asyncio.gather(*(self.lane(url) for url in self.cluster.http_urls))
        last, stalled_since = -1, time.monotonic()
        while self.done < self.args.tasks:
            if self.done != last:
                last, stalled_since = self.done, time.monotonic()
            elif time.monotonic() - stalled_since > 120:
                raise TimeoutError(f"no task finished for 120 s: {self.done:,} of {self.args.tasks:,} done")
            await asyncio.sleep(0.05)
        elapsed = self.now()
        stop_samples.set()
        await asyncio.gather(sampler, progress)
        self.samples.append(await self.sample())
        self.breakdowns["end"] = await self.breakdown()
        # Settle: every finished task should leave once retention has passed; what stays is kept for good.
        settle: list[Sample] = []
        deadline = time.monotonic() + self.args.retention + 30.0
        while time.monotonic() < deadline:
            settle.append(await self.sample())
            if self.finished_kept == 0:
                break
            await asyncio.sleep(min(self.args.every, 2.0))
        settle.append(await self.sample())
        stop_watch.set()
        await watcher
        self.breakdowns["settled"] = await self.breakdown()
        stats_after = await self.admin.memory_stats()
        await self.admin.aclose()
        samples = annotate([asdict(s) for s in self.samples], baseline.used_memory)
        return {
            "server": server,
            "shoal": self.cluster.source,
            "tasks": self.args.tasks,
            "nodes": self.args.nodes,
            "retention_s": self.args.retention,
            "window": self.args.window,
            "batch": self.args.batch,
            "rate_limit": self.args.rate or None,
            "elapsed_s": round(elapsed, 2),
            "tasks_per_s": round(self.args.tasks / elapsed, 1),
            "failed": self.failed_seen,
            "refused_calls": self.errors[:5],
            "first_sweep_s": None if self.first_sweep_s is None else round(self.first_sweep_s, 2),
            "baseline": asdict(baseline),
            "samples": samples,
            "settle": annotate([asdict(s) for s in settle], baseline.used_memory),
            "keys_by_pattern": self.breakdowns,
            "memory_stats": {"before": plain(stats_before), "settled": plain(stats_after)},
            **flatness(samples, elapsed),
        }

    async def report_progress(self, until: asyncio.Event) -> None:
        while not until.is_set():
            try:
                await asyncio.wait_for(until.wait(), 30.0)
            except TimeoutError:
                s = self.samples[-1] if self.samples else None
                memory = f"{s.used_memory / MB:.1f} MB, {s.keys:,} keys" if s else ""
                print(f"  {self.now():7.0f} s  {self.done:>10,} done  {memory}", flush=True)


def key_pattern(key: str, prefix: str) -> str:
    """``shoal:shoal:task:<uuid>`` -> ``task:{id}``; other keys of the cluster as they are, less the prefix."""
    if not key.startswith(prefix):
        return f"(not the cluster's) {key.split(':', 1)[0]}:*"
    rest = key[len(prefix) :]
    kind, _, tail = rest.partition(":")
    return f"{kind}:{{{PER_ITEM[kind]}}}" if kind in PER_ITEM and tail else rest


def annotate(samples: list[dict[str, Any]], baseline: int) -> list[dict[str, Any]]:
    """Add to each sample the tasks the store holds, the bytes it spends per task held above the baseline
    (flat if nothing but tasks grows), and tasks/s since the sample before (what the tasks held follow:
    retention keeps about tasks/s times ``retention`` of them)."""
    previous: dict[str, Any] | None = None
    for sample in samples:
        held = sum(sample["tasks"].values())
        sample["held"] = held
        sample["bytes_per_task"] = round((sample["used_memory"] - baseline) / held) if held else None
        span = sample["t"] - previous["t"] if previous else 0.0
        sample["rate"] = round((sample["done"] - previous["done"]) / span) if previous and span > 0 else None
        previous = sample
    return samples


def spread(values: list[float]) -> float | None:
    """(max - min) / mean, None for fewer than two values."""
    if len(values) < 2:
        return None
    return round((max(values) - min(values)) / (sum(values) / len(values)), 4)


def plain(stats: dict[Any, Any]) -> dict[str, Any]:
    """MEMORY STATS as JSON can take it (nested answers and bytes keys become text)."""
    return {str(k): (plain(v) if isinstance(v, dict) else v if isinstance(v, int | float) else str(v))
            for k, v in stats.items()}  # fmt: skip


def flatness(samples: list[dict[str, Any]], elapsed: float) -> dict[str, Any]:
    """(max - min) / mean of used_memory over the samples of the run's second half; the same of the bytes
    per task held, and of tasks/s, which tell a store that grows from one that holds more tasks."""
    half = elapsed / 2
    second = [s for s in samples if s["t"] >= half]
    memory = [s["used_memory"] for s in second]
    return {
        "second_half_from_s": round(half, 2),
        "second_half_samples": len(second),
        "second_half_min": min(memory, default=None),
        "second_half_max": max(memory, default=None),
        "second_half_mean": round(sum(memory) / len(memory)) if memory else None,
        "flatness": spread(memory),
        "bytes_per_task_flatness": spread([s["bytes_per_task"] for s in second if s["bytes_per_task"]]),
        "rate_spread": spread([s["rate"] for s in second if s["rate"] is not None]),
    }


def print_report(fig: dict[str, Any]) -> None:
    paced = f", at most {fig['rate_limit']:g}/s" if fig["rate_limit"] else ""
    source = fig["shoal"]
    dirty = f", {source['uncommitted_files']} files changed" if source.get("uncommitted_files") else ""
    print(f"\nshoal {source.get('commit', '?')[:7]} ({source['source']}{dirty})")
    print(f"{fig['server']}, {fig['nodes']} nodes, retention {fig['retention_s']:g} s, {fig['tasks']:,} echo tasks "
          f"(window {fig['window']:,}, batches of {fig['batch']}{paced})")  # fmt: skip
    print(f"{fig['tasks_per_s']:,.0f} tasks/s ({fig['elapsed_s']:.0f} s); failed {fig['failed']}; "
          f"first sweep at {fig['first_sweep_s']} s; second half from {fig['second_half_from_s']:.0f} s")  # fmt: skip
    print(f"\n{'t (s)':>8} {'used MB':>9} {'keys':>9} {'done':>11} {'tasks/s':>8} {'kept':>9} {'unfinished':>10} "
          f"{'oldest (s)':>10} {'B/task':>7}")  # fmt: skip
    base = fig["baseline"]
    rows = [("base", base), *((f"{s['t']:.0f}", s) for s in fig["samples"]),
            *((f"+{s['t']:.0f}", s) for s in fig["settle"][-1:])]  # fmt: skip
    for label, s in rows:
        kept = sum(s["tasks"][k] for k in FINISHED)
        unfinished = sum(s["tasks"][k] for k in UNFINISHED)
        oldest = "-" if s["oldest_finished_age_s"] is None else f"{s['oldest_finished_age_s']:.0f}"
        rate = "-" if s.get("rate") is None else f"{s['rate']:,}"
        per_task = "-" if s.get("bytes_per_task") is None else f"{s['bytes_per_task']:,}"
        print(f"{label:>8} {s['used_memory'] / MB:>9.2f} {s['keys']:>9,} {s['done']:>11,} {rate:>8} {kept:>9,} "
              f"{unfinished:>10,} {oldest:>10} {per_task:>7}")  # fmt: skip
    flat = fig["flatness"]
    verdict = (
        "n/a (too few samples)"
        if flat is None
        else f"{flat:.3f} ({'flat' if flat <= GOAL else 'NOT flat'}: goal <= {GOAL})"
    )
    print(f"\nflatness of used_memory over the second half: {verdict}")
    print(f"  the same of bytes per task held: {fig['bytes_per_task_flatness']}; of tasks/s: {fig['rate_spread']}")
    per_task = fig["bytes_per_task_flatness"]
    if flat is not None and flat > GOAL and per_task is not None and per_task <= GOAL:
        print("  the store holds about tasks/s x retention tasks at a steady cost per task: used_memory followed the "
              "throughput, not growth (--rate N paces the submissions)")  # fmt: skip
    settled = fig["settle"][-1]
    print(f"after the run, once retention swept: {settled['used_memory'] / MB:.2f} MB, {settled['keys']:,} keys "
          f"(before the run: {base['used_memory'] / MB:.2f} MB, {base['keys']:,} keys)")  # fmt: skip
    before, after = fig["memory_stats"]["before"], fig["memory_stats"]["settled"]
    parts = [k for k in USED_MEMORY_PARTS if isinstance(after.get(k), int) and isinstance(before.get(k), int)]
    print("  MEMORY STATS, settled less before: " + ", ".join(f"{k} {after[k] - before[k]:+,}" for k in parts))
    for moment, parts in fig["keys_by_pattern"].items():
        print(f"\nkeys by pattern, {moment}:")
        for pattern, part in list(parts.items())[:12]:
            print(f"    {pattern:<28} {part['keys']:>9,} keys {part['bytes'] / 1024:>11,.1f} KiB")


def nice_top(value: float, ticks: int = 5) -> float:
    """The least of ``ticks`` round steps (1, 1.5, 2, 2.5, 3, 4, 5, 6 or 8 times a power of ten) that reaches ``value``:
    round tick labels."""
    step = max(value, 1e-9) / ticks
    power = 10 ** math.floor(math.log10(step))
    return float(ticks * power * next(m for m in (1, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10) if m * power >= step))


def svg_plot(fig: dict[str, Any]) -> str:
    """used_memory (MB, left axis) and tasks done (right axis) against time, with the first sweep and the
    second half marked; a few lines of plain SVG."""
    samples = fig["samples"]
    width, height, left, right, top, bottom = 760, 380, 70, 80, 40, 50
    plot_w, plot_h = width - left - right, height - top - bottom
    t_max = nice_top(max(fig["elapsed_s"], samples[-1]["t"], 1.0))
    mb_max = nice_top(max(s["used_memory"] for s in samples) / MB * 1.15)  # headroom for the labels
    done_max = max(fig["tasks"], 1)

    def x(t: float) -> float:
        return left + plot_w * t / t_max

    def y(value: float, top_value: float) -> float:
        return top + plot_h * (1 - value / top_value)

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" '
           'font-size="12">', f'<rect width="{width}" height="{height}" fill="white"/>']  # fmt: skip
    half = fig["second_half_from_s"]
    out.append(f'<rect x="{x(half):.1f}" y="{top}" width="{x(t_max) - x(half):.1f}" height="{plot_h}" fill="#eef4ee"/>')
    out.append(
        f'<text x="{x(t_max) - 6:.1f}" y="{top + plot_h - 8}" text-anchor="end" fill="#4a7a4a">second half</text>'
    )
    for k in range(6):  # grid and ticks
        yy = top + plot_h * k / 5
        out.append(f'<line x1="{left}" y1="{yy:.1f}" x2="{left + plot_w}" y2="{yy:.1f}" stroke="#ddd"/>')
        out.append(f'<text x="{left - 6}" y="{yy + 4:.1f}" text-anchor="end">{mb_max * (5 - k) / 5:g}</text>')
        out.append(
            f'<text x="{left + plot_w + 6}" y="{yy + 4:.1f}" fill="#888">{done_max * (5 - k) / 5 / 1000:,.0f}k</text>'
        )
        xx = left + plot_w * k / 5
        out.append(f'<text x="{xx:.1f}" y="{top + plot_h + 18}" text-anchor="middle">{t_max * k / 5:g}</text>')
    out.append(f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#444"/>')
    if fig["first_sweep_s"] is not None:
        xs = x(fig["first_sweep_s"])
        out.append(
            f'<line x1="{xs:.1f}" y1="{top}" x2="{xs:.1f}" y2="{top + plot_h}" stroke="#c33" stroke-dasharray="5,4"/>'
        )
        out.append(f'<text x="{xs + 4:.1f}" y="{top + plot_h - 8}" fill="#c33">first sweep</text>')
    done = " ".join(f"{x(s['t']):.1f},{y(s['done'], done_max):.1f}" for s in samples)
    out.append(f'<polyline points="{done}" fill="none" stroke="#999" stroke-width="1.5" stroke-dasharray="3,3"/>')
    memory = " ".join(f"{x(s['t']):.1f},{y(s['used_memory'] / MB, mb_max):.1f}" for s in samples)
    out.append(f'<polyline points="{memory}" fill="none" stroke="#2060b0" stroke-width="2"/>')
    flat = "n/a" if fig["flatness"] is None else f"{fig['flatness']:.3f}"
    title = (f"shoal soak: {fig['tasks']:,} echo tasks, {fig['nodes']} nodes, retention {fig['retention_s']:g} s, "
             f"{fig['tasks_per_s']:,.0f} tasks/s, flatness {flat} ({fig['server']})")  # fmt: skip
    out.append(f'<text x="{left}" y="{top - 16}" font-size="13">{title}</text>')
    out.append(f'<text x="{left + plot_w / 2:.1f}" y="{height - 12}" text-anchor="middle">seconds</text>')
    out.append(f'<text x="16" y="{top + plot_h / 2:.1f}" transform="rotate(-90 16 {top + plot_h / 2:.1f})" '
               'text-anchor="middle" fill="#2060b0">used_memory (MB)</text>')  # fmt: skip
    out.append(f'<text x="{width - 14}" y="{top + plot_h / 2:.1f}" transform="rotate(90 {width - 14} '
               f'{top + plot_h / 2:.1f})" text-anchor="middle" fill="#888">tasks done</text>')  # fmt: skip
    out.append("</svg>")
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="shoal-soak-") as tmp:
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        cluster = Cluster(workdir, args.nodes, args.retention, args.shoal_ref)
        try:
            cluster.start()
            print(f"shoal up: {args.nodes} nodes on {cluster.redis.url}; {args.tasks:,} tasks", flush=True)
            fig = asyncio.run(Soak(cluster, args).run())
        finally:
            cluster.stop()
            REAPER.reap()
    print_report(fig)
    if args.json:
        args.json.write_text(json.dumps(fig, indent=2))
    if args.plot:
        args.plot.write_text(svg_plot(fig))
    return 0


if __name__ == "__main__":
    sys.exit(main())
