"""TLS identity on pooled connections: two names on one address, a certificate valid for one of them.

A real HTTPS origin listens on 127.0.0.1 with a certificate for ``good.test`` only; ``good.test`` and
``other.test`` both resolve to 127.0.0.1 through a test resolver that goes on to shoal's own checks
(``shoal.addresses.resolve``). ``fetch`` and the proxy's upstream client must refuse ``other.test`` with a
TLS error every time, also right after a request for ``good.test`` left a verified connection in the pool.
"""

from __future__ import annotations

import datetime
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from shoal.addresses import IPAddress, resolve
from shoal.outbound import CheckedBackend, client
from shoal.proxy.upstream import Upstream
from shoal.worker.handlers import TaskContext
from shoal.worker.handlers.fetch import Fetcher, FetchFailed

#: The names the test resolver points at loopback; the certificate is valid for the first only.
GOOD, OTHER = "good.test", "other.test"


async def two_names(host: str, port: int) -> IPAddress:
    """Both test names are 127.0.0.1, then shoal's own checks; no other host is ever looked up or contacted."""
    address = "127.0.0.1" if host in (GOOD, OTHER) else host
    if address != "127.0.0.1":
        raise AssertionError(f"tried to resolve {host}")
    return await resolve(address, port)


class TlsOrigin:
    """An HTTPS server on 127.0.0.1 with a certificate for ``good.test`` alone."""

    def __init__(self, directory: Path) -> None:
        cert_path, key_path = _certificate(directory, GOOD)

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                body = b"secure hello"
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert_path, key_path)
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self.trust = ssl.create_default_context(cafile=str(cert_path))
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def url(self, name: str) -> str:
        return f"https://{name}:{self.port}/"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def tls_origin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsOrigin]:
    origin = TlsOrigin(tmp_path_factory.mktemp("tls-pool"))
    yield origin
    origin.close()


def context(url: str) -> TaskContext:
    return TaskContext(task_id="t", name="page", type="fetch", target=url, params={}, attempt=1, node="n1")


async def test_fetch_refuses_a_name_the_certificate_does_not_cover_after_one_it_does(tls_origin: TlsOrigin) -> None:
    fetch = Fetcher(client(timeout=10.0, verify=tls_origin.trust, backend=CheckedBackend(two_names)))
    async with fetch.client:
        for _ in range(2):  # the good name's verified connection stays in the pool between the two
            assert (await fetch(context(tls_origin.url(GOOD)))).code == "secure hello"
            with pytest.raises(FetchFailed) as refused:
                await fetch(context(tls_origin.url(OTHER)))
            assert "certificate verify failed" in str(refused.value), refused.value
            assert f"not valid for '{OTHER}'" in str(refused.value), refused.value


async def test_the_proxy_refuses_a_name_the_certificate_does_not_cover_after_one_it_does(
    tls_origin: TlsOrigin,
) -> None:
    upstream = Upstream(timeout_s=10.0, via="1.1 shoal-test", max_connections=8, resolve=two_names,
                        verify=tls_origin.trust)  # fmt: skip
    try:
        for _ in range(2):  # the good name's verified connection stays in the pool between the two
            response = await upstream.open("GET", httpx.URL(tls_origin.url(GOOD)), [])
            try:
                assert response.status_code == 200 and await response.aread() == b"secure hello"
            finally:
                await response.aclose()
            with pytest.raises(httpx.ConnectError) as refused:
                await upstream.open("GET", httpx.URL(tls_origin.url(OTHER)), [])
            status, text = upstream.failure(refused.value, f"{OTHER}:{tls_origin.port}")
            assert status == 502 and text.startswith(f"cannot connect to {OTHER}:{tls_origin.port}"), text
            assert "certificate verify failed" in text and f"not valid for '{OTHER}'" in text, text
    finally:
        await upstream.aclose()


def _certificate(directory: Path, name: str) -> tuple[Path, Path]:
    """A self-signed certificate for ``name`` alone (no other name, no IP address), and its key."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path
