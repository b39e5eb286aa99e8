"""No false failover: a machine under full CPU load for half a minute slows every node's event loop, yet no
beat goes missing for long enough to depose the master or declare a node dead."""

from __future__ import annotations

import functools
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from shoal.testing import TestNode, multiplier, wait_for

from .conftest import Cluster

pytestmark = [pytest.mark.cluster, pytest.mark.e2e]

LOAD_S = 30.0  # 30 heartbeats under load, 6 times the dead_after window
BURNERS = 2  # one per core on the 2-core machines shoal is measured on


@pytest.fixture
def cpu_burners() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Processes spinning ``while True: pass``; killed at the end whatever happens."""
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for proc in procs:
        proc.kill()
        proc.wait(10)


def succeeded_at_least(cluster: Cluster, via: TestNode, count: int) -> bool:
    return cluster.count(via, "SUCCEED") >= count


@pytest.mark.timeout(LOAD_S * multiplier() + 150)
def test_full_cpu_load_causes_no_election_and_no_death(
    cluster: Cluster, cpu_burners: list[subprocess.Popen[bytes]]
) -> None:
    nodes = cluster.start(3)
    before = cluster.wait_agreed()
    assert len(cluster.events("elected")) == 1

    cpu_burners.extend(subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(BURNERS))
    started = time.monotonic()
    ids: list[str] = []
    rounds = 0
    while time.monotonic() - started < LOAD_S:
        # Some work all along, through every node, so the master schedules and the workers report.
        ids += cluster.submit_across(nodes, 6, delay_s=0.5, prefix=f"load-{rounds}")
        rounds += 1
        wait_for(functools.partial(succeeded_at_least, cluster, nodes[0], len(ids) - 12), 30,
                 "the tasks to keep flowing", interval=0.1)  # fmt: skip
    assert all(p.poll() is None for p in cpu_burners), "a CPU burner stopped early"
    for proc in cpu_burners:
        proc.kill()

    tasks = cluster.wait_all_ended(nodes[0], ids, timeout=60)
    assert [t["state"] for t in tasks].count("SUCCEED") == len(ids)
    after = cluster.wait_agreed()
    assert (after["master"], after["epoch"]) == (before["master"], before["epoch"])
    assert len(cluster.events("elected")) == 1, cluster.events("elected")
    assert not cluster.events("master lost"), cluster.events("master lost")
    assert not cluster.events("dead"), cluster.events("dead")
    suspects = cluster.events("suspect")
    print(f"{len(ids)} tasks under load; suspicions: {[(e['node'], e['rule']) for e in suspects]}")
