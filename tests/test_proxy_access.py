"""Where the proxy goes for a token holder: two real nodes of one cluster, used as a proxy user would.

``strict`` keeps the defaults (CONNECT only to 443); ``open`` allows CONNECT to all of loopback, as a test
setup or a single-machine operator might. Both must still refuse the cluster's own store, gRPC, HTTP and
proxy ports, this node's and the other node's, by address and by name, CONNECT and plain requests alike.
"""

from __future__ import annotations

import base64
import ipaddress
import socket
import threading
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from shoal.addresses import Unresolvable, resolve
from shoal.cluster.addresses import ClusterAddresses
from shoal.proxy.access import AccessRefused, ProxyAccess, parse_rule, parse_rules
from shoal.testing import TestNode, wait_for


class Listener:
    """A plain TCP service on loopback that answers every line with ``echo:`` and the line."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._echo, args=(conn,), daemon=True).start()

    @staticmethod
    def _echo(conn: socket.socket) -> None:
        with conn, conn.makefile("rb") as lines:
            for line in lines:
                conn.sendall(b"echo:" + line)

    def close(self) -> None:
        self.sock.close()


@pytest.fixture(scope="module")
def listener() -> Iterator[Listener]:
    service = Listener()
    yield service
    service.close()


@pytest.fixture(scope="module")
def denied() -> Iterator[Listener]:
    service = Listener()
    yield service
    service.close()


@pytest.fixture(scope="module")
def nodes(
    module_redis_url: str, tmp_path_factory: pytest.TempPathFactory, denied: Listener
) -> Iterator[dict[str, TestNode]]:
    data = tmp_path_factory.mktemp("proxy-access")
    strict = TestNode(data, module_redis_url, name="strict", args=["--heartbeat-interval", "0.25"])
    wide = TestNode(data, module_redis_url, name="open", args=["--heartbeat-interval", "0.25", "--proxy-allow",
                    "127.0.0.0/8", "--proxy-deny", f"127.0.0.1:{denied.port}"])  # fmt: skip
    started: list[TestNode] = []
    try:
        for node in (strict, wide):
            started.append(node.start())
        yield {"strict": strict, "open": wide}
    finally:
        for node in started:
            node.stop(timeout=15)


def connect(node: TestNode, target: str) -> tuple[int, str, socket.socket]:
    """CONNECT ``target`` through ``node``'s proxy: the status, the proxy's text, and the socket."""
    sock = socket.create_connection(("127.0.0.1", node.proxy_port), timeout=10)
    auth = "Basic " + base64.b64encode(f"user:{node.token}".encode()).decode()
    sock.sendall(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\nProxy-Authorization: {auth}\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(4096)
        if not chunk:
            break
        head += chunk
    status = int(head.split()[1])
    body = head.partition(b"\r\n\r\n")[2]
    if status != 200:
        while chunk := sock.recv(4096):
            body += chunk
    return status, body.decode(errors="replace").strip(), sock


def connect_status(node: TestNode, target: str) -> tuple[int, str]:
    status, text, sock = connect(node, target)
    sock.close()
    return status, text


def get(node: TestNode, url: str) -> httpx.Response:
    with httpx.Client(proxy=f"http://user:{node.token}@127.0.0.1:{node.proxy_port}", trust_env=False,
                      timeout=10) as client:  # fmt: skip
        return client.get(url)


def proxy_event(node: TestNode, event: str) -> float:
    """A ``shoal_proxy_events_total`` count from the node's /metrics."""
    metrics = httpx.get(f"{node.http_url}/metrics", headers=node.headers(), trust_env=False).text
    line = f'shoal_proxy_events_total{{event="{event}"}} '
    return float(next(x for x in metrics.splitlines() if x.startswith(line)).split()[-1])


def own_addresses(node: TestNode, redis_url: str) -> dict[str, str]:
    store = urlsplit(redis_url)
    return {
        "store": f"127.0.0.1:{store.port}",
        "grpc": node.grpc_addr,
        "http": f"127.0.0.1:{node.http_port}",
        "proxy": f"127.0.0.1:{node.proxy_port}",
        "grpc by name": f"localhost:{node.grpc_port}",
    }


@pytest.mark.e2e
@pytest.mark.parametrize("via", ["strict", "open"])
def test_the_clusters_own_addresses_are_refused_even_where_loopback_is_allowed(
    nodes: dict[str, TestNode], module_redis_url: str, via: str
) -> None:
    proxy = nodes[via]
    other = nodes["open" if via == "strict" else "strict"]
    targets = {**own_addresses(proxy, module_redis_url),
               **{f"other node's {k}": v for k, v in own_addresses(other, module_redis_url).items()}}  # fmt: skip

    def all_refused() -> dict[str, tuple[int, str]]:
        seen = {what: connect_status(proxy, target) for what, target in targets.items()}
        seen |= {f"GET {what}": (r.status_code, r.text.strip()) for what, target in targets.items()
                 for r in [get(proxy, f"http://{target}/")]}  # fmt: skip
        return seen if all(status == 403 and "this cluster's own addresses" in text
                           for status, text in seen.values()) else {}  # fmt: skip

    # The other node is known from its record in the store, read again every few seconds.
    wait_for(all_refused, 15, f"every cluster address refused as the cluster's through {via}")
    assert get(proxy, f"http://127.0.0.1:{proxy.http_port}/healthz").status_code == 403


@pytest.mark.e2e
def test_connect_goes_only_to_443_by_default(nodes: dict[str, TestNode], listener: Listener) -> None:
    status, text = connect_status(nodes["strict"], f"127.0.0.1:{listener.port}")
    assert status == 403
    assert f"CONNECT goes only to port 443 (proxy_connect_ports), not {listener.port}" in text


@pytest.mark.e2e
def test_proxy_allow_opens_connect_to_a_network(nodes: dict[str, TestNode], listener: Listener) -> None:
    status, _, sock = connect(nodes["open"], f"127.0.0.1:{listener.port}")
    with sock:
        assert status == 200
        sock.sendall(b"hello\n")
        assert sock.recv(100) == b"echo:hello\n"


@pytest.mark.e2e
def test_plain_requests_still_reach_other_ports(nodes: dict[str, TestNode], origin: Any) -> None:
    for node in nodes.values():
        response = get(node, f"{origin.url}/hello")
        assert (response.status_code, response.text) == (200, "hello shoal")


@pytest.mark.e2e
def test_proxy_deny_beats_proxy_allow(nodes: dict[str, TestNode], denied: Listener) -> None:
    status, text = connect_status(nodes["open"], f"127.0.0.1:{denied.port}")
    assert (status, text) == (403, f"refused: 127.0.0.1:{denied.port} is denied by proxy_deny")
    response = get(nodes["open"], f"http://127.0.0.1:{denied.port}/")
    assert response.status_code == 403 and "denied by proxy_deny" in response.text
    assert connect_status(nodes["strict"], f"127.0.0.1:{denied.port}")[0] == 403  # by port: strict allows no more


@pytest.mark.e2e
def test_refusals_are_logged_without_secrets(nodes: dict[str, TestNode], module_redis_url: str) -> None:
    node = nodes["strict"]
    target = own_addresses(node, module_redis_url)["store"]
    assert get(node, f"http://{target}/secret-path?key=hunter2").status_code == 403
    line = wait_for(lambda: next((x for x in node.log().splitlines() if "proxy refused a request to" in x
                                  and target in x), None), 10, "the refusal in the log")  # fmt: skip
    assert "this cluster's own addresses" in line
    assert proxy_event(node, "refused") >= 1
    assert "hunter2" not in node.log() and "secret-path" not in node.log() and node.token not in node.log()


@pytest.mark.e2e
def test_a_host_name_that_cannot_be_encoded_gets_an_answer(nodes: dict[str, TestNode]) -> None:
    status, text = connect_status(nodes["open"], "x..y:443")
    assert (status, text) == (502, "cannot resolve x..y: not a valid host name")
    response = get(nodes["open"], "http://x..y/")
    assert response.status_code in (400, 502) and response.text.strip(), response


# -- the policy's rules, without a node ------------------------------------------------------------------


def test_rules_are_networks_or_names_with_an_optional_port() -> None:
    assert (
        parse_rule("10.0.0.0/8").network == ipaddress.ip_network("10.0.0.0/8") and parse_rule("10.0.0.0/8").port is None
    )
    assert (parse_rule("10.1.2.3:22").network, parse_rule("10.1.2.3:22").port) == (
        ipaddress.ip_network("10.1.2.3/32"),
        22,
    )
    assert (parse_rule("[fd00::/8]:8443").network, parse_rule("[fd00::/8]:8443").port) == (
        ipaddress.ip_network("fd00::/8"),
        8443,
    )
    assert parse_rule("::1").network == ipaddress.ip_network("::1/128")
    assert (parse_rule("Git.Internal.:22").name, parse_rule("Git.Internal.:22").port) == ("git.internal", 22)
    for bad in ("10.0.0.0/33:x", "host:0", "host:65536", "bad host", "[::1", "a..b", "", "h\u00e9llo.example"):
        with pytest.raises(ValueError):
            parse_rule(bad)
    with pytest.raises(ValueError, match="option 'proxy_deny': at most 1000 entries"):
        parse_rules(["10.0.0.1"] * 1001, "proxy_deny")


async def test_the_clusters_addresses_beat_the_policy_and_deny_beats_allow() -> None:
    cluster = ClusterAddresses()
    cluster.add([("127.0.0.1", 6379), ("0.0.0.0", 8080), ("10.1.1.1", 6666)])
    await cluster.refresh()
    allow = parse_rules(["127.0.0.0/8", "10.0.0.0/8"], "proxy_allow")
    deny = parse_rules(["10.9.0.0/16", "127.0.0.1:2222"], "proxy_deny")
    access = ProxyAccess(connect_ports=[443], allow=allow, deny=deny, cluster=cluster)
    await access.refresh()

    def verdict(address: str, port: int, tunnel: bool = True, host: str = "") -> str:
        try:
            access.check(host or address, ipaddress.ip_address(address), port, tunnel=tunnel)
        except AccessRefused as exc:
            return str(exc)
        return "ok"

    assert "own addresses" in verdict("127.0.0.1", 6379)  # allowed network, still the store
    assert "own addresses" in verdict("127.0.0.2", 6379, tunnel=False)  # loopback reaches a loopback listener
    assert "own addresses" in verdict("0.0.0.0", 8080)  # a wildcard listener, by every address of this host
    assert "own addresses" in verdict("::1", 8080)
    assert "own addresses" in verdict("10.1.1.1", 6666, tunnel=False)  # another node's, by its address
    assert verdict("10.1.1.2", 6666) == "ok"
    assert "denied by proxy_deny" in verdict("10.9.1.1", 443)  # deny beats allow
    assert "denied by proxy_deny" in verdict("127.0.0.1", 2222)
    assert verdict("127.0.0.1", 2223) == "ok"  # allowed network: any port
    assert "CONNECT goes only to port 443" in verdict("192.0.2.1", 8443)
    assert verdict("192.0.2.1", 8443, tunnel=False) == "ok"  # plain requests: any other port
    assert verdict("192.0.2.1", 443) == "ok"


async def test_an_address_is_checked_for_every_address_it_reaches() -> None:
    """A zone (``%1``) is ignored by the kernel for an address that is not link-local, and NAT64, 6to4 and
    IPv4-mapped addresses reach the IPv4 address inside: none may slip past the cluster's or the deny list."""
    cluster = ClusterAddresses()
    cluster.add([("fd00::5", 6379), ("10.0.0.9", 6379)])
    await cluster.refresh()
    access = ProxyAccess(connect_ports=[443], allow=(), deny=parse_rules(["10.0.0.0/8"], "proxy_deny"),
                         cluster=cluster)  # fmt: skip

    def verdict(address: str, port: int) -> str:
        try:
            access.check(address, ipaddress.ip_address(address), port, tunnel=False)
        except AccessRefused as exc:
            return str(exc)
        return "ok"

    for reaches_the_store in ("fd00::5%1", "64:ff9b::a00:9", "::ffff:10.0.0.9", "2002:a00:9::1"):
        assert "own addresses" in verdict(reaches_the_store, 6379), reaches_the_store
    for reaches_the_denied in ("64:ff9b::a00:1", "2002:a00:1::1", "::ffff:10.1.2.3"):
        assert "denied by proxy_deny" in verdict(reaches_the_denied, 80), reaches_the_denied
    assert verdict("fd00::7%1", 6379) == "ok"


async def test_a_name_that_cannot_be_encoded_is_unresolvable_not_a_crash() -> None:
    with pytest.raises(Unresolvable, match="not a valid host name"):
        await resolve("x..y", 443)
