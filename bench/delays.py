"""How close to its due time a delayed task is placed: ``.venv/bin/python bench/delays.py [--tasks 300]``.

A script, not a test (figures depend on the machine; nothing asserts on them). On a fresh redis-server and
``--nodes`` unsupervised nodes (``bench.nodes.NodeSet``), it submits ``--tasks`` echo tasks through
``POST /api/v1/tasks/batch``, each with a ``run_at`` drawn uniformly from 1 to ``--spread`` seconds ahead,
and records every placement from the task event stream (``bench.failover.PlacementTap``: the INQUEUE
event's ``at``, Redis's clock, which is this host's clock, as ``run_at`` is). The figure is each task's
lateness, placed at less run_at, in ms: p50, p99 and max beside the goal (p99 < 100 ms), and how many were
placed early (none may be). With ``--failover`` the master is killed with SIGKILL halfway through the
spread, and the tasks due after the kill are reported apart (they wait for the new master).
"""

from __future__ import annotations

import argparse
import asyncio
import math
import random
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make ``bench`` importable from the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.failover import PlacementTap
from bench.machine import OtherLoad, machine_info
from bench.nodes import NodeSet
from bench.report import percentiles, write_json
from bench.run import run_bench
from bench.source import shoal_source

DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "delays.json"
GOAL_P99_MS = 100.0
BATCH = 500


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bench/delays.py", description=__doc__.splitlines()[0])
    p.add_argument("--tasks", type=int, default=300, help="delayed tasks (default 300)")
    p.add_argument("--spread", type=float, default=10.0, help="due from 1 s to this many seconds ahead (default 10)")
    p.add_argument("--nodes", type=int, default=3, help="nodes (default 3)")
    p.add_argument("--failover", action="store_true", help="kill -9 the master halfway through the spread")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--json", type=Path, default=DEFAULT_JSON, help=f"figures written here (default {DEFAULT_JSON})")
    p.add_argument("--workdir", type=Path, default=None, help="keep data dirs and node logs here")
    p.add_argument("--shoal-ref", default=None, help="measure this git commit (e.g. HEAD), not the working tree")
    return p.parse_args(argv)


async def measure(nodes: NodeSet, args: argparse.Namespace) -> dict[str, Any]:
    rng = random.Random(args.seed)
    tap = PlacementTap(nodes)
    await tap.start()
    entry = nodes.live()[0]
    view = await nodes.view(entry)
    master = view["master"]
    via = next(n for n in nodes.live() if n.name != master) if args.failover and args.nodes > 1 else entry
    start = time.time()
    due: dict[str, float] = {}
    others = OtherLoad()
    others.start()
    for first in range(0, args.tasks, BATCH):
        specs = [{"name": "delayed", "type": "echo", "target": str(k),
                  "run_at": round(start + 1 + rng.random() * (args.spread - 1), 3)}
                 for k in range(first, min(args.tasks, first + BATCH))]  # fmt: skip
        response = await nodes.client.post(f"{via.http_url}/api/v1/tasks/batch", json={"tasks": specs})
        response.raise_for_status()
        for task in response.json()["tasks"]:
            due[task["id"]] = task["run_at"]
    killed_at = None
    if args.failover:
        await asyncio.sleep(max(0.0, start + args.spread / 2 - time.time()))
        killed_at = nodes.kill(master)
    deadline = time.monotonic() + args.spread + 60
    while len({p[0] for p in tap.placed} & due.keys()) < len(due) and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    other_cpu = round(others.stop())
    await tap.stop()
    placed: dict[str, float] = {}
    for task_id, _node, at in tap.placed:
        if task_id in due and task_id not in placed:
            placed[task_id] = at
    late_ms = {task_id: (placed[task_id] - due[task_id]) * 1000 for task_id in placed}
    before_kill = [ms for task_id, ms in late_ms.items() if killed_at is None or due[task_id] < killed_at]
    after_kill = [ms for task_id, ms in late_ms.items() if killed_at is not None and due[task_id] >= killed_at]
    return {
        "tasks": len(due),
        "placed": len(placed),
        "placed_early": sum(ms < 0 for ms in late_ms.values()),
        "placed_twice": sum(1 for task_id, _n, _a in tap.placed if task_id in due) - len(placed),
        "late_ms": percentiles(before_kill),
        "late_ms_due_after_the_kill": percentiles(after_kill) if killed_at is not None else None,
        "master_killed": master if killed_at is not None else None,
        "other_cpu_pct": other_cpu,
    }


def report(result: dict[str, Any]) -> str:
    f = result["figures"]
    late = f["late_ms"]
    lines = [
        f"shoal {result['shoal'].get('commit', '?')[:7]} ({result['shoal']['source']}), {result['args']['nodes']} "
        f"node(s), {f['tasks']} tasks due 1 to {result['args']['spread']:g} s ahead",
        f"placed {f['placed']} of {f['tasks']}; early: {f['placed_early']} (none may be); placed twice: "
        f"{f['placed_twice']}",
        f"lateness, placed less run_at: p50 {late.get('p50')} ms, p99 {late.get('p99')} ms, max {late.get('max')} ms "
        f"(goal p99 < {GOAL_P99_MS:g} ms: {'ok' if late.get('p99', math.inf) < GOAL_P99_MS else 'MISSES'})",
    ]
    after = f["late_ms_due_after_the_kill"]
    if after is not None:
        lines.append(f"due after the kill -9 of {f['master_killed']}: p50 {after.get('p50')} ms, p99 "
                     f"{after.get('p99')} ms, max {after.get('max')} ms ({after['n']} tasks; they wait for the new "
                     f"master)")  # fmt: skip
    lines.append(f"other processes used {f['other_cpu_pct']} % of a core meanwhile")
    return "\n".join(lines)


async def main_async(args: argparse.Namespace, workdir: Path) -> int:
    src, source = shoal_source(args.shoal_ref, workdir)
    nodes = NodeSet(workdir, src)
    try:
        await nodes.start([f"node-{i + 1}" for i in range(args.nodes)])
        await nodes.wait_agreed()
        figures = await measure(nodes, args)
    finally:
        await nodes.stop()
    result = {"machine": machine_info(), "shoal": source, "figures": figures,
              "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}}  # fmt: skip
    print(report(result))
    write_json(args.json, result)
    print(f"figures: {args.json}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_bench(main_async, parse_args(argv), "shoal-bench-delays-")


if __name__ == "__main__":
    sys.exit(main())
