"""The selftest's checker over hand-made histories: a clean one passes, and each invariant finds a violation
planted in it. No process, no store: the checker is a pure function of the recorded history."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from shoal.selftest.checker import INVARIANTS, Verdict, check
from shoal.selftest.faults import DEFAULT_KINDS, HOLD_S, FaultRefused, parse_kinds, plan
from shoal.selftest.history import Ack, Election, Execution, Fault, History, read_journal

API = "http://127.0.0.1:1"


def attempt(
    number: int, node: str, start: float, end: float | None, outcome: str | None, epoch: int = 1
) -> dict[str, Any]:
    return {"number": number, "node": node, "started_at": start, "finished_at": end, "outcome": outcome, "epoch": epoch}


def record(state: str, created: float, attempts: list[dict[str, Any]]) -> dict[str, Any]:
    return {"state": state, "created_at": created, "started_at": None, "finished_at": None, "attempts": len(attempts),
            "history": attempts, "attempts_dropped": 0, "lost_attempts": 0, "max_lost_attempts": 3}  # fmt: skip


def clean() -> History:
    """A flaky task that fails once then succeeds, a task killed while running (its node then SIGKILLed
    and its run re-placed nowhere), and a task deleted; one master throughout."""
    flaky = {"kind": "flaky", "fail_first": 1, "max_retries": 1, "delay_s": 0.1}
    history = History(started_at=100.0, ended_at=110.0)
    history.elections = [Election(1, "node-1", 100.0)]
    history.acks = [
        Ack("submit", "ok", 100.9, 101.0, API, "A", flaky),
        Ack("submit", "ok", 101.9, 102.0, API, "K", {"kind": "sleeper", "fail_first": 0, "max_retries": 0}),
        Ack("kill", "ok", 102.4, 102.5, API, "K"),
        Ack("submit", "ok", 102.9, 103.0, API, "D", flaky),
        Ack("delete", "ok", 103.1, 103.2, API, "D"),
        Ack("submit", "unknown", 103.5, 106.5, API, None, flaky, "no answer in time"),
        Ack("kill", "refused", 104.0, 104.1, API, "A", {}, "task A is SUCCEED"),
    ]
    history.tasks = {
        "A": record(
            "SUCCEED",
            100.95,
            [attempt(1, "node-1", 101.1, 101.2, "failed"), attempt(2, "node-2", 101.5, 101.6, "succeeded")],
        ),  # fmt: skip
        "K": record("KILLED", 101.95, [attempt(1, "node-3", 102.1, 102.45, "killed")]),
        "D": None,
    }
    history.executions = [
        Execution("A", 1, "node-1", 11, 101.1, 101.2, "failed"),
        Execution("A", 2, "node-2", 12, 101.5, 101.6, "succeeded"),
        Execution("K", 1, "node-3", 13, 102.1, None, None),  # its node was SIGKILLed before it wrote an end
        Execution("D", 1, "node-1", 11, 103.05, 103.15, "cancelled"),
    ]
    history.faults = [Fault("kill", "node-3", 102.6, 103.5, 13, "a worker")]
    return history


def names(verdict: Verdict) -> set[str]:
    return {v.invariant for v in verdict.violations}


def test_a_clean_history_passes_every_invariant() -> None:
    verdict = check(clean())
    assert verdict.passed, verdict.violations
    assert verdict.fsync_window == []
    assert set(verdict.checked) == set(INVARIANTS)
    assert all(verdict.checked[name] > 0 for name in INVARIANTS)
    assert verdict.placements == {1: {"masters": ["node-1"], "placements": 3}}


def planted(change: str) -> History:  # noqa: C901 (one plain branch per planted violation)
    history = copy.deepcopy(clean())
    tasks = history.tasks
    a, k = tasks["A"], tasks["K"]
    assert a is not None and k is not None
    if change == "not final":
        a["state"] = "RUNNING"
        a["history"][-1].update(finished_at=None, outcome=None)
    elif change == "lost":
        tasks["A"] = None
    elif change == "unreadable":
        tasks["A"] = {"id": "A", "state": "UNREADABLE", "error": "the API failed to show it", "history": []}
    elif change == "deleted but there":
        tasks["D"] = record("KILLED", 102.95, [])
    elif change == "two successes":
        a["history"][0]["outcome"] = "succeeded"
        history.acks[0] = Ack("submit", "ok", 100.9, 101.0, API, "A", {"fail_first": 0, "max_retries": 1})
    elif change == "started after kill":
        k["history"].append(attempt(2, "node-1", 102.7, 102.8, "killed"))
        k["attempts"] = 2
    elif change == "ran after kill":
        history.executions.append(Execution("K", 2, "node-1", 11, 102.7, 102.8, "cancelled"))
    elif change == "kill undone":
        k["state"] = "SUCCEED"
        k["history"][0]["outcome"] = "succeeded"
    elif change == "overlap":
        history.executions[1] = Execution("A", 2, "node-2", 12, 101.15, 101.6, "succeeded")
    elif change == "overlap with a node never killed":
        history.faults = []
        history.executions.append(Execution("K", 2, "node-1", 11, 102.3, 102.4, "cancelled"))
    elif change == "stale epoch":
        history.elections.append(Election(2, "node-2", 101.15))
    elif change == "epoch going back":
        a["history"][0]["epoch"] = 2
        history.elections.append(Election(2, "node-2", 100.5))
        a["history"][1]["epoch"] = 1
    elif change == "two masters":
        history.elections.append(Election(1, "node-2", 100.2))
    elif change == "epoch never won":
        k["history"][0]["epoch"] = 5
    elif change == "succeed after a failure":
        a["history"][1]["outcome"] = "failed"
    elif change == "gap":
        a["history"][1]["number"] = 3
        a["attempts"] = 3
    elif change == "wrong known outcome":
        a["state"] = "RUNTIME_ERROR"
        a["history"][1]["outcome"] = "failed"
    elif change == "ran unlisted":
        history.executions.append(Execution("A", 3, "node-3", 14, 101.7, 101.8, "succeeded"))
    else:
        raise AssertionError(change)
    return history


@pytest.mark.parametrize(
    ("change", "invariant"),
    [
        ("not final", "acknowledged-final"),
        ("unreadable", "acknowledged-final"),
        ("lost", "none-lost"),
        ("deleted but there", "none-lost"),
        ("two successes", "single-success"),
        ("started after kill", "no-start-after-kill"),
        ("ran after kill", "no-start-after-kill"),
        ("kill undone", "no-start-after-kill"),
        ("overlap", "no-overlap"),
        ("overlap with a node never killed", "no-overlap"),
        ("stale epoch", "epoch-order"),
        ("epoch going back", "epoch-order"),
        ("two masters", "single-master"),
        ("epoch never won", "single-master"),
        ("succeed after a failure", "attempts-consistent"),
        ("gap", "attempts-consistent"),
        ("wrong known outcome", "attempts-consistent"),
        ("ran unlisted", "attempts-consistent"),
    ],
)
def test_each_invariant_finds_its_planted_violation(change: str, invariant: str) -> None:
    verdict = check(planted(change))
    assert not verdict.passed
    assert invariant in names(verdict), verdict.violations
    found = next(v for v in verdict.violations if v.invariant == invariant)
    if found.task is not None:  # the task's whole story travels with the violation
        assert set(found.history) == {"acks", "executions", "final"}
        assert found.history["acks"], found


def test_a_violation_within_the_fsync_window_is_set_apart() -> None:
    history = planted("lost")
    history.faults.append(Fault("store-restart", "store", 101.5, 102.0, 99, "down 0.5s"))  # 0.5 s after A's ack
    verdict = check(history)
    assert verdict.passed
    assert [(v.invariant, v.task, v.in_fsync_window) for v in verdict.fsync_window] == [("none-lost", "A", True)]

    history.faults[-1] = Fault("store-restart", "store", 104.0, 104.5, 99, "down 0.5s")  # long after: it counts
    verdict = check(history)
    assert [(v.invariant, v.task) for v in verdict.violations] == [("none-lost", "A")]
    assert verdict.fsync_window == []


def test_unknown_requests_promise_nothing() -> None:
    history = clean()
    k = history.tasks["K"]
    assert k is not None
    # A kill whose answer never came: the task may end KILLED or as it would have; neither is a violation.
    history.acks = [a for a in history.acks if a.op != "kill"] + [Ack("kill", "unknown", 102.4, 105.4, API, "K")]
    assert check(history).passed
    # A delete whose answer never came: the task may be gone.
    history.tasks["A"] = None
    history.acks.append(Ack("delete", "unknown", 104.0, 107.0, API, "A"))
    assert check(history).passed


def test_read_journal_pairs_starts_and_ends_and_skips_a_torn_line() -> None:
    lines = [
        b'{"task":"A","attempt":1,"node":"node-1","pid":11,"event":"start","at":1.0}',
        b'{"task":"B","attempt":1,"node":"node-2","pid":12,"event":"start","at":1.5}',
        b'{"task":"A","attempt":1,"node":"node-1","pid":11,"event":"end","at":2.0,"outcome":"succeeded"}',
        b'{"task":"B","attempt":1,"no',
    ]
    assert read_journal(lines) == [
        Execution("A", 1, "node-1", 11, 1.0, 2.0, "succeeded"),
        Execution("B", 1, "node-2", 12, 1.5, None, None),
    ]


def test_the_fault_schedule_comes_from_the_seed() -> None:
    first = plan(1, 60.0, DEFAULT_KINDS, 3)
    assert first == plan(1, 60.0, DEFAULT_KINDS, 3)
    assert first != plan(2, 60.0, DEFAULT_KINDS, 3)
    assert {f.kind for f in first} == set(DEFAULT_KINDS)
    assert all(f.offset + f.hold <= 60.0 for f in first)
    assert all(HOLD_S[f.kind][0] <= f.hold <= HOLD_S[f.kind][1] for f in first)
    assert {f.kind for f in plan(1, 60.0, ("stop",), 3)} == {"stop"}


def test_fault_kinds_are_checked() -> None:
    assert parse_kinds("kill, stop,kill") == ("kill", "stop")
    for bad in ("", ",", "kill,flood"):
        with pytest.raises(FaultRefused):
            parse_kinds(bad)
