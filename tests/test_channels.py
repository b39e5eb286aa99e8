"""Two clusters of one name on two databases of one Redis server: pub/sub ignores the database number, so
shoal's channel names carry it, and neither cluster hears the other's task events."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from shoal.client import AsyncClient
from shoal.models import TaskEvent
from shoal.testing import TestNode, multiplier

pytestmark = pytest.mark.e2e


def _on_database(url: str, db: int) -> str:
    assert url.endswith("/0"), url
    return f"{url[:-2]}/{db}"


async def test_a_cluster_on_another_database_hears_none_of_its_namesakes_events(
    redis_url: str, redis_admin_url: str, tmp_path: Path
) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = TestNode(tmp_path / "a", redis_url, name="node-a")
    # shoal's own user of the embedded store keeps to database 0: an external store's user may not
    b = TestNode(tmp_path / "b", _on_database(redis_admin_url, 1), name="node-b")
    try:
        a.start()
        b.start()
        async with AsyncClient(a.http_url, a.token) as on_a, AsyncClient(b.http_url, b.token) as on_b:
            seen: list[str] = []
            done = asyncio.Event()
            ours: list[str] = []

            async def listen() -> None:
                async for item in on_b.events():
                    if isinstance(item, TaskEvent):
                        seen.append(item.id)
                        if ours and item.id == ours[0] and item.state.terminal:
                            done.set()
                            return

            listener = asyncio.create_task(listen())
            await asyncio.sleep(0)  # the stream opens; events before that are not asked for
            theirs = await on_a.submit("echo", "from a", wait=10 * multiplier())
            ours.append((await on_b.submit("echo", "from b")).id)
            await asyncio.wait_for(done.wait(), 20 * multiplier())
            listener.cancel()
        assert theirs.state.name == "SUCCEED"
        assert ours[0] in seen and theirs.id not in seen
    finally:
        for node in (a, b):
            if node.proc.alive():
                node.stop(timeout=15)
