"""The selftest's verdict: a pure function from a recorded ``History`` to the violations of shoal's promises.

Each invariant is one function over plain data. A violation names its invariant and carries the task's
whole history (its acknowledgements, journal executions and final record). A violation on a task that
had a write in the last ``fsync_window_s`` before a store crash is set apart: with ``appendfsync
everysec`` the store may lose that second, as the README says, so such a task is reported, not counted.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from shoal.selftest.history import Ack, Election, Execution, History

TERMINAL = ("SUCCEED", "RUNTIME_ERROR", "KILLED")
#: The state the run records for a task the API failed to show (an error answer, not a 404).
UNREADABLE = "UNREADABLE"
#: Attempt outcomes that end an attempt without its handler finishing (not failures of the task's own).
LOST_OUTCOMES = ("node lost", "crashed", "handed back")

#: Invariant name -> what it promises, in the order the report lists them.
INVARIANTS = {
    "acknowledged-final": "every acknowledged task reaches a final state (SUCCEED, RUNTIME_ERROR or KILLED)",
    "none-lost": "no acknowledged task is lost (only an acknowledged delete removes one, and that one stays gone)",
    "single-success": "no task ends SUCCEED twice (at most one attempt succeeds, and it is the last)",
    "no-start-after-kill": "no attempt starts after its kill was acknowledged, and a killed task stays KILLED",
    "no-overlap": "no task runs twice at once (its executions in the journal never overlap)",
    "epoch-order": "no placement happens under an epoch older than one already seen",
    "single-master": "every epoch has a single master, and every placement's epoch was won by one",
    "attempts-consistent": "each task's attempt list is consistent with its final state and its known outcome",
}


@dataclass(frozen=True)
class Violation:
    invariant: str
    task: str | None
    message: str
    history: dict[str, Any] = field(default_factory=dict)
    in_fsync_window: bool = False

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Verdict:
    """Violations counted against shoal, those set apart by the fsync window, and per invariant how many
    cases it examined."""

    violations: list[Violation] = field(default_factory=list)
    fsync_window: list[Violation] = field(default_factory=list)
    checked: dict[str, int] = field(default_factory=dict)
    placements: dict[int, dict[str, Any]] = field(default_factory=dict)  # epoch -> {master, count}

    @property
    def passed(self) -> bool:
        return not self.violations


@dataclass
class _Facts:
    """What the invariants share, computed once from the history."""

    history: History
    acks: dict[str, list[Ack]]
    runs: dict[str, list[Execution]]
    submitted: dict[str, Ack]  # acknowledged submits by task id

    def ok(self, task: str, op: str) -> list[Ack]:
        return [a for a in self.acks.get(task, []) if a.op == op and a.status == "ok"]

    def tried(self, task: str, op: str) -> list[Ack]:
        """Requests that did or may have happened (acknowledged or unknown)."""
        return [a for a in self.acks.get(task, []) if a.op == op and a.status != "refused"]

    def record(self, task: str) -> dict[str, Any] | None:
        return self.history.tasks.get(task)

    def story(self, task: str | None) -> dict[str, Any]:
        if task is None:
            return {}
        return {
            "acks": [asdict(a) for a in self.acks.get(task, [])],
            "executions": [asdict(e) for e in self.runs.get(task, [])],
            "final": self.record(task),
        }


Found = tuple[str | None, str]  # (task, message)


def check(history: History) -> Verdict:
    """Every invariant over ``history``; see INVARIANTS."""
    acks: dict[str, list[Ack]] = defaultdict(list)
    for ack in history.acks:
        if ack.task is not None:
            acks[ack.task].append(ack)
    runs: dict[str, list[Execution]] = defaultdict(list)
    for run in history.executions:
        runs[run.task].append(run)
    submitted = {a.task: a for a in history.acks if a.op == "submit" and a.status == "ok" and a.task}
    facts = _Facts(history, acks, runs, submitted)
    verdict = Verdict()
    checks: dict[str, Callable[[_Facts], tuple[int, Iterable[Found]]]] = {
        "acknowledged-final": _acknowledged_final,
        "none-lost": _none_lost,
        "single-success": _single_success,
        "no-start-after-kill": _no_start_after_kill,
        "no-overlap": _no_overlap,
        "epoch-order": _epoch_order,
        "single-master": _single_master,
        "attempts-consistent": _attempts_consistent,
    }
    for name, invariant in checks.items():
        count, found = invariant(facts)
        verdict.checked[name] = count
        for task, message in found:
            violation = Violation(name, task, message, facts.story(task), _in_window(facts, task, message))
            (verdict.fsync_window if violation.in_fsync_window else verdict.violations).append(violation)
    verdict.placements = _placements(facts)
    return verdict


# -- the invariants ---------------------------------------------------------------------------------------


def _kept(facts: _Facts) -> list[str]:
    """Acknowledged tasks no delete touched (or may have touched): these must still be there."""
    return [t for t in facts.submitted if not facts.tried(t, "delete")]


def _acknowledged_final(facts: _Facts) -> tuple[int, list[Found]]:
    found: list[Found] = []
    kept = _kept(facts)
    for task in kept:
        record = facts.record(task)
        if record is not None and record.get("state") == UNREADABLE:
            found.append((task, f"could not be read at the end of the run: {record.get('error')}"))
        elif record is not None and record.get("state") not in TERMINAL:
            found.append((task, f"still {record.get('state')} at the end of the run"))
    return len(kept), found


def _none_lost(facts: _Facts) -> tuple[int, list[Found]]:
    found: list[Found] = []
    kept = _kept(facts)
    for task in kept:
        if facts.record(task) is None:
            found.append((task, "acknowledged, never deleted, and gone at the end (404)"))
    deleted = [t for t in facts.submitted if facts.ok(t, "delete")]
    for task in deleted:
        if facts.record(task) is not None:
            found.append((task, "its delete was acknowledged, yet it is still there at the end"))
    return len(kept) + len(deleted), found


def _attempts(record: dict[str, Any] | None) -> list[dict[str, Any]]:
    return list(record.get("history") or []) if record else []


def _single_success(facts: _Facts) -> tuple[int, list[Found]]:
    found: list[Found] = []
    records = [(t, r) for t, r in facts.history.tasks.items() if r is not None]
    for task, record in records:
        attempts = _attempts(record)
        won = [a["number"] for a in attempts if a.get("outcome") == "succeeded"]
        if len(won) > 1:
            found.append((task, f"attempts {won} all succeeded"))
        elif won and attempts[-1]["number"] != won[0]:
            found.append((task, f"attempt {won[0]} succeeded, yet attempt {attempts[-1]['number']} came after it"))
        if record.get("state") == "SUCCEED" and not won and not record.get("attempts_dropped"):
            found.append((task, "SUCCEED without a succeeded attempt"))
    return len(records), found


def _no_start_after_kill(facts: _Facts) -> tuple[int, list[Found]]:
    found: list[Found] = []
    killed = [t for t in facts.acks if facts.ok(t, "kill")]
    for task in killed:
        acked = min(a.at for a in facts.ok(task, "kill"))
        record = facts.record(task)
        attempts = {a["number"]: a for a in _attempts(record)}
        for attempt in attempts.values():
            if attempt["started_at"] > acked:
                found.append((task, f"attempt {attempt['number']} started at {attempt['started_at']:.3f}, "
                                    f"after its kill was acknowledged at {acked:.3f}"))  # fmt: skip
        for run in facts.runs.get(task, []):
            known = attempts.get(run.attempt)
            if run.start > acked and (known is None or known["started_at"] > acked):
                found.append((task, f"attempt {run.attempt} ran on {run.node} from {run.start:.3f}, after its kill "
                                    f"was acknowledged at {acked:.3f}"))  # fmt: skip
        if record is not None and record.get("state") != "KILLED":  # (a record gone is none-lost's case)
            found.append((task, f"its kill was acknowledged at {acked:.3f}, yet it ended {record.get('state')}"))
    return len(killed), found


def _execution_end(facts: _Facts, run: Execution) -> float:
    """When an execution stopped: its journal end, else the SIGKILL of its node's process, else never."""
    ends = [run.end] if run.end is not None else []
    ends += [t for t in facts.history.kills_of(run.pid) if t >= run.start]
    return min(ends) if ends else float("inf")


def _no_overlap(facts: _Facts) -> tuple[int, list[Found]]:
    found: list[Found] = []
    for task, runs in facts.runs.items():
        spans = sorted((r.start, _execution_end(facts, r), r) for r in runs)
        for (_, end, first), (start, _, second) in zip(spans, spans[1:], strict=False):
            if start < end:
                found.append((task, f"attempt {second.attempt} on {second.node} started at {start:.3f} while attempt "
                                    f"{first.attempt} on {first.node} still ran (until {end:.3f})"))  # fmt: skip
    return len(facts.runs), found


def _elected_before(elections: list[Election], moment: float) -> int:
    """The highest epoch won strictly before ``moment`` (0 if none)."""
    return max((e.epoch for e in elections if e.at < moment), default=0)


def _epoch_order(facts: _Facts) -> tuple[int, list[Found]]:
    """A placement happens after its task was created (attempt 1) or after the attempt before it ended; an
    epoch won before that moment fences every lower one, so the placement's epoch is at least that."""
    found: list[Found] = []
    elections = facts.history.elections
    checked = 0
    for task, record in facts.history.tasks.items():
        previous: dict[str, Any] | None = None
        for attempt in _attempts(record):
            epoch = attempt.get("epoch")
            if epoch is None:
                previous = attempt
                continue
            checked += 1
            if previous is not None and previous.get("epoch") is not None and epoch < previous["epoch"]:
                found.append((task, f"attempt {attempt['number']} was placed under epoch {epoch}, below epoch "
                                    f"{previous['epoch']} of attempt {previous['number']}"))  # fmt: skip
            if previous is None and attempt["number"] == 1 and record is not None:
                floor_at = float(record["created_at"])
            elif previous is not None and previous["number"] == attempt["number"] - 1:
                floor_at = float(previous.get("finished_at") or 0)
            else:
                floor_at = 0.0  # attempts dropped between them: no lower bound on when it was placed
            seen = _elected_before(elections, floor_at)
            if epoch < seen:
                found.append((task, f"attempt {attempt['number']} was placed under epoch {epoch}, after epoch "
                                    f"{seen} had been won (before {floor_at:.3f})"))  # fmt: skip
            previous = attempt
    return checked, found


def _single_master(facts: _Facts) -> tuple[int, list[Found]]:
    found: list[Found] = []
    masters: dict[int, set[str]] = defaultdict(set)
    wins: dict[int, int] = defaultdict(int)
    for election in facts.history.elections:
        masters[election.epoch].add(election.node)
        wins[election.epoch] += 1
    for epoch, names in sorted(masters.items()):
        if wins[epoch] > 1:
            found.append((None, f"epoch {epoch} was won {wins[epoch]} times, by {', '.join(sorted(names))}"))
    oldest = min((e.epoch for e in facts.history.elections), default=None)
    checked = 0
    for task, record in facts.history.tasks.items():
        for attempt in _attempts(record):
            placed = attempt.get("epoch")
            if placed is None:
                continue
            checked += 1
            complete = facts.history.timeline_complete or (oldest is not None and placed >= oldest)
            if placed not in masters and complete:
                found.append(
                    (task, f"attempt {attempt['number']} was placed under epoch {placed}, which no master won")
                )
    return len(masters) + checked, found


def _attempts_consistent(facts: _Facts) -> tuple[int, list[Found]]:
    found: list[Found] = []
    records = [(t, r) for t, r in facts.history.tasks.items() if r is not None]
    for task, record in records:
        found.extend((task, m) for m in _attempt_problems(facts, task, record))
    return len(records), found


def _attempt_problems(facts: _Facts, task: str, record: dict[str, Any]) -> list[str]:
    problems = []
    attempts = _attempts(record)
    state = record.get("state")
    numbers = [a["number"] for a in attempts]
    if numbers != sorted(set(numbers)):
        problems.append(f"attempt numbers {numbers} are not increasing")
    if numbers and numbers[-1] != record.get("attempts"):
        problems.append(f"the last attempt is number {numbers[-1]}, but the task counts {record.get('attempts')}")
    if not record.get("attempts_dropped") and numbers != list(range(1, len(numbers) + 1)):
        problems.append(f"attempt numbers {numbers} have gaps although none was dropped")
    if state in TERMINAL:
        open_ = [a["number"] for a in attempts if a.get("finished_at") is None or a.get("outcome") is None]
        if open_:
            problems.append(f"ended {state} with attempts {open_} still open")
    last = attempts[-1].get("outcome") if attempts else None
    if state == "SUCCEED" and last != "succeeded":
        problems.append(f"ended SUCCEED, but its last attempt's outcome is {last!r}")
    if state == "RUNTIME_ERROR" and (not attempts or last in ("succeeded", "killed")):
        problems.append(f"ended RUNTIME_ERROR, but its last attempt's outcome is {last!r}")
    if state == "KILLED" and not facts.tried(task, "kill") and not facts.tried(task, "delete"):
        problems.append("ended KILLED, but no kill of it was ever sent")
    if state in ("WAITING", "INQUEUE") and attempts and attempts[-1].get("finished_at") is None:
        problems.append(f"is {state} with attempt {numbers[-1]} still open")
    by_number = {a["number"]: a for a in attempts}
    for run in facts.runs.get(task, []):
        attempt = by_number.get(run.attempt)
        if attempt is None and not record.get("attempts_dropped"):
            problems.append(f"attempt {run.attempt} ran on {run.node} but is not in its attempt list")
        elif attempt is not None and attempt["node"] != run.node:
            problems.append(f"attempt {run.attempt} ran on {run.node} but its list says {attempt['node']}")
    problems.extend(_known_outcome(facts, task, record))
    return problems


def _known_outcome(facts: _Facts, task: str, record: dict[str, Any]) -> list[str]:
    """The workload knows how each task must end: a ``selftest`` task fails exactly its attempts numbered up
    to ``fail_first`` and an ``echo`` always succeeds, unless a kill or a lost node intervened."""
    ack = facts.submitted.get(task)
    if ack is None or record.get("state") not in TERMINAL:
        return []
    problems = []
    fail_first = int(ack.spec.get("fail_first", 0))
    retries = int(ack.spec.get("max_retries", 0))
    attempts = _attempts(record)
    for attempt in attempts:
        outcome = attempt.get("outcome")
        if outcome == "succeeded" and attempt["number"] <= fail_first:
            problems.append(f"attempt {attempt['number']} succeeded, but attempts up to {fail_first} fail")
        if outcome == "failed" and attempt["number"] > fail_first:
            problems.append(f"attempt {attempt['number']} failed, but only attempts up to {fail_first} fail")
    if facts.tried(task, "kill") or facts.tried(task, "delete"):
        return problems
    lost = sum(1 for a in attempts if a.get("outcome") in LOST_OUTCOMES)
    quarantined = int(record.get("lost_attempts") or 0) >= int(record.get("max_lost_attempts") or 1)
    state = record.get("state")
    if fail_first <= retries and state != "SUCCEED" and not quarantined:
        problems.append(f"fails its first {fail_first} attempts with {retries} retries, so must end SUCCEED, "
                        f"but ended {state}")  # fmt: skip
    if fail_first > retries and lost == 0 and state != "RUNTIME_ERROR":
        problems.append(f"fails its first {fail_first} attempts with only {retries} retries, so must end "
                        f"RUNTIME_ERROR, but ended {state}")  # fmt: skip
    return problems


# -- the fsync window and the placement table ----------------------------------------------------------------


def _moments(facts: _Facts, task: str | None, message: str) -> list[float]:
    """Every time at which ``task`` was written or acknowledged (or, for a violation about epochs, when they
    were won)."""
    if task is None:
        return [e.at for e in facts.history.elections if f"epoch {e.epoch} " in message + " "]
    times = [a.at for a in facts.acks.get(task, []) if a.status != "refused"]  # a refusal wrote nothing
    record = facts.record(task)
    if record is not None:
        times += [float(record.get(k) or 0) for k in ("created_at", "started_at", "finished_at")]
        for attempt in _attempts(record):
            times += [float(attempt.get("started_at") or 0), float(attempt.get("finished_at") or 0)]
    return times


def _in_window(facts: _Facts, task: str | None, message: str) -> bool:
    window = facts.history.fsync_window_s
    crashes = facts.history.store_crashes
    return any(crash - window <= t <= crash for crash in crashes for t in _moments(facts, task, message))


def _placements(facts: _Facts) -> dict[int, dict[str, Any]]:
    """Attempts started per epoch, beside the master that won it (None when the timeline does not say)."""
    table: dict[int, dict[str, Any]] = {}
    masters = defaultdict(list)
    for election in facts.history.elections:
        masters[election.epoch].append(election.node)
    for record in facts.history.tasks.values():
        for attempt in _attempts(record):
            epoch = attempt.get("epoch")
            if epoch is not None:
                row = table.setdefault(epoch, {"masters": masters.get(epoch, []), "placements": 0})
                row["placements"] += 1
    for epoch, names in masters.items():
        table.setdefault(epoch, {"masters": names, "placements": 0})
    return dict(sorted(table.items()))
