"""The quick tier: ``pytest -m "not e2e"`` runs every test that starts no process, in well under a minute.

A test is in the e2e tier when it is marked ``e2e`` or uses a fixture that starts a process (the suite's
redis-server, nodes). A test of the quick tier that starts a process anyway fails at once, naming what it
started, so the quick tier stays quick and needs nothing installed.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any

import pytest

#: Fixtures that start a process: a test that uses one, directly or through another fixture, is e2e.
PROCESS_FIXTURES = {"redis_server", "redis_binary"}
#: Audit events of a new process.
SPAWNS = {"subprocess.Popen", "os.posix_spawn", "os.fork", "os.system"}

_running: list[str] = []  # the quick-tier test now running, if any


def _refuse_processes(event: str, args: tuple[Any, ...]) -> None:
    if _running and event in SPAWNS:
        raise RuntimeError(f"{_running[0]} started a process ({event} {str(args[:2])[:120]}) but is not marked "
                           "e2e: mark it pytest.mark.e2e, since the quick tier (-m 'not e2e') starts none")  # fmt: skip


sys.addaudithook(_refuse_processes)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if PROCESS_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(autouse=True)
def _quick_tier_starts_no_process(request: pytest.FixtureRequest) -> Iterator[None]:
    if request.node.get_closest_marker("e2e") is None:
        _running[:] = [request.node.nodeid]
    yield
    _running.clear()
