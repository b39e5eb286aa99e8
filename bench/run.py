"""Run shoal's benchmark: ``.venv/bin/python bench/run.py [--only shoal|celery|dramatiq|taskiq] [--quick]``.

Starts each system in turn on this machine (never two at once, so none steals another's cores), each on
its own redis-server of the same binary and settings, with two worker processes (shoal: two nodes), runs
the workloads of ``bench.workloads`` through every client path the system offers, prints one table
(each figure beside its ratio to the best of the peers) and writes every figure to
``bench/results/latest.json``. Every process it starts is stopped on exit, on Ctrl-C and on SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make ``bench`` importable from the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.adapters import PEERS, SYSTEMS, Client, Settings, System
from bench.machine import OtherLoad, SystemCpu, machine_info
from bench.procs import REAPER
from bench.redis_server import CommandMeter
from bench.report import render, write_json
from bench.workloads import Drain, Latency, Throughput, Workload

DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "latest.json"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bench/run.py", description=__doc__.splitlines()[0])
    p.add_argument("--only", action="append", choices=list(SYSTEMS), help="run only this system (repeatable)")
    p.add_argument("--tasks", type=int, default=10_000, help="echo tasks for the end-to-end throughput run")
    p.add_argument("--drain-tasks", type=int, default=None, help="tasks queued for the drain run (default --tasks)")
    p.add_argument("--latency-tasks", type=int, default=500, help="sequential round trips for the latency run")
    p.add_argument("--concurrency", type=int, default=64, help="submissions in flight, for clients that pipeline")
    p.add_argument("--repeat", type=int, default=1, help="run each measurement N times and keep the median run")
    p.add_argument("--quick", action="store_true", help="small numbers for a smoke run (500 / 500 / 50)")
    p.add_argument("--no-isolation", action="store_true", help="skip bench/isolation.py, run after shoal's figures")
    p.add_argument("--json", type=Path, default=DEFAULT_JSON, help=f"figures written here (default {DEFAULT_JSON})")
    p.add_argument("--workdir", type=Path, default=None, help="keep data dirs and logs here instead of a temp dir")
    p.add_argument("--nodes", type=int, default=2, help="shoal nodes (shoal up --nodes N); lanes spread over them")
    p.add_argument("--shoal-ref", default=None, help="measure this git commit (e.g. HEAD), not the working tree")
    p.add_argument("--celery-pool", default="prefork", help="celery worker --pool (default prefork)")
    p.add_argument("--celery-concurrency", type=int, default=2, help="celery worker --concurrency (default 2)")
    p.add_argument("--celery-prefetch", type=int, default=4, help="worker_prefetch_multiplier (Celery's default 4)")
    p.add_argument("--dramatiq-threads", type=int, default=8, help="dramatiq --threads per process (default 8)")
    args = p.parse_args(argv)
    if args.quick:
        args.tasks, args.latency_tasks = min(args.tasks, 500), min(args.latency_tasks, 50)
    args.drain_tasks = args.drain_tasks or args.tasks
    return args


def workloads(args: argparse.Namespace) -> list[Workload]:
    return [
        Throughput(n=args.tasks, concurrency=args.concurrency),
        Drain(n=args.drain_tasks, concurrency=args.concurrency),
        Latency(n=args.latency_tasks, warmup=5 if args.quick else 20),
    ]


async def measure(workload: Workload, client: Client, system: System) -> dict[str, Any]:
    """One run of ``workload``, with what it cost: the CPU of every process of the system (the client's
    included) and the Redis commands it ran, per task; and what other processes used meanwhile."""
    other, cpu = OtherLoad(), SystemCpu(system.processes())
    address = system.store_address()
    meter = CommandMeter(address) if address else None
    try:
        before = meter.read() if meter else None
        other.start()
        cpu.start()
        fig = await workload.run(client, system)
        used = cpu.stop()
        fig["other_cpu_pct"] = other.stop()
        tasks = fig.get("accepted", fig["tasks"]) + fig.get("warmup", 0)
        fig["cpu_ms_per_task"] = 1000 * sum(used.values()) / tasks
        fig["cpu_ms_per_task_by_process"] = {role: round(1000 * s / tasks, 3) for role, s in used.items()}
        if meter and before:
            ran = meter.read().since(before)
            fig["redis_commands_per_task"] = ran.total / tasks
            fig["redis_processed_per_task"] = ran.processed / tasks
            busiest = sorted(ran.calls.items(), key=lambda kv: -kv[1])
            fig["redis_commands_per_task_by_name"] = {name: round(n / tasks, 2) for name, n in busiest}
    finally:
        if meter:
            meter.close()
    return fig


async def run_repeated(workload: Workload, client: Client, system: System, repeat: int = 1) -> dict[str, Any]:
    """Run ``repeat`` times; keep the median run (by the workload's main figure) and list them all."""
    runs: list[dict[str, Any]] = []
    for _ in range(repeat):
        try:
            runs.append(await measure(workload, client, system))
        except Exception as exc:  # one failing path must not hide the others' figures
            traceback.print_exc()
            return {"error": f"{type(exc).__name__}: {exc}"}
    metric = "p50_ms" if workload.name == "latency" else "per_s"
    runs.sort(key=lambda f: f[metric])
    chosen = dict(runs[(len(runs) - 1) // 2])
    if repeat > 1:
        keep = (metric, "p99_ms", "cpu_ms_per_task", "redis_commands_per_task", "other_cpu_pct")
        chosen["runs"] = [{k: f[k] for k in keep if k in f} for f in runs]
    return chosen


async def run_system(
    name: str, settings: Settings, plan: list[Workload], repeat: int = 1
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Start one system, run every workload through every client path that takes part, stop it."""
    system = SYSTEMS[name](settings)
    figures: dict[str, Any] = {}
    print(f"[{name}] starting", flush=True)
    t0 = time.perf_counter()
    try:
        await system.start()
        print(f"[{name}] ready in {time.perf_counter() - t0:.1f} s", flush=True)
        for workload in plan:
            for client in system.clients():
                key = f"{workload.name}/{client.path}"
                if workload.name in client.skipped:
                    figures[key] = {"skipped": client.skipped[workload.name], "note": client.note}
                    print(f"[{name}] {key}: skipped: {client.skipped[workload.name]}", flush=True)
                    continue
                if workload.name not in client.workloads:
                    continue
                figures[key] = await run_repeated(workload, client, system, repeat)
                figures[key]["note"] = client.note
                print(f"[{name}] {key}: {_summary(figures[key])}", flush=True)
        return figures, system.describe()
    finally:
        await system.stop()


def _summary(fig: dict[str, Any]) -> str:
    if "error" in fig:
        return f"FAILED {fig['error']}"
    other = (
        f"{fig['cpu_ms_per_task']:.2f} ms CPU/task in all, {fig.get('redis_commands_per_task', 0):.1f} Redis "
        f"commands/task, other processes {fig['other_cpu_pct']:.0f}% CPU"
    )
    if fig["other_cpu_pct"] > 10:
        other += " - the machine was not idle, figures are low"
    if "per_s" in fig:
        refused = ""
        if fig["failed"]:
            refused = f"{fig['failed']} of {fig['tasks']} submissions REFUSED {fig['errors'][:1]}, "
        return (
            f"{fig['per_s']:,.0f} tasks/s in {fig['seconds']:.2f} s "
            f"({refused}client CPU {fig['client_cpu_pct']:.0f}%, {other})"
        )
    return f"p50 {fig['p50_ms']:.2f} ms, p99 {fig['p99_ms']:.2f} ms, max {fig['max_ms']:.2f} ms ({other})"


async def main_async(args: argparse.Namespace, workdir: Path) -> int:
    names = args.only or list(SYSTEMS)
    opts = {
        "celery_pool": args.celery_pool,
        "celery_concurrency": args.celery_concurrency,
        "celery_prefetch": args.celery_prefetch,
        "dramatiq_threads": args.dramatiq_threads,
        "shoal_ref": args.shoal_ref,
        "nodes": args.nodes,
    }
    plan = workloads(args)
    loadavg_before = Path("/proc/loadavg").read_text().split()[:3]
    results: dict[str, dict[str, Any]] = {}
    described: dict[str, dict[str, Any]] = {}
    for name in names:
        settings = Settings(workdir=workdir / name, concurrency=args.concurrency, options=opts)
        settings.workdir.mkdir(parents=True, exist_ok=True)
        results[name], described[name] = await run_system(name, settings, plan, args.repeat)
    machine = {**machine_info(), "loadavg_before": loadavg_before}
    print()
    print(render(results, machine, described, PEERS))
    payload = {
        "generated_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine,
        "parameters": {
            "tasks": args.tasks,
            "drain_tasks": args.drain_tasks,
            "latency_tasks": args.latency_tasks,
            "concurrency": args.concurrency,
            "nodes": args.nodes,
            "quick": args.quick,
            "repeat": args.repeat,
        },
        "systems": described,
        "results": results,
    }
    write_json(args.json, payload)
    print(f"\nfigures written to {args.json}")
    failed = any("error" in fig for figs in results.values() for fig in figs.values())
    if "shoal" in names and not args.no_isolation:  # 2,000 sync no-ops through worker processes beside inline ones
        from bench import isolation

        print("\nisolation: what a task run in a worker process costs its node, beside an inline one")
        extra = ["--json", str(args.json.with_name("isolation.json"))] + (["--quick"] if args.quick else [])
        extra += ["--shoal-ref", args.shoal_ref] if args.shoal_ref else []
        failed |= await isolation.main_async(isolation.parse_args(extra), workdir / "isolation") != 0
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    return run_bench(main_async, parse_args(argv), "shoal-bench-")


def run_bench(
    main_async: Callable[[argparse.Namespace, Path], Coroutine[Any, Any, int]], args: argparse.Namespace, prefix: str
) -> int:
    """Run a benchmark's ``main_async`` in ``args.workdir`` (else a temporary one, removed afterwards), with
    every child process stopped on any exit; Ctrl-C exits 130."""
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix=prefix))
    workdir.mkdir(parents=True, exist_ok=True)
    REAPER.install()
    if args.workdir is None:
        REAPER.at_exit(lambda: shutil.rmtree(workdir, ignore_errors=True))
    try:
        return _run_loop(main_async(args, workdir))
    except KeyboardInterrupt:
        return 130
    finally:
        REAPER.reap()
        REAPER.run_exit_actions()


def _run_loop(coro: Coroutine[Any, Any, int]) -> int:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)


if __name__ == "__main__":
    sys.exit(main())
