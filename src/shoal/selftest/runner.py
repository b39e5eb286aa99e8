"""One selftest run from start to verdict: a fresh cluster, the workload under the nemesis, the heal, the
wait until every acknowledged task is final, the history read back, and the checker's verdict."""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shoal.client import Client
from shoal.client.errors import ApiUnreachable
from shoal.errors import NotFound, ShoalError
from shoal.selftest.checker import TERMINAL, UNREADABLE, Verdict, check
from shoal.selftest.cluster import SelftestCluster
from shoal.selftest.faults import Nemesis, PlannedFault, plan
from shoal.selftest.history import Election, History, read_journal
from shoal.selftest.netns import NetLab

#: Node options of the selftest's cluster: quick retries, so flaky tasks settle within short runs.
NODE_ARGS = ["--retry-backoff", "0.2"]
#: Timeline entries read back (the API's largest page); fewer means the whole timeline was read.
TIMELINE_LIMIT = 1000
#: The README's word on appendfsync everysec: what was acknowledged this long before a crash may be lost.
FSYNC_WINDOW_S = 1.0


class SelftestError(RuntimeError):
    """Raised when the run itself could not be carried out (the cluster did not start, did not heal)."""


@dataclass(frozen=True)
class Options:
    duration: float
    nodes: int
    seed: int
    faults: tuple[str, ...]
    threads: int = 4


@dataclass
class Outcome:
    """A finished run: what was asked, the schedule, the history, the verdict, and where its files are."""

    options: Options
    schedule: list[PlannedFault]
    history: History
    verdict: Verdict
    data_dir: Path | None  # kept when the run failed, as evidence
    settle_s: float
    notes: list[str] = field(default_factory=list)


def settle_timeout(duration: float) -> float:
    """How long acknowledged tasks get to finish once the faults stop: a minute, plus a quarter of the run."""
    return 60.0 + duration / 4


def run(options: Options, say: Callable[[str], None]) -> Outcome:
    data_dir = Path(tempfile.mkdtemp(prefix="shoal-selftest-"))
    try:
        lab = NetLab(options.nodes) if "partition" in options.faults else None
    except (OSError, RuntimeError) as exc:
        raise SelftestError(f"cannot make network namespaces for partitions: {exc}") from None
    cluster = SelftestCluster(data_dir, nodes=options.nodes, node_args=NODE_ARGS, lab=lab)
    keep = True
    try:
        say(f"starting a cluster of {options.nodes} nodes in {data_dir}")
        try:
            cluster.start()
        except (OSError, RuntimeError, ShoalError) as exc:
            raise SelftestError(
                f"the selftest's cluster did not start: {exc} (its logs are kept in {data_dir})"
            ) from None
        try:
            outcome = _exercise(cluster, options, data_dir, say)
        except SelftestError as exc:
            raise SelftestError(f"{exc} (the run's logs, journal and store are kept in {data_dir})") from None
        keep = not outcome.verdict.passed
        outcome.data_dir = data_dir if keep else None
        return outcome
    finally:
        cluster.close()
        if not keep:
            shutil.rmtree(data_dir, ignore_errors=True)


def _exercise(cluster: SelftestCluster, options: Options, data_dir: Path, say: Callable[[str], None]) -> Outcome:
    journal = data_dir / "journal.jsonl"
    journal.touch(mode=0o600)
    from shoal.selftest.workload import Workload

    schedule = plan(options.seed, options.duration, options.faults, options.nodes)
    workload = Workload(cluster.urls, cluster.token, journal, seed=options.seed, threads=options.threads)
    nemesis = Nemesis(cluster, schedule, say=say)
    say(f"running the workload for {options.duration:g}s with {len(schedule)} faults (seed {options.seed})")
    started_wall, started = time.time(), time.monotonic()
    workload.start()
    try:
        nemesis.run(started, started + options.duration)
        remaining = started + options.duration - time.monotonic()
        if remaining > 0:
            time.sleep(remaining)
    finally:
        workload.stop()
        try:
            cluster.heal(timeout=60.0)
        except (OSError, RuntimeError, ShoalError) as exc:
            raise SelftestError(f"the cluster did not come back after the faults: {exc}") from None
    say("faults stopped; waiting for every acknowledged task to finish")
    history = History(started_at=started_wall, ended_at=time.time(), acks=list(workload.acks),
                      faults=nemesis.faults, fsync_window_s=FSYNC_WINDOW_S)  # fmt: skip
    settle_from = time.monotonic()
    with Client(cluster.urls[0], cluster.token, timeout_s=10.0) as client:
        notes = _settle(client, history, settle_timeout(options.duration))
        timeline = client.timeline(TIMELINE_LIMIT)
    settle_s = time.monotonic() - settle_from
    history.elections = sorted(
        (Election(int(e["epoch"]), str(e["node"]), float(e["at"])) for e in timeline if e.get("kind") == "elected"),
        key=lambda e: e.at,
    )
    history.timeline_complete = len(timeline) < TIMELINE_LIMIT
    history.executions = read_journal(journal.read_bytes().splitlines())
    verdict = check(history)
    return Outcome(options, schedule, history, verdict, None, settle_s, notes)


def _settle(client: Client, history: History, timeout: float) -> list[str]:
    """Read every task until each acknowledged one is final or gone, or ``timeout`` passes; fill
    ``history.tasks`` with what was read last."""
    acked = {a.task for a in history.acks if a.op == "submit" and a.status == "ok" and a.task}
    deadline = time.monotonic() + timeout
    while True:
        try:
            seen = _read_all(client, acked)
        except ApiUnreachable as exc:
            if time.monotonic() > deadline:
                raise SelftestError(f"the tasks could not be read back: {exc}") from None
            time.sleep(0.5)
            continue
        history.tasks = seen
        open_ = [t for t in acked if (r := seen.get(t)) is not None and r.get("state") not in TERMINAL]
        if not open_:
            return []
        if time.monotonic() > deadline:
            return [f"{len(open_)} acknowledged tasks were still not final after {timeout:g}s of waiting"]
        time.sleep(0.5)


def _read_all(client: Client, acked: set[str]) -> dict[str, dict[str, Any] | None]:
    """Every task the listing shows, and each acknowledged one it does not, read alone. A listing the API
    fails to answer is read task by task, so that one task it cannot show does not hide the others."""
    try:
        seen: dict[str, dict[str, Any] | None] = {t.id: t.to_json() for t in client.iter_tasks(page_size=1000)}
    except ApiUnreachable:
        raise
    except ShoalError:
        seen = {}
    for task_id in acked - seen.keys():
        seen[task_id] = _get(client, task_id)
    return seen


def _get(client: Client, task_id: str) -> dict[str, Any] | None:
    """The task's JSON; None when the API says it does not exist; when the API fails to show it, a record
    in state UNREADABLE with the API's answer, which no invariant takes for final."""
    try:
        return client.get(task_id).to_json()
    except NotFound:
        return None
    except ApiUnreachable:
        raise
    except ShoalError as exc:
        return {"id": task_id, "state": UNREADABLE, "error": f"the API failed to show it: {exc}", "history": []}
