"""What a selftest run recorded, as plain data: the checker reads only this, so it can be tested by hand.

Times are Unix seconds from one machine's clock: the client's (acknowledgements, faults), the store's
(``TIME`` in its scripts: attempts, elections) and the nodes' (the journal) all read the same clock.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Op = Literal["submit", "kill", "delete"]
#: ``ok``: the API acknowledged it. ``refused``: it answered no, or nothing reached it (connection refused),
#: so nothing changed. ``unknown``: no answer after the request may have arrived (a timeout, a 5xx), so it
#: may or may not have happened: no promise, and no claim either way.
Status = Literal["ok", "refused", "unknown"]


@dataclass(frozen=True)
class Ack:
    """One request of the workload and its answer. ``task`` is the task's id (None for a submit whose
    answer never came); ``api`` the node's URL it was sent to; ``spec`` what a submit asked for (kind,
    fail_first, max_retries, delay_s)."""

    op: Op
    status: Status
    sent_at: float
    at: float
    api: str
    task: str | None = None
    spec: dict[str, Any] = field(default_factory=dict)
    detail: str = ""


@dataclass(frozen=True)
class Execution:
    """One run of a task's handler, from the journal: ``end`` None when no end was written (its node was
    killed in the middle), ``outcome`` succeeded, failed or cancelled."""

    task: str
    attempt: int
    node: str
    pid: int
    start: float
    end: float | None = None
    outcome: str | None = None


@dataclass(frozen=True)
class Fault:
    """One fault injected: ``kind`` kill, stop or store-restart; ``target`` the node (or ``store``);
    ``at`` when it struck, ``healed_at`` when it was undone (the node restarted or continued, the store
    back); ``pid`` the process it hit."""

    kind: str
    target: str
    at: float
    healed_at: float | None = None
    pid: int | None = None
    detail: str = ""


@dataclass(frozen=True)
class Election:
    """A master's win, from the cluster timeline."""

    epoch: int
    node: str
    at: float


@dataclass
class History:
    """Everything a run recorded. ``tasks``: every task id the run knows of, mapped to the task as the API
    showed it at the end (its JSON), or None when the API answered 404. ``timeline_complete``: the
    timeline read reached back to the cluster's start, so an epoch missing from it was never elected."""

    started_at: float
    ended_at: float
    acks: list[Ack] = field(default_factory=list)
    executions: list[Execution] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)
    elections: list[Election] = field(default_factory=list)
    tasks: dict[str, dict[str, Any] | None] = field(default_factory=dict)
    timeline_complete: bool = True
    fsync_window_s: float = 1.0

    @property
    def store_crashes(self) -> list[float]:
        return sorted(f.at for f in self.faults if f.kind == "store-restart")

    def kills_of(self, pid: int) -> list[float]:
        """When the process ``pid`` was SIGKILLed (a node, by a kill fault)."""
        return [f.at for f in self.faults if f.kind == "kill" and f.pid == pid]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def read_journal(lines: list[bytes]) -> list[Execution]:
    """Pair the journal's start and end lines into executions; a line cut short by a crash is skipped."""
    import orjson

    starts: dict[tuple[str, int, str, int], dict[str, Any]] = {}
    ends: dict[tuple[str, int, str, int], dict[str, Any]] = {}
    for raw in lines:
        try:
            event = orjson.loads(raw)
            key = (str(event["task"]), int(event["attempt"]), str(event["node"]), int(event["pid"]))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            continue
        (starts if event.get("event") == "start" else ends)[key] = event
    out = []
    for key, start in starts.items():
        end = ends.get(key)
        out.append(Execution(*key, start=float(start["at"]), end=float(end["at"]) if end else None,
                             outcome=str(end.get("outcome")) if end else None))  # fmt: skip
    return sorted(out, key=lambda e: e.start)
