"""The HTTP app in-process, for what must be refused before the node is asked anything.

The app is given a service that fails the test if it is called at all: a request refused for its token,
its size or its route must never reach the node (so it can change nothing). Everything that needs a store
is tested against a real node in ``test_api.py``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry
from pydantic import BaseModel

from shoal import validation
from shoal.models import TaskState
from shoal.web.app import create_app

TOKEN = "in-process-token"
TASK_ID = "3f1c1a9e-0000-4000-8000-000000000000"


class Untouchable:
    """Stands where the node's TaskAPI/ClusterAPI/StoreAPI go; any use of it is a failure of the test."""

    def __getattr__(self, name: str) -> Any:
        pytest.fail(f"the request reached the node ({name}) though it should have been refused")


@pytest.fixture
async def client() -> Any:
    app = create_app(
        tasks=Untouchable(), cluster=Untouchable(), token=TOKEN, registry=CollectorRegistry(), store=Untouchable()
    )
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://shoal.test") as c:
        yield c


def auth(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


ROUTES = [
    ("GET", "/api/v1/tasks"),
    ("POST", "/api/v1/tasks"),
    ("GET", f"/api/v1/tasks/{TASK_ID}"),
    ("GET", f"/api/v1/tasks/{TASK_ID}/result"),
    ("POST", f"/api/v1/tasks/{TASK_ID}/kill"),
    ("DELETE", f"/api/v1/tasks/{TASK_ID}"),
    ("POST", "/api/v1/tasks/kill"),
    ("POST", "/api/v1/tasks/delete"),
    ("GET", "/api/v1/cluster"),
    ("GET", "/api/v1/types"),
    ("GET", "/api/v1/store"),
    ("GET", "/api/v1/events"),
    ("GET", "/metrics"),
]


@pytest.mark.parametrize(("method", "path"), ROUTES)
@pytest.mark.parametrize(
    "headers", [{}, auth("wrong"), {"Authorization": f"Basic {TOKEN}"}, {"Authorization": "Bearer"}]
)
async def test_every_route_wants_the_token(
    client: httpx.AsyncClient, method: str, path: str, headers: dict[str, str]
) -> None:
    response = await client.request(method, path, headers=headers, json={"ids": [TASK_ID]})
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.json()["error"] == "unauthorized"
    assert response.json()["message"]


async def test_healthz_needs_no_token(client: httpx.AsyncClient) -> None:
    response = await client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "node": None, "pid": os.getpid()}  # who answers: not a secret


async def test_unknown_route_and_wrong_method_answer_json(client: httpx.AsyncClient) -> None:
    missing = await client.get("/api/v1/nothing-here", headers=auth())
    assert missing.status_code == 404
    assert missing.json() == {"error": "not_found", "message": "no such route: /api/v1/nothing-here"}

    wrong = await client.put("/api/v1/tasks", headers=auth())
    assert wrong.status_code == 405
    assert wrong.json()["error"] == "method_not_allowed"
    assert "PUT" in wrong.json()["message"]
    assert "POST" in wrong.headers["allow"]


async def test_body_over_the_limit_is_413_by_declared_length(client: httpx.AsyncClient) -> None:
    body = b'{"name": "' + b"x" * validation.MAX_BODY_BYTES + b'"}'
    response = await client.post("/api/v1/tasks", headers=auth(), content=body)
    assert response.status_code == 413
    assert response.json()["error"] == "body_too_large"
    assert str(validation.MAX_BODY_BYTES) in response.json()["message"]


async def test_body_over_the_limit_is_413_when_streamed_without_length(client: httpx.AsyncClient) -> None:
    chunk = b"x" * 65536

    async def chunks() -> Any:
        for _ in range(validation.MAX_BODY_BYTES // len(chunk) + 2):
            yield chunk

    response = await client.post("/api/v1/tasks", headers=auth(), content=chunks())
    assert response.status_code == 413
    assert response.json()["error"] == "body_too_large"


async def test_bad_content_length_is_400(client: httpx.AsyncClient) -> None:
    response = await client.post("/api/v1/tasks", headers={**auth(), "Content-Length": "lots"}, content=b"{}")
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_input"


@pytest.mark.parametrize(
    ("method", "path", "body", "says"),
    [
        ("POST", "/api/v1/tasks", b"{not json", "malformed JSON"),
        ("POST", "/api/v1/tasks", b"", "empty"),
        ("POST", "/api/v1/tasks", b"[1, 2]", "JSON object"),
        ("POST", "/api/v1/tasks", b'{"type": "fetch", "target": "http://127.0.0.1/"}', "name is required"),
        ("POST", "/api/v1/tasks", b'{"name": "n", "type": "fetch"}', "target is required"),
        ("POST", "/api/v1/tasks", b'{"name": "n", "target": "t"}', "type is required"),
        ("POST", "/api/v1/tasks", b'{"name": 5, "type": "fetch", "target": "t"}', "name must be a string"),
        ("POST", "/api/v1/tasks", b'{"name": "n", "type": "fetch", "target": "t", "max_retries": "2"}', "max_retries"),
        ("POST", "/api/v1/tasks", b'{"name": "n", "type": "fetch", "target": "t", "timeout_s": -1}', "timeout_s"),
        ("POST", "/api/v1/tasks", b'{"name": "n", "type": "fetch", "target": "t", "max_lost_attempts": 0}', "between"),
        ("POST", "/api/v1/tasks", b'{"name": "n", "type": "fetch", "target": "t", "max_lost_attempts": 1.5}', "whole"),
        ("POST", "/api/v1/tasks", b'{"name": "n", "type": "fetch", "target": "t", "memory_mb": 63}', "memory_mb must"),
        ("POST", "/api/v1/tasks", b'{"name": "n", "type": "fetch", "target": "t", "memory_mb": 128.5}', "whole"),
        ("POST", "/api/v1/tasks", b'{"name": "n", "type": "fetch", "target": "t", "cpu_s_limit": 0}', "cpu_s_limit"),
        ("POST", "/api/v1/tasks", b'{"name": "n", "type": "fetch", "target": "t", "cpu_s_limit": "1"}', "seconds"),
        ("POST", "/api/v1/tasks", b'{"name": "n", "type": "fetch", "target": "t", "colour": 1}', "unknown field"),
        ("POST", "/api/v1/tasks?wait=0", b'{"name": "n", "type": "fetch", "target": "t"}', "wait"),
        ("POST", "/api/v1/tasks?wait=soon", b'{"name": "n", "type": "fetch", "target": "t"}', "wait"),
        ("GET", "/api/v1/tasks/not-a-uuid", b"", "malformed task id"),
        ("GET", f"/api/v1/tasks/{TASK_ID}?wait=61", b"", "wait"),
        ("GET", "/api/v1/tasks/not-a-uuid/result", b"", "malformed task id"),
        ("POST", "/api/v1/tasks/not-a-uuid/kill", b"", "malformed task id"),
        ("DELETE", "/api/v1/tasks/not-a-uuid", b"", "malformed task id"),
        ("POST", "/api/v1/tasks/kill", b'{"ids": []}', "non-empty"),
        ("POST", "/api/v1/tasks/kill", b'{"ids": ["nope"]}', "malformed task id"),
        ("POST", "/api/v1/tasks/delete", b'{"id": "x"}', "ids"),
        ("GET", "/api/v1/tasks?state=SLEEPING", b"", "unknown state"),
        ("GET", "/api/v1/tasks?limit=many", b"", "limit"),
        ("GET", "/api/v1/tasks?limit=0", b"", "limit must be between"),
        ("GET", "/api/v1/tasks?cursor=abc", b"", "cursor"),
        ("POST", "/api/v1/tasks", b'{"name": "n", "type": "echo", "target": "a\\u0000b"}', "NUL"),
        ("POST", "/api/v1/tasks", b'{"name": "n", "type": "echo", "target": "a\\ud800b"}', "surrogate"),
        ("GET", "/api/v1/tasks?cursor=%C2%B2", b"", "cursor"),  # "²": a digit to str.isdigit, not to int
        ("GET", "/api/v1/tasks?cursor=%D9%A3", b"", "cursor"),  # Arabic-Indic three
        ("GET", "/api/v1/tasks?limit=%D9%A3", b"", "limit"),
    ],
)
async def test_bad_input_is_400_before_the_node_is_asked(
    client: httpx.AsyncClient, method: str, path: str, body: bytes, says: str
) -> None:
    response = await client.request(method, path, headers=auth(), content=body)
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "invalid_input"
    assert says in response.json()["message"]


class Types:
    """A node that only says which task types live nodes run: all the document asks of it."""

    def __init__(self, types: list[str]) -> None:
        self.types = types

    async def task_types(self) -> list[str]:
        return self.types


async def openapi_doc(types: list[str]) -> dict[str, Any]:
    app = create_app(tasks=Types(types), cluster=Untouchable(), token=TOKEN, registry=CollectorRegistry())
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://shoal.test") as c:
        response = await c.get("/openapi.json")  # public: no token
    assert response.status_code == 200
    doc: dict[str, Any] = response.json()
    return doc


def refs(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "$ref" and isinstance(item, str):
                yield item
            yield from refs(item)
    elif isinstance(value, list):
        for item in value:
            yield from refs(item)


async def test_openapi_is_public_and_lists_every_route() -> None:
    doc = await openapi_doc(["echo", "fetch", "resize"])
    for method, path in ROUTES:
        template = path.replace(TASK_ID, "{task_id}")
        assert method.lower() in doc["paths"][template], (method, template)
    assert "/healthz" in doc["paths"] and "/readyz" in doc["paths"]
    schemas = doc["components"]["schemas"]
    assert {"TaskIn", "TaskOut", "TaskPageOut", "ResultOut", "ClusterOut", "ErrorOut", "IdsIn", "MasterIn"} <= set(
        schemas
    )
    dangling = {r for r in refs(doc) if r.removeprefix("#/components/schemas/") not in schemas}
    assert not dangling
    submit = doc["paths"]["/api/v1/tasks"]["post"]
    assert submit["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("/TaskIn")
    assert "422" not in submit["responses"] and "400" in submit["responses"] and "201" in submit["responses"]
    assert doc["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    for model in ("EchoTaskIn", "FetchTaskIn", "PluginTaskIn"):
        assert set(schemas[model]["properties"]) == {
            *("name", "type", "target", "params", "timeout_s", "max_retries", "max_lost_attempts"),
            *("memory_mb", "cpu_s_limit", "result_ttl_s", "run_at", "delay_s", "idempotency_key"),
            *("priority", "requires", "concurrency_key"),
            *("depends_on", "on_parent_failure", "ref"),
        }
        assert schemas[model]["additionalProperties"] is False  # the server refuses unknown fields
    store = schemas["StoreOut"]["properties"]
    assert set(store) == {"server", "used_memory_bytes", "keys", "tasks", "oldest_finished_at", "retention_s"}
    assert set(schemas["StoreServerOut"]["properties"]) == {"name", "version"}
    assert set(schemas["StoreTasksOut"]["properties"]) == {state.name for state in TaskState}
    by_type = schemas["TaskIn"]["oneOf"]
    assert by_type[:2] == [{"$ref": "#/components/schemas/EchoTaskIn"}, {"$ref": "#/components/schemas/FetchTaskIn"}]
    assert by_type[2]["properties"] == {"type": {"enum": ["resize"]}}  # only the types live nodes run


async def test_openapi_task_types_follow_the_live_nodes() -> None:
    only_echo = (await openapi_doc(["echo"]))["components"]["schemas"]["TaskIn"]
    assert only_echo["oneOf"] == [{"$ref": "#/components/schemas/EchoTaskIn"}]
    unknown = (await openapi_doc([]))["components"]["schemas"]["TaskIn"]  # no live node: every built-in type
    assert [b.get("$ref") for b in unknown["oneOf"]][:2] == [
        "#/components/schemas/EchoTaskIn",
        "#/components/schemas/FetchTaskIn",
    ]


async def test_openapi_parameters_say_what_the_server_takes() -> None:
    doc = await openapi_doc(["echo"])
    one = {p["name"]: p["schema"] for p in doc["paths"]["/api/v1/tasks/{task_id}"]["get"]["parameters"]}
    assert one["task_id"]["format"] == "uuid"
    assert (one["wait"]["type"], one["wait"]["exclusiveMinimum"], one["wait"]["maximum"]) == ("number", 0, 60)
    put = {p["name"]: p["schema"] for p in doc["paths"]["/api/v1/cache/{key}"]["put"]["parameters"]}
    assert put["ttl"]["type"] == "number"
    listing = {p["name"]: p["schema"] for p in doc["paths"]["/api/v1/tasks"]["get"]["parameters"]}
    assert (listing["limit"]["minimum"], listing["limit"]["maximum"]) == (1, validation.MAX_PAGE)
    events = doc["paths"]["/api/v1/events"]["get"]["responses"]["200"]["content"]["text/event-stream"]
    assert events["schema"] == {"$ref": "#/components/schemas/EventFrame"}  # one event, as OpenAPI 3.1 reads it
    frames = doc["components"]["schemas"]["EventFrame"]["discriminator"]["mapping"]
    assert set(frames) == {"task", "node", "lagged", "gap", "error"}


ALLOWED = [
    ("OPTIONS", "/api/v1/tasks", "GET, POST"),
    ("OPTIONS", f"/api/v1/tasks/{TASK_ID}", "DELETE, GET"),  # two routes on one path
    ("PUT", f"/api/v1/tasks/{TASK_ID}", "DELETE, GET"),
    ("OPTIONS", "/api/v1/cache/page/1", "DELETE, GET, PUT"),
    ("GET", "/api/v1/tasks/kill", "POST"),  # not the id "kill"
    ("DELETE", "/api/v1/tasks/delete", "POST"),
    ("POST", "/api/v1/tasks/counts", "GET"),
]


@pytest.mark.parametrize(("method", "path", "allow"), ALLOWED)
async def test_405_allow_names_every_method_the_path_takes(
    client: httpx.AsyncClient, method: str, path: str, allow: str
) -> None:
    response = await client.request(method, path, headers=auth())
    assert response.status_code == 405
    assert response.headers["allow"] == allow
    assert response.json()["error"] == "method_not_allowed"


def test_space_is_what_strip_removes() -> None:
    from shoal.web.schemas import SPACE

    spaces = "".join(chr(c) for c in range(0x110000) if chr(c).isspace())
    assert re.fullmatch(f"[{SPACE}]+", spaces)
    assert not re.search(f"[{SPACE}]", "".join(chr(c) for c in range(0x110000) if not chr(c).isspace()))


@pytest.mark.parametrize(
    "name",
    ["a", " a ", "\ta\n", "\x1ca\x1f", "a b", "a\x7fb", "x" * 200, " " + "x" * 200 + "\u3000", "\u2028é\u2029",
     "", "   ", "\t\n", "a\tb", "a\x00", "x" * 201, "\x01a", "a\x1fb"],
)  # fmt: skip
def test_name_pattern_agrees_with_the_server(name: str) -> None:
    from shoal.errors import InvalidInput
    from shoal.web.schemas import EchoTaskIn

    pattern = EchoTaskIn.model_json_schema()["properties"]["name"]["pattern"]
    try:
        validation.task_spec({"name": name, "type": "echo", "target": "t"})
        accepted = True
    except InvalidInput:
        accepted = False
    assert bool(re.search(pattern, name)) == accepted


def test_documented_shapes_match_the_models() -> None:
    """The OpenAPI models describe exactly the keys that ``to_json()`` sends."""
    import dataclasses

    from shoal.models import Attempt, NodeInfo, Task, TaskResult
    from shoal.web import schemas

    pairs: list[tuple[type[BaseModel], type]] = [
        (schemas.TaskOut, Task),
        (schemas.AttemptOut, Attempt),
        (schemas.ResultOut, TaskResult),
        (schemas.NodeOut, NodeInfo),
    ]
    unsent = {"has_value"}  # TaskResult's: whether ``value`` is sent at all
    for model, dataclass in pairs:
        fields = {f.name for f in dataclasses.fields(dataclass)} - unsent
        assert set(model.model_json_schema()["properties"]) == fields, model.__name__


class Broken:
    """A node whose every answer is an unexpected crash, or that is not ready: what the web layer must contain."""

    async def task_types(self) -> list[str]:
        raise RuntimeError("internal detail /var/lib/secret")

    async def ready(self) -> tuple[bool, str]:
        return False, "no master elected yet"


async def test_unexpected_error_is_a_generic_500_and_not_ready_is_503(caplog: pytest.LogCaptureFixture) -> None:
    app = create_app(tasks=Broken(), cluster=Broken(), token=TOKEN, registry=CollectorRegistry())  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://shoal.test") as c:
        crashed = await c.get("/api/v1/types", headers=auth())
        assert crashed.status_code == 500
        assert crashed.json()["error"] == "internal"
        assert "secret" not in crashed.text and "Traceback" not in crashed.text
        assert "internal detail" in caplog.text  # the traceback went to the server's log

        not_ready = await c.get("/readyz")  # no token needed
        assert not_ready.status_code == 503
        assert not_ready.json() == {"error": "not_ready", "message": "no master elected yet"}

        metrics = await c.get("/metrics", headers=auth())
        assert metrics.status_code == 200
        assert 'shoal_http_requests_total{method="GET",route="/api/v1/types",status="500"} 1.0' in metrics.text


async def test_an_app_built_without_the_store_answers_503_on_its_route() -> None:
    app = create_app(tasks=Untouchable(), cluster=Untouchable(), token=TOKEN, registry=CollectorRegistry())
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://shoal.test") as c:
        response = await c.get("/api/v1/store", headers=auth())
    assert response.status_code == 503
    assert response.json() == {
        "error": "store_stats_unavailable",
        "message": "this node does not serve the store's figures",
    }
