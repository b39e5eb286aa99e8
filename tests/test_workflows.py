"""Workflows: tasks that depend on tasks.

First the store's part against a real Redis (in-process, the Lua scripts the only writers): a child waits
for its parents, is queued exactly once by the end of its last one, is killed with the reason when one ends
otherwise (or runs anyway), and what it adds leaves with its task. Then what a user sees of one real node
that runs the test's function tasks: chains and DAGs passing values along (sync and async clients), REST
batches with refs, ``waiting_for``, the workflow routes, gRPC, the CLI, and bad input refused with 400
naming it and nothing stored.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import httpx
import orjson
import pytest
from redis.asyncio import Redis

import shoal
from shoal import workflows
from shoal.client import AsyncClient, Client
from shoal.errors import InvalidInput
from shoal.keys import Keys
from shoal.models import Task, TaskResult, TaskSpec, TaskState
from shoal.rpc import convert
from shoal.rpc.client import TasksClient, pb
from shoal.store.nodes import NodeRegistry
from shoal.store.tasks import TaskStore
from shoal.testing import TestNode, wait_for
from shoal.validation import RefusedTask

ROOT = Path(__file__).resolve().parents[1]
PLUGINS = Path(__file__).resolve().parent / "plugins"
MODULE = "shoal_workflow_tasks"

sys.path.insert(0, str(PLUGINS))  # the plug-in module, imported here as the nodes import it
from shoal_workflow_tasks import add, mul  # type: ignore[import-not-found]  # noqa: E402

# -- the store ------------------------------------------------------------------------------------------


class Store:
    """A TaskStore on a cluster prefix, and the master's and a node's steps on its tasks."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self.keys = Keys("wf")
        self.tasks = TaskStore(redis, self.keys, result_max_bytes=4096, max_lost_attempts=1)
        self.nodes = NodeRegistry(redis, self.keys)
        self._epoch: int | None = None

    async def epoch(self) -> int:
        if self._epoch is None:
            self._epoch = (await self.nodes.take_lease("master", 30.0)).epoch
        return self._epoch

    async def queued(self) -> list[str]:
        """The ids the echo type's pending stream holds, oldest first (each entry once)."""
        entries: Any = await self.redis.xrange(self.keys.pending("echo"))
        return [f[b"id"].decode() for _, f in entries]

    async def run(self, task_id: str, outcome: str = "succeeded", code: str = "ok") -> str:
        """Place, start and end ``task_id`` on node n1; the verdict. The report is then sent again (a retry
        whose reply was lost), which must change nothing."""
        assert (await self.tasks.place(await self.epoch(), "n1", 8, [task_id]))[0] == 1
        attempt = await self.tasks.start(task_id, "n1")
        assert attempt is not None
        result = TaskResult(task_id, code, "n1", attempt, 0.0) if outcome == "succeeded" else None
        done = await self.tasks.finish(task_id, "n1", attempt, outcome, result=result, error="boom")
        again = await self.tasks.finish(task_id, "n1", attempt, outcome, result=result, error="boom")
        assert again.verdict == "duplicate"
        return done.state or done.verdict

    async def state(self, task_id: str) -> TaskState:
        return (await self.tasks.get(task_id)).state


def spec(ref: str, *parents: str, **extra: Any) -> TaskSpec:
    return TaskSpec(name=ref, type="echo", target=ref, ref=ref, depends_on=parents, **extra)


@pytest.fixture
async def store(redis_admin_url: str) -> AsyncIterator[Store]:
    redis = Redis.from_url(redis_admin_url)
    try:
        yield Store(redis)
    finally:
        await redis.aclose()


async def test_a_child_waits_for_every_parent_and_the_last_ones_end_queues_it_once(store: Store) -> None:
    a, b, c, child = await store.tasks.create([spec("a"), spec("b"), spec("c"), spec("child", "a", "b", "c")])
    assert child.state is TaskState.WAITING and child.waiting_for == "waiting for 3 of 3 parents"
    assert child.depends_on == (a.id, b.id, c.id) and child.workflow == a.id
    assert {t.workflow for t in (a, b, c)} == {a.id}
    assert await store.queued() == [a.id, b.id, c.id], "a child with parents not ended is in no queue"

    assert await store.run(a.id) == "SUCCEED"
    assert (await store.tasks.get(child.id)).waiting_for == "waiting for 2 of 3 parents"
    assert await store.run(b.id) == "SUCCEED"
    assert await store.queued() == [a.id, b.id, c.id]
    assert await store.run(c.id) == "SUCCEED"
    assert await store.queued() == [a.id, b.id, c.id, child.id], "queued once, by the last parent's end"
    after = await store.tasks.get(child.id)
    assert after.state is TaskState.WAITING and after.waiting_for is None
    assert (await store.tasks.get(a.id)).children == (child.id,)
    assert await store.tasks.parent_values([a.id, c.id]) == {a.id: "ok", c.id: "ok"}
    assert await store.run(child.id) == "SUCCEED"


async def test_a_failed_parent_kills_its_descendants_with_the_reason_unless_they_run_anyway(store: Store) -> None:
    created = await store.tasks.create(
        [spec("a"), spec("b", "a"), spec("c", "b"), spec("d", "a", on_parent_failure="run"), spec("e", "d")]
    )
    a, b, c, d, e = (t.id for t in created)
    assert await store.run(a, outcome="failed") == "RUNTIME_ERROR"
    b_task, c_task = await store.tasks.get(b), await store.tasks.get(c)
    assert b_task.state is TaskState.KILLED and b_task.error == f"parent {a} ended RUNTIME_ERROR: boom"
    assert c_task.state is TaskState.KILLED
    assert c_task.error == f"parent {b} ended KILLED: parent {a} ended RUNTIME_ERROR: boom", "the reason, in turn"
    assert await store.state(d) is TaskState.WAITING and d in await store.queued(), "d runs anyway"
    assert await store.tasks.parent_values([a]) == {a: None}
    assert await store.state(e) is TaskState.WAITING and e not in await store.queued()
    assert await store.run(d) == "SUCCEED"
    assert e in await store.queued()
    killed = await store.redis.zrange(store.keys.state_index("KILLED"), 0, -1)
    waiting = await store.redis.zrange(store.keys.state_index("WAITING"), 0, -1)
    assert set(killed) == {b.encode(), c.encode()} and set(waiting) == {e.encode()}


async def test_every_end_settles_children_kill_lost_and_delete(store: Store) -> None:
    a, b = await store.tasks.create([spec("a"), spec("b", "a")])
    await store.tasks.kill(a.id)
    assert (await store.tasks.get(b.id)).error == f"parent {a.id} ended KILLED: killed by user"

    a, b = await store.tasks.create([spec("a"), spec("b", "a")])  # lost once: quarantined (max_lost_attempts 1)
    assert (await store.tasks.place(await store.epoch(), "n2", 8, [a.id]))[0] == 1
    await store.tasks.start(a.id, "n2")
    back = await store.tasks.requeue("n2", "node lost", await store.epoch())
    assert back.quarantined == (a.id,)
    assert (await store.tasks.get(b.id)).error.startswith(f"parent {a.id} ended RUNTIME_ERROR: lost 1 attempt")  # type: ignore[union-attr]

    a, b = await store.tasks.create([spec("a"), spec("b", "a")])
    await store.tasks.delete(a.id)
    assert (await store.tasks.get(b.id)).error == f"parent {a.id} ended KILLED: deleted by user"
    assert not await store.redis.exists(store.keys.children(a.id))
    assert await store.redis.smembers(store.keys.workflow(a.id)) == {b.id.encode()}


async def test_a_child_of_tasks_that_ended_already(store: Store) -> None:
    ok, bad = await store.tasks.create([TaskSpec(name=n, type="echo", target=n) for n in ("ok", "bad")])
    await store.run(ok.id)
    await store.run(bad.id, outcome="failed")
    runs, killed, anyway = await store.tasks.create([
        TaskSpec(name="runs", type="echo", target="x", depends_on=(ok.id,)),
        TaskSpec(name="killed", type="echo", target="x", depends_on=(ok.id, bad.id)),
        TaskSpec(name="anyway", type="echo", target="x", depends_on=(bad.id,), on_parent_failure="run"),
    ])  # fmt: skip
    assert runs.state is TaskState.WAITING and runs.waiting_for is None and runs.id in await store.queued()
    assert killed.state is TaskState.KILLED and killed.error == f"parent {bad.id} ended RUNTIME_ERROR: boom"
    assert anyway.id in await store.queued() and anyway.on_parent_failure == "run"
    assert runs.workflow == killed.workflow == runs.id, "a new workflow, named after the call's first task"
    assert (await store.tasks.get(ok.id)).workflow == runs.id, "the parents join it"
    later = (await store.tasks.create([TaskSpec(name="later", type="echo", target="x", depends_on=(ok.id,))]))[0]
    assert later.workflow == runs.id, "a parent's workflow is its children's"


async def test_an_unknown_parent_refuses_the_call_and_stores_nothing(store: Store) -> None:
    nobody = "00000000-0000-4000-8000-000000000000"
    with pytest.raises(workflows.UnknownParent) as refused:
        await store.tasks.create([spec("a"), spec("b", "a", nobody)])
    assert refused.value.index == 1 and nobody in refused.value.message
    assert (await store.tasks.counts())["total"] == 0 and await store.tasks.last_seq() == 0
    assert await store.redis.keys(store.keys.prefix + "*") == []


async def test_kill_workflow_kills_what_is_unfinished_and_the_sweep_removes_what_it_added(store: Store) -> None:
    a, b, c = await store.tasks.create([spec("a"), spec("b", "a"), spec("c", "b")])
    await store.run(a.id)
    killed = await store.tasks.kill_workflow(a.id)
    assert killed == {b.id: "WAITING", c.id: "WAITING"}
    members = await store.tasks.workflow(a.id, 100)
    assert [(t.name, t.state.name) for t in members] == [("a", "SUCCEED"), ("b", "KILLED"), ("c", "KILLED")]
    removed = 0

    def swept() -> bool:  # the retention is 1 ms: each is due a moment after it ended
        return removed == 3

    async def sweep() -> None:
        nonlocal removed
        removed += (await store.tasks.expire(await store.epoch(), 0.001, 100))[0]

    for _ in range(500):
        await sweep()
        if swept():
            break
    assert swept()
    left = await store.redis.keys(store.keys.prefix + "children:*") + await store.redis.keys(store.keys.prefix + "wf:*")
    assert left == [], "the children sets and the workflow's members leave with their tasks"


def test_batch_checks_refs_cycles_and_placeholders() -> None:
    def check(*specs: TaskSpec) -> str:
        with pytest.raises(RefusedTask) as refused:
            workflows.check_batch(list(specs))
        return f"{refused.value.index}: {refused.value.error.message}"

    assert check(spec("a"), spec("a")) == "1: ref 'a' is taken by tasks[0]"
    assert check(spec("a", "nope")) == "0: depends_on names 'nope', which is no ref of this batch"
    assert check(spec("a", "a")) == "0: depends_on names the task itself ('a')"
    assert check(spec("a", "c"), spec("b", "a"), spec("c", "b")) == "0: depends_on makes a cycle: a -> c -> b -> a"
    placeholder = TaskSpec(name="p", type="wf.add", target="", args=[{"$parent": "a"}, 1])
    assert check(spec("a"), placeholder).startswith("1: an argument takes the value of 'a'")
    workflows.check_batch([spec("a"), spec("b", "a"), spec("c", "a", "b")])  # a DAG passes
    chain = [spec(f"t{i}", *([f"t{i - 1}"] if i else [])) for i in range(1000)]
    workflows.check_batch(chain)  # a long chain needs no deep recursion


def test_fields_are_checked_as_submitted() -> None:
    with pytest.raises(InvalidInput, match='on_parent_failure must be "kill" or "run"'):
        workflows.on_parent_failure("maybe")
    with pytest.raises(InvalidInput, match="at most 100 parents"):
        workflows.depends_on([f"r{i}" for i in range(101)])
    with pytest.raises(InvalidInput, match="twice"):
        workflows.depends_on(["a", "a"])
    with pytest.raises(InvalidInput, match="ref may hold only"):
        workflows.ref("a b")
    upper = "3F2B0C1E-8A4D-4C5E-9F10-2A3B4C5D6E7F"
    assert workflows.depends_on([upper]) == (upper.lower(),)


def test_the_grpc_messages_carry_parents_both_ways() -> None:
    parent = "3f2b0c1e-8a4d-4c5e-9f10-2a3b4c5d6e7f"
    made = TaskSpec(name="b", type="echo", target="b", depends_on=(parent, "a"), on_parent_failure="run", ref="b")
    wire = pb.TaskSpec.FromString(convert.spec_to_proto(made).SerializeToString())
    assert convert.spec_from_proto(wire) == made
    plain = convert.spec_to_proto(TaskSpec(name="c", type="echo", target="c"))
    assert not plain.depends_on and not plain.HasField("on_parent_failure") and not plain.HasField("ref")
    task = Task(id=parent, name="b", type="echo", target="b", params={}, state=TaskState.WAITING, node=None,
                attempts=0, max_retries=0, timeout_s=None, created_at=1.0, started_at=None, finished_at=None,
                error=None, waiting_for="waiting for 1 of 2 parents", depends_on=("x", "y"), on_parent_failure="run",
                workflow="x", children=("z",))  # fmt: skip
    assert convert.task_from_proto(pb.Task.FromString(convert.task_to_proto(task).SerializeToString())) == task


# -- a real node ----------------------------------------------------------------------------------------


def plugin_env() -> dict[str, str]:
    return {"PYTHONPATH": os.pathsep.join(p for p in (str(PLUGINS), os.environ.get("PYTHONPATH", "")) if p)}


@pytest.fixture
def node(node_factory: Any) -> TestNode:
    node: TestNode = node_factory(args=["--task-modules", MODULE], env=plugin_env())
    return node


@pytest.fixture
def api(node: TestNode) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=node.http_url, headers=node.headers(), timeout=60, trust_env=False) as client:
        yield client


@pytest.fixture
def client(node: TestNode) -> Iterator[Client]:
    with Client(node.http_url, node.token, timeout_s=60) as c:
        yield c


def total(api: httpx.Client) -> int:
    count: int = api.get("/api/v1/tasks", params={"limit": 1}).json()["total"]
    return count


def echo(ref: str, *parents: str, **extra: Any) -> dict[str, Any]:
    return {"name": ref, "type": "echo", "target": f"said {ref}", "ref": ref, "depends_on": list(parents), **extra}


def ended(api: httpx.Client, task_id: str, timeout: float = 30.0) -> dict[str, Any]:
    def done() -> dict[str, Any]:
        task: dict[str, Any] = api.get(f"/api/v1/tasks/{task_id}").json()
        return task if task["state"] in ("SUCCEED", "RUNTIME_ERROR", "KILLED") else {}

    return wait_for(done, timeout, f"task {task_id} to end")


@pytest.mark.e2e
def test_a_chain_and_a_dag_pass_values_along(client: Client) -> None:
    run = shoal.chain(add.s(1, 2), add.s(10), mul.s(100)).submit(client)
    assert run.result(timeout=60) == 1300  # ((1 + 2) + 10) * 100
    assert run.results(timeout=5) == [3, 13, 1300]
    tasks = [h.task() for h in run]
    assert [t.attempts for t in tasks] == [1, 1, 1] and all(len(t.history) == 1 for t in tasks)
    assert tasks[1].depends_on == (tasks[0].id,) and tasks[2].depends_on == (tasks[1].id,)
    assert tasks[1].args == [{"$parent": tasks[0].id}, 10], "the previous step's value is the first argument"
    assert tasks[0].started_at is not None and tasks[1].started_at is not None
    assert tasks[0].finished_at <= tasks[1].started_at and tasks[1].finished_at <= tasks[2].started_at  # type: ignore[operator]

    wf = shoal.Workflow()
    a = wf.add(add.s(1, 2))
    b = wf.add(add.s(a, 10))
    c = wf.add(mul.s(a, 20))
    d = wf.add(add.s(b, c))
    diamond = wf.submit(client)
    assert diamond[d].result(timeout=60) == 73  # (3 + 10) + (3 * 20)
    graph = client.workflow(diamond.id or "")
    ids = [h.id for h in diamond]
    assert [t.id for t in graph.tasks] == ids
    assert sorted(graph.edges) == sorted([(ids[0], ids[1]), (ids[0], ids[2]), (ids[1], ids[3]), (ids[2], ids[3])])

    group = shoal.group(add.s(1, 1), add.s(2, 2), mul.s(3, 3)).submit(client)
    assert group.results(timeout=60) == [2, 4, 9]


@pytest.mark.e2e
async def test_the_async_client_runs_a_chain(node: TestNode) -> None:
    async with AsyncClient(node.http_url, node.token) as aio:
        run = await shoal.chain(add.s(2, 3), add.s(5)).asubmit(aio)
        assert await run.result(timeout=60) == 10
        assert (await aio.workflow(run.id or "")).tasks[1].depends_on == (run[0].id,)


@pytest.mark.e2e
def test_a_rest_batch_with_refs_waits_for_its_parents_and_sees_their_results(api: httpx.Client) -> None:
    batch = [
        echo("fast"),
        echo("slow1", params={"delay_s": 120}),
        echo("slow2", params={"delay_s": 120}),
        {"name": "join", "type": "wf.parents", "target": "-", "ref": "join", "depends_on": ["fast", "slow1", "slow2"]},
        {**echo("after", "join"), "on_parent_failure": "run"},
    ]
    created = api.post("/api/v1/tasks/batch", json={"tasks": batch})
    assert created.status_code == 201, created.text
    fast, slow1, slow2, join, after = created.json()["tasks"]
    assert join["depends_on"] == [fast["id"], slow1["id"], slow2["id"]] and join["workflow"] == fast["id"]
    assert ended(api, fast["id"])["state"] == "SUCCEED"
    waiting = api.get(f"/api/v1/tasks/{join['id']}").json()
    assert waiting["state"] == "WAITING" and waiting["waiting_for"] == "waiting for 2 of 3 parents"
    assert api.get(f"/api/v1/tasks/{fast['id']}").json()["children"] == [join["id"]]

    workflow = api.get(f"/api/v1/workflows/{fast['id']}").json()
    assert [t["name"] for t in workflow["tasks"]] == ["fast", "slow1", "slow2", "join", "after"]
    assert {(e["parent"], e["child"]) for e in workflow["edges"]} == {
        (fast["id"], join["id"]), (slow1["id"], join["id"]), (slow2["id"], join["id"]), (join["id"], after["id"])
    }  # fmt: skip

    killed = api.post(f"/api/v1/tasks/{slow1['id']}/kill")
    assert killed.status_code == 200
    gone = ended(api, join["id"])
    assert gone["state"] == "KILLED" and gone["error"] == f"parent {slow1['id']} ended KILLED: killed by user"
    assert ended(api, after["id"])["state"] == "SUCCEED", "on_parent_failure run: it ran anyway"

    whole = api.post(f"/api/v1/workflows/{fast['id']}/kill")
    assert whole.status_code == 200 and list(whole.json()["killed"]) == [slow2["id"]], whole.text
    assert ended(api, slow2["id"])["error"] == "workflow killed by user"
    assert api.post(f"/api/v1/workflows/{fast['id']}/kill").json()["killed"] == {}
    assert api.get("/api/v1/workflows/00000000-0000-4000-8000-000000000000").status_code == 404


@pytest.mark.e2e
def test_a_child_sees_its_parents_results_and_runs_anyway_after_a_failure(api: httpx.Client) -> None:
    batch = [
        echo("ok"),
        {"name": "bad", "type": "wf.fail", "target": "bad", "ref": "bad"},
        {"name": "sees", "type": "wf.parents", "target": "-", "depends_on": ["ok", "bad"], "on_parent_failure": "run"},
        {"name": "dies", "type": "wf.parents", "target": "-", "depends_on": ["ok", "bad"]},
    ]
    ok, bad, sees, dies = api.post("/api/v1/tasks/batch", json={"tasks": batch}).json()["tasks"]
    assert ended(api, sees["id"])["state"] == "SUCCEED"
    code = api.get(f"/api/v1/tasks/{sees['id']}/result").json()["code"]
    assert orjson.loads(code) == {ok["id"]: "said ok", bad["id"]: None}
    dead = ended(api, dies["id"])
    assert dead["state"] == "KILLED" and dead["error"].startswith(f"parent {bad['id']} ended RUNTIME_ERROR: ")
    assert "failed on purpose: bad" in dead["error"] and dead["attempts"] == 0


@pytest.mark.e2e
def test_bad_input_is_refused_naming_it_and_nothing_is_stored(api: httpx.Client, client: Client) -> None:
    nobody = "00000000-0000-4000-8000-000000000000"
    cases: list[tuple[dict[str, Any], str, int | None]] = [
        ({"tasks": [echo("a"), echo("b", nobody)]}, f"tasks[1]: depends_on names '{nobody}', which is no stored", 1),
        ({"tasks": [echo("a"), echo("b", "c")]}, "tasks[1]: depends_on names 'c', which is no ref of this batch", 1),
        ({"tasks": [echo("a", "b"), echo("b", "a")]}, "depends_on makes a cycle: a -> b -> a", 0),
        ({"tasks": [echo("a"), echo("a")]}, "tasks[1]: ref 'a' is taken by tasks[0]", 1),
        ({"tasks": [echo("a"), echo("b", "a", on_parent_failure="maybe")]}, '"kill" or "run", got', 1),
        ({"tasks": [echo("a", "a b")]}, "which is neither a task id nor a ref", 0),
        ({"tasks": [{"name": "x", "type": "wf.add", "args": [{"$parent": "a"}, 1]}, echo("a")]}, "value of 'a'", 0),
    ]  # fmt: skip
    for body, words, index in cases:
        refused = api.post("/api/v1/tasks/batch", json=body)
        assert refused.status_code == 400, (body, refused.text)
        assert words in refused.json()["message"] and refused.json().get("index") == index, refused.text
    single = api.post("/api/v1/tasks", json={"name": "x", "type": "echo", "target": "x", "depends_on": [nobody]})
    assert single.status_code == 400 and nobody in single.json()["message"] and "index" not in single.json()
    assert api.post("/api/v1/tasks", json={**echo("x"), "depends_on": "nope"}).status_code == 400
    with pytest.raises(InvalidInput, match="no stored task"):
        client.submit("echo", "x", depends_on=[nobody])
    assert total(api) == 0


@pytest.mark.e2e
async def test_grpc_takes_refs_and_shows_a_tasks_parents(node: TestNode) -> None:
    async with TasksClient(node.grpc_addr, node.token) as rpc:
        specs = [
            pb.TaskSpec(name="a", type="echo", target="a", ref="a"),
            pb.TaskSpec(name="b", type="echo", target="b", ref="b", depends_on=["a"], on_parent_failure="run"),
        ]
        created = (await rpc.stub.CreateTasks(pb.CreateTasksRequest(tasks=specs))).tasks
        a, b = created
        assert list(b.depends_on) == [a.id] and b.on_parent_failure == "run" and b.workflow == a.id
        got = await rpc.stub.GetTask(pb.ID(id=[a.id]))
        assert list(got.children) == [b.id]
        bad = [pb.TaskSpec(name="c", type="echo", target="c", depends_on=["zz"])]
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await rpc.stub.CreateTasks(pb.CreateTasksRequest(tasks=bad))
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "'zz'" in (refused.value.details() or "")
        nobody = "00000000-0000-4000-8000-000000000000"
        with pytest.raises(grpc.aio.AioRpcError) as unknown:
            await rpc.stub.CreateTask(pb.TaskSpec(name="c", type="echo", target="c", depends_on=[nobody]))
        assert unknown.value.code() == grpc.StatusCode.INVALID_ARGUMENT and nobody in (unknown.value.details() or "")
        assert (await rpc.list()).total == 2


def shoal_cli(node: TestNode, *args: str) -> subprocess.CompletedProcess[str]:
    env = {"PYTHONPATH": str(ROOT / "src"), "NO_COLOR": "1", "SHOAL_API": node.http_url, "SHOAL_TOKEN": node.token}
    done = subprocess.run([sys.executable, "-m", "shoal", *args], env=env, capture_output=True, text=True, timeout=60)
    assert "Traceback" not in done.stderr, done.stderr
    return done


@pytest.mark.e2e
def test_the_cli_submits_with_parents_shows_the_tree_and_kills_the_workflow(node: TestNode, api: httpx.Client) -> None:
    slow = api.post("/api/v1/tasks", json={"name": "slow", "type": "echo", "target": "s", "params": {"delay_s": 120}})
    parent = slow.json()["id"]
    made = shoal_cli(node, "task", "submit", "echo", "child-target", "--name", "child", "--depends-on", parent,
                     "--on-parent-failure", "run", "--json")  # fmt: skip
    assert made.returncode == 0, made.stderr
    child = orjson.loads(made.stdout)
    assert child["depends_on"] == [parent] and child["waiting_for"] == "waiting for 1 of 1 parent"

    tree = shoal_cli(node, "task", "tree", child["id"])
    assert tree.returncode == 0, tree.stderr
    lines = tree.stdout.splitlines()
    assert lines[0].startswith(f"workflow {child['id']}") and "2 tasks" in lines[0], "named after its first task"
    assert "slow" in lines[1] and parent in lines[1]
    assert "child" in lines[2] and "waiting for 1 of 1 parent" in lines[2]
    assert lines[2].index("child") > lines[1].index("slow"), "the child is drawn under its parent"
    shown = shoal_cli(node, "workflow", "show", parent, "--json")
    assert {t["name"] for t in orjson.loads(shown.stdout)["tasks"]} == {"slow", "child"}

    killed = shoal_cli(node, "workflow", "kill", parent)
    assert killed.returncode == 0, killed.stderr
    assert f"killed {parent} (was RUNNING)" in killed.stdout and f"killed {child['id']} (was WAITING)" in killed.stdout
    assert ended(api, child["id"])["error"] == "workflow killed by user", "every unfinished task of it"

    bad = shoal_cli(node, "task", "submit", "echo", "x", "--depends-on", "not-an-id")
    assert bad.returncode == 2 and "not-an-id" in bad.stderr
    bad = shoal_cli(node, "task", "submit", "echo", "x", "--on-parent-failure", "maybe")
    assert bad.returncode == 2
    lone = api.post("/api/v1/tasks", json={"name": "lone", "type": "echo", "target": "x"}).json()["id"]
    none = shoal_cli(node, "workflow", "show", lone)
    assert none.returncode != 0 and "belongs to no workflow" in none.stderr
    assert total(api) == 3
