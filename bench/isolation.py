"""Cost of process isolation: ``.venv/bin/python bench/isolation.py [--tasks 2000] [--repeat 5] [--quick]``.

On ``shoal up --nodes 1`` with ``bench.noop_types`` loaded, ``--tasks`` no-op tasks run end to end (as
``Throughput`` measures it, from the first submission until the last task has its result) once per type:
``noop-inline`` on the node's event loop, ``noop-process`` in the node's warm worker processes, each batch
after an untimed warm-up of the same type (which also starts the workers). Submissions are paced so that
at most ``--window`` tasks are in the system at once: the master's placement scans its whole backlog on
every tick, so an unbounded backlog would make the node's CPU per task depend on the pace of the batch
rather than on where the task ran. Over each batch, from /proc/PID/stat: the CPU of the node process
itself (utime + stime of all its threads), and apart that of its descendants, the fork server and the
workers (those that ended meanwhile included, through their parent's cutime + cstime). Per attempt: node
CPU inline and isolated, their difference (what isolation costs the node), worker CPU, and tasks/s.

Each of the ``--repeat`` rounds runs both types back to back, the order flipped every round; figures are
medians, the difference the median of the rounds' own differences. Then, with the cluster stopped, the
same no-op goes through a ``ProcessPool`` driven from this process, without a node: what the pool alone
costs its owner per attempt. Written to ``bench/results/isolation.json``.

A sync no-op through a warm worker must cost the node under 1 ms of CPU per attempt more than the same
no-op inline: if not, the script says so and exits 1.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make ``bench`` importable from the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.adapters import Settings
from bench.adapters.shoal_ import ShoalSystem
from bench.machine import cpu_ticks, machine_info, process_role, ticks_to_s
from bench.procs import descendants
from bench.report import write_json
from bench.run import run_bench, run_repeated
from bench.source import ROOT
from bench.workloads import Throughput

DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "isolation.json"
#: The most node CPU per attempt that isolating a no-op may add, in µs.
LIMIT_US = 1000.0
#: The types of ``bench.noop_types``, imported by the nodes (and here only once the shoal code is chosen).
TYPES = {"inline": "noop-inline", "process": "noop-process"}
#: The node's default slots: worker processes of its pool.
SLOTS = 8


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bench/isolation.py", description=__doc__.splitlines()[0])
    p.add_argument("--tasks", type=int, default=2000, help="no-op tasks per measured batch")
    p.add_argument("--warmup", type=int, default=200, help="untimed tasks of the same type before each batch")
    p.add_argument("--pool-tasks", type=int, default=20_000, help="attempts through the pool alone (no node)")
    p.add_argument("--concurrency", type=int, default=64, help="submissions in flight")
    p.add_argument("--window", type=int, default=256, help="most tasks in the system at once (0: no bound)")
    p.add_argument("--path", choices=("gRPC", "REST"), default="gRPC", help="client path (default gRPC)")
    p.add_argument("--repeat", type=int, default=None, help="rounds (both types each, default 5); medians reported")
    p.add_argument("--node-arg", action="append", default=[], help="extra flag for the node (repeatable)")
    p.add_argument(
        "--quick", action="store_true", help="500 tasks, 100 warm-up, 1 round (unless --repeat): a smoke run"
    )
    p.add_argument("--json", type=Path, default=DEFAULT_JSON, help=f"figures written here (default {DEFAULT_JSON})")
    p.add_argument("--workdir", type=Path, default=None, help="keep data dirs and logs here")
    p.add_argument("--shoal-ref", default=None, help="measure this git commit (e.g. HEAD), not the working tree")
    args = p.parse_args(argv)
    if args.quick:
        args.tasks, args.warmup, args.pool_tasks = (
            min(args.tasks, 500),
            min(args.warmup, 100),
            min(args.pool_tasks, 5000),
        )
    if args.repeat is None:
        args.repeat = 1 if args.quick else 5
    return args


class NodeCpu:
    """CPU ticks of one node process and, apart, of everything below it, between ``start`` and ``stop``."""

    def __init__(self, node_pid: int) -> None:
        self.pid = node_pid
        self._before = (0, 0)

    def _now(self) -> tuple[int, int]:
        node = cpu_ticks(self.pid)
        if node is None:
            raise RuntimeError(f"the node process {self.pid} is gone")
        below = node[2]  # children the node reaped itself
        for pid in descendants(self.pid):
            ticks = cpu_ticks(pid)
            if ticks is not None:
                below += ticks[1] + ticks[2]  # a worker reaped by the fork server lives on in its cutime
        return node[1], below

    def start(self) -> None:
        self._before = self._now()

    def stop(self) -> tuple[float, float]:
        """CPU seconds (the node's own, its descendants') since ``start``."""
        node, below = self._now()
        return ticks_to_s(node - self._before[0]), ticks_to_s(below - self._before[1])


def node_pid(system: ShoalSystem) -> int:
    pids = [pid for pid in descendants(system.proc.pid) if process_role(pid) == "node-1"]
    if len(pids) != 1:
        raise RuntimeError(f"expected one node-1 process below shoal up, found {pids}")
    return pids[0]


async def batch(system: ShoalSystem, client: Any, kind: str, args: argparse.Namespace) -> dict[str, Any]:
    """Warm up, then one measured batch of ``--tasks`` tasks of ``kind``'s type; figures per attempt."""
    client.use_type(TYPES[kind])
    window = args.window or None
    warm = await run_repeated(Throughput(args.warmup, args.concurrency, window), client, system)
    if "error" in warm:
        return {"error": f"warm-up: {warm['error']}"}
    cpu = NodeCpu(node_pid(system))
    cpu.start()
    fig = await run_repeated(Throughput(args.tasks, args.concurrency, window), client, system)
    node_s, workers_s = cpu.stop()
    if "error" in fig:
        return fig
    attempts = fig["accepted"]
    fig.update(
        type=TYPES[kind],
        node_cpu_s=node_s,
        worker_cpu_s=workers_s,
        node_cpu_us=1e6 * node_s / attempts,
        worker_cpu_us=1e6 * workers_s / attempts,
        node_cpu_pct=100.0 * node_s / fig["seconds"],
    )
    if kind == "process" and workers_s == 0:
        # a warm worker spends some 40 µs on a no-op: 500 of them can stay under one 10 ms clock tick
        if not descendants(node_pid(system)):
            fig["error"] = f"{TYPES[kind]}: no worker process below the node: it did not run isolated"
        else:
            fig["note"] = "the workers' CPU stayed under the clock's resolution (10 ms in all)"
    return fig


async def pool_alone(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """The same no-op through a ``ProcessPool`` of ``SLOTS`` workers driven from this process, without a node:
    what the pool's side of an attempt costs the process that owns it (``--concurrency`` lanes)."""
    from bench.noop_types import noop_process
    from shoal.worker.handlers import TaskContext
    from shoal.worker.pool import ProcessPool

    pool = ProcessPool(SLOTS, workdir=workdir / "pool")
    ctx = TaskContext("bench", TYPES["process"], TYPES["process"], "x", {}, 1, "bench")

    async def attempts(n: int) -> None:
        counter = iter(range(n))

        async def lane() -> None:
            for _ in counter:
                done = await pool.run(noop_process, ctx)
                if done.kind != "returned":
                    raise RuntimeError(f"pool attempt {done.kind}: {done.error}")

        await asyncio.gather(*(lane() for _ in range(args.concurrency)))

    try:
        await attempts(args.warmup)
        cpu = NodeCpu(os.getpid())
        cpu.start()
        t0 = time.perf_counter()
        await attempts(args.pool_tasks)
        seconds = time.perf_counter() - t0
        own_s, workers_s = cpu.stop()
    finally:
        await pool.close()
    return {
        "tasks": args.pool_tasks,
        "seconds": seconds,
        "per_s": args.pool_tasks / seconds,
        "node_cpu_us": 1e6 * own_s / args.pool_tasks,
        "worker_cpu_us": 1e6 * workers_s / args.pool_tasks,
    }


def median(figs: list[dict[str, Any]], key: str) -> float:
    return float(statistics.median(f[key] for f in figs))


def summarize(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kind in TYPES:
        figs = [r[kind] for r in rounds]
        out[kind] = {k: round(median(figs, k), 1) for k in ("node_cpu_us", "worker_cpu_us", "per_s", "other_cpu_pct")}
    each = [round(r["isolation_cost_us"], 1) for r in rounds]
    out["isolation_cost_us"], out["isolation_cost_us_each_round"] = round(statistics.median(each), 1), each
    return out


def render(summary: dict[str, Any], pool: dict[str, Any], args: argparse.Namespace, rounds: int) -> str:
    inline, process = summary["inline"], summary["process"]
    rows = [
        ("", "inline", "process", "process - inline"),
        ("node CPU µs/attempt", f"{inline['node_cpu_us']:,.0f}", f"{process['node_cpu_us']:,.0f}",
         f"{summary['isolation_cost_us']:+,.0f}"),
        ("worker CPU µs/attempt", f"{inline['worker_cpu_us']:,.0f}", f"{process['worker_cpu_us']:,.0f}", ""),
        ("tasks/s", f"{inline['per_s']:,.0f}", f"{process['per_s']:,.0f}", ""),
        ("other processes, % CPU", f"{inline['other_cpu_pct']:.0f}", f"{process['other_cpu_pct']:.0f}", ""),
    ]  # fmt: skip
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    paced = f"at most {args.window} in the system" if args.window else "no bound on the backlog"
    lines = [f"{args.tasks:,} no-op tasks per batch, {args.path}, {args.concurrency} submissions in flight, {paced}, "
             f"one node; {'median of ' + str(rounds) + ' rounds' if rounds > 1 else 'one round'}"]  # fmt: skip
    for row in rows:
        lines.append(
            "  ".join(
                c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))
            ).rstrip()
        )
    if rounds > 1:
        each = summary["isolation_cost_us_each_round"]
        lines.append(f"process - inline, each round: {', '.join(f'{d:+,.0f}' for d in each)} µs")
    lines.append(
        f"pool alone ({SLOTS} workers, no node): {pool['node_cpu_us']:,.0f} µs of the owner's CPU and "
        f"{pool['worker_cpu_us']:,.0f} µs in workers per attempt, {pool['per_s']:,.0f} attempts/s"
    )
    return "\n".join(lines)


async def main_async(args: argparse.Namespace, workdir: Path) -> int:
    opts = {
        "nodes": 1,
        "shoal_ref": args.shoal_ref,
        "node_args": ["--task-modules", "bench.noop_types", *args.node_arg],
        "pythonpath": [ROOT],
    }
    settings = Settings(workdir=workdir / "shoal", concurrency=args.concurrency, options=opts)
    settings.workdir.mkdir(parents=True, exist_ok=True)
    system = ShoalSystem(settings)
    rounds: list[dict[str, Any]] = []
    failed: str | None = None
    print("[isolation] starting shoal up --nodes 1", flush=True)
    try:
        await system.start()
        client = next(c for c in system.clients() if c.path == args.path)
        for r in range(args.repeat):
            done: dict[str, Any] = {}
            for kind in TYPES if r % 2 == 0 else reversed(TYPES):
                fig = done[kind] = await batch(system, client, kind, args)
                if "error" in fig:
                    failed = f"{TYPES[kind]}: {fig['error']}"
                    break
                print(
                    f"[isolation {r + 1}/{args.repeat}] {TYPES[kind]}: {fig['per_s']:,.0f} tasks/s, node CPU "
                    f"{fig['node_cpu_us']:,.0f} µs/attempt ({fig['node_cpu_pct']:.0f}% of a core), workers "
                    f"{fig['worker_cpu_us']:,.0f} µs/attempt, other processes {fig['other_cpu_pct']:.0f}% CPU",
                    flush=True,
                )
            if failed:
                break
            done["isolation_cost_us"] = done["process"]["node_cpu_us"] - done["inline"]["node_cpu_us"]
            rounds.append(done)
        described = system.describe()
    finally:
        await system.stop()
    pool: dict[str, Any] = {}
    if not failed:
        print("[isolation] the pool alone, in this process", flush=True)
        os.environ["PYTHONPATH"] = str(system.src)  # its fork server runs the same shoal code as the node did
        pool = await pool_alone(args, workdir)
    payload: dict[str, Any] = {
        "generated_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine_info(),
        "system": described,
        "parameters": {
            k: getattr(args, k)
            for k in ("tasks", "warmup", "pool_tasks", "concurrency", "window", "path", "repeat", "node_arg")
        },
        "limit_us": LIMIT_US,
        "rounds": rounds,
        "pool_alone": pool,
    }
    if failed:
        payload["error"] = failed
        write_json(args.json, payload)
        print(f"\nFAILED: {failed}", file=sys.stderr)
        return 1
    payload["summary"] = summary = summarize(rounds)
    write_json(args.json, payload)
    print()
    print(render(summary, pool, args, len(rounds)))
    print(f"\nfigures written to {args.json}")
    if summary["isolation_cost_us"] >= LIMIT_US:
        print(
            f"\nFAILED: a sync no-op through a warm worker costs the node {summary['isolation_cost_us']:,.0f} µs of "
            f"CPU per attempt more than inline; the limit is {LIMIT_US:,.0f} µs",
            file=sys.stderr,
        )
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_bench(main_async, parse_args(argv), "shoal-isolation-")


if __name__ == "__main__":
    sys.exit(main())
