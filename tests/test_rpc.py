"""shoal.v1.Tasks over gRPC against a real node process, as a gRPC user sees it."""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import grpc
import grpc.aio
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from shoal.models import TaskState
from shoal.rpc.client import TasksClient, open_channel, pb, tasks_stub

pytestmark = pytest.mark.e2e

SCALE = float(os.environ.get("SHOAL_TEST_MULTIPLIER", "1"))
DONE_S = 20.0 * SCALE


@asynccontextmanager
async def client_for(node: Any, token: str | None = "") -> AsyncIterator[TasksClient]:
    client = TasksClient(node.grpc_addr, node.token if token == "" else token, timeout_s=DONE_S + 10)
    try:
        yield client
    finally:
        await client.close()


def fetch_spec(url: str, name: str = "page", **extra: Any) -> Any:
    return pb.TaskSpec(name=name, type="fetch", target=url, **extra)


async def refusal(call: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    return info.value


async def test_create_get_list_and_result(shoal_node: Any, origin: Any) -> None:
    async with client_for(shoal_node) as client:
        created = await client.stub.CreateTask(
            fetch_spec(f"{origin.url}/hello", params_json='{"n": 3, "tag": "x"}', max_retries=2, max_lost_attempts=5)
        )
        assert uuid.UUID(created.id)
        assert created.state == pb.Task.WAITING
        assert (created.name, created.type, created.target) == ("page", "fetch", f"{origin.url}/hello")
        assert created.params_json.replace(" ", "") == '{"n":3,"tag":"x"}'  # numbers keep their type
        assert created.max_retries == 2 and created.max_lost_attempts == 5 and created.lost_attempts == 0
        assert not created.HasField("finished_at")

        done = await client.get(created.id, wait_s=DONE_S)
        assert done.state is TaskState.SUCCEED, done.error
        assert done.node and done.attempts >= 1 and done.finished_at is not None
        assert done.params == {"n": 3, "tag": "x"}
        assert done.max_lost_attempts == 5 and done.attempts_dropped == 0
        assert done.history[-1].outcome == "succeeded"

        result = await client.result(created.id)
        assert result.code == "hello shoal"
        assert result.task_id == created.id and result.node == done.node

        page = await client.list()
        assert page.total == 1 and [t.id for t in page.tasks] == [created.id]
        assert [t.id for t in (await client.list(TaskState.SUCCEED)).tasks] == [created.id]
        killed = await client.list(TaskState.KILLED)
        assert killed.total == 0 and killed.tasks == []


async def test_result_waits_for_the_task(shoal_node: Any, origin: Any) -> None:
    async with client_for(shoal_node) as client:
        created = await client.stub.CreateTask(fetch_spec(f"{origin.url}/slow?s=0.5"))
        result = await client.result(created.id, wait_s=DONE_S)
        assert result.task_id == created.id


async def test_list_pages_with_cursor(shoal_node: Any, origin: Any) -> None:
    async with client_for(shoal_node) as client:
        ids = [(await client.stub.CreateTask(fetch_spec(f"{origin.url}/hello", name=f"t{i}"))).id for i in range(3)]
        seen: list[str] = []
        cursor = None
        for _ in range(5):
            page = await client.list(limit=2, cursor=cursor)
            assert page.total == 3
            seen += [t.id for t in page.tasks]
            cursor = page.next_cursor
            if cursor is None:
                break
        assert sorted(seen) == sorted(ids) and len(seen) == 3
        assert seen == list(reversed(ids)), "newest first"


async def test_kill_and_delete(shoal_node: Any, origin: Any) -> None:
    async with client_for(shoal_node) as client:
        slow = await client.stub.CreateTask(fetch_spec(f"{origin.url}/slow?s=60"))
        unknown = str(uuid.uuid4())
        assert await client.kill([slow.id, unknown]) == {slow.id: True, unknown: False}
        assert (await client.get(slow.id, wait_s=DONE_S)).state is TaskState.KILLED
        assert await client.kill([slow.id]) == {slow.id: False}, "a terminal task cannot be killed again"

        assert await client.delete([slow.id, unknown]) == {slow.id: True, unknown: False}
        gone = await refusal(client.stub.GetTask(pb.ID(id=[slow.id])))
        assert gone.code() == grpc.StatusCode.NOT_FOUND and slow.id in gone.details()
        no_result = await refusal(client.stub.GetTaskResult(pb.ID(id=[slow.id])))
        assert no_result.code() == grpc.StatusCode.NOT_FOUND
        assert (await client.list()).total == 0


async def test_delete_kills_a_running_task(shoal_node: Any, origin: Any) -> None:
    async with client_for(shoal_node) as client:
        slow = await client.stub.CreateTask(fetch_spec(f"{origin.url}/slow?s=60"))
        running = await client.list(TaskState.RUNNING)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + DONE_S
        while running.total == 0 and loop.time() < deadline:
            await asyncio.sleep(0.05)  # polling a condition, bounded by the deadline
            running = await client.list(TaskState.RUNNING)
        assert [t.id for t in running.tasks] == [slow.id], "the task never started"
        assert await client.delete([slow.id]) == {slow.id: True}
        assert (await client.list()).total == 0
        gone = await refusal(client.stub.GetTask(pb.ID(id=[slow.id])))
        assert gone.code() == grpc.StatusCode.NOT_FOUND


async def test_watch_streams_state_changes(shoal_node: Any, origin: Any) -> None:
    async with client_for(shoal_node) as client:
        slow = await client.stub.CreateTask(fetch_spec(f"{origin.url}/slow?s=60", name="slow"))
        only_slow = _Collector(client.watch([slow.id]))
        everything = _Collector(client.watch())
        try:
            await until_live(client, everything, origin)  # the stream opened last

            fresh = await client.stub.CreateTask(fetch_spec(f"{origin.url}/hello", name="fresh"))
            end = await everything.wait_for(lambda e: e.id == fresh.id and e.state.terminal, DONE_S)
            assert end is not None and end.state is TaskState.SUCCEED and end.node

            await client.kill([slow.id])
            killed = await only_slow.wait_for(lambda e: e.state is TaskState.KILLED, DONE_S)
            assert killed is not None and killed.id == slow.id
            assert {e.id for e in only_slow.events} == {slow.id}, "the id filter lets other tasks through"
        finally:
            await only_slow.close()
            await everything.close()


async def test_calls_without_the_token_are_refused(shoal_node: Any, origin: Any) -> None:
    for token, says in ((None, "authorization"), ("not-the-token", "wrong token")):
        async with client_for(shoal_node, token) as client:
            for call in (
                client.stub.ListTask(pb.Query()),
                client.stub.CreateTask(fetch_spec(f"{origin.url}/hello")),
                client.stub.KillTask(pb.ID(id=[str(uuid.uuid4())])),
            ):
                err = await refusal(call)
                assert err.code() == grpc.StatusCode.UNAUTHENTICATED
                assert says in err.details()
            with pytest.raises(grpc.aio.AioRpcError) as watch:
                async for _ in client.watch():
                    pass
            assert watch.value.code() == grpc.StatusCode.UNAUTHENTICATED
    async with client_for(shoal_node) as client:
        assert (await client.list()).total == 0, "a refused CreateTask stored a task"


async def test_health_answers_anyone(shoal_node: Any) -> None:
    channel = open_channel(shoal_node.grpc_addr, None)
    try:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "shoal.v1.Tasks"):
            reply = await health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        await channel.close(None)


async def until_live(client: Any, watch: _Collector, origin: Any) -> None:
    """Events are hints from "now on": submit probes until ``watch`` sends one, so the stream is open."""
    probe_ids: set[str] = set()
    for _ in range(20):
        probe = await client.stub.CreateTask(fetch_spec(f"{origin.url}/hello", name="probe"))
        probe_ids.add(probe.id)
        if await watch.wait_for(lambda e: e.id in probe_ids, 1.0 * SCALE):
            return
    pytest.fail("WatchTasks sent no event for 20 new tasks")


async def test_shutdown_reports_not_serving_and_ends_watches(shoal_node: Any, origin: Any) -> None:
    anonymous = open_channel(shoal_node.grpc_addr, None)
    try:
        health = health_pb2_grpc.HealthStub(anonymous).Watch(health_pb2.HealthCheckRequest(service="shoal.v1.Tasks"))
        assert (await health.read()).status == health_pb2.HealthCheckResponse.SERVING
        async with client_for(shoal_node) as client:
            watch = _Collector(client.watch())
            await until_live(client, watch, origin)  # stopped before it opened, it would be refused instead
            stopping = asyncio.ensure_future(asyncio.to_thread(shoal_node.stop))
            statuses = []
            with contextlib.suppress(grpc.aio.AioRpcError):  # the stream ends when the port closes
                while (reply := await health.read()) is not grpc.aio.EOF:
                    statuses.append(reply.status)
            assert health_pb2.HealthCheckResponse.NOT_SERVING in statuses
            await asyncio.wait_for(asyncio.shield(watch.ended()), DONE_S)
            assert watch.error is None, f"WatchTasks ended with {watch.error}"
            await stopping
            await watch.close()
    finally:
        await anonymous.close(None)


async def test_reflection_answers_token_holders_only(shoal_node: Any) -> None:
    request = reflection_pb2.ServerReflectionRequest(list_services="")

    async def services(token: str | None, requests: list[Any]) -> list[str]:
        channel = open_channel(shoal_node.grpc_addr, token)
        try:
            call = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(iter(requests), timeout=10)
            replies = [reply async for reply in call]
            return [s.name for r in replies for s in r.list_services_response.service]
        finally:
            await channel.close(None)

    assert "shoal.v1.Tasks" in await services(shoal_node.token, [request])
    with pytest.raises(grpc.aio.AioRpcError) as anonymous:
        # refused before any request is read: a request sent meanwhile may fail the client's own send
        # (INTERNAL from grpc) before the refusal is seen, so none is sent
        await services(None, [])
    assert anonymous.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_bad_input_is_refused_with_a_message(shoal_node: Any, origin: Any) -> None:
    url = f"{origin.url}/hello"
    unknown = str(uuid.uuid4())
    invalid = grpc.StatusCode.INVALID_ARGUMENT
    cases: list[tuple[str, Any, grpc.StatusCode, str]] = [
        ("CreateTask", pb.TaskSpec(type="fetch", target=url), invalid, "name is required"),
        ("CreateTask", pb.TaskSpec(name="x", type="fetch"), invalid, "target is required"),
        ("CreateTask", pb.TaskSpec(name="x", type="fetch", target="  "), invalid, "target is required"),
        ("CreateTask", pb.TaskSpec(name="x", target=url), invalid, "type is required"),
        ("CreateTask", pb.TaskSpec(name="x", type="no-such-type", target=url), invalid, "unknown task type"),
        ("CreateTask", fetch_spec(url, params_json="[1, 2]"), invalid, "params_json must be a JSON object"),
        ("CreateTask", fetch_spec(url, params_json="{nope"), invalid, "params_json is not valid JSON"),
        ("CreateTask", fetch_spec(url, timeout_s=-1), invalid, "timeout_s"),
        ("CreateTask", fetch_spec(url, max_retries=1000), invalid, "max_retries"),
        ("CreateTask", fetch_spec(url, max_lost_attempts=0), invalid, "max_lost_attempts must be between 1"),
        ("GetTask", pb.ID(id=["not-a-uuid"]), invalid, "malformed task id"),
        ("GetTask", pb.ID(), invalid, "exactly one task id"),
        ("GetTask", pb.ID(id=[unknown]), grpc.StatusCode.NOT_FOUND, unknown),
        ("GetTask", pb.ID(id=[unknown], wait_s=600), invalid, "wait_s"),
        ("GetTaskResult", pb.ID(id=[unknown]), grpc.StatusCode.NOT_FOUND, unknown),
        ("GetTaskResult", pb.ID(id=["1234"]), invalid, "malformed task id"),
        ("KillTask", pb.ID(), invalid, "ids must be a non-empty list"),
        ("KillTask", pb.ID(id=[unknown, "bad id"]), invalid, "malformed task id"),
        ("DelTask", pb.ID(id=[unknown], wait_s=1), invalid, "wait_s"),
        ("ListTask", pb.Query(state=[1, 2]), invalid, "one state"),
        ("ListTask", pb.Query(state=[9]), invalid, "unknown state"),
        ("ListTask", pb.Query(limit=0), invalid, "limit"),
        ("ListTask", pb.Query(cursor="abc"), invalid, "malformed cursor"),
    ]
    channel = open_channel(shoal_node.grpc_addr, shoal_node.token)
    try:
        stub = tasks_stub(channel)
        for method, request, code, says in cases:
            err = await refusal(getattr(stub, method)(request, timeout=10))
            assert (err.code(), says) == (code, says) and says in err.details(), f"{method}({request}): {err}"
        watch_err = await refusal(_drain(stub.WatchTasks(pb.WatchRequest(id=["nope"]), timeout=10)))
        assert watch_err.code() == invalid and "malformed task id" in watch_err.details()
        assert (await stub.ListTask(pb.Query(), timeout=10)).total == 0, "a refused call stored a task"
    finally:
        await channel.close(None)


async def _drain(call: Any) -> None:
    async for _ in call:
        pass


class _Collector:
    """Reads a watch stream in the background; ``wait_for`` waits (with a deadline) for a matching event."""

    def __init__(self, stream: AsyncIterator[Any]) -> None:
        self.events: list[Any] = []
        self.error: BaseException | None = None
        self._stream = stream
        self._changed = asyncio.Event()
        self._task = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        try:
            async for event in self._stream:
                self.events.append(event)
                self._changed.set()
        except grpc.aio.AioRpcError as exc:
            self.error = exc

    async def ended(self) -> None:
        """Returns when the stream has ended, by itself or with an error."""
        await asyncio.wait({self._task})

    async def wait_for(self, match: Any, timeout: float) -> Any:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            found = next((e for e in self.events if match(e)), None)
            if found is not None or self._task.done():
                return found
            self._changed.clear()
            remaining = deadline - loop.time()
            if remaining <= 0:
                return None
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except TimeoutError:
                return next((e for e in self.events if match(e)), None)

    async def close(self) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        aclose = getattr(self._stream, "aclose", None)
        if aclose is not None:
            await aclose()
