"""Where and in what order the master places tasks, on real nodes: priorities, node labels and required
labels, concurrency and rate limits (per type, per concurrency_key, per fetch host, and a site's
Retry-After), through REST, gRPC, the Python client and the CLI; and the reason a held task shows."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import httpx
import orjson
import pytest
from test_fetch_polite import Site

from shoal.client import Client
from shoal.errors import InvalidInput
from shoal.rpc.client import TasksClient, pb
from shoal.testing import TestNode, multiplier, wait_for
from shoal.worker.prefetch import PER_SLOT

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[1]
TERMINAL = ("SUCCEED", "RUNTIME_ERROR", "KILLED")


class Api:
    def __init__(self, node: TestNode) -> None:
        self.node = node
        self.http = httpx.Client(base_url=node.http_url, headers=node.headers(), timeout=30.0, trust_env=False)

    def submit(self, **fields: Any) -> dict[str, Any]:
        response = self.http.post("/api/v1/tasks", json={"name": "t", "type": "echo", "target": "hi", **fields})
        assert response.status_code == 201, response.text
        created: dict[str, Any] = response.json()
        return created

    def batch(self, tasks: list[dict[str, Any]]) -> list[dict[str, Any]]:
        body = {"tasks": [{"name": "t", "type": "echo", "target": "hi", **t} for t in tasks]}
        response = self.http.post("/api/v1/tasks/batch", json=body)
        assert response.status_code == 201, response.text
        created: list[dict[str, Any]] = response.json()["tasks"]
        return created

    def get(self, task_id: str) -> dict[str, Any]:
        found: dict[str, Any] = self.http.get(f"/api/v1/tasks/{task_id}").json()
        return found

    def ended(self, task_id: str, within: float = 30.0) -> dict[str, Any]:
        done: dict[str, Any] = wait_for(
            lambda: (t := self.get(task_id))["state"] in TERMINAL and t, within * multiplier(), f"{task_id} to end"
        )
        return done

    def waiting_for(self, task_id: str, text: str) -> dict[str, Any]:
        """The task once it is WAITING with a reason that holds ``text``."""
        found: dict[str, Any] = wait_for(
            lambda: (t := self.get(task_id))["state"] == "WAITING" and text in (t["waiting_for"] or "") and t,
            10 * multiplier(),
            f"{task_id} to wait for {text!r}",
        )
        return found


@pytest.fixture
def start(node_factory: Callable[..., TestNode]) -> Iterator[Callable[..., Api]]:
    made: list[Api] = []

    def make(*args: str, name: str = "node-1", env: dict[str, str] | None = None) -> Api:
        made.append(Api(node_factory(name=name, args=list(args), env=env)))
        return made[-1]

    yield make
    for api in made:
        api.http.close()


def starts(tasks: list[dict[str, Any]]) -> list[tuple[float, float]]:
    """Each attempt's run, (started, finished), on the store's clock."""
    return [(a["started_at"], a["finished_at"]) for t in tasks for a in t["history"]]


def most_at_once(runs: list[tuple[float, float]]) -> int:
    edges = sorted([(s, 1) for s, _ in runs] + [(f, -1) for _, f in runs])
    running = peak = 0
    for _, step in edges:
        running += step
        peak = max(peak, running)
    return peak


# -- priorities ------------------------------------------------------------------------------------------


def test_with_every_slot_busy_a_high_priority_task_submitted_last_starts_first(start: Callable[..., Api]) -> None:
    api = start("--slots", "2")
    busy = api.batch([{"params": {"delay_s": 1.0}}, {"params": {"delay_s": 6.0}}])  # a slot frees at a time
    wait_for(lambda: all(api.get(t["id"])["state"] == "RUNNING" for t in busy), 10 * multiplier(), "slots busy")
    low = [api.submit(name=f"low-{k}", priority=1, params={"delay_s": 0.2}) for k in range(4)]
    plain = api.submit(name="plain", params={"delay_s": 0.2})
    high = api.submit(name="high", priority=9, params={"delay_s": 0.2})
    assert (high["priority"], low[0]["priority"], plain["priority"]) == (9, 1, 5)
    done = {t["name"]: api.ended(t["id"]) for t in [*low, plain, high]}
    order = sorted(done, key=lambda name: done[name]["started_at"])
    assert order[0] == "high" and order[1] == "plain", order
    assert order[2:] == ["low-0", "low-1", "low-2", "low-3"], order  # oldest first within a level
    assert api.http.post(f"/api/v1/tasks/{busy[1]['id']}/kill").status_code == 200  # not waited for at stop


# -- prefetch --------------------------------------------------------------------------------------------


def held_and_running(api: Api, ids: set[str]) -> tuple[int, int]:
    """Replaying every task event: the most of ``ids`` placed on node-1 and not ended at once, and the most
    running there at once."""
    held: set[str] = set()
    running: set[str] = set()
    peak_held = peak_running = 0
    left = set(ids)
    with Client(api.node.http_url, api.node.token) as client:
        for event in client.events(10 * multiplier(), since="0-0/0", reconnect=False):
            task_id, state = getattr(event, "id", None), getattr(event, "state", None)
            if task_id not in ids or state is None:
                continue
            name = state.name if hasattr(state, "name") else str(state)
            if name == "INQUEUE":
                assert event.node == "node-1", event
                held.add(task_id)
            elif name == "RUNNING":
                running.add(task_id)
            elif name in TERMINAL:
                held.discard(task_id)
                running.discard(task_id)
                left.discard(task_id)
            peak_held, peak_running = max(peak_held, len(held)), max(peak_running, len(running))
            if not left:
                return peak_held, peak_running
    pytest.fail(f"the events of {len(left)} task(s) never ended")


@pytest.mark.parametrize(("args", "prefetch"), [((), PER_SLOT), (("--prefetch", "0"), 0)], ids=["default", "off"])
def test_a_node_running_short_tasks_takes_its_prefetch_beyond_its_slots_and_still_runs_one_at_once(
    start: Callable[..., Api], args: tuple[str, ...], prefetch: int
) -> None:
    api = start("--slots", "1", *args)
    short = {"params": {"delay_s": 0.002}}
    # what the node learns its tasks take: enough of them that a slow first one (a cold start) has left the
    # running mean, which must stay under HORIZON_S / PER_SLOT for the node to take all of its default
    for task in api.batch([short for _ in range(60)]):
        api.ended(task["id"])

    def advertised() -> int:
        nodes = api.http.get("/api/v1/cluster").json()["nodes"]
        return int(nodes[0]["prefetch"])

    wait_for(lambda: advertised() == prefetch, 10 * multiplier(), f"prefetch {prefetch} in the node's beat")
    burst = api.batch([short for _ in range(300)])  # over a second: the master reads the node's beat meanwhile
    assert held_and_running(api, {t["id"] for t in burst}) == (1 + prefetch, 1)


# -- labels ----------------------------------------------------------------------------------------------


def test_a_task_requiring_a_label_waits_for_a_node_that_has_it_then_runs_there(start: Callable[..., Api]) -> None:
    api = start()
    task = api.submit(requires={"gpu": "1"})
    assert task["requires"] == {"gpu": "1"}
    held = api.waiting_for(task["id"], "no live node has gpu=1")
    assert held["waiting_for"] == "no live node has gpu=1"
    other = api.ended(api.submit()["id"])  # the rest of its type is not held up
    assert other["state"] == "SUCCEED" and other["node"] == "node-1"
    start(name="node-2", env={"SHOAL_LABELS": "gpu=1,zone=a"})
    done = api.ended(task["id"])
    assert done["state"] == "SUCCEED" and done["node"] == "node-2"
    nodes = {n["name"]: n for n in api.http.get("/api/v1/cluster").json()["nodes"]}
    assert nodes["node-2"]["labels"] == {"gpu": "1", "zone": "a"} and nodes["node-1"]["labels"] == {}


def test_a_types_required_labels_apply_to_its_tasks_and_schedules_unless_they_name_their_own(
    start: Callable[..., Api],
) -> None:
    api = start("--type-requires", '{"echo": {"gpu": "1"}}')
    assert api.submit()["requires"] == {"gpu": "1"}
    assert api.submit(requires={"zone": "a"})["requires"] == {"zone": "a"}
    batch = api.batch([{}, {"requires": {"zone": "b"}}])
    assert [t["requires"] for t in batch] == [{"gpu": "1"}, {"zone": "b"}]
    body = {"name": "nightly", "cron": "@daily", "task": {"type": "echo", "target": "x"}}
    added = api.http.post("/api/v1/schedules", json=body)
    assert added.status_code == 201, added.text
    assert added.json()["task"]["requires"] == {"gpu": "1"}


# -- limits ----------------------------------------------------------------------------------------------


def test_a_concurrency_limit_of_two_never_runs_more_than_two(start: Callable[..., Api]) -> None:
    api = start("--slots", "8", "--limits", '{"echo": {"concurrency": 2}}')
    tasks = api.batch([{"params": {"delay_s": 0.3}}] * 20)
    api.waiting_for(tasks[-1]["id"], "concurrency limit echo (2 at once)")
    done = [api.ended(t["id"]) for t in tasks]
    assert all(t["state"] == "SUCCEED" for t in done)
    assert most_at_once(starts(done)) == 2


def test_a_rate_limit_per_concurrency_key_spaces_that_key_only(start: Callable[..., Api]) -> None:
    api = start("--slots", "8", "--limits", '{"echo": {"key_rate_per_s": 2}}')
    keyed = api.batch([{"concurrency_key": "customer-1"}] * 5)
    other = api.submit(concurrency_key="customer-2")
    assert keyed[0]["concurrency_key"] == "customer-1"
    api.waiting_for(keyed[-1]["id"], "rate limit echo#customer-1 2/s")
    done = sorted((api.ended(t["id"]) for t in keyed), key=lambda t: t["started_at"])
    first = done[0]["started_at"]
    # A burst of 2, then one start every 0.5 s: the fifth no sooner than 1.5 s after the first.
    assert done[-1]["started_at"] - first >= 1.4
    assert api.ended(other["id"])["started_at"] - first < 1.0  # another key is not held up


def test_a_site_answering_429_with_retry_after_holds_its_next_fetch(start: Callable[..., Api]) -> None:
    site = Site()
    try:
        site.answer("/busy", 429, b"slow down", [("Retry-After", "2")])
        site.answer("/next", body=b"fine")
        api = start()
        first = api.ended(api.submit(type="fetch", target=f"{site.url}/busy")["id"])
        assert first["state"] == "RUNTIME_ERROR" and "asked to wait 2s (Retry-After)" in first["error"]
        after = api.submit(type="fetch", target=f"{site.url}/next")
        held = api.waiting_for(after["id"], f"host {site.host} asked to wait until")
        assert held["waiting_for"].endswith("(Retry-After)")
        done = api.ended(after["id"])
        assert done["state"] == "SUCCEED"
        assert done["started_at"] - first["history"][-1]["finished_at"] >= 1.9
    finally:
        site.close()


# -- every interface takes the fields; bad ones are refused ----------------------------------------------


async def test_grpc_client_and_cli_take_priority_requires_and_concurrency_key(
    start: Callable[..., Api], tmp_path: Path
) -> None:
    api = start("--label", "zone=a")
    base, token = api.node.http_url, api.node.token
    async with TasksClient(api.node.grpc_addr, token) as client:
        made = await client.stub.CreateTask(
            pb.TaskSpec(name="g", type="echo", target="x", priority=7, requires={"zone": "a"}, concurrency_key="k")
        )
        assert (made.priority, dict(made.requires), made.concurrency_key) == (7, {"zone": "a"}, "k")
        got = await client.stub.GetTask(pb.ID(id=[made.id]))
        assert (got.priority, dict(got.requires), got.concurrency_key) == (7, {"zone": "a"}, "k")
        for bad in (pb.TaskSpec(name="g", type="echo", target="x", priority=12),
                    pb.TaskSpec(name="g", type="echo", target="x", requires={"gpu": "a b"})):  # fmt: skip
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await client.stub.CreateTask(bad)
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT, refused.value.details()
    with Client(base, token) as c:
        task = c.submit("echo", "x", priority=0, requires={"zone": "a"}, concurrency_key="c")
        assert (task.priority, task.requires, task.concurrency_key) == (0, {"zone": "a"}, "c")
        assert c.get(task.id).requires == {"zone": "a"}
        with pytest.raises(InvalidInput, match="priority"):
            c.submit("echo", "x", priority=12)
    refused = api.http.post("/api/v1/tasks", json={"name": "t", "type": "echo", "target": "x", "priority": 12})
    assert refused.status_code == 400 and "priority must be a whole number from 0" in refused.text, refused.text

    def shoal(*args: str) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SHOAL_")}
        env |= {"PYTHONPATH": str(ROOT / "src"), "NO_COLOR": "1", "COLUMNS": "200"}
        env |= {"SHOAL_API": base, "SHOAL_TOKEN": token}
        return subprocess.run([sys.executable, "-m", "shoal", *args], cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=60 * multiplier())  # fmt: skip

    shown = shoal("task", "submit", "echo", "hi", "--priority", "8", "--require", "zone=a", "--concurrency-key",
                  "k2", "--json")  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    created = orjson.loads(shown.stdout)
    assert (created["priority"], created["requires"], created["concurrency_key"]) == (8, {"zone": "a"}, "k2")
    for args in (["--priority", "12"], ["--require", "gpu"]):
        bad = shoal("task", "submit", "echo", "hi", *args)
        assert bad.returncode == 2, (args, bad.stderr)
    status = shoal("cluster", "status")
    assert status.returncode == 0 and "zone=a" in status.stdout, status.stdout
