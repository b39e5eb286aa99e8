"""The printed table (workload | each system | ratio) and the JSON file of every figure."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

# (workload, metric, label, higher is better)
ROWS: list[tuple[str, str, str, bool]] = [
    ("accept", "per_s", "accepted tasks/s", True),
    ("throughput", "per_s", "end-to-end tasks/s", True),
    ("latency", "p50_ms", "latency p50 ms", False),
    ("latency", "p99_ms", "latency p99 ms", False),
    ("throughput", "redis_commands_per_task", "Redis commands/task (e2e)", False),
]


def table_rows(results: dict[str, dict[str, dict[str, Any]]]) -> list[list[str]]:
    """One row per (workload metric, client path); a system with one path for a workload fills every row.

    ``results`` is system -> "workload/path" -> figures. The ratio is first system / second system.
    """
    systems = list(results)
    rows = []
    for workload, metric, label, _higher in ROWS:
        paths_by_system = {
            s: [k.split("/", 1)[1] for k in results[s] if k.split("/", 1)[0] == workload] for s in systems
        }
        longest = max(paths_by_system.values(), key=len, default=[])
        for i, _ in enumerate(longest):
            cells: list[str] = []
            values: list[float | None] = []
            for s in systems:
                paths = paths_by_system[s]
                if not paths:
                    cells.append("-")
                    values.append(None)
                    continue
                path = paths[i] if i < len(paths) else paths[0]
                fig = results[s][f"{workload}/{path}"]
                value = fig.get(metric) if "error" not in fig else None
                values.append(value)
                cells.append(f"{_fmt(value)} ({path})" if value is not None else f"failed ({path})")
            ratio = "-"
            if len(values) >= 2 and values[0] is not None and values[1] not in (None, 0):
                ratio = f"{values[0] / values[1]:.2f}x"
            rows.append([label, *cells, ratio])
    return rows


def render(
    results: dict[str, dict[str, dict[str, Any]]], machine: dict[str, Any], describe: dict[str, dict[str, Any]]
) -> str:
    systems = list(results)
    header = ["workload", *systems, f"ratio {systems[0]}/{systems[1]}" if len(systems) >= 2 else "ratio"]
    rows = [header, *table_rows(results)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = [" | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    lines.append("")
    lines.append(
        f"machine: {machine['cores']} cores, {machine['cpu_model']}, Linux {machine['kernel']}, "
        f"Python {machine['python']}, Redis {machine.get('redis')}"
    )
    for name, info in describe.items():
        lines.append(f"{name}: " + ", ".join(f"{k}={v}" for k, v in info.items() if v is not None))
    lines.append("ratio: first system / second; above 1 means more tasks/s, or a longer latency (or more commands)")
    return "\n".join(lines)


def _fmt(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def write_json(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, sort_keys=False) + "\n")
