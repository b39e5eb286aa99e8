"""The REST API against its own ``/openapi.json``: schemathesis fuzzes a real node with every check it has.

A request the document allows and the node refuses (or the other way round), a response or event that does
not match its schema, a 405 whose ``Allow`` is wrong, a reference that does not resolve, a 500: any of them
fails the run. Excluded is ``POST /api/v1/cluster/token``, which rotates the token the fuzzer holds and would
lock it out of every later call (it is tested in ``test_api.py``).

The fuzzer runs as the ``schemathesis`` command with a fixed seed, so a run is repeatable; the token reaches
it through the environment and its config file, never its command line. ``schemathesis_hooks.py`` keeps its
``fetch`` tasks, single or batched, on the test's loopback origin, and its long polls and batches short (see
there).
"""

from __future__ import annotations

import ipaddress
import os
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from shoal import validation
from shoal.testing import TestNode, wait_for

TESTS = Path(__file__).resolve().parent
SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")
EXCLUDED = ["/api/v1/cluster/token"]
#: Warnings that mean the document itself is wrong or unusable; "missing test data" (random ids are 404) is not.
FAIL_ON = [
    "missing_auth",
    "validation_mismatch",
    "missing_deserializer",
    "unsupported_regex",
    "unresolvable_reference",
    "method_not_allowed",
    "unmatched_filter",
]
CONFIG = f"""\
headers = {{ Authorization = "Bearer ${{SHOAL_TOKEN}}" }}

[warnings]
fail-on = {FAIL_ON!r}
"""

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.timeout(300),
    pytest.mark.skipif(not SCHEMATHESIS.exists(), reason="schemathesis is in the test extra"),
]


def fuzz(node: TestNode, origin: Any, workdir: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """One schemathesis run over every operation of the node's document but ``EXCLUDED``; its ``fetch`` tasks
    fetch from ``origin``."""
    config = workdir / "schemathesis.toml"
    config.write_text(CONFIG)
    env = {
        **os.environ,
        "SHOAL_TOKEN": node.token,
        "SHOAL_FUZZ_ORIGIN": f"localhost:{origin.server.server_address[1]}",
        "SCHEMATHESIS_HOOKS": "schemathesis_hooks",
        "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]),
        "NO_COLOR": "1",
    }
    command = [str(SCHEMATHESIS), "--config-file", str(config), "run", f"{node.http_url}/openapi.json"]
    command += ["--checks", "all", "--seed", "1", "--max-examples", "10", "--workers", "1", "--no-color"]
    command += ["--request-timeout", "20", "--max-failures", "20"]
    for path in EXCLUDED:
        command += ["--exclude-path", path]
    return subprocess.run(
        [*command, *extra], cwd=workdir, env=env, capture_output=True, text=True, timeout=280, check=False
    )


def test_the_api_does_what_its_document_says(node_factory: Any, origin: Any, tmp_path: Path) -> None:
    shoal_node = node_factory(env={"SHOAL_WEBHOOK_ALLOW_LOOPBACK": "1"})  # fuzzed webhooks POST to the origin
    fetched_before = fetched(origin)
    run = fuzz(shoal_node, origin, tmp_path)
    assert run.returncode == 0, run.stdout[-12000:] + run.stderr[-3000:]
    assert "Tested: 40" in run.stdout  # every operation of the document but the token rotation
    assert shoal_node.token not in run.stdout + run.stderr
    targets = {t["target"] for t in stored_tasks(shoal_node) if t["type"] == "fetch"}
    assert targets and all(_on_loopback(t) for t in targets), sorted(targets)
    wait_for(lambda: fetched(origin) > fetched_before, timeout=30, message="a fuzzed fetch at the test's origin")


def stored_tasks(node: TestNode) -> list[dict[str, Any]]:
    """Every task the node's store holds, page by page."""
    found: list[dict[str, Any]] = []
    cursor: str | None = None
    with httpx.Client(base_url=node.http_url, headers={"Authorization": f"Bearer {node.token}"}, timeout=30) as api:
        while True:
            params: dict[str, Any] = {"limit": validation.MAX_PAGE, **({"cursor": cursor} if cursor else {})}
            page = api.get("/api/v1/tasks", params=params).raise_for_status().json()
            found += page["tasks"]
            cursor = page["next_cursor"]
            if not cursor:
                return found


def fetched(origin: Any) -> int:
    """Requests the test's origin has answered so far."""
    with origin.lock:
        return sum(origin.counts.values())


def _on_loopback(url: str) -> bool:
    try:
        host = urlsplit(url.strip()).hostname or ""
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def test_the_batch_submit_is_documented_as_it_behaves(shoal_node: TestNode) -> None:
    doc = httpx.get(f"{shoal_node.http_url}/openapi.json", timeout=10).json()
    batch = doc["paths"]["/api/v1/tasks/batch"]["post"]
    body = batch["requestBody"]["content"]["application/json"]["schema"]
    assert body["required"] == ["tasks"] and body["additionalProperties"] is False
    tasks = body["properties"]["tasks"]
    assert tasks["items"] == {"$ref": "#/components/schemas/TaskIn"}
    assert (tasks["minItems"], tasks["maxItems"]) == (1, validation.MAX_BATCH)
    assert {"201", "400", "401", "413", "503"} <= set(batch["responses"]) and "422" not in batch["responses"]
    refused = batch["responses"]["400"]["content"]["application/json"]["schema"]["$ref"]
    assert "index" in doc["components"]["schemas"][refused.rsplit("/", 1)[1]]["properties"]
    for path, method in (("/api/v1/tasks", "post"), ("/api/v1/tasks/{task_id}", "get")):
        names = {p["name"]: p["schema"] for p in doc["paths"][path][method]["parameters"]}
        assert names["result"]["type"] == "boolean", names["result"]
