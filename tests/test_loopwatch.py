"""An inline handler that blocks the node's event loop is caught in the act: the attempt's history says how
long it held the loop, and the log names its type."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from shoal.client import Client
from shoal.testing import TestNode, multiplier
from shoal.worker.loopwatch import LoopWatch

PLUGINS = Path(__file__).parent / "plugins"


async def blocking(seconds: float) -> str:
    time.sleep(seconds)  # what the watch is for: no await while it waits
    await asyncio.sleep(0)
    return "done"


async def polite(seconds: float) -> str:
    await asyncio.sleep(seconds)
    return "done"


async def test_a_step_that_holds_the_loop_is_timed_and_named(caplog: pytest.LogCaptureFixture) -> None:
    watch = LoopWatch(blocking(0.3), "block_loop")
    with caplog.at_level(logging.WARNING, "shoal.worker.loopwatch"):
        assert await watch == "done"
    assert 0.25 <= watch.blocked_s < 2.0
    assert "'block_loop' held the event loop for 0.3" in caplog.text and "isolation='process'" in caplog.text


async def test_a_handler_that_awaits_holds_nothing() -> None:
    watch = LoopWatch(polite(0.3), "polite")
    assert await watch == "done"
    assert watch.blocked_s == 0.0


async def test_cancellation_and_errors_reach_the_handler_as_without_the_watch() -> None:
    seen: list[str] = []

    async def handler() -> None:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise

    async def failing() -> None:
        await asyncio.sleep(0)
        raise ValueError("bad target")

    async def run() -> None:
        await LoopWatch(handler(), "slow")

    task = asyncio.ensure_future(run())
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert seen == ["cancelled"]
    with pytest.raises(ValueError, match="bad target"):
        await LoopWatch(failing(), "failing")


@pytest.mark.e2e
def test_an_inline_type_that_blocks_the_node_is_flagged_in_its_history(node_factory: Callable[..., TestNode]) -> None:
    node = node_factory(args=["--task-modules", "shoal_systemd_types"], env={"PYTHONPATH": str(PLUGINS)})
    with Client(node.http_url, node.token) as client:
        blocked = client.submit("block_loop", "x", params={"seconds": 1.0})
        fine = client.submit("echo", "y")
        held = client.wait(blocked.id, timeout=30 * multiplier()).history[-1]
        polite_attempt = client.wait(fine.id, timeout=30 * multiplier()).history[-1]
    assert held.outcome == "succeeded" and held.loop_blocked_s is not None and 0.9 <= held.loop_blocked_s < 5
    assert polite_attempt.loop_blocked_s is None and polite_attempt.wall_s is not None
    assert "'block_loop' held the event loop for 1.0" in node.log()
