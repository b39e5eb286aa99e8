"""The caching forward proxy of a real node (``--proxy``), used as a user would: httpx with ``proxy=``,
curl with ``http_proxy``, HTTPS through CONNECT to a local TLS origin; and ``fetch`` tasks through the
same HTTP cache. One node serves the whole module (its proxy timeout is short for the 504 case)."""

from __future__ import annotations

import datetime
import ipaddress
import os
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from shoal.store.embedded import EmbeddedRedis
from shoal.testing import TestNode, free_port, wait_for

pytestmark = pytest.mark.e2e
PROXY_TIMEOUT = 1.0


@pytest.fixture(scope="module")
def node(module_redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestNode]:
    # CONNECT reaches only 443 by default; the TLS origin listens on a free loopback port.
    args = ["--proxy-timeout", str(PROXY_TIMEOUT), "--shutdown-grace", "2", "--proxy-allow", "127.0.0.1"]
    started = TestNode(tmp_path_factory.mktemp("proxy-node"), module_redis_url, args=args).start()
    yield started
    started.stop(timeout=15)


@pytest.fixture(scope="module")
def proxy_url(node: TestNode) -> str:
    return f"http://user:{node.token}@127.0.0.1:{node.proxy_port}"


@pytest.fixture
def client(proxy_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(proxy=proxy_url, trust_env=False, timeout=10) as c:
        yield c


def page(origin: Any, **params: str) -> str:
    """A /cacheable URL no other test uses."""
    return f"{origin.url}/cacheable?{urlencode({'k': uuid.uuid4().hex[:8], **params})}"


def hits(origin: Any, url: str) -> int:
    return int(origin.hits_of(url.removeprefix(origin.url)))


def test_second_get_of_a_cacheable_page_is_a_hit(client: httpx.Client, origin: Any, node: TestNode) -> None:
    url = page(origin, cc="max-age=60")
    first = client.get(url)
    second = client.get(url)
    assert (first.status_code, first.headers["x-cache"]) == (200, "MISS")
    assert (second.status_code, second.headers["x-cache"], second.text) == (200, "HIT", first.text)
    assert second.headers["via"] == f"1.1 shoal-{node.name}" and "age" in second.headers
    assert hits(origin, url) == 1
    metrics = httpx.get(f"{node.http_url}/metrics", headers=node.headers(), trust_env=False).text
    hit_lines = [line for line in metrics.splitlines() if line.startswith('shoal_proxy_requests_total{cache="hit"}')]
    assert hit_lines and float(hit_lines[0].split()[-1]) >= 1, metrics


def test_no_store_page_is_not_cached(client: httpx.Client, origin: Any) -> None:
    url = page(origin, cc="no-store")
    assert [client.get(url).headers["x-cache"] for _ in range(2)] == ["MISS", "MISS"]
    assert hits(origin, url) == 2


def test_stale_page_with_an_etag_is_revalidated(client: httpx.Client, origin: Any) -> None:
    url = page(origin, cc="max-age=0", etag="v")
    first = client.get(url)
    again = client.get(url)
    assert again.headers["x-cache"] == "REVALIDATED"
    assert again.text == first.text and again.text.startswith("v1 ")  # the origin sent a 304, not a body
    assert hits(origin, url) == 2 and origin.conditional_hits(url.removeprefix(origin.url)) == 1


def test_missing_or_wrong_proxy_authorization_gets_407(node: TestNode, origin: Any) -> None:
    url = page(origin)
    for proxy in (f"http://127.0.0.1:{node.proxy_port}", f"http://user:not-the-token@127.0.0.1:{node.proxy_port}"):
        with httpx.Client(proxy=proxy, trust_env=False, timeout=10) as c:
            response = c.get(url)
        assert response.status_code == 407
        assert response.headers["proxy-authenticate"] == 'Basic realm="shoal"'
    assert hits(origin, url) == 0


def test_dead_origin_gets_502(client: httpx.Client) -> None:
    response = client.get(f"http://127.0.0.1:{free_port()}/gone")
    assert response.status_code == 502 and "cannot connect" in response.text


def test_slow_origin_gets_504(client: httpx.Client, origin: Any) -> None:
    started = time.monotonic()
    response = client.get(f"{origin.url}/slow?s=3&k={uuid.uuid4().hex[:8]}")
    assert response.status_code == 504 and f"within {PROXY_TIMEOUT:g}s" in response.text
    assert time.monotonic() - started < 2.5


def test_connect_tunnels_to_a_tls_origin_without_caching(
    proxy_url: str, tls_origin: tuple[str, ssl.SSLContext, list[int]]
) -> None:
    url, trust, count = tls_origin
    with httpx.Client(proxy=proxy_url, verify=trust, trust_env=False, timeout=10) as c:
        bodies = [c.get(url) for _ in range(2)]
    assert [(r.status_code, r.text) for r in bodies] == [(200, "secure hello")] * 2
    assert "x-cache" not in bodies[1].headers  # the proxy saw only encrypted bytes
    assert count == [2]


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_an_ordinary_client_uses_the_proxy_from_its_environment(proxy_url: str, origin: Any) -> None:
    url = page(origin, cc="max-age=60")
    env = {"PATH": os.environ["PATH"], "http_proxy": proxy_url}
    outputs = [subprocess.run(["curl", "-s", "-i", "--max-time", "10", url], env=env, capture_output=True,
                              text=True, timeout=20).stdout for _ in range(2)]  # fmt: skip
    assert "200" in outputs[0].splitlines()[0] and "x-cache: miss" in outputs[0].lower()
    assert "x-cache: hit" in outputs[1].lower() and outputs[1].rstrip().endswith(url.split("k=")[1].split("&")[0])
    assert hits(origin, url) == 1


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed (apt-get install curl)")
def test_the_readme_proxy_example_as_written(proxy_url: str, tmp_path: Path) -> None:
    """The README's example: a directory served by ``python3 -m http.server`` (Last-Modified, no max-age),
    curl with lower-case ``http_proxy``: MISS, then REVALIDATED. curl ignores upper-case HTTP_PROXY."""
    (tmp_path / "page.html").write_text("hello page\n")
    server = subprocess.Popen([sys.executable, "-m", "http.server", str(port := free_port()), "--bind", "127.0.0.1",
                               "-d", str(tmp_path)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    url = f"http://127.0.0.1:{port}/page.html"
    try:
        wait_for(lambda: httpx.get(url, trust_env=False).status_code == 200, 10, "the origin to serve")

        def curl(**proxy: str) -> str:
            env = {"PATH": os.environ["PATH"], **proxy}
            done = subprocess.run(["curl", "-si", "--max-time", "10", url], env=env, capture_output=True, text=True,
                                  timeout=20)  # fmt: skip
            return next((line.split(":", 1)[1].strip() for line in done.stdout.splitlines()
                         if line.lower().startswith("x-cache:")), "none")  # fmt: skip

        assert [curl(http_proxy=proxy_url), curl(http_proxy=proxy_url)] == ["MISS", "REVALIDATED"]
        assert curl(HTTP_PROXY=proxy_url) == "none", "curl went through the proxy on upper-case HTTP_PROXY"
    finally:
        server.terminate()
        server.wait(10)


def test_fetch_tasks_say_whether_the_cache_served_them(node: TestNode, origin: Any) -> None:
    url = page(origin, cc="max-age=60")
    with httpx.Client(base_url=node.http_url, headers=node.headers(), trust_env=False, timeout=10) as api:

        def fetched() -> dict[str, Any]:
            task_id = api.post("/api/v1/tasks", json={"name": "page", "type": "fetch", "target": url}).json()["id"]
            path = f"/api/v1/tasks/{task_id}/result"
            result = wait_for(lambda: (r := api.get(path)).status_code == 200 and r.json(), 20, "the fetch's result")
            body: dict[str, Any] = result
            return body

        results = [fetched(), fetched()]
    assert [r["meta"]["cache"] for r in results] == ["MISS", "HIT"]
    assert results[0]["code"] == results[1]["code"] and results[0]["code"].startswith("v1 ")
    assert hits(origin, url) == 1


def test_a_taken_proxy_port_stops_the_node_with_a_message(redis_server: EmbeddedRedis, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        other = TestNode(tmp_path, redis_server.url, name="node-2", args=["--proxy", f"127.0.0.1:{port}"])
        other.start(ready=False)
        code = other.proc.wait(30)
    assert code == 1
    assert f"cannot serve the proxy on 127.0.0.1:{port}" in other.log()
    assert "Traceback" not in other.log()


# -- a TLS origin for CONNECT ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls_origin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, ssl.SSLContext, list[int]]]:
    """An HTTPS server on loopback with a self-signed certificate; yields its URL, a context that trusts
    it, and its hit count."""
    cert_path, key_path = _self_signed(tmp_path_factory.mktemp("tls"))
    count = [0]

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            count[0] += 1
            body = b"secure hello"
            self.send_response(200)
            self.send_header("Cache-Control", "max-age=60")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_path, key_path)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    trust = ssl.create_default_context(cafile=str(cert_path))
    yield f"https://127.0.0.1:{server.server_address[1]}/", trust, count
    server.shutdown()
    server.server_close()


def _self_signed(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "shoal test origin")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path
