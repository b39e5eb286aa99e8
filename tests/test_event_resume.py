"""Task event streams that resume where they were: SSE ``Last-Event-ID`` / ``?since=``, gRPC
``WatchTasks(since=...)``, the Python client's ``events()`` reconnecting by itself, and ``shoal task watch
--follow``, against a real node, as their users see them."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import orjson
import pytest
import redis

from shoal.client import AsyncClient, Gap, Lagged
from shoal.models import TaskEvent, TaskState
from shoal.rpc.client import TasksClient
from shoal.testing import TestNode, multiplier

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[1]
DONE_S = 30.0
#: The task event stream of the nodes' cluster (shoal.store.task_events).
STREAM = "shoal:shoal:task-events"


def deadline(seconds: float) -> float:
    return asyncio.get_running_loop().time() + seconds * multiplier()


async def sse_frames(response: httpx.Response) -> AsyncIterator[dict[str, Any]]:
    """The frames of an SSE response as {"event", "id", "data"}, comments skipped."""
    frame: dict[str, Any] = {}
    async for line in response.aiter_lines():
        if not line:
            if "data" in frame:
                frame["data"] = orjson.loads(frame["data"])
                yield frame
            frame = {}
        elif not line.startswith(":"):
            field, _, value = line.partition(": ")
            frame[field] = value


async def done(client: AsyncClient, ids: list[str]) -> None:
    """Wait until every task of ``ids`` has ended."""
    for task_id in ids:
        task = await client.wait(task_id, DONE_S * multiplier())
        assert task.state is TaskState.SUCCEED, task


async def first_event_id(http: httpx.AsyncClient, client: AsyncClient) -> str:
    """Open the stream, see a probe task's first event, and close the stream: the id to resume after."""
    async with http.stream("GET", "/api/v1/events") as response:
        assert response.status_code == 200
        lines = response.aiter_lines()
        async for line in lines:
            if line == ": connected":  # the stream is live: what happens from now on is sent
                break
        probe = await client.submit("echo", "probe")
        frame: dict[str, str] = {}
        async for line in lines:
            if line:
                field, _, value = line.partition(": ")
                frame[field] = value
                continue
            if frame.get("event") == "task" and orjson.loads(frame["data"])["id"] == probe.id:
                assert orjson.loads(frame["data"])["event_id"] == frame["id"]
                return frame["id"]
            frame = {}
    raise AssertionError("the stream ended before the probe's event")


async def test_sse_resumes_after_last_event_id_without_loss_or_duplicates(shoal_node: TestNode) -> None:
    async with (
        AsyncClient(shoal_node.http_url, shoal_node.token) as client,
        httpx.AsyncClient(base_url=shoal_node.http_url, headers=shoal_node.headers(), timeout=DONE_S) as http,
    ):
        last = await first_event_id(http, client)
        # disconnected for 5 s: 100 tasks are submitted, run and end meanwhile
        away = asyncio.get_running_loop().time()
        tasks = await client.submit_many([{"type": "echo", "target": f"t{n}", "name": "resume"} for n in range(100)])
        ids = [t.id for t in tasks]
        await done(client, ids)
        await asyncio.sleep(max(0.0, away + 5 - asyncio.get_running_loop().time()))  # the outage's length
        seen: Counter[str] = Counter()
        ended: set[str] = set()
        until = deadline(DONE_S)
        async with http.stream("GET", "/api/v1/events", headers={"Last-Event-ID": last}) as response:
            assert response.status_code == 200
            async for frame in sse_frames(response):
                assert frame["event"] == "task", frame  # no gap, no lag
                seen[frame["id"]] += 1
                event = frame["data"]
                assert event["event_id"] == frame["id"] and event["type"] in ("echo", "")
                if event["id"] in ids and event["state"] == "SUCCEED":
                    ended.add(event["id"])
                if ended == set(ids) or asyncio.get_running_loop().time() > until:
                    break
        assert ended == set(ids), f"{len(ended)} of 100 tasks' ends replayed"
        assert max(seen.values()) == 1, [k for k, v in seen.items() if v > 1]
        assert last not in seen  # resumed after it, not from it
        # ?since= does the same; a malformed id is refused before the stream starts
        async with http.stream("GET", "/api/v1/events", params={"since": last}) as response:
            async for frame in sse_frames(response):
                assert frame["event"] == "task" and order(frame["id"]) > order(last)
                break
        for bad in ("yesterday", "1-0", "1-0/x", "9" * 70):
            refused = await http.get("/api/v1/events", headers={"Last-Event-ID": bad})
            assert refused.status_code == 400, (bad, refused.text)
            assert refused.json()["error"] == "invalid_input" and refused.json()["message"]


async def test_sse_says_so_when_it_resumes_after_what_the_store_keeps(
    shoal_node: TestNode, redis_admin_url: str
) -> None:
    async with (
        AsyncClient(shoal_node.http_url, shoal_node.token) as client,
        httpx.AsyncClient(base_url=shoal_node.http_url, headers=shoal_node.headers(), timeout=DONE_S) as http,
    ):
        last = await first_event_id(http, client)
        await done(client, [(await client.submit("echo", f"k{n}")).id for n in range(3)])
        # the capped stream has dropped what followed ``last`` (as it does past event_retention entries)
        with redis.Redis.from_url(redis_admin_url) as admin:
            admin.xtrim(STREAM, maxlen=1, approximate=False)
            kept = admin.xrange(STREAM)[0][0].decode()
        async with http.stream("GET", "/api/v1/events", headers={"Last-Event-ID": last}) as response:
            frames = sse_frames(response)
            gap = await anext(frames)
            assert gap["event"] == "gap" and gap["data"] == {"kind": "gap", "since": last, "oldest": f"{kept}/0"}
            follows = await anext(frames)
            assert follows["event"] == "task" and follows["id"].startswith(f"{kept}/")
        # an id within what is kept: no gap
        async with http.stream("GET", "/api/v1/events", params={"since": f"{kept}/0"}) as response:
            await client.submit("echo", "after")
            assert (await anext(sse_frames(response)))["event"] == "task"


async def test_grpc_watch_resumes_since_an_event_id(shoal_node: TestNode) -> None:
    async with (
        AsyncClient(shoal_node.http_url, shoal_node.token) as client,
        TasksClient(shoal_node.grpc_addr, shoal_node.token, timeout_s=DONE_S) as rpc,
    ):
        heard: list[TaskEvent] = []

        async def listen() -> None:
            async for event in rpc.watch():
                heard.append(event)

        listener = asyncio.create_task(listen())
        try:
            async with asyncio.timeout(DONE_S * multiplier()):
                probes: list[str] = []
                while not (seen_probe := [e for e in heard if e.id in probes]):  # the watch is live once one comes
                    probes.append((await client.submit("echo", "probe")).id)
                    await done(client, probes[-1:])
        finally:
            listener.cancel()
            await asyncio.gather(listener, return_exceptions=True)
        since = seen_probe[0].event_id
        assert since is not None and "/" in since
        ids = [t.id for t in await client.submit_many([{"type": "echo", "target": f"g{n}"} for n in range(20)])]
        await done(client, ids)
        seen: list[str] = []
        ended: set[str] = set()
        resumed = rpc.watch(ids, since=since)
        async with asyncio.timeout(DONE_S * multiplier()):
            async for event in resumed:
                assert event.id in ids  # the id filter holds for the past too
                assert event.event_id is not None
                seen.append(event.event_id)
                if event.state is TaskState.SUCCEED:
                    ended.add(event.id)
                if ended == set(ids):
                    break
        await resumed.aclose()
        assert len(seen) == len(set(seen)) and sorted(seen, key=order) == seen
        with pytest.raises(grpc.aio.AioRpcError) as info:
            async for _ in rpc.watch(since="not-an-id"):
                pass
        assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT and "event id" in (info.value.details() or "")


def order(event_id: str) -> tuple[int, ...]:
    entry, _, index = event_id.partition("/")
    ms, _, seq = entry.partition("-")
    return int(ms), int(seq), int(index)


class Relay:
    """A loopback TCP relay to ``port`` whose connections the test can cut, and refuse for a while: what a
    dropped network does to a client's stream."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.refusing = False
        self._pairs: list[asyncio.StreamWriter] = []
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> Relay:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        self.cut()
        await self.server.wait_closed()

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    def cut(self) -> None:
        for writer in self._pairs:
            writer.transport.abort()
        self._pairs.clear()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.refusing:
            writer.transport.abort()
            return
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.port)
        self._pairs += [writer, up_writer]

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, ConnectionError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.transport.abort()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))


async def test_client_events_reconnect_by_themselves_and_miss_nothing(shoal_node: TestNode) -> None:
    async with (
        Relay(shoal_node.http_port) as relay,
        AsyncClient(relay.url, shoal_node.token) as through,
        AsyncClient(shoal_node.http_url, shoal_node.token) as client,
    ):
        got: list[TaskEvent] = []
        other: list[Any] = []
        arrived = asyncio.Event()

        async def follow() -> None:
            async for item in through.events(types=["echo"], states=["SUCCEED"]):
                if isinstance(item, TaskEvent):
                    got.append(item)
                    arrived.set()
                else:
                    other.append(item)

        follower = asyncio.create_task(follow())
        try:
            async with asyncio.timeout(DONE_S * multiplier()):
                while not got:  # the stream is open once an event comes through
                    await done(client, [(await client.submit("echo", "probe")).id])
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(arrived.wait(), 1)
            relay.refusing = True
            relay.cut()  # the connection drops, and reconnecting fails for a while
            ids = [t.id for t in await client.submit_many([{"type": "echo", "target": f"c{n}"} for n in range(30)])]
            await done(client, ids)
            relay.refusing = False
            async with asyncio.timeout(DONE_S * multiplier()):
                while not set(ids) <= {e.id for e in got}:
                    arrived.clear()
                    await arrived.wait()
        finally:
            follower.cancel()
            await asyncio.gather(follower, return_exceptions=True)
        assert all(e.state is TaskState.SUCCEED and e.type == "echo" for e in got)
        event_ids = [e.event_id for e in got]
        assert len(event_ids) == len(set(event_ids)), "an event came twice"
        assert not [o for o in other if isinstance(o, Gap | Lagged)], other


@pytest.fixture
def cli(shoal_node: TestNode, tmp_path: Path) -> Any:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHOAL_") or k == "SHOAL_TEST_MULTIPLIER"}
    env |= {"PYTHONPATH": str(ROOT / "src"), "NO_COLOR": "1", "COLUMNS": "200"}
    env |= {"SHOAL_API": shoal_node.http_url, "SHOAL_TOKEN": shoal_node.token}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "shoal", *args], cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=DONE_S * multiplier() + 30)  # fmt: skip

    return run


async def test_task_watch_follow_prints_events_and_resumes_with_since(shoal_node: TestNode, cli: Any) -> None:
    async with AsyncClient(shoal_node.http_url, shoal_node.token) as client:
        heard: list[TaskEvent] = []

        async def listen() -> None:
            async for item in client.events():
                if isinstance(item, TaskEvent):
                    heard.append(item)

        listener = asyncio.create_task(listen())
        try:
            async with asyncio.timeout(DONE_S * multiplier()):
                probes: list[str] = []
                while not (seen := [e for e in heard if e.id in probes]):
                    probes.append((await client.submit("echo", "probe", params={"delay_s": 0.2})).id)
                    await done(client, probes[-1:])
        finally:
            listener.cancel()
            await asyncio.gather(listener, return_exceptions=True)
        task, since = seen[0].id, seen[0].event_id
        assert since is not None
        # the task ended before the command began: --since reads what followed that event from the store
        watched = await asyncio.to_thread(cli, "task", "watch", "--follow", "--json", "--since", since, task)
        assert watched.returncode == 0, watched.stderr
        lines = [orjson.loads(line) for line in watched.stdout.splitlines()]
        assert lines and all(line["id"] == task and line["type"] == "echo" for line in lines), lines
        assert [line["state"] for line in lines][-2:] == ["RUNNING", "SUCCEED"]
        assert order(lines[0]["event_id"]) > order(since)
        ends = await asyncio.to_thread(
            cli, "task", "watch", "--follow", "--json", "--state", "succeed", "--type", "echo", "--since", since, task
        )
        assert ends.returncode == 0, ends.stderr
        assert [orjson.loads(line)["state"] for line in ends.stdout.splitlines()] == ["SUCCEED"]
        human = await asyncio.to_thread(cli, "task", "watch", "-f", task, "--since", since)
        assert human.returncode == 0 and "SUCCEED" in human.stdout and lines[-1]["event_id"] in human.stdout
        for args in (["--since", "soon"], ["--state", "NOPE"]):
            bad = await asyncio.to_thread(cli, "task", "watch", "--follow", task, *args)
            assert bad.returncode == 2 and "Traceback" not in bad.stderr, bad.stderr
        without = await asyncio.to_thread(cli, "task", "watch", task, "--since", since)
        assert without.returncode == 2 and "--follow" in without.stderr
