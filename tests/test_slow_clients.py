"""Strangers who hold connections open cannot keep token holders out.

The proxy: clients that drip their first request head a byte at a time, more of them than the proxy serves
at once, while a token holder asks for a page; and one such head is cut at its deadline however steadily it
drips. A real node with 4 client slots and a 3 s proxy timeout (so a first head has 3 s).

gRPC: a real server whose limit of concurrent calls is small; strangers open more health Watch streams
than that limit, and a token holder's Tasks call is still served while the excess watches are refused.
"""

from __future__ import annotations

import asyncio
import base64
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc
import grpc.aio
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from shoal.errors import TaskNotFound
from shoal.rpc.client import open_channel, tasks_stub
from shoal.rpc.convert import pb
from shoal.rpc.health import public_watch_limit
from shoal.rpc.server import RpcServer, start_rpc_server
from shoal.testing import TestNode, wait_for

TOKEN = "slow-clients-token-0123456789abcdef"
PROXY_SLOTS = 4
DRIP_EVERY_S = 0.2  # what a slow client does between two bytes; no test waits on it


class Drippers:
    """Connections to a proxy that send a request head one byte every ``DRIP_EVERY_S`` and never finish it."""

    def __init__(self, port: int, count: int, target: str) -> None:
        self.head = f"GET {target} HTTP/1.1\r\nHost: x\r\n" + "X-Slow: " + "a" * 10_000
        self.socks = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(count)]
        self.closed: set[int] = set()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._drip, daemon=True)
        self.thread.start()

    def _drip(self) -> None:
        for byte in self.head.encode():
            for i, sock in enumerate(self.socks):
                if i in self.closed:
                    continue
                try:
                    sock.send(bytes([byte]))
                except OSError:
                    self.closed.add(i)
            if self.stop.wait(DRIP_EVERY_S):
                return

    def cut_by_the_proxy(self, i: int) -> bool:
        """Whether the proxy closed connection ``i`` (it reads the end of stream, or a reset)."""
        sock = self.socks[i]
        sock.settimeout(0.05)
        try:
            return sock.recv(1024) == b""
        except TimeoutError:
            return False
        except OSError:
            return True

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        for sock in self.socks:
            sock.close()


@pytest.fixture(scope="module")
def node(module_redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestNode]:
    args = ["--proxy-max-connections", str(PROXY_SLOTS), "--proxy-timeout", "3", "--proxy-allow", "127.0.0.1"]
    started = TestNode(tmp_path_factory.mktemp("slow-clients"), module_redis_url, args=args).start()
    yield started
    started.stop(timeout=15)


@pytest.mark.e2e
def test_slow_drip_heads_do_not_keep_a_token_holder_out(node: TestNode, origin: Any) -> None:
    drippers = Drippers(node.proxy_port, 10 * PROXY_SLOTS, f"{origin.url}/hello")
    try:
        proxy = f"http://user:{node.token}@127.0.0.1:{node.proxy_port}"
        with httpx.Client(proxy=proxy, trust_env=False, timeout=10) as client:
            responses = [client.get(f"{origin.url}/hello") for _ in range(3)]
    finally:
        drippers.close()
    assert [(r.status_code, r.text) for r in responses] == [(200, "hello shoal")] * 3
    metrics = httpx.get(f"{node.http_url}/metrics", headers=node.headers(), trust_env=False).text
    dropped = next(x for x in metrics.splitlines() if x.startswith('shoal_proxy_events_total{event="dropped"} '))
    assert float(dropped.split()[-1]) >= 10 * PROXY_SLOTS - PROXY_SLOTS  # the drippers beyond the 4 pending slots


@pytest.mark.e2e
def test_a_dripped_head_is_cut_at_its_deadline(node: TestNode, origin: Any) -> None:
    drippers = Drippers(node.proxy_port, 1, f"{origin.url}/hello")
    try:
        wait_for(lambda: drippers.cut_by_the_proxy(0), 15, "the proxy to close a head that never ends")
    finally:
        drippers.close()


class Firehose:
    """A TCP service on loopback that sends without end to whoever connects and never reads a byte."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.cut = threading.Event()  # set when a send fails: the other end closed the connection
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        conn, _ = self.sock.accept()
        with conn:
            try:
                while True:
                    conn.sendall(b"x" * 65536)
            except OSError:
                self.cut.set()


@pytest.mark.e2e
def test_a_tunnel_whose_client_stopped_reading_is_closed(node: TestNode) -> None:
    target = Firehose()
    with socket.create_connection(("127.0.0.1", node.proxy_port), timeout=10) as client:
        header = "Basic " + base64.b64encode(f"user:{node.token}".encode()).decode()
        client.sendall(
            f"CONNECT 127.0.0.1:{target.port} HTTP/1.1\r\nHost: x\r\nProxy-Authorization: {header}\r\n\r\n".encode()
        )
        assert client.recv(12) == b"HTTP/1.1 200"
        client.shutdown(socket.SHUT_WR)  # done sending; and it never reads what the target sends
        # The target's bytes pile up in the proxy; once nothing has moved for the idle limit, it lets go.
        wait_for(target.cut.is_set, 20, "the proxy to close a tunnel whose client stopped reading")
    target.sock.close()


# -- gRPC: health watches without a token ---------------------------------------------------------------------


class NoTasks:
    """The Tasks service's TaskAPI: knows no task; only ``get`` is reached."""

    async def get(self, task_id: str) -> Any:
        raise TaskNotFound(task_id)

    def __getattr__(self, name: str) -> Any:
        pytest.fail(f"Tasks.{name} was reached")


MAX_CALLS = 16


@pytest.fixture
async def rpc() -> AsyncIterator[RpcServer]:
    server = await start_rpc_server(tasks=NoTasks(), token=TOKEN, bind="127.0.0.1:0", maximum_concurrent_rpcs=MAX_CALLS)
    yield server
    await server.stop(None)


async def _first_answer(call: Any) -> str:
    """The first status a Watch stream sends, or the code it is refused with."""
    try:
        async for reply in call:
            return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))
        return "ended"
    except grpc.aio.AioRpcError as exc:
        return str(exc.code().name)


async def test_open_health_watches_without_a_token_leave_room_for_tasks_calls(rpc: RpcServer) -> None:
    strangers = open_channel(rpc.address, None)
    user = open_channel(rpc.address, TOKEN)
    watches = [health_pb2_grpc.HealthStub(strangers).Watch(health_pb2.HealthCheckRequest(), timeout=30)
               for _ in range(MAX_CALLS + 4)]  # fmt: skip
    try:
        answers = await asyncio.wait_for(asyncio.gather(*(_first_answer(w) for w in watches)), 20)
        allowed = public_watch_limit(MAX_CALLS)
        assert sorted(answers) == ["RESOURCE_EXHAUSTED"] * (len(watches) - allowed) + ["SERVING"] * allowed
        # The open watches hold no room a token holder needs: its Tasks call is served (the task is unknown).
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await tasks_stub(user).GetTask(pb.ID(id=["00000000-0000-4000-8000-000000000000"]), timeout=10)
        assert refused.value.code() == grpc.StatusCode.NOT_FOUND
        # and a token holder's own watch is not counted among the strangers'.
        mine = health_pb2_grpc.HealthStub(user).Watch(health_pb2.HealthCheckRequest(), timeout=30)
        assert await asyncio.wait_for(_first_answer(mine), 10) == "SERVING"
        mine.cancel()
    finally:
        for watch in watches:
            watch.cancel()
        await strangers.close(None)
        await user.close(None)
