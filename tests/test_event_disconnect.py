"""Clients of the live event streams (SSE and gRPC WatchTasks) that go away leave nothing behind in the
node: no task abandoned pending (asyncio's "Task was destroyed but it is pending!"), no error logged."""

from __future__ import annotations

import asyncio
import re
import socket
import struct
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest

from shoal.rpc.client import TasksClient
from shoal.testing import TestNode, wait_for

pytestmark = pytest.mark.e2e

#: Lines a clean node log never has.
TROUBLE = re.compile(r"Task was destroyed|Traceback|^\S+ (ERROR|CRITICAL)\b", re.MULTILINE)


def open_stream(node: TestNode) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", node.http_port), timeout=10)
    sock.sendall(
        b"GET /api/v1/events HTTP/1.1\r\nHost: shoal\r\nAccept: text/event-stream\r\n"
        + f"Authorization: Bearer {node.token}\r\n\r\n".encode()
    )
    return sock


def read_until(sock: socket.socket, marker: bytes) -> bytes:
    received = b""
    while marker not in received:
        chunk = sock.recv(65536)
        assert chunk, f"the stream ended before {marker!r}: {received[-500:]!r}"
        received += chunk
    return received


def reset(sock: socket.socket) -> None:
    """Close with a TCP reset, as a killed browser tab or client does, rather than a polite FIN."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


@contextmanager
def busy(node: TestNode) -> Iterator[None]:
    """Tasks submitted without pause, so that streams are closed while their events are flowing."""
    stop = threading.Event()

    def submit() -> None:
        with httpx.Client(base_url=node.http_url, headers=node.headers(), trust_env=False) as client:
            while not stop.is_set():
                client.post("/api/v1/tasks", json={"name": "flow", "type": "echo", "target": "x"})

    thread = threading.Thread(target=submit, daemon=True)
    thread.start()
    yield
    stop.set()
    thread.join(10)


def open_streams(node: TestNode) -> float:
    metrics = httpx.get(f"{node.http_url}/metrics", headers=node.headers(), trust_env=False).text
    found = re.search(r"^shoal_event_streams (\S+)$", metrics, re.MULTILINE)
    assert found, "no shoal_event_streams gauge"
    return float(found.group(1))


async def watch_and_leave(node: TestNode, times: int) -> None:
    """gRPC WatchTasks: read an event, then drop the call, or the whole channel, mid-stream."""
    for i in range(times):
        client = TasksClient(node.grpc_addr, node.token, timeout_s=10)
        events = client.watch()
        await asyncio.wait_for(anext(events), 10)
        if i % 2:
            await events.aclose()  # cancels the call
        await client.close()


def test_clients_that_disconnect_leave_no_pending_task_or_error(shoal_node: TestNode) -> None:
    with busy(shoal_node):
        for i in range(12):
            sock = open_stream(shoal_node)
            # a task or node event; half of the clients leave as soon as the stream is up
            read_until(sock, b"event: " if i % 2 else b": connected")
            if i % 3:
                reset(sock)
            else:
                sock.close()
        asyncio.run(watch_and_leave(shoal_node, 6))

    wait_for(lambda: open_streams(shoal_node) == 0, 10, "every event stream to be closed")
    assert shoal_node.stop() == 0
    trouble = [line for line in shoal_node.log().splitlines() if TROUBLE.search(line)]
    assert not trouble, shoal_node.log()[-5000:]
