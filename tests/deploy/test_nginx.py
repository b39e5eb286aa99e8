"""A real nginx running deploy/nginx.conf in front of three real nodes, all on loopback.

The nodes listen on 127.0.0.2, .3 and .4 with the same ports, as containers on one network would, and a
loopback DNS server answers the shipped upstream name (``shoal-nodes``) with their three addresses. Of the
shipped file only its three "site:" lines are changed (DNS server, listen port, the nodes' port), plus
where this nginx keeps its pid and temporary files; everything a client sees goes through the shipped
locations: the API with and without the token, the live event stream, and a node killed behind nginx.
"""

from __future__ import annotations

import os
import pwd
import re
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import httpx
import pytest

from shoal.auth import load_or_create_token
from shoal.launcher import NodeProcess
from shoal.testing import wait_for

from .conftest import DEPLOY, tool
from .dns import LoopbackDNS

pytestmark = pytest.mark.e2e

NODES = {"node-a": "127.0.0.2", "node-b": "127.0.0.3", "node-c": "127.0.0.4"}
UPSTREAM_NAME = "shoal-nodes"


def nginx_binary() -> str:
    return tool("nginx", ".ci/run installs it: apt-get install nginx")


def replace_once(text: str, pattern: str, new: str) -> str:
    """Replace the one line matching ``pattern``; the shipped file must have exactly one."""
    text, count = re.subn(pattern, new, text, flags=re.M)
    assert count == 1, f"expected one line matching {pattern!r} in deploy/nginx.conf, found {count}"
    return text


def site_conf(tmp: Path, *, dns: str, listen: int, node_port: int) -> Path:
    """deploy/nginx.conf for this machine: the three site lines, and temp files kept under ``tmp``."""
    text = (DEPLOY / "nginx.conf").read_text()
    text = replace_once(text, r"^(\s*)resolver \S+ (.*# site:.*)$", rf"\1resolver {dns} \2")
    text = replace_once(text, r"^(\s*)listen \S+;(.*# site:.*)$", rf"\1listen 127.0.0.1:{listen};\2")
    text = replace_once(text, r"^(\s*set \$shoal_nodes [\w.-]+:)\d+;(.*# site:.*)$", rf"\g<1>{node_port};\2")
    kinds = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    temp = "".join(f"    {kind}_temp_path {tmp}/{kind};\n" for kind in kinds)
    text = replace_once(text, r"^http \{$", "http {\n" + temp)
    path = tmp / "nginx.conf"
    path.write_text(text)
    return path


def main_directives(tmp: Path, user: str | None) -> str:
    """``-g`` directives: a pid file under ``tmp``, and as root the worker user (so nothing else is chowned)."""
    directives = f"pid {tmp}/nginx.pid;"
    if os.geteuid() == 0 and user:
        directives += f" user {user};"
    return directives


def free_common_port(hosts: list[str], taken: set[int]) -> int:
    """A TCP port free on every one of ``hosts`` (loopback addresses), not in ``taken``."""
    for _ in range(100):
        with socket.socket() as probe:
            probe.bind((hosts[0], 0))
            port: int = probe.getsockname()[1]
        if port in taken:
            continue
        try:
            for host in hosts:
                with socket.socket() as s:
                    s.bind((host, port))
        except OSError:
            continue
        return port
    raise RuntimeError(f"no port free on all of {hosts}")


@dataclass
class Front:
    """nginx on ``url`` before the nodes; ``errors`` is the file nginx logs its errors to."""

    url: str
    token: str
    nodes: dict[str, NodeProcess]
    node_port: int
    dns: LoopbackDNS
    errors: Path

    def client(self, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=10.0, trust_env=False)


def test_shipped_conf_passes_nginx_t(tmp_path: Path) -> None:
    """The file as shipped, on a machine that has no node and no DNS server that knows their name."""
    nginx = nginx_binary()
    user = "www-data" if _user_exists("www-data") else None  # Debian's nginx user: its temp dirs stay its own
    command = [nginx, "-t", "-p", f"{tmp_path}/", "-e", "stderr", "-c", str(DEPLOY / "nginx.conf")]
    out = subprocess.run([*command, "-g", main_directives(tmp_path, user)], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert "syntax is ok" in out.stderr and "test is successful" in out.stderr


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


def start_nodes(tmp: Path, redis_url: str, ports: list[int]) -> dict[str, NodeProcess]:
    """One node per address of NODES, all on the same ``ports`` (HTTP, gRPC, proxy) and one token."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHOAL_") or k == "SHOAL_TEST_MULTIPLIER"}
    nodes: dict[str, NodeProcess] = {}
    for name, host in NODES.items():
        http, grpc, proxy = (f"{host}:{port}" for port in ports)
        node = NodeProcess(name, http, grpc, proxy, [], env, tmp / f"{name}.log")
        node.args = [sys.executable, "-m", "shoal", "node", "--name", name, "--data-dir", str(tmp / "data"),
                     "--redis", redis_url, "--http", http, "--grpc", grpc, "--proxy", proxy,
                     "--shutdown-grace", "2", "--heartbeat-interval", "0.5"]  # fmt: skip
        node.start()
        nodes[name] = node
    return nodes


def stop_nodes(nodes: dict[str, NodeProcess]) -> None:
    for node in nodes.values():
        node.signal(signal.SIGTERM)
    for node in nodes.values():
        if node.wait(15) is None:
            node.signal(signal.SIGKILL)
            node.wait(5)


def start_nginx(tmp: Path, conf: Path) -> subprocess.Popen[bytes]:
    """nginx in the foreground: access log to tmp/access.log, errors to tmp/nginx.err."""
    command = [nginx_binary(), "-p", f"{tmp}/", "-e", "stderr", "-c", str(conf)]
    with (tmp / "access.log").open("wb") as out, (tmp / "nginx.err").open("wb") as err:
        return subprocess.Popen([*command, "-g", "daemon off; " + main_directives(tmp, "root")],
                                stdin=subprocess.DEVNULL, stdout=out, stderr=err)  # fmt: skip


def stop_nginx(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGQUIT)  # graceful: workers finish what they serve
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


@pytest.fixture(scope="module")
def front(module_redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Front]:
    nginx_binary()
    tmp = tmp_path_factory.mktemp("nginx")
    hosts = list(NODES.values())
    taken: set[int] = set()
    for _ in range(4):
        taken.add(free_common_port(hosts, taken))
    http_port, grpc_port, proxy_port, listen = sorted(taken)
    token = load_or_create_token(tmp / "data")
    dns = LoopbackDNS({UPSTREAM_NAME: hosts})
    nodes: dict[str, NodeProcess] = {}
    proc: subprocess.Popen[bytes] | None = None
    try:
        nodes = start_nodes(tmp, module_redis_url, [http_port, grpc_port, proxy_port])
        for node in nodes.values():
            wait_for(partial(_ready, node), 30, f"{node.name} to be ready")
        proc = start_nginx(tmp, site_conf(tmp, dns=dns.address, listen=listen, node_port=http_port))
        url = f"http://127.0.0.1:{listen}"
        wait_for(lambda: httpx.get(f"{url}/nginx-healthz", trust_env=False).status_code == 200, 10, "nginx to serve")
        yield Front(url=url, token=token, nodes=nodes, node_port=http_port, dns=dns, errors=tmp / "nginx.err")
    finally:
        if proc is not None:
            stop_nginx(proc)
        stop_nodes(nodes)
        dns.close()


def _ready(node: NodeProcess) -> bool:
    if not node.alive():
        raise RuntimeError(f"{node.name} exited:\n{node.log_path.read_text(errors='replace')[-3000:]}")
    return httpx.get(f"{node.http_url}/readyz", timeout=1.0, trust_env=False).status_code == 200


def test_api_answers_through_nginx_with_the_token_only(front: Front) -> None:
    with front.client(front.token) as api:
        response = api.get("/api/v1/cluster")
        assert response.status_code == 200, response.text
        view = response.json()
        assert sorted(n["name"] for n in view["nodes"]) == sorted(NODES)
        assert view["master"] in NODES
        created = api.post("/api/v1/tasks", json={"name": "via-nginx", "type": "echo", "target": "hello"})
        assert created.status_code == 201, created.text
    with front.client() as anonymous:
        refused = anonymous.get("/api/v1/cluster")
        assert refused.status_code == 401
        assert refused.headers["www-authenticate"].startswith("Bearer")
        assert anonymous.get("/readyz").status_code == 200
    with front.client("not-the-token") as wrong:
        assert wrong.get("/api/v1/tasks").status_code == 401
    assert front.dns.queries[UPSTREAM_NAME] > 0, "nginx never asked DNS for the nodes' name"


def _requests_seen(front: Front, route: str) -> dict[str, float]:
    """Each node's count of 200 answers on ``route``, read from its own /metrics."""
    labels = rf'[^}}]*route="{re.escape(route)}"[^}}]*status="200"[^}}]*'
    line = re.compile(rf"^shoal_http_requests_total\{{{labels}\}} (\S+)$", re.M)
    seen = {}
    for name, node in front.nodes.items():
        text = httpx.get(f"{node.http_url}/metrics", headers={"Authorization": f"Bearer {front.token}"},
                         trust_env=False).text  # fmt: skip
        seen[name] = sum(float(v) for v in line.findall(text))
    return seen


def test_requests_are_spread_over_the_nodes(front: Front) -> None:
    route = "/api/v1/tasks/counts"
    before = _requests_seen(front, route)
    with front.client(front.token) as api:
        for _ in range(30):
            assert api.get(route).status_code == 200
    after = _requests_seen(front, route)
    served = {name: after[name] - before[name] for name in NODES}
    assert sum(served.values()) == 30
    assert sum(1 for n in served.values() if n > 0) >= 2, f"every request went to one node: {served}"


def test_event_stream_through_nginx_is_live(front: Front) -> None:
    """A task submitted through nginx shows up on an event stream held open through nginx, within seconds."""
    lines: list[str] = []
    auth = {"Authorization": f"Bearer {front.token}"}
    listener = httpx.Client(base_url=front.url, headers=auth, timeout=httpx.Timeout(10.0, read=60.0), trust_env=False)
    with listener, listener.stream("GET", "/api/v1/events") as stream:
        assert stream.status_code == 200
        assert stream.headers["content-type"].startswith("text/event-stream")

        def read() -> None:
            try:
                for text in stream.iter_lines():
                    lines.append(text)
            except (httpx.HTTPError, RuntimeError):  # the stream closed under the reader at the end
                pass

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        with front.client(front.token) as api:
            created = api.post("/api/v1/tasks", json={"name": "live", "type": "echo", "target": "through nginx"})
            assert created.status_code == 201, created.text
            task_id = created.json()["id"]
        wait_for(lambda: any(task_id in line for line in lines if line.startswith("data:")), 5,
                 "the task's event to come through nginx")  # fmt: skip
        stream.close()
    reader.join(5)


def test_a_killed_node_does_not_break_the_api(front: Front) -> None:
    """SIGKILL a worker: nginx skips its refused address for the next one, so no call fails."""
    with front.client(front.token) as api:
        master = api.get("/api/v1/cluster").json()["master"]
        victim = next(name for name in NODES if name != master)
        front.nodes[victim].signal(signal.SIGKILL)
        front.nodes[victim].wait(10)
        codes = [api.get("/api/v1/tasks", params={"limit": 5}).status_code for _ in range(30)]
        created = api.post("/api/v1/tasks", json={"name": "after-kill", "type": "echo", "target": "still here"})
    assert codes == [200] * 30
    assert created.status_code == 201, created.text
    dead = f"{NODES[victim]}:{front.node_port}"
    log = front.errors.read_text(errors="replace")
    assert "Connection refused" in log and dead in log, f"nginx never tried the killed node {dead}:\n{log[-2000:]}"
