"""A late result (the report of an attempt the task had moved on from, which finished after all) is kept
beside the task in full and shown in its history: the REST task detail and ``shoal task show``. The task's
own result stays the first final one.

The attempts are driven through the store layer on the node's Redis, as two nodes that are gone would have
made them, so that which attempt finishes when is the test's choice; the task's type is one the running
node does not run, so its scheduler leaves the task to the test.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from shoal.keys import Keys
from shoal.models import AttemptOutcome, TaskResult, TaskSpec
from shoal.store.nodes import NodeRegistry
from shoal.store.tasks import TaskStore
from shoal.testing import TestNode

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[1]
#: Far more than a summary would show: the late result must come back whole.
LATE_CODE = "late page\n" + "x" * 50_000


async def superseded_then_late(redis_url: str) -> str:
    """A task whose attempt 1 (on ghost-1) is lost, whose attempt 2 (on ghost-2) succeeds, and whose attempt 1
    then reports success after all (twice: its first report's reply was lost). Returns the task's id."""
    client = Redis.from_url(redis_url)
    try:
        keys = Keys("shoal")
        store = TaskStore(client, keys, result_max_bytes=1 << 20)
        _, epoch = await NodeRegistry(client, keys).master()
        [task] = await store.create([TaskSpec(name="late", type="not-run-here", target="t")])
        assert await store.place(epoch, "ghost-1", 1, [task.id]) == [1]
        assert await store.start(task.id, "ghost-1") == 1
        assert list(await store.requeue("ghost-1", "node lost: gone quiet", epoch)) == [task.id]
        assert await store.place(epoch, "ghost-2", 1, [task.id]) == [1]
        assert await store.start(task.id, "ghost-2") == 2
        won = TaskResult(task.id, "on time", "ghost-2", 2, 0.0)
        assert (await store.finish(task.id, "ghost-2", 2, AttemptOutcome.SUCCEEDED, result=won)).verdict == "done"
        late = TaskResult(task.id, LATE_CODE, "ghost-1", 1, 0.0, {"status": 200})
        for _ in range(2):
            finish = await store.finish(task.id, "ghost-1", 1, AttemptOutcome.SUCCEEDED, result=late)
            assert finish.verdict == "duplicate"
        return task.id
    finally:
        await client.aclose()


def test_a_superseded_attempts_late_result_is_kept_in_full_and_shown(shoal_node: TestNode, redis_url: str) -> None:
    task_id = asyncio.run(superseded_then_late(redis_url))
    with httpx.Client(base_url=shoal_node.http_url, headers=shoal_node.headers(), trust_env=False) as http:
        task: dict[str, Any] = http.get(f"/api/v1/tasks/{task_id}").json()
        assert task["state"] == "SUCCEED"
        assert [(a["number"], a["node"], a["outcome"]) for a in task["history"]] == [
            (1, "ghost-1", "node lost"),
            (2, "ghost-2", "succeeded"),
        ]
        [late] = task["late_results"]  # its retried report is the same result, kept once
        assert (late["attempt"], late["node"], late["outcome"]) == (1, "ghost-1", "succeeded")
        assert late["code"] == LATE_CODE and late["meta"] == {"status": 200}
        assert http.get(f"/api/v1/tasks/{task_id}/result").json()["code"] == "on time"  # the first one won

    env = {k: v for k, v in os.environ.items() if not k.startswith("SHOAL_")}
    env |= {"PYTHONPATH": str(ROOT / "src"), "NO_COLOR": "1", "COLUMNS": "200"}
    env |= {"SHOAL_API": shoal_node.http_url, "SHOAL_TOKEN": shoal_node.token}
    shown = subprocess.run(
        [sys.executable, "-m", "shoal", "task", "show", task_id], env=env, capture_output=True, text=True, timeout=60
    )
    assert shown.returncode == 0, shown.stderr
    assert "late results" in shown.stdout and "result of attempt 1 on ghost-1:" in shown.stdout
    assert LATE_CODE in shown.stdout
