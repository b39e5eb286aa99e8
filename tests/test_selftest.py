"""``shoal selftest`` end to end: it starts its own cluster, injects faults from the seed, and must PASS on a
sound shoal; its reports (text, ``--json PATH``, ``--json`` on stdout) and its refusals of bad usage."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from shoal.selftest import netns
from shoal.selftest.checker import INVARIANTS

pytestmark = pytest.mark.e2e


def selftest(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "shoal", "selftest", *args], capture_output=True, text=True,
                          timeout=timeout)  # fmt: skip


def assert_passed(run: subprocess.CompletedProcess[str], text: str) -> None:
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-3000:]
    assert text.rstrip("\n").splitlines()[-1] == "selftest: PASS", text[-3000:]


@pytest.mark.timeout(300)
def test_json_without_a_path_is_the_document_alone_on_stdout() -> None:
    run = selftest("--duration", "8s", "--seed", "2", "--faults", "kill", "--json")
    assert_passed(run, run.stderr)
    doc = orjson.loads(run.stdout)  # nothing else on stdout
    assert doc["result"] == "PASS" and doc["options"]["faults"] == ["kill"]
    assert all(f["kind"] == "kill" for f in doc["faults"])


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--faults", "kill,meteor"], "unknown fault 'meteor'"),
        (["--faults", ""], "--faults"),
        (["--duration", "soon"], "--duration"),
        (["--duration", "1s"], "at least 5s"),
        (["--nodes", "0"], "--nodes"),
        (["--seed", "-3"], "--seed"),
    ],
)
def test_bad_usage_is_one_line_and_exit_code_2(args: list[str], words: str) -> None:
    run = selftest(*args, timeout=60)
    assert run.returncode == 2, run.stderr
    assert run.stdout == ""
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and words in lines[0], run.stderr


@pytest.mark.lab
@pytest.mark.timeout(300)
def test_partitions_in_network_namespaces() -> None:
    """As root: each node in a namespace of its own, cut off from the others and the store by nft rules."""
    why = netns.unavailable()
    if why is not None:
        run = selftest("--faults", "partition", timeout=60)
        assert run.returncode == 2 and why in run.stderr
        pytest.skip(why)
    run = selftest("--duration", "20s", "--seed", "3", "--faults", "partition", "--json")
    assert_passed(run, run.stderr)
    doc = orjson.loads(run.stdout)
    assert doc["faults"] and all(f["kind"] == "partition" for f in doc["faults"])
    assert not [ns for ns in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split()
                if ns.startswith("shst")], "the namespaces are removed"  # fmt: skip


def test_an_unknown_option_exits_2() -> None:
    assert selftest("--chaos", timeout=60).returncode == 2


@pytest.mark.timeout(900)
def test_the_ci_selftest_of_60_seconds_with_seed_1_passes_and_writes_its_json_report(tmp_path: Path) -> None:
    """What .ci/run asks for (the README's pytest command runs it): --duration 60s --seed 1 with every fault
    this machine can inject (partitions too, as root). With seed 1 a partition once caught a cut-off node
    running its task while another ran it too (see shoal.worker.fence)."""
    path = tmp_path / "report.json"
    run = selftest("--duration", "60s", "--seed", "1", "--json", str(path))
    assert_passed(run, run.stdout)
    for name in INVARIANTS:
        assert name in run.stdout
    assert "faults injected" in run.stdout
    doc = orjson.loads(path.read_bytes())
    assert doc["result"] == "PASS" and doc["violation_count"] == 0 and doc["last_line"] == "selftest: PASS"
    assert doc["options"]["seed"] == 1 and doc["options"]["duration"] == 60.0
    assert [i["name"] for i in doc["invariants"]] == list(INVARIANTS)
    assert all(i["checked"] > 0 and i["violations"] == 0 for i in doc["invariants"])
    assert doc["faults"], "seed 1 plans faults within 60 s"
    # by default every kind this machine can inject: partitions too when run as root
    assert {"kill", "stop", "store-restart"} <= set(doc["options"]["faults"])
    assert ("partition" in doc["options"]["faults"]) == (netns.unavailable() is None)
    assert {f["kind"] for f in doc["faults"]} <= set(doc["options"]["faults"])
    assert all(f["healed_at"] >= f["at"] for f in doc["faults"])
    assert doc["summary"]["requests"].get("submit ok", 0) > 20
    assert doc["history"]["executions"], "the journal recorded the runs"
    assert doc["data_dir"] is None  # a passing run leaves nothing behind


def test_the_partition_lab_subnet_is_blackholed_in_the_root_namespace_while_it_exists() -> None:
    """No packet for the lab's subnet may follow the default route off the machine, even while the lab is
    being built or taken down (the connected route, when there, wins over the blackhole's higher metric)."""
    why = netns.unavailable()
    if why:
        pytest.skip(why)

    def routes(subnet: str) -> list[str]:
        out = netns.sh("ip", "route", "show", "table", "all").stdout
        return [line.split()[0] for line in out.splitlines() if f"{subnet}.0/24" in line]

    lab = netns.NetLab(2).up()
    try:
        assert sorted(routes(lab.subnet)) == sorted(["blackhole", f"{lab.subnet}.0/24"])
        assert f"dev {lab.link}" in netns.sh("ip", "route", "get", f"{lab.subnet}.1").stdout
    finally:
        lab.down()
    assert routes(lab.subnet) == []
