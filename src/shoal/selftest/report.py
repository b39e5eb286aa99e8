"""The selftest's report, as text for people and as one JSON document for scripts.

The text ends with one line that says it all: ``selftest: PASS`` or ``selftest: FAIL (N violations)``.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict
from typing import Any

import orjson

from shoal.selftest.checker import INVARIANTS, Violation
from shoal.selftest.runner import Outcome


def last_line(outcome: Outcome) -> str:
    count = len(outcome.verdict.violations)
    return "selftest: PASS" if count == 0 else f"selftest: FAIL ({count} violation{'' if count == 1 else 's'})"


def to_json(outcome: Outcome) -> dict[str, Any]:
    history, verdict = outcome.history, outcome.verdict
    return {
        "result": "PASS" if verdict.passed else "FAIL",
        "violation_count": len(verdict.violations),
        "options": asdict(outcome.options),
        "data_dir": str(outcome.data_dir) if outcome.data_dir else None,
        "schedule": [asdict(p) for p in outcome.schedule],
        "faults": [asdict(f) | {"offset_s": round(f.at - history.started_at, 3)} for f in history.faults],
        "invariants": [
            {
                "name": name,
                "promise": promise,
                "checked": verdict.checked.get(name, 0),
                "violations": sum(1 for v in verdict.violations if v.invariant == name),
                "in_fsync_window": sum(1 for v in verdict.fsync_window if v.invariant == name),
            }
            for name, promise in INVARIANTS.items()
        ],  # fmt: skip
        "violations": [v.to_json() for v in verdict.violations],
        "fsync_window": {
            "seconds": history.fsync_window_s,
            "store_crashes": history.store_crashes,
            "acknowledged_within": _within_window(outcome),
            "violations": [v.to_json() for v in verdict.fsync_window],
        },
        "summary": _summary(outcome),
        "placements_per_epoch": {str(k): v for k, v in verdict.placements.items()},
        "notes": outcome.notes,
        "history": history.to_json(),
        "last_line": last_line(outcome),
    }


def dumps(outcome: Outcome) -> bytes:
    return orjson.dumps(to_json(outcome), option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS) + b"\n"


def _within_window(outcome: Outcome) -> list[str]:
    """Tasks acknowledged (submit, kill or delete) in the last fsync window before a store crash."""
    history = outcome.history
    return sorted({
        a.task for a in history.acks for crash in history.store_crashes
        if a.status == "ok" and a.task and crash - history.fsync_window_s <= a.at <= crash
    })  # fmt: skip


def _summary(outcome: Outcome) -> dict[str, Any]:
    history = outcome.history
    acks = Counter(f"{a.op} {a.status}" for a in history.acks)
    states = Counter(str(r.get("state")) if r else "gone" for r in history.tasks.values())
    return {
        "requests": dict(sorted(acks.items())),
        "tasks_by_final_state": dict(sorted(states.items())),
        "executions": len(history.executions),
        "elections": len(history.elections),
        "settle_s": round(outcome.settle_s, 1),
    }


def text(outcome: Outcome) -> str:
    history, verdict, options = outcome.history, outcome.verdict, outcome.options
    lines = [
        f"shoal selftest: {options.nodes} nodes, {options.duration:g}s, seed {options.seed}, "
        f"faults {','.join(options.faults) or 'none'}",
        "",
        f"faults injected ({len(history.faults)}):",
    ]
    for fault in history.faults:
        held = f", undone at +{fault.healed_at - history.started_at:.1f}s" if fault.healed_at else ""
        lines.append(f"  +{fault.at - history.started_at:6.1f}s  {fault.kind:<13} {fault.target:<8} "
                     f"pid {fault.pid}{held}  ({fault.detail})")  # fmt: skip
    summary = _summary(outcome)
    lines += ["", "requests: " + ", ".join(f"{k} {v}" for k, v in summary["requests"].items())]
    lines.append("tasks at the end: " + ", ".join(f"{k} {v}" for k, v in summary["tasks_by_final_state"].items()))
    lines.append(f"executions in the journal: {summary['executions']}; masters elected: {summary['elections']}; "
                 f"settled in {summary['settle_s']}s")  # fmt: skip
    lines.append("placements per epoch: " + (", ".join(
        f"{epoch} ({'/'.join(row['masters']) or '?'}): {row['placements']}" for epoch, row in verdict.placements.items()
    ) or "none"))  # fmt: skip
    lines += ["", "invariants:"]
    for name, promise in INVARIANTS.items():
        bad = sum(1 for v in verdict.violations if v.invariant == name)
        apart = sum(1 for v in verdict.fsync_window if v.invariant == name)
        mark = "ok  " if not bad else "FAIL"
        extra = f", {apart} within the fsync window" if apart else ""
        lines.append(f"  {mark} {name:<20} {verdict.checked.get(name, 0):>6} checked, {bad} violations{extra}: "
                     f"{promise}")  # fmt: skip
    window = _within_window(outcome)
    lines += ["", f"fsync window: {len(history.store_crashes)} store crashes; {len(window)} tasks acknowledged "
                  f"within {history.fsync_window_s:g}s before one (appendfsync everysec may lose those)"]  # fmt: skip
    for violation in verdict.fsync_window:
        lines.append(f"  within the window: {_one(violation)}")
    for note in outcome.notes:
        lines.append(f"note: {note}")
    if verdict.violations:
        lines += ["", f"violations ({len(verdict.violations)}):"]
        for violation in verdict.violations:
            lines.append(f"  {_one(violation)}")
            story = orjson.dumps(violation.history, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS).decode()
            lines += ["    " + line for line in story.splitlines()]
    if outcome.data_dir is not None:
        lines.append(f"the run's directory (logs, journal, store) is kept in {outcome.data_dir}")
    lines += ["", last_line(outcome)]
    return "\n".join(lines) + "\n"


def _one(violation: Violation) -> str:
    return f"[{violation.invariant}] {violation.task or '-'}: {violation.message}"
