"""Decompression bombs: a body that is small as sent and huge once decoded.

An origin on loopback serves gzip of 1 GiB of zeros (about 1 MB), gzip of that (under 2 KB) and a third
layer. ``fetch`` must end such a task ``RUNTIME_ERROR`` at its byte limit, on the live path, the cache fill
and a cache hit, with the node's peak RSS (``VmHWM``) growing by less than 64 MiB; the proxy must pass the
encoded bytes on unchanged, just as bounded. In-process tests show the decoder's steps stay small.
"""

from __future__ import annotations

import re
import struct
import threading
import tracemalloc
import zlib
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from shoal.http_decode import STEP, BodyRefused, decoded
from shoal.outbound import client
from shoal.testing import TestNode, wait_for
from shoal.worker.handlers import TaskContext
from shoal.worker.handlers.fetch import Fetcher, FetchFailed

GiB = 1 << 30
MiB = 1 << 20
#: Most the node's peak RSS may grow while it fetches or proxies every bomb.
RSS_GROWTH = 64 * MiB
#: The node's largest cache value: the 1 MB one-layer bomb streams past the cache, the smaller ones are stored.
CACHE_MAX_VALUE = 64 * 1024
TERMINAL = ("SUCCEED", "RUNTIME_ERROR", "KILLED")


def gzip_of_zeros(size: int) -> bytes:
    """gzip of ``size`` zero bytes (a multiple of 1 MiB), made without ever holding them: the deflate block
    for 1 MiB of zeros refers only to its own bytes, so it can be repeated; the trailer's CRC is computed."""
    block = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    zeros = bytes(MiB)
    one_mib = block.compress(zeros) + block.flush(zlib.Z_SYNC_FLUSH)
    last = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS).flush()  # an empty final block
    crc = 0
    for _ in range(size // MiB):
        crc = zlib.crc32(zeros, crc)
    header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff"
    return header + one_mib * (size // MiB) + last + struct.pack("<II", crc, size & 0xFFFFFFFF)


def gzip(data: bytes) -> bytes:
    packer = zlib.compressobj(9, zlib.DEFLATED, zlib.MAX_WBITS | 16)
    return packer.compress(data) + packer.flush()


@pytest.fixture(scope="module")
def bombs() -> dict[int, bytes]:
    """Bodies by layers of gzip, each 1 GiB of zeros once decoded."""
    one = gzip_of_zeros(GiB)
    two = gzip(one)
    return {1: one, 2: two, 3: gzip(two)}


class BombOrigin:
    """GET /bomb?layers=N[&cc=CACHE-CONTROL]: the N-layer bomb with ``Content-Encoding: gzip, gzip...``;
    GET /small: "hello shoal" gzipped. Counts the requests for each target."""

    def __init__(self, bodies: dict[int, bytes]) -> None:
        self.hits: dict[str, int] = {}
        origin = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                origin.hits[self.path] = origin.hits.get(self.path, 0) + 1
                parts = urlsplit(self.path)
                query = {k: v[0] for k, v in parse_qs(parts.query).items()}
                layers = int(query.get("layers", "1"))
                body = gzip(b"hello shoal") if parts.path == "/small" else bodies[layers]
                coding = "gzip" if parts.path == "/small" else ", ".join(["gzip"] * layers)
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; charset=utf-8")
                self.send_header("Content-Encoding", coding)
                self.send_header("Content-Length", str(len(body)))
                if "cc" in query:
                    self.send_header("Cache-Control", query["cc"])
                self.end_headers()
                try:
                    self.wfile.write(body)
                except OSError:  # the client stopped reading at its limit
                    self.close_connection = True

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def bomb_origin(bombs: dict[int, bytes]) -> Iterator[BombOrigin]:
    origin = BombOrigin(bombs)
    yield origin
    origin.close()


# -- in process ----------------------------------------------------------------------------------------


async def _pieces(data: bytes, size: int) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


@pytest.mark.parametrize(("layers", "sent_in"), [(1, 64 * 1024), (2, MiB), (2, 2 * MiB)])
async def test_decoding_a_bomb_stops_at_the_limit_in_small_steps(bombs: dict[int, bytes], layers: int,
                                                                 sent_in: int) -> None:  # fmt: skip
    """Whether the body comes in network-sized chunks or whole (as a stored one does), no step is larger
    than ``STEP``, and decoding ends at the limit."""
    body, largest, total = bombs[layers], 0, 0
    tracemalloc.start()
    try:
        with pytest.raises(BodyRefused, match=r"over the limit of 10485760 bytes \(decoded from gzip"):
            async for piece in decoded(_pieces(body, sent_in), [", ".join(["gzip"] * layers)], 10 * MiB):
                largest, total = max(largest, len(piece)), total + len(piece)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert 0 < largest <= STEP and total <= 10 * MiB
    assert peak < 4 * MiB, peak  # a chunk as sent and a few steps, not what it expands to


@pytest.mark.parametrize(
    ("content_encoding", "message"),
    [
        (["gzip, gzip, gzip"], "stacks 3 codings; at most 2"),
        (["gzip", "deflate, gzip"], "stacks 3 codings; at most 2"),
        (["br"], "'br' is not supported"),
        (["compress"], "'compress' is not supported"),
    ],
)
async def test_stacked_or_unknown_codings_are_refused(content_encoding: list[str], message: str) -> None:
    with pytest.raises(BodyRefused, match=re.escape(message)):
        async for _ in decoded(_pieces(b"\x1f\x8b", 1), content_encoding, MiB):
            pass


@pytest.mark.parametrize("coding", ["gzip", "x-gzip", "deflate", "identity", ""])
async def test_ordinary_bodies_decode_whole(coding: str) -> None:
    text = b"".join(b"line %d of a page that compresses well\n" % i for i in range(20000))
    if coding in ("gzip", "x-gzip"):
        sent = gzip(text)
    elif coding == "deflate":
        sent = zlib.compress(text)
    else:
        sent = text
    out = b"".join([piece async for piece in decoded(_pieces(sent, 1000), [coding], len(text))])
    assert out == text
    raw_deflate = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)  # as some servers send "deflate"
    sent = raw_deflate.compress(text) + raw_deflate.flush()
    assert b"".join([piece async for piece in decoded(_pieces(sent, 1000), ["deflate"], len(text))]) == text


async def test_corrupt_data_is_a_clear_error() -> None:
    with pytest.raises(BodyRefused, match="gzip data is corrupt"):
        async for _ in decoded(_pieces(b"not gzip at all" * 10, 7), ["gzip"], MiB):
            pass


async def test_fetcher_holds_no_more_than_its_limit_of_a_bomb(bomb_origin: BombOrigin) -> None:
    fetch = Fetcher(client(timeout=10.0), max_bytes=2 * MiB)  # more than the bombs as sent
    tracemalloc.start()
    try:
        async with fetch.client:
            for layers in (1, 2):
                context = TaskContext(task_id="t", name="page", type="fetch", target=f"{bomb_origin.url}/bomb?layers="
                                      f"{layers}", params={}, attempt=1, node="n1")  # fmt: skip
                with pytest.raises(FetchFailed, match=r"over the limit of 2097152 bytes \(decoded from gzip"):
                    await fetch(context)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 * MiB, peak


# -- end to end, on a node -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def node(module_redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestNode]:
    args = ["--cache-max-value", str(CACHE_MAX_VALUE)]
    started = TestNode(tmp_path_factory.mktemp("bomb-node"), module_redis_url, args=args).start()
    yield started
    started.stop(timeout=15)


class Peak:
    """The peak RSS of a process (``VmHWM``), measured from the moment it was made."""

    def __init__(self, pid: int) -> None:
        self.status = Path(f"/proc/{pid}/status")
        Path(f"/proc/{pid}/clear_refs").write_text("5")  # resets VmHWM to the RSS of now
        self.start = self._kib("VmHWM")

    def growth(self) -> int:
        return (self._kib("VmHWM") - self.start) * 1024

    def _kib(self, field: str) -> int:
        found = re.search(rf"^{field}:\s+(\d+) kB", self.status.read_text(), re.MULTILINE)
        assert found is not None, f"no {field} in {self.status}"
        return int(found.group(1))


def run_fetch(api: httpx.Client, url: str) -> dict[str, Any]:
    response = api.post("/api/v1/tasks", json={"name": "page", "type": "fetch", "target": url})
    assert response.status_code == 201, response.text
    task_id = response.json()["id"]

    def ended() -> dict[str, Any] | None:
        task: dict[str, Any] = api.get(f"/api/v1/tasks/{task_id}").json()
        return task if task["state"] in TERMINAL else None

    task = wait_for(ended, 30, f"fetch of {url} to end")
    assert task is not None
    return task


@pytest.mark.e2e
def test_a_gzip_bomb_fails_the_fetch_and_the_node_stays_small(node: TestNode, bomb_origin: BombOrigin) -> None:
    assert node.pid is not None
    with httpx.Client(base_url=node.http_url, headers=node.headers(), timeout=30, trust_env=False) as api:
        small = run_fetch(api, f"{bomb_origin.url}/small")  # also warms the node up before the measure
        assert small["state"] == "SUCCEED", small["error"]
        assert api.get(f"/api/v1/tasks/{small['id']}/result").json()["code"] == "hello shoal"

        peak = Peak(node.pid)
        for target in (
            "/bomb?layers=1",  # 1 MB as sent: over the cache's largest value, decoded as it streams in
            "/bomb?layers=2",  # 2 KB: read whole by the cache fill, decoded from that
            "/bomb?layers=2&cc=max-age=600",  # stored ...
            "/bomb?layers=2&cc=max-age=600",  # ... and decoded from the cache on this second fetch
        ):
            task = run_fetch(api, bomb_origin.url + target)
            assert task["state"] == "RUNTIME_ERROR", (target, task)
            assert "over the limit of 10485760 bytes (decoded from gzip" in task["error"], (target, task["error"])
        assert bomb_origin.hits["/bomb?layers=2&cc=max-age=600"] == 1  # the second came from the cache

        stacked = run_fetch(api, f"{bomb_origin.url}/bomb?layers=3")
        assert stacked["state"] == "RUNTIME_ERROR"
        assert "Content-Encoding stacks 3 codings; at most 2 are decoded" in stacked["error"]
        assert peak.growth() < RSS_GROWTH, f"the node's peak RSS grew by {peak.growth() / MiB:.0f} MiB"
    assert "Traceback" not in node.log()


@pytest.mark.e2e
def test_the_proxy_passes_a_gzip_bomb_on_encoded_and_stays_small(
    node: TestNode, bomb_origin: BombOrigin, bombs: dict[int, bytes]
) -> None:
    assert node.pid is not None
    proxy = f"http://user:{node.token}@127.0.0.1:{node.proxy_port}"
    with httpx.Client(proxy=proxy, trust_env=False, timeout=30) as http:
        http.get(f"{bomb_origin.url}/small").raise_for_status()  # warms the proxy up before the measure
        peak = Peak(node.pid)
        stored = "/bomb?layers=2&cc=max-age=600&via=proxy"
        for target, layers, cache in [
            ("/bomb?layers=1&via=proxy", 1, "MISS"),  # streamed past the cache
            (stored, 2, "MISS"),  # stored ...
            (stored, 2, "HIT"),  # ... and served from the cache
            ("/bomb?layers=3&via=proxy", 3, "MISS"),  # stacked deeper than fetch decodes: the client decides
        ]:
            with http.stream("GET", bomb_origin.url + target) as response:
                assert (response.status_code, response.headers["x-cache"]) == (200, cache), target
                assert response.headers["content-encoding"] == ", ".join(["gzip"] * layers)
                assert b"".join(response.iter_raw()) == bombs[layers], target
        assert bomb_origin.hits[stored] == 1
        assert peak.growth() < RSS_GROWTH, f"the node's peak RSS grew by {peak.growth() / MiB:.0f} MiB"


def test_the_bombs_are_what_they_claim(bombs: dict[int, bytes]) -> None:
    """Small as sent; each layer is gzip of the one below; the bottom one is gzip of zeros, a valid stream
    (zlib checks its CRC and length), here on 8 MiB rather than 1 GiB."""
    assert len(bombs[1]) < 2 * MiB and len(bombs[2]) < 64 * 1024 and len(bombs[3]) < 64 * 1024
    assert zlib.decompress(bombs[3], zlib.MAX_WBITS | 16) == bombs[2]
    assert zlib.decompress(bombs[2], zlib.MAX_WBITS | 16) == bombs[1]
    assert zlib.decompress(gzip_of_zeros(8 * MiB), zlib.MAX_WBITS | 16) == bytes(8 * MiB)
