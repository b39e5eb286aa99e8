"""Nodes whose clocks are wrong, on real node processes: each node's clock is measured against the store's
and shown; a master with a wrong clock still admits nodes whose clocks are right; a node refused for its
clock is admitted once its clock is set right, without a restart.

A node's clock is set wrong with the test switch ``SHOAL_TEST_CLOCK_OFFSET_FILE`` (``shoal.clock``): a
file holding the seconds added to that node's wall clock, which the test rewrites while the node runs.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from shoal.clock import MAX_SKEW_S, OFFSET_FILE_VAR
from shoal.testing import TestNode

from .conftest import GRACE_ARGS, Cluster, until

pytestmark = pytest.mark.cluster

AHEAD_S = 100.0
BEHIND_S = -120.0


def set_offset(path: Path, seconds: float) -> None:
    """Set the clock of the node reading ``path`` off by ``seconds`` (written whole, then renamed)."""
    partial = path.with_suffix(".new")
    partial.write_text(f"{seconds}\n")
    os.replace(partial, path)


def add_skewed(cluster: Cluster, name: str, offset_file: Path, args: list[str] | None = None) -> TestNode:
    node = TestNode(cluster.data_dir, cluster.redis_url, name=name, args=[*GRACE_ARGS, *(args or [])],
                    env={OFFSET_FILE_VAR: str(offset_file)})  # fmt: skip
    cluster.nodes[name] = node
    return node.start(ready=True, timeout=30.0)


def in_state(cluster: Cluster, via: TestNode, name: str, state: str) -> dict[str, Any] | None:
    """Node ``name`` as ``via`` shows it, once it is in ``state``."""
    info = cluster.node_info(via, name)
    return info if info is not None and info["state"] == state else None


def test_skew_is_measured_against_the_store_a_skewed_master_admits_and_a_fixed_clock_is_admitted(
    cluster: Cluster, tmp_path: Path
) -> None:
    master_clock, late_clock = tmp_path / "master-offset", tmp_path / "late-offset"
    set_offset(master_clock, AHEAD_S)
    set_offset(late_clock, BEHIND_S)
    master = add_skewed(cluster, "node-a", master_clock, ["--priority", "10"])
    until(lambda: cluster.view(master)["master"] == "node-a", 20, "node-a, its clock 100 s ahead, to be master")

    # A node with a right clock joins the skewed master: it is admitted, not refused for the master's clock.
    right = cluster.add("node-b")
    until(lambda: in_state(cluster, master, "node-b", "alive"), 20, "node-b to be admitted")

    # A node whose clock is two minutes behind the store's is refused, and says why.
    late = add_skewed(cluster, "node-c", late_clock)
    refused = until(lambda: in_state(cluster, right, "node-c", "rejected"), 20, "node-c to be refused")
    assert "clock" in refused["reason"] and "-120" in refused["reason"] and f"±{MAX_SKEW_S:g}" in refused["reason"]

    # What each node's clock is, against the store's, is shown for every node.
    skews = {n["name"]: n["clock_skew"] for n in cluster.view(late)["nodes"]}
    assert skews["node-a"] == pytest.approx(AHEAD_S, abs=1.0)
    assert skews["node-b"] == pytest.approx(0.0, abs=1.0)
    assert skews["node-c"] == pytest.approx(BEHIND_S, abs=1.0)

    # Its clock is set right while it runs: it is verified again and admitted, as the same incarnation.
    incarnation = refused["incarnation"]
    set_offset(late_clock, 0.0)
    admitted = until(lambda: in_state(cluster, master, "node-c", "alive"), 20, "node-c to be admitted")
    assert admitted["incarnation"] == incarnation
    assert admitted["clock_skew"] == pytest.approx(0.0, abs=1.0)
    kinds = [e["kind"] for e in cluster.events("rejected", "node-c") + cluster.events("alive", "node-c")]
    assert kinds == ["rejected", "alive"]

    # The cluster works across all three: each task submitted through a node succeeds.
    ids = [cluster.submit(node, f"t-{node.name}") for node in (master, right, late)]
    ended = cluster.wait_all_ended(right, ids, timeout=30)
    assert [t["state"] for t in ended] == ["SUCCEED"] * 3, cluster.describe(ids)
