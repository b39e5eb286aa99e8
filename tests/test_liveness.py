"""The one liveness rule, case by case: what each part of shoal may assume of a node from its record."""

from __future__ import annotations

import dataclasses

import pytest

from shoal.liveness import liveness, verdict
from shoal.models import ALIVE, DEAD, REJECTED, SUSPECT, NodeRecord

NOW = 1_000.0
WITHIN = 5.0


def node(
    *, beat_ago: float = 0.5, state: str = "", about: int = 0, incarnation: int = 1, draining: bool = False
) -> NodeRecord:
    return NodeRecord(
        name="n", host="127.0.0.1", http="127.0.0.1:1", grpc="127.0.0.1:2", slots=4, running=0, pid=1,
        types=("echo",), run_tasks=True, last_beat=NOW - beat_ago, incarnation=incarnation, state=state,
        state_incarnation=about, draining=draining,
    )  # fmt: skip


#: (case, record, shown state, verdict, present, member, healthy, may_stand)
CASES = [
    ("new and beating, not yet verified", node(), ALIVE, "", True, False, False, True),
    ("new and silent", node(beat_ago=9), SUSPECT, "", False, False, False, False),
    ("admitted and beating", node(state=ALIVE, about=1), ALIVE, ALIVE, True, True, True, True),
    (
        "admitted, silent, no verdict since",
        node(state=ALIVE, about=1, beat_ago=9),
        ALIVE,
        ALIVE,
        False,
        False,
        False,
        False,
    ),
    ("suspect, beating again", node(state=SUSPECT, about=1), SUSPECT, SUSPECT, True, True, False, True),
    ("suspect and silent", node(state=SUSPECT, about=1, beat_ago=9), SUSPECT, SUSPECT, False, False, False, False),
    ("declared dead, still beating", node(state=DEAD, about=1), DEAD, DEAD, False, False, False, False),
    ("rejected, beating", node(state=REJECTED, about=1), REJECTED, REJECTED, False, False, False, False),
    ("admitted and draining", node(state=ALIVE, about=1, draining=True), ALIVE, ALIVE, True, False, False, False),
    (
        "back from the dead in a new incarnation",
        node(state=DEAD, about=1, incarnation=2),
        ALIVE,
        "",
        True,
        False,
        False,
        True,
    ),
    (
        "rejected, restarted as a new incarnation",
        node(state=REJECTED, about=1, incarnation=2),
        ALIVE,
        "",
        True,
        False,
        False,
        True,
    ),
    (
        "admitted, restarted as a new incarnation",
        node(state=ALIVE, about=1, incarnation=2),
        ALIVE,
        "",
        True,
        False,
        False,
        True,
    ),
    (
        "new incarnation, silent",
        node(state=ALIVE, about=1, incarnation=2, beat_ago=9),
        SUSPECT,
        "",
        False,
        False,
        False,
        False,
    ),
]


@pytest.mark.parametrize(
    ("record", "state", "said", "present", "member", "healthy", "may_stand"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_liveness_of_a_node_record(
    record: NodeRecord, state: str, said: str, present: bool, member: bool, healthy: bool, may_stand: bool
) -> None:
    seen = liveness(record, NOW, WITHIN)
    assert (seen.state, seen.verdict, verdict(record)) == (state, said, said)
    assert (seen.present, seen.member, seen.healthy, seen.may_stand) == (present, member, healthy, may_stand)
    assert seen.verified == (said in (ALIVE, SUSPECT)) and seen.refused == (said in (DEAD, REJECTED))


def test_the_window_is_the_callers_and_its_edge_counts_as_beating() -> None:
    record = node(state=ALIVE, about=1, beat_ago=WITHIN)
    assert liveness(record, NOW, WITHIN).beating
    assert not liveness(record, NOW, WITHIN - 0.1).beating
    assert not liveness(dataclasses.replace(record, last_beat=0.0), NOW, WITHIN).member  # never beat
