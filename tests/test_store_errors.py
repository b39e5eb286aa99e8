"""The store speaks shoal's errors: whatever redis-py raises, a call through ``shoal.store`` raises
``StoreUnavailable`` when the store cannot serve for now (not there, not taking writes) and ``StoreFault``
when it refused the call itself, and the API answers a store outage with the 503 it always gave."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import grpc.aio
import httpx
import pytest
import redis
from prometheus_client import CollectorRegistry
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError

from shoal.errors import StoreFault, StoreUnavailable
from shoal.keys import Keys
from shoal.rpc.client import TasksClient, pb
from shoal.store.client import StoreClient, translated
from shoal.store.embedded import EmbeddedRedis
from shoal.store.nodes import NodeRegistry
from shoal.store.redis import connect
from shoal.store.refusals import StoreRefused
from shoal.testing import TestNode, free_port, wait_for
from shoal.web.app import create_app

#: What a user is told while the store is down: the same words as before the store had errors of its own.
DOWN_MESSAGE = "the store (Redis) cannot be reached right now; try again shortly"
KEYS = Keys("shoal")


@pytest.fixture
async def nowhere() -> AsyncIterator[StoreClient]:
    """A client of a store where nothing listens."""
    client = connect(f"redis://127.0.0.1:{free_port()}", name="shoal-test")
    yield client
    await client.aclose()


async def _pipelined(client: StoreClient) -> Any:
    async with client.pipeline(transaction=True) as pipe:
        pipe.get("shoal:a")
        pipe.time()
        return await pipe.execute()


async def _subscribed(client: StoreClient) -> Any:
    pubsub = client.pubsub()
    try:
        await pubsub.subscribe(KEYS.public)
    finally:
        await pubsub.aclose()


async def _election_requests(client: StoreClient) -> Any:
    async with NodeRegistry(client, KEYS).public.election_requests() as messages:
        return await messages.next(timeout=0.1)


CALLS: dict[str, Callable[[StoreClient], Awaitable[Any]]] = {
    "command": lambda c: c.get("shoal:a"),
    "script": lambda c: c.register_script("return 1")(),
    "pipeline": _pipelined,
    "subscribe": _subscribed,
    "store class": lambda c: NodeRegistry(c, KEYS).now(),
    "store subscription": _election_requests,
}


@pytest.mark.parametrize("call", CALLS.values(), ids=CALLS.keys())
async def test_a_store_that_cannot_be_reached_raises_store_unavailable(
    nowhere: StoreClient, call: Callable[[StoreClient], Awaitable[Any]]
) -> None:
    with pytest.raises(StoreUnavailable) as caught:
        await call(nowhere)
    error = caught.value
    assert error.message == DOWN_MESSAGE and error.http_status == 503 and error.grpc_code == "UNAVAILABLE"
    assert re.search(r"connect|refused", error.detail, re.IGNORECASE), error.detail  # the cause, for the log
    assert error.detail in str(error) and type(error).__name__ == "StoreUnavailable"  # the API's kind
    # Code that still catches redis-py's error (and redis-py's own retries) sees the one it knows.
    assert isinstance(error, RedisConnectionError) and isinstance(error.__cause__, RedisConnectionError)


@pytest.fixture
async def store(redis_url: str) -> AsyncIterator[StoreClient]:
    """A client of the suite's Redis as shoal's own user, as a node connects."""
    client = connect(redis_url, name="shoal-test")
    yield client
    await client.aclose()


@pytest.fixture
def admin(redis_admin_url: str) -> redis.Redis:
    return redis.Redis.from_url(redis_admin_url)


async def test_a_call_the_store_refuses_raises_store_fault(store: StoreClient) -> None:
    await store.set("shoal:probe", "a string")
    for call in (
        lambda: store.hget("shoal:probe", "field"),
        lambda: _hget_in_pipeline(store),
        lambda: store.register_script("return redis.call('hget', KEYS[1], 'f')")(keys=["shoal:probe"]),
    ):
        with pytest.raises(StoreFault) as caught:
            await call()
        error = caught.value
        assert error.http_status == 500 and "WRONGTYPE" not in error.message  # users are not told internals
        assert "WRONGTYPE" in error.detail and "WRONGTYPE" in str(error)  # the log is
        assert isinstance(error, ResponseError)


async def _hget_in_pipeline(store: StoreClient) -> Any:
    async with store.pipeline(transaction=True) as pipe:
        pipe.hget("shoal:probe", "field")
        return await pipe.execute()


async def test_a_store_that_takes_no_writes_for_now_is_unavailable(store: StoreClient, admin: redis.Redis) -> None:
    """A master short of the replicas it must have refuses writes: to shoal, down for a moment."""
    registry = NodeRegistry(store, KEYS)
    assert await registry.new_incarnation("node-1") == 1
    admin.config_set("min-replicas-to-write", 1)
    try:
        with pytest.raises(StoreUnavailable, match="NOREPLICAS") as caught:
            await registry.new_incarnation("node-1")
        assert caught.value.message == DOWN_MESSAGE and isinstance(caught.value, StoreRefused)
    finally:
        admin.config_set("min-replicas-to-write", 0)
    assert await registry.new_incarnation("node-1") == 2  # the refused write changed nothing


async def _list_by_rpc(node: TestNode) -> grpc.aio.AioRpcError:
    async with TasksClient(node.grpc_addr, node.token, timeout_s=30) as rpc:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await rpc.stub.ListTask(pb.Query())
    return caught.value


def test_an_outage_during_api_calls_answers_503_with_the_same_message(
    node_factory: Callable[..., TestNode], redis_server: EmbeddedRedis
) -> None:
    node = node_factory()
    spec = {"name": "n", "type": "echo", "target": "x"}
    with httpx.Client(base_url=node.http_url, headers=node.headers(), timeout=30, trust_env=False) as http:
        assert http.post("/api/v1/tasks", json=spec).status_code == 201
        redis_server.stop()
        try:
            for answer in (http.get("/api/v1/tasks"), http.post("/api/v1/tasks", json=spec)):
                assert answer.status_code == 503, answer.text
                assert answer.json() == {"error": "store_unavailable", "message": DOWN_MESSAGE}
            refused = asyncio.run(_list_by_rpc(node))
            assert refused.code() == grpc.StatusCode.UNAVAILABLE and refused.details() == DOWN_MESSAGE
            # The node's log has what the store (redis-py) said; the answers above do not.
            logged = f"GET /api/v1/tasks -> 503: {DOWN_MESSAGE} ("
            wait_for(lambda: logged in node.log(), 5, "the outage and its cause in the node's log")
        finally:
            redis_server.start()
        listed = wait_for(lambda: _ok(http.get("/api/v1/tasks")), 15, "the API to answer again")
        assert listed is not None and listed["total"] == 1  # the submit refused during the outage stored nothing


def _ok(response: httpx.Response) -> dict[str, Any] | None:
    body: dict[str, Any] = response.json()
    return body if response.status_code == 200 else None


class RefusedByTheStore:
    """A node whose store refuses every call, as ``translated`` reports it: what the web layer must answer."""

    def __init__(self, error: RedisError) -> None:
        self.error = error

    async def task_types(self) -> list[str]:
        raise translated(self.error)


@pytest.mark.parametrize(
    ("error", "status", "body"),
    [
        (RedisConnectionError("Error 111 connecting to 10.0.0.7:6379"), 503,
         {"error": "store_unavailable", "message": DOWN_MESSAGE}),
        (ResponseError("WRONGTYPE Operation against a key holding the wrong kind of value"), 500,
         {"error": "store_fault", "message": "the store refused a call; the node's log says why"}),
    ],
    ids=["unavailable", "fault"],
)  # fmt: skip
async def test_the_api_tells_users_what_the_store_error_means_and_the_log_what_the_store_said(
    error: RedisError, status: int, body: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    app = create_app(tasks=RefusedByTheStore(error), cluster=RefusedByTheStore(error), token="t",  # type: ignore[arg-type]
                     registry=CollectorRegistry())  # fmt: skip
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://shoal.test") as client:
        answer = await client.get("/api/v1/types", headers={"Authorization": "Bearer t"})
    assert (answer.status_code, answer.json()) == (status, body)
    assert str(error) in caplog.text and str(error) not in answer.text
