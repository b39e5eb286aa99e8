"""The printed table (one row per figure, one column per system and client path) and the JSON file.

Every cell holds the figure and its ratio to the best peer for that row: the best of the peers' figures
(the most tasks per second, the least milliseconds, CPU or Redis commands). A peer's own cells are
compared the same way, so the best peer of each row reads 1.00x.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

#: (workload, metric, label, higher is better)
ROWS: list[tuple[str, str, str, bool]] = [
    ("throughput", "per_s", "end-to-end tasks/s", True),
    ("drain", "per_s", "drain tasks/s (backlog queued first)", True),
    ("latency", "p50_ms", "latency p50 ms", False),
    ("latency", "p99_ms", "latency p99 ms", False),
    ("throughput", "cpu_ms_per_task", "CPU ms/task, every process (e2e run)", False),
    ("throughput", "redis_commands_per_task", "Redis commands/task (e2e run)", False),
]

Results = dict[str, dict[str, dict[str, Any]]]  # system -> "workload/path" -> figures


def columns(results: Results, peers: tuple[str, ...]) -> list[tuple[str, str | None]]:
    """(system, path) per column: shoal once per client path that has figures, a peer once (its one path)."""
    cols: list[tuple[str, str | None]] = []
    for system, figs in results.items():
        if system in peers:
            cols.append((system, None))
            continue
        paths = list(dict.fromkeys(key.split("/", 1)[1] for key in figs))  # in the order the paths ran first
        measured = {key.split("/", 1)[1] for key, fig in figs.items() if "skipped" not in fig}
        cols += [(system, path) for path in paths if path in measured]
    return cols


def figure(results: Results, col: tuple[str, str | None], workload: str, metric: str) -> dict[str, Any] | None:
    """The figures of ``workload`` in that column (a peer's from its only path), None if it took no part."""
    system, path = col
    for key, fig in results[system].items():
        name, _, fig_path = key.partition("/")
        if name == workload and (path is None or fig_path == path):
            return fig
    return None


def best_peer(results: Results, peers: tuple[str, ...], workload: str, metric: str, higher: bool) -> float | None:
    values = []
    for system in peers:
        fig = figure(results, (system, None), workload, metric) if system in results else None
        if fig is not None and isinstance(fig.get(metric), int | float):
            values.append(float(fig[metric]))
    if not values:
        return None
    return max(values) if higher else min(values)


def table_rows(results: Results, peers: tuple[str, ...]) -> list[list[str]]:
    cols = columns(results, peers)
    rows = []
    for workload, metric, label, higher in ROWS:
        best = best_peer(results, peers, workload, metric, higher)
        cells = [label]
        for col in cols:
            fig = figure(results, col, workload, metric)
            if fig is None:
                cells.append("-")
            elif "skipped" in fig:
                cells.append("skipped")
            elif "error" in fig or metric not in fig:
                cells.append("failed")
            else:
                value = float(fig[metric])
                ratio = f" ({value / best:.2f}x)" if best else ""
                cells.append(_fmt(value) + ratio)
        rows.append(cells)
    return rows


def render(
    results: Results, machine: dict[str, Any], describe: dict[str, dict[str, Any]], peers: tuple[str, ...]
) -> str:
    cols = columns(results, peers)
    header = ["figure", *(f"{s} {p}" if p else s for s, p in cols)]
    rows = [header, *table_rows(results, peers)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = [" | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    lines.append("")
    present = [p for p in peers if p in results]
    if present:
        lines.append(
            f"(x): the figure over the best peer's (the best of {'/'.join(present)}); for tasks/s above 1 is "
            "better, for the others below 1 is better"
        )
    lines += _skipped(results)
    lines += _cpu_lines(results, cols)
    lines.append("")
    lines.append(
        f"machine: {machine['cores']} cores, {machine['cpu_model']}, Linux {machine['kernel']}, "
        f"Python {machine['python']}; load average {' '.join(machine.get('loadavg_before', []))} before, "
        f"{' '.join(machine['loadavg'])} after"
    )
    lines.append(_other_load(results))
    lines += _redis_lines(describe)
    for name, info in describe.items():
        shown = {k: v for k, v in info.items() if v is not None and not k.startswith("redis")}
        lines.append(f"{name}: " + ", ".join(f"{k}={v}" for k, v in shown.items()))
    return "\n".join(lines)


def _skipped(results: Results) -> list[str]:
    return [
        f"skipped: {system} {key}: {fig['skipped']}"
        for system, figs in results.items()
        for key, fig in figs.items()
        if "skipped" in fig
    ]


def _cpu_lines(results: Results, cols: list[tuple[str, str | None]]) -> list[str]:
    """Where the CPU of the end-to-end run went, per process, in ms per task."""
    lines = ["CPU ms/task by process (e2e run):"]
    for col in cols:
        fig = figure(results, col, "throughput", "cpu_ms_per_task_by_process")
        if fig is None or "cpu_ms_per_task_by_process" not in fig:
            continue
        parts = ", ".join(f"{role} {ms:.2f}" for role, ms in fig["cpu_ms_per_task_by_process"].items())
        lines.append(f"  {col[0]}{' ' + col[1] if col[1] else ''}: {parts}")
    return lines if len(lines) > 1 else []


def _other_load(results: Results) -> str:
    loads = [fig["other_cpu_pct"] for figs in results.values() for fig in figs.values() if "other_cpu_pct" in fig]
    if not loads:
        return "other processes: not measured"
    verdict = " - the machine was NOT idle: figures are low and noisy" if max(loads) > 10 else ""
    return (
        f"other processes (not the benchmark's) used {min(loads):.0f} to {max(loads):.0f} % of a core "
        f"during the measurements{verdict}"
    )


def _redis_lines(describe: dict[str, dict[str, Any]]) -> list[str]:
    """The Redis each system ran on, as its server reported itself; one line when all are the same."""
    seen: dict[tuple[str, ...], list[str]] = {}
    for name, info in describe.items():
        key = tuple(
            str(info.get(k, "?"))
            for k in ("redis", "redis_executable", "redis_appendonly", "redis_appendfsync", "redis_save")
        )
        seen.setdefault(key, []).append(name)
    lines = []
    for (version, exe, aof, fsync, save), names in seen.items():
        lines.append(
            f"Redis {version} ({exe}), appendonly {aof}, appendfsync {fsync}, save {save!r}: {', '.join(names)}"
        )
    if len(seen) > 1:
        lines.append("WARNING: the systems did not all run on the same Redis; their figures are not comparable")
    return lines


def _fmt(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def write_json(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, sort_keys=False) + "\n")


def percentiles(values: list[float]) -> dict[str, float]:
    """Nearest-rank p50 and p99, and the max, rounded to 0.1 (``{"n": 0}`` for no values)."""
    if not values:
        return {"n": 0}
    ordered = sorted(values)

    def rank(p: float) -> float:
        return ordered[min(len(ordered) - 1, max(0, math.ceil(p * len(ordered)) - 1))]

    return {"n": len(ordered), "p50": round(rank(0.50), 1), "p99": round(rank(0.99), 1), "max": round(ordered[-1], 1)}
