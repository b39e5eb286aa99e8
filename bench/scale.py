"""Throughput on several nodes against one: the same end-to-end workload (``Throughput``, as ``run.py``
measures it) on ``shoal up --nodes 1`` and on ``shoal up --nodes N``, through REST and gRPC.

Both clusters run side by side for the whole measurement and take turns, run by run: in each round, for
each client path, one cluster then the other, the order flipped every round (1-N, N-1, ...). Runs of a
pair are then seconds apart, so both meet the same noise from whatever else the machine runs, and each
round gives its own ratio. The cluster not being measured is idle (heartbeats only); the CPU it used is
recorded beside every figure (``idle_cluster_cpu_pct``), as is the CPU of each process of the measured one.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from bench.adapters import Settings
from bench.adapters.shoal_ import ShoalSystem
from bench.machine import TreeLoad
from bench.run import run_repeated
from bench.workloads import Throughput

PATHS = ("REST", "gRPC")


async def scale(
    workdir: Path, *, nodes: int, tasks: int, concurrency: int, rounds: int, shoal_ref: str | None
) -> dict[str, Any]:
    workload = Throughput(n=tasks, concurrency=concurrency)
    systems: dict[int, ShoalSystem] = {}
    each: list[dict[str, dict[str, Any]]] = []
    try:
        for count in (1, nodes):
            opts = {"nodes": count, "shoal_ref": shoal_ref}
            settings = Settings(workdir=workdir / f"scale-{count}", concurrency=concurrency, options=opts)
            settings.workdir.mkdir(parents=True, exist_ok=True)
            systems[count] = ShoalSystem(settings)
            await systems[count].start()
        for r in range(rounds):
            order = (1, nodes) if r % 2 == 0 else (nodes, 1)
            figs: dict[str, dict[str, Any]] = {}
            for path in PATHS:
                for count in order:
                    other = systems[nodes if count == 1 else 1]
                    fig = await _measure(workload, systems[count], path, other)
                    figs[f"{count}/{path}"] = fig
                    print(f"[scale {r + 1}/{rounds}] {count} node(s), {path}: {rate(fig)}", flush=True)
            each.append(figs)
    finally:
        for system in systems.values():
            await system.stop()
    return {"nodes": nodes, "tasks": tasks, **_combine(each, nodes)}


async def _measure(workload: Throughput, system: ShoalSystem, path: str, idle: ShoalSystem) -> dict[str, Any]:
    client = next(c for c in system.clients() if c.path == path)
    busy, quiet = TreeLoad(system.proc.pid), TreeLoad(idle.proc.pid)
    busy.start()
    quiet.start()
    fig = await run_repeated(workload, client, system)
    fig["cpu_pct_by_process"] = busy.stop()  # the drain and the baseline reads included
    fig["idle_cluster_cpu_pct"] = round(sum(quiet.stop().values()), 1)
    return fig


def _combine(each: list[dict[str, dict[str, Any]]], nodes: int) -> dict[str, Any]:
    """The median round's figure per setup and path; the ratio is the median of the rounds' own ratios."""
    figures: dict[str, Any] = {}
    for key in each[0]:
        done = sorted((f[key] for f in each if "per_s" in f.get(key, {})), key=lambda f: f["per_s"])
        figures[key] = dict(done[(len(done) - 1) // 2]) if done else each[0][key]
        if len(each) > 1:
            figures[key]["runs"] = [{k: f[key].get(k) for k in ("per_s", "other_cpu_pct")} for f in each]
    ratios, paired = {}, {}
    for path in PATHS:
        one, many = f"1/{path}", f"{nodes}/{path}"
        pairs = [f[many]["per_s"] / f[one]["per_s"] for f in each if "per_s" in f[one] and "per_s" in f[many]]
        if pairs:
            ratios[path], paired[path] = round(statistics.median(pairs), 3), [round(x, 3) for x in pairs]
    return {"figures": figures, "ratio": ratios, "ratio_each_round": paired}


def rate(fig: dict[str, Any]) -> str:
    if "error" in fig:
        return f"FAILED {fig['error']}"
    cores = ", ".join(f"{k} {v:.0f}%" for k, v in fig.get("cpu_pct_by_process", {}).items())
    return (
        f"{fig['per_s']:,.0f} tasks/s in {fig['seconds']:.1f} s (client CPU {fig['client_cpu_pct']:.0f}%, "
        f"other processes {fig['other_cpu_pct']:.0f}% CPU, idle cluster {fig['idle_cluster_cpu_pct']:.0f}%; "
        f"measured cluster: {cores})"
    )
