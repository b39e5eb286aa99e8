"""Faults on a schedule drawn from the seed, and the nemesis that injects them one after another.

The plan is fixed before the run starts (what, when, on which node, for how long), so one seed gives one
schedule; the run's timing around it still varies. Each fault is injected, held, then undone before the
next: a killed node or store is started again, a stopped node continued.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

from shoal.selftest import netns
from shoal.selftest.cluster import SelftestCluster
from shoal.selftest.history import Fault

log = logging.getLogger("shoal.selftest.faults")

#: Every fault kind ``--faults`` accepts, in the order the help lists them.
KINDS = ("kill", "stop", "store-restart", "partition")
#: The kinds every machine can inject; ``available_kinds`` adds partition where it can run.
DEFAULT_KINDS = ("kill", "stop", "store-restart")
#: Quiet seconds at the start (the workload gets going) and at the end (nothing is held when the run ends).
WARMUP_S = 2.0
COOLDOWN_S = 2.0
#: Seconds between the end of one fault and the start of the next.
GAP_S = (1.5, 4.0)
#: How long each kind is held. A stop stays well below the nodes' death sentence (5 heartbeats of 1 s),
#: so a stopped node is slow, not dead: its tasks must not run elsewhere meanwhile.
#: A partition may outlast it: the node cut off is then declared dead and its tasks placed elsewhere.
HOLD_S = {"kill": (0.5, 2.0), "stop": (0.5, 2.5), "store-restart": (0.2, 1.5), "partition": (1.0, 8.0)}


class FaultRefused(ValueError):
    """Raised for a fault kind this selftest cannot inject here; the message says why, in one line."""


def parse_kinds(text: str) -> tuple[str, ...]:
    """``kill,stop`` -> ("kill", "stop"); FaultRefused for an unknown kind or one not available."""
    kinds = tuple(dict.fromkeys(k.strip() for k in text.split(",") if k.strip()))
    if not kinds:
        raise FaultRefused(f"--faults: give one or more of {', '.join(KINDS)} (comma-separated)")
    for kind in kinds:
        if kind not in KINDS:
            raise FaultRefused(f"--faults: unknown fault {kind!r}; choose from {', '.join(KINDS)}")
    if "partition" in kinds and (why := netns.unavailable()) is not None:
        raise FaultRefused(f"--faults partition cannot run here: {why}")
    return kinds


def available_kinds() -> tuple[str, ...]:
    """What runs when --faults is not given: every kind this machine can inject (partition as root)."""
    return DEFAULT_KINDS + (("partition",) if netns.unavailable() is None else ())


@dataclass(frozen=True)
class PlannedFault:
    """One fault of the schedule: ``offset`` seconds into the run; ``role`` for a kill ("master" or
    "worker"); ``node`` the index of the node it hits (a worker, or a stopped node); ``hold`` seconds."""

    offset: float
    kind: str
    hold: float
    node: int = 0
    role: str = ""


def plan(seed: int, duration: float, kinds: tuple[str, ...], nodes: int) -> list[PlannedFault]:
    """The schedule for ``seed``: faults back to back, each after a gap, until the cool-down."""
    rng = random.Random(seed)
    out: list[PlannedFault] = []
    t = WARMUP_S
    while True:
        t += rng.uniform(*GAP_S)
        kind = rng.choice(kinds)
        hold = rng.uniform(*HOLD_S[kind])
        if t + hold > duration - COOLDOWN_S:
            return out
        role = rng.choice(("master", "worker")) if kind in ("kill", "partition") else ""
        out.append(PlannedFault(round(t, 3), kind, round(hold, 3), rng.randrange(nodes), role))
        t += hold


class Nemesis:
    """Injects a plan into a cluster from the calling thread and records each fault as it happens."""

    def __init__(self, cluster: SelftestCluster, schedule: list[PlannedFault], *, say: Callable[[str], None]) -> None:
        self.cluster = cluster
        self.schedule = schedule
        self.faults: list[Fault] = []
        self.say = say

    def run(self, started: float, until: float) -> None:
        """Inject every planned fault at its time (``started`` + offset, time.monotonic); stop at ``until``."""
        for planned in self.schedule:
            delay = started + planned.offset - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            if time.monotonic() >= until:
                return
            self.faults.append(self._inject(planned))

    def _inject(self, planned: PlannedFault) -> Fault:
        cluster = self.cluster
        target = cluster.nodes[planned.node % len(cluster.nodes)].name
        detail = ""
        if planned.kind == "store-restart":
            at, pid = time.time(), cluster.crash_store()
            self.say(f"fault: SIGKILL the store (pid {pid}); restart in {planned.hold:.1f}s")
            time.sleep(planned.hold)
            cluster.restart_store()
            return Fault("store-restart", "store", at, time.time(), pid, f"down {planned.hold:.1f}s")
        if planned.kind in ("kill", "partition"):
            if planned.role == "master":
                master = cluster.master()
                if master is not None:
                    target = master
                    detail = "the master"
                else:
                    detail = "a worker (no master was known)"
            else:
                master = cluster.master()
                others = [p.name for p in cluster.nodes if p.name != master]
                target = others[planned.node % len(others)] if others else target
                detail = "a worker"
            if planned.kind == "partition":
                at, pid = time.time(), cluster.partition(target)
                self.say(f"fault: partition {target}, {detail}, from the others and the store for {planned.hold:.1f}s")
                time.sleep(planned.hold)
                cluster.heal_partitions()
                return Fault("partition", target, at, time.time(), pid, f"{detail}; healed after {planned.hold:.1f}s")
            at, pid = time.time(), cluster.kill(target)
            self.say(f"fault: SIGKILL {target}, {detail} (pid {pid}); restart in {planned.hold:.1f}s")
            time.sleep(planned.hold)
            cluster.restart(target)
            return Fault("kill", target, at, time.time(), pid, f"{detail}; restarted after {planned.hold:.1f}s")
        at, pid = time.time(), cluster.stop(target)
        self.say(f"fault: SIGSTOP {target} (pid {pid}) for {planned.hold:.1f}s")
        time.sleep(planned.hold)
        cluster.cont(target)
        return Fault("stop", target, at, time.time(), pid, f"SIGCONT after {planned.hold:.1f}s")
