"""Plain Python functions as tasks (``@shoal.task``): arguments and return values as JSON, checked at submit.

The first part needs no process: the signature check a submit runs (with Python's own binding rules as the
reference), the decorator, the loader and an inline attempt. The rest runs real nodes that load
``tests/plugins/shoal_function_tasks.py`` and calls its functions as users do: from the Python clients
(``add.submit(2, 3)``, ``add.map(...)``, their async twins), REST, gRPC, the CLI and a producer, with the
refusals each gives a call that does not fit, and a node that never imported the module checking calls
all the same.
"""

from __future__ import annotations

import asyncio
import inspect
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

import shoal
from shoal import validation
from shoal.client import AsyncClient, Client, TaskFailed
from shoal.errors import InvalidInput
from shoal.models import TaskResult, TaskSpec, TaskState
from shoal.producer import Producer
from shoal.rpc import convert
from shoal.rpc.client import TasksClient, pb
from shoal.signatures import Signature, check_call, describe
from shoal.testing import TestNode, multiplier
from shoal.worker.handlers import TaskContext, TaskTypes, current_task

PLUGINS = Path(__file__).resolve().parent / "plugins"
ROOT = Path(__file__).resolve().parents[1]
MODULE = "shoal_function_tasks"
DONE_S = 30.0 * multiplier()

sys.path.insert(0, str(PLUGINS))  # the plug-in module, imported here as the nodes import it
import shoal_function_tasks as fns  # noqa: E402


def plugin_env() -> dict[str, str]:
    paths = [str(PLUGINS), os.environ.get("PYTHONPATH", "")]
    return {"PYTHONPATH": os.pathsep.join(p for p in paths if p)}


# --- the signature check, against Python's own binding ----------------------------------------------------


def _f1(a, b): ...  # type: ignore[no-untyped-def]
def _f2(a, b=1, *, c, d=2): ...  # type: ignore[no-untyped-def]
def _f3(a, /, b, *args, **kwargs): ...  # type: ignore[no-untyped-def]
def _f4(a, /, b=0): ...  # type: ignore[no-untyped-def]
def _f5(*, only): ...  # type: ignore[no-untyped-def]
def _f6(): ...  # type: ignore[no-untyped-def]


CALLS: list[tuple[tuple[Any, ...], dict[str, Any]]] = [
    ((), {}), ((1,), {}), ((1, 2), {}), ((1, 2, 3), {}), ((), {"a": 1, "b": 2}), ((1,), {"b": 2}),
    ((1,), {"a": 2}), ((1, 2), {"c": 3}), ((1,), {"c": 3}), ((), {"only": 1}), ((1,), {"only": 1}),
    ((1, 2, 3, 4), {"x": 1}), ((), {"a": 1}), ((1,), {"b": 2, "args": 3}), ((1, 2), {"d": 1, "c": 0}),
]  # fmt: skip


@pytest.mark.parametrize("fn", [_f1, _f2, _f3, _f4, _f5, _f6], ids=lambda f: f.__name__)
def test_the_check_agrees_with_python_on_every_call(fn: Callable[..., Any]) -> None:
    signature = Signature.from_json(describe(fn).to_json())  # as a submitting node reads it from the store
    for args, kwargs in CALLS:
        try:
            inspect.signature(fn).bind(*args, **kwargs)
            binds = True
        except TypeError:
            binds = False
        try:
            check_call(signature, list(args), kwargs)
            checked = True
        except InvalidInput:
            checked = False
        assert checked == binds, (fn.__name__, args, kwargs)


def refusal(signature: Signature, args: list[Any] | None, kwargs: dict[str, Any] | None) -> str:
    with pytest.raises(InvalidInput) as info:
        check_call(signature, args, kwargs)
    return info.value.message


def test_a_refusal_names_the_problem() -> None:
    add = describe(_f1, "math.add")
    assert refusal(add, [1, 2, 3], None) == "math.add() takes 2 positional arguments but 3 were given"
    assert refusal(add, [1, 2], {"c": 1}) == "math.add() got an unexpected keyword argument 'c'"
    assert refusal(add, [1], None) == "math.add() missing required argument 'b'"
    assert refusal(add, None, None) == "math.add() missing required argument 'a'"
    assert refusal(add, [1], {"a": 2}) == "math.add() got multiple values for argument 'a'"
    assert refusal(describe(_f2, "f"), [1, 2, 3], None) == "f() takes from 1 to 2 positional arguments but 3 were given"
    assert refusal(describe(_f2, "f"), [1], None) == "f() missing required argument 'c'"
    assert "positional-only" in refusal(describe(_f4, "f"), [], {"a": 1})
    assert refusal(describe(_f6, "f"), [1], None) == "f() takes 0 positional arguments but 1 was given"
    check_call(describe(_f3, "f"), [1, 2, 3, 4], {"a": 5, "z": 6})  # a goes to **kwargs, as in Python


def test_a_description_from_the_store_is_checked_before_it_is_used() -> None:
    for raw in ("", "[]", '{"name": "f"}', '{"name": "f", "params": [["a", "sideways", false]]}',
                '{"name": "f", "params": [["a"]]}', '{"name": "f", "params": [], "defaults": []}'):  # fmt: skip
        with pytest.raises(ValueError):
            Signature.from_json(raw)
    sig = describe(fns.configured.fn, "x", {"timeout_s": 7})
    assert Signature.from_json(sig.to_json()) == sig


def test_args_and_kwargs_are_checked_as_fields_of_a_submit() -> None:
    spec = validation.task_spec({"type": "m.add", "args": [2, 3]})
    assert (spec.name, spec.target, spec.args, spec.kwargs) == ("m.add", "", [2, 3], None)
    spec = validation.task_spec({"type": "m.add", "name": "sum", "kwargs": {"b": 1}, "target": "t"})
    assert (spec.name, spec.target, spec.args, spec.kwargs) == ("sum", "t", None, {"b": 1})
    plain = validation.task_spec({"type": "echo", "name": "e", "target": "hi"})
    assert plain.args is None and plain.kwargs is None
    with pytest.raises(InvalidInput, match="target is required"):
        validation.task_spec({"type": "echo", "name": "e"})  # a handler's task still needs its target
    for body, words in (
        ({"args": {"a": 1}}, "args must be a JSON array"),
        ({"kwargs": [1]}, "kwargs must be a JSON object"),
        ({"kwargs": {"not a name": 1}}, "is not an argument name"),
        ({"args": ["x" * validation.MAX_ARGS_BYTES]}, f"the limit is {validation.MAX_ARGS_BYTES}"),
    ):
        with pytest.raises(InvalidInput, match=words):
            validation.task_spec({"type": "m.add", **body})


# --- the decorator, the loader, an inline attempt ----------------------------------------------------------


def test_a_decorated_function_is_still_a_function_and_names_its_type_by_module() -> None:
    assert fns.add(2, 3) == 5  # a plain call runs it here
    assert fns.add.name == "shoal_function_tasks.add" and fns.text.name == "fn.text"
    assert fns.add.__name__ == "add" and fns.add.__doc__ == "Sync, so in a worker process."
    call = fns.add.s(2, b=3)
    assert call.to_spec() == {"name": "shoal_function_tasks.add", "type": "shoal_function_tasks.add",
                              "args": [2], "kwargs": {"b": 3}}  # fmt: skip
    assert call.set(priority=9).to_spec()["priority"] == 9 and "priority" not in call.to_spec()
    assert fns.add.options(delay_s=5).s(1, 2).options == {"delay_s": 5}
    with pytest.raises(TypeError, match="unknown task field"):
        fns.add.options(colour="red")
    with pytest.raises(InvalidInput, match="timeout_s"):
        shoal.task(timeout_s=-1)(_f1)
    with pytest.raises(InvalidInput, match="type may hold only"):
        shoal.task(name="no spaces allowed")(_f1)


def test_the_loader_finds_function_tasks_and_runs_sync_ones_apart_and_async_ones_inline() -> None:
    types = TaskTypes()
    assert types.load_module(MODULE) == 12
    isolation = {name: types.get(name).isolation for name in types.names()}  # type: ignore[union-attr]
    assert isolation["shoal_function_tasks.add"] == "process" and isolation["shoal_function_tasks.greet"] == "inline"
    assert isolation["shoal_function_tasks.scale"] == "inline"  # asked for
    assert isolation["shoal_function_tasks.greet_apart"] == "process"  # asked for
    published = types.signatures()
    assert published["shoal_function_tasks.configured"].defaults == {  # type: ignore[union-attr]
        "timeout_s": 7, "max_retries": 1, "priority": 8}  # fmt: skip


async def test_an_inline_attempt_sets_the_current_task_and_refuses_a_value_json_cannot_hold() -> None:
    types = TaskTypes()
    types.load_module(MODULE)

    def ctx(*args: Any, **kwargs: Any) -> TaskContext:
        return TaskContext("t-1", "n", "type", "", {}, 2, "node-x", asyncio.Event(), args=list(args), kwargs=kwargs)

    greet = types.get("shoal_function_tasks.greet")
    assert greet is not None
    out = await greet.run(ctx("ann", punctuation="?"))
    assert out.value["greeting"] == "hello ann?" and out.value["task"] == "t-1" and out.value["attempt"] == 2
    assert out.has_value and orjson.loads(out.code) == out.value
    scaled = await types.get("shoal_function_tasks.scale").run(ctx([1, 2], offset=1))  # type: ignore[union-attr]
    assert scaled.value == [3.0, 5.0] and scaled.code == "[3.0,5.0]"
    with pytest.raises(TypeError, match="return value is not JSON"):
        await types.get("shoal_function_tasks.not_json_inline").run(ctx())  # type: ignore[union-attr]
    with pytest.raises(LookupError):
        current_task()  # outside a running function task


def test_a_value_crosses_grpc_as_json_and_an_absent_one_stays_absent() -> None:
    valued = TaskResult("t", "5", "n", 1, 1.0, value=5, has_value=True)
    assert convert.result_to_proto(valued).value_json == "5"
    assert convert.result_from_proto(convert.result_to_proto(valued)) == valued
    null = TaskResult("t", "null", "n", 1, 1.0, value=None, has_value=True)
    assert convert.result_to_proto(null).value_json == "null"
    assert convert.result_from_proto(convert.result_to_proto(null)).has_value
    plain = TaskResult("t", "hello", "n", 1, 1.0)
    assert not convert.result_to_proto(plain).HasField("value_json")
    spec = TaskSpec(name="s", type="m.add", target="", args=[1, {"x": None}], kwargs={"b": [2]})
    assert convert.spec_from_proto(convert.spec_to_proto(spec)) == spec


# --- real nodes ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def node(module_redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestNode]:
    """One node that loads the function tasks (and runs three attempts at once)."""
    started = TestNode(tmp_path_factory.mktemp("functions"), module_redis_url, name="fn-1",
                       args=["--task-modules", MODULE, "--slots", "3"], env=plugin_env()).start()  # fmt: skip
    yield started
    started.stop(timeout=15)


@pytest.fixture
def client(node: TestNode) -> Iterator[Client]:
    with Client(node.http_url, node.token, timeout_s=DONE_S) as c:
        yield c


def rest(node: TestNode) -> httpx.Client:
    return httpx.Client(base_url=node.http_url, headers=node.headers(), timeout=DONE_S, trust_env=False)


@pytest.mark.e2e
def test_functions_return_their_values_to_the_python_client(node: TestNode, client: Client) -> None:
    add = fns.add.options(client=client)
    handle = add.submit(2, b=3)
    assert handle.result(timeout=DONE_S) == 5
    task = handle.task()
    assert task.state is TaskState.SUCCEED and task.type == "shoal_function_tasks.add"
    assert (task.args, task.kwargs, task.target) == ([2], {"b": 3}, "")
    assert fns.scale.options(client=client).submit([1, 2.5], 3, offset=1).result(DONE_S) == [4.0, 8.5]
    greeting = fns.greet.options(client=client).submit("ann", punctuation="?")
    value = greeting.result(DONE_S)
    assert value["greeting"] == "hello ann?" and value["task"] == greeting.id and value["attempt"] == 1
    assert value["pid"] == node.pid  # async def: on the node's own loop
    apart = fns.greet_apart.options(client=client).submit("bo")
    value = apart.result(DONE_S)
    assert value["greeting"] == "hi bo" and value["task"] == apart.id and value["pid"] != node.pid
    who = fns.whoami.options(client=client).submit()
    value = who.result(DONE_S)
    assert (value["task"], value["attempt"], value["node"]) == (who.id, 1, "fn-1") and value["pid"] != node.pid
    assert fns.nothing.options(client=client).submit().result(DONE_S) is None
    assert fns.text.options(client=client).submit("word").result(DONE_S) == "WORD"
    assert fns.anything.options(client=client).submit(1, [2], k={"v": None}).result(DONE_S) == {
        "args": [1, [2]], "kwargs": {"k": {"v": None}}}  # fmt: skip
    # the function's own defaults, unless a submit names the field, even with its usual value
    configured = fns.configured.options(client=client)
    assert (lambda t: (t.timeout_s, t.priority, t.max_retries))(configured.submit().task()) == (7, 8, 1)
    told = configured.options(priority=5, max_retries=0).map([(), ()])
    assert [(t.timeout_s, t.priority, t.max_retries) for t in (h.task() for h in told)] == [(7, 5, 0)] * 2


@pytest.mark.e2e
def test_map_submits_one_batch_and_each_handle_gets_its_value(client: Client) -> None:
    handles = fns.add.options(client=client).map([(1, 2), (3, 4), (10, -10)])
    assert [h.result(timeout=DONE_S) for h in handles] == [3, 7, 0]
    assert len({h.id for h in handles}) == 3
    assert [h.result(DONE_S) for h in fns.text.options(client=client).map(["a", "b"])] == ["A", "B"]  # one arg each
    with pytest.raises(InvalidInput, match="takes 2 positional arguments but 3 were given") as info:
        fns.add.options(client=client).map([(1, 2), (1, 2, 3)])
    assert "tasks[1]" in info.value.message


@pytest.mark.e2e
async def test_the_async_twins(node: TestNode) -> None:
    async with AsyncClient(node.http_url, node.token, timeout_s=DONE_S) as aio:
        add = fns.add.options(client=aio)
        handle = await add.asubmit(20, 22)
        assert await handle.result(timeout=DONE_S) == 42
        assert (await handle.task()).state is TaskState.SUCCEED
        handles = await fns.greet.options(client=aio).amap([("x",), ("y",)])
        values = [await h.result(DONE_S) for h in handles]
        assert [v["greeting"] for v in values] == ["hello x!", "hello y!"]
        with pytest.raises(TypeError, match="use asubmit"):
            add.submit(1, 2)


@pytest.mark.e2e
def test_a_value_json_cannot_hold_fails_the_attempt_saying_so(client: Client) -> None:
    for fn in (fns.not_json, fns.not_json_inline):
        handle = fn.options(client=client).submit()
        with pytest.raises(TaskFailed) as info:
            handle.result(timeout=DONE_S)
        task = info.value.task
        assert task.state is TaskState.RUNTIME_ERROR
        assert task.error is not None and "TypeError: return value is not JSON" in task.error, task.error
    later = fns.greet.options(client=client, delay_s=120).submit("z")  # held back: it has not ended
    with pytest.raises(TimeoutError):
        later.result(timeout=0.2)
    client.kill(later.id)


@pytest.mark.e2e
def test_rest_callers_give_args_and_kwargs_and_get_the_value(node: TestNode) -> None:
    with rest(node) as api:
        made = api.post("/api/v1/tasks", params={"wait": DONE_S, "result": "true"},
                        json={"type": "shoal_function_tasks.add", "args": [2], "kwargs": {"b": 40}})  # fmt: skip
        assert made.status_code == 201, made.text
        body = made.json()
        assert body["state"] == "SUCCEED" and body["name"] == "shoal_function_tasks.add"
        assert (body["args"], body["kwargs"], body["target"]) == ([2], {"b": 40}, "")
        assert body["result"]["value"] == 42 and body["result"]["code"] == "42"
        shown = api.get(f"/api/v1/tasks/{body['id']}").json()
        assert (shown["args"], shown["kwargs"]) == ([2], {"b": 40})
        result = api.get(f"/api/v1/tasks/{body['id']}/result").json()
        assert (result["value"], result["code"]) == (42, "42")
        word = api.post("/api/v1/tasks", params={"wait": DONE_S, "result": "true"},
                        json={"type": "fn.text", "name": "shout", "args": ["hey"]}).json()  # fmt: skip
        assert (word["name"], word["result"]["value"], word["result"]["code"]) == ("shout", "HEY", "HEY")
        none = api.post("/api/v1/tasks", params={"wait": DONE_S, "result": "true"},
                        json={"type": "shoal_function_tasks.nothing", "args": []}).json()  # fmt: skip
        assert none["result"]["value"] is None and none["result"]["code"] == "null"
        echo = api.post("/api/v1/tasks", params={"wait": DONE_S, "result": "true"},
                        json={"type": "echo", "name": "e", "target": "hi"}).json()  # fmt: skip
        assert echo["result"]["code"] == "hi" and "value" not in echo["result"] and echo["args"] is None
        batch = api.post(
            "/api/v1/tasks/batch",
            json={
                "tasks": [
                    {"type": "shoal_function_tasks.add", "args": [1, 1]},
                    {"type": "fn.text", "kwargs": {"word": "b"}},
                ]
            },
        )
        assert batch.status_code == 201, batch.text
        ids = [t["id"] for t in batch.json()["tasks"]]
        values = [api.get(f"/api/v1/tasks/{i}", params={"wait": DONE_S, "result": "true"}).json()["result"]["value"]
                  for i in ids]  # fmt: skip
        assert values == [2, "B"]
        # what the function asks of its submits applies to a REST caller that does not say
        configured = api.post("/api/v1/tasks", json={"type": "shoal_function_tasks.configured", "args": []}).json()
        assert (configured["timeout_s"], configured["priority"], configured["max_retries"]) == (7, 8, 1)
        told = api.post("/api/v1/tasks", json={"type": "shoal_function_tasks.configured", "args": [],
                                               "timeout_s": 3, "priority": 2}).json()  # fmt: skip
        assert (told["timeout_s"], told["priority"]) == (3, 2)
        # a field given its usual value is given all the same: it is not taken for "not said"
        plain = api.post("/api/v1/tasks", json={"type": "shoal_function_tasks.configured", "args": [],
                                                "priority": 5, "max_retries": 0}).json()  # fmt: skip
        assert (plain["timeout_s"], plain["priority"], plain["max_retries"]) == (7, 5, 0)
        doc = api.get("/openapi.json").json()
        branches = doc["components"]["schemas"]["TaskIn"]["oneOf"]
        calls = [b for b in branches if b.get("allOf") == [{"$ref": "#/components/schemas/FunctionTaskIn"}]]
        assert calls and "shoal_function_tasks.add" in calls[0]["properties"]["type"]["enum"]


BAD_CALLS = [
    ({"args": [1, 2, 3]}, "shoal_function_tasks.add() takes 2 positional arguments but 3 were given"),
    ({"args": [1, 2], "kwargs": {"c": 1}}, "shoal_function_tasks.add() got an unexpected keyword argument 'c'"),
    ({"args": [1]}, "shoal_function_tasks.add() missing required argument 'b'"),
]


def count_tasks(node: TestNode) -> int:
    with rest(node) as api:
        return int(api.get("/api/v1/tasks/counts").json()["total"])


@pytest.mark.e2e
def test_a_call_that_does_not_fit_is_refused_by_rest_and_the_python_client(node: TestNode, client: Client) -> None:
    before = count_tasks(node)
    with rest(node) as api:
        for call, message in BAD_CALLS:
            refused = api.post("/api/v1/tasks", json={"type": "shoal_function_tasks.add", **call})
            assert refused.status_code == 400, refused.text
            assert refused.json()["error"] == "invalid_input" and refused.json()["message"] == message
        batch = api.post(
            "/api/v1/tasks/batch",
            json={
                "tasks": [
                    {"type": "shoal_function_tasks.add", "args": [1, 2]},
                    {"type": "shoal_function_tasks.add", "args": [1]},
                ]
            },
        )
        assert batch.status_code == 400 and batch.json()["index"] == 1, batch.text
        assert "missing required argument 'b'" in batch.json()["message"]
        handler = api.post("/api/v1/tasks", json={"type": "echo", "name": "e", "target": "x", "args": [1]})
        assert handler.status_code == 400 and "takes no args or kwargs" in handler.json()["message"]
        for body, words in (({"args": "1, 2"}, "args must be a JSON array"), ({"kwargs": [1]}, "kwargs must be")):
            wrong = api.post("/api/v1/tasks", json={"type": "shoal_function_tasks.add", **body})
            assert wrong.status_code == 400 and words in wrong.json()["message"], wrong.text
        only = api.post("/api/v1/tasks", json={"type": "shoal_function_tasks.only_positional", "kwargs": {"a": 1}})
        assert only.status_code == 400 and "positional-only" in only.json()["message"]
    with pytest.raises(InvalidInput, match=r"add\(\) takes 2 positional arguments but 3 were given"):
        fns.add.options(client=client).submit(1, 2, 3)
    with pytest.raises(InvalidInput, match="unexpected keyword argument 'c'"):
        client.submit("shoal_function_tasks.add", args=[1, 2], kwargs={"c": 3})
    assert count_tasks(node) == before  # nothing was stored


@pytest.mark.e2e
async def test_grpc_callers_give_args_json_and_get_value_json(node: TestNode) -> None:
    client = TasksClient(node.grpc_addr, node.token, timeout_s=DONE_S + 10)
    try:
        made = await client.stub.CreateTask(pb.TaskSpec(type="shoal_function_tasks.add", args_json="[5]",
                                                        kwargs_json='{"b": 6}'))  # fmt: skip
        assert (made.name, made.args_json, made.kwargs_json) == ("shoal_function_tasks.add", "[5]", '{"b":6}')
        result = await client.stub.GetTaskResult(pb.ID(id=[made.id], wait_s=DONE_S))
        assert (result.value_json, result.code) == ("11", "11")
        configured = pb.TaskSpec(type="shoal_function_tasks.configured", args_json="[]")
        assert ((t := await client.stub.CreateTask(configured)).priority, t.max_retries) == (8, 1)  # its defaults
        configured.priority, configured.max_retries = 5, 0  # set: taken as given, though they are the usual values
        assert ((t := await client.stub.CreateTask(configured)).priority, t.max_retries) == (5, 0)
        echo = await client.stub.CreateTask(pb.TaskSpec(name="e", type="echo", target="hi", wait_s=DONE_S))
        assert not echo.HasField("args_json")
        assert not (await client.stub.GetTaskResult(pb.ID(id=[echo.id]))).HasField("value_json")
        for call, message in BAD_CALLS:
            fields = {"args_json": orjson.dumps(call["args"]).decode()}
            if "kwargs" in call:
                fields["kwargs_json"] = orjson.dumps(call["kwargs"]).decode()
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await client.stub.CreateTask(pb.TaskSpec(type="shoal_function_tasks.add", **fields))
            assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT and info.value.details() == message
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await client.stub.CreateTask(pb.TaskSpec(type="shoal_function_tasks.add", args_json="[1,"))
        assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT and "args_json is not valid JSON" in (
            info.value.details() or ""
        )
    finally:
        await client.close()


def cli(node: TestNode, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHOAL_") or k == "SHOAL_TEST_MULTIPLIER"}
    env |= {"PYTHONPATH": str(ROOT / "src"), "NO_COLOR": "1", "COLUMNS": "200"}
    env |= {"SHOAL_API": node.http_url, "SHOAL_TOKEN": node.token}
    done = subprocess.run([sys.executable, "-m", "shoal", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=DONE_S + 30, check=False)  # fmt: skip
    assert "Traceback" not in done.stderr, done.stderr
    return done


@pytest.mark.e2e
def test_the_cli_calls_a_function_by_name_and_refuses_a_bad_call(node: TestNode, tmp_path: Path) -> None:
    done = cli(node, "task", "submit", "shoal_function_tasks.add", "--args", "[2, 3]", "--wait", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "SUCCEED  value: 5\n"
    task_id = done.stderr.split()[1]
    shown = cli(node, "task", "show", task_id, cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    lines = {words[0]: words[1].strip() for line in shown.stdout.splitlines() if len(words := line.split(None, 1)) == 2}
    assert lines["args"] == "[2,3]" and lines["value"] == "5", shown.stdout
    assert cli(node, "task", "result", task_id, cwd=tmp_path).stdout == "5"
    kw = cli(node, "task", "submit", "shoal_function_tasks.scale", "--args", "[[1]]", "--kwargs", '{"factor": 4}',
             "--wait", "--json", cwd=tmp_path)  # fmt: skip
    assert kw.returncode == 0, kw.stderr
    assert orjson.loads(kw.stdout)["result"]["value"] == [4.0]
    for args, words in (
        (["--args", "[1, 2"], "malformed JSON"),
        (["--args", '{"a": 1}'], "args must be a JSON array"),
        (["--kwargs", "[1]"], "kwargs must be a JSON object"),
        (["--args", "[1, 2, 3]"], "add() takes 2 positional arguments but 3 were given"),
        (["--args", "[1]", "--kwargs", '{"c": 2}'], "unexpected keyword argument 'c'"),
        (["--args", "[1]"], "missing required argument 'b'"),
    ):
        bad = cli(node, "task", "submit", "shoal_function_tasks.add", *args, cwd=tmp_path)
        assert bad.returncode == 2, (args, bad.stdout, bad.stderr)
        assert words in bad.stderr, bad.stderr


@pytest.mark.e2e
def test_a_node_that_never_imported_the_function_checks_calls_against_the_published_signature(
    node: TestNode, module_redis_url: str
) -> None:
    """An API-only node without the module (no PYTHONPATH to it) refuses a bad call and takes a good one,
    which the node that has the function runs."""
    api_only = TestNode(node.data_dir, module_redis_url, name="api-only", args=["--no-run-tasks"]).start()
    try:
        with Client(api_only.http_url, node.token, timeout_s=DONE_S) as far:
            with pytest.raises(InvalidInput, match="missing required argument 'b'"):
                fns.add.options(client=far).submit(1)
            assert fns.add.options(client=far).submit(1, 2).result(DONE_S) == 3
    finally:
        api_only.stop(timeout=15)


@pytest.mark.e2e
async def test_a_producer_checks_and_stores_function_calls(node: TestNode, module_redis_url: str) -> None:
    async with await Producer.connect(module_redis_url) as producer:
        with pytest.raises(InvalidInput, match="got an unexpected keyword argument 'z'"):
            await producer.submit("shoal_function_tasks.add", args=[1], kwargs={"z": 2})
        task, result = await producer.run("shoal_function_tasks.add", args=[7], kwargs={"b": 8}, timeout_s=DONE_S)
        assert task.state is TaskState.SUCCEED and result is not None
        assert (result.value, result.code, task.args, task.kwargs) == (15, "15", [7], {"b": 8})
