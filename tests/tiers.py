"""The tiers of the suite, marked by rule so that no test can be left out of its tier by a forgotten mark.

- ``browser``: uses the headless Chromium fixture (``browser``, ``new_page``), directly or through another;
- ``cluster``: in ``tests/cluster`` (several real node processes on one Redis);
- ``lab``: in ``tests/lab`` (hosts in network namespaces);
- ``e2e``: any of those, or marked ``e2e``, or using a fixture that starts a process (the suite's
  redis-server, nodes).

The quick tier, ``pytest -m "not e2e and not cluster and not browser and not lab"`` (the same tests as
``-m "not e2e"``, since every other tier is e2e too), starts no process and runs in well under a minute: a
test of it that starts a process anyway fails at once, naming what it started.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any

import pytest

#: Fixtures that start a process: a test that uses one, directly or through another fixture, is e2e.
PROCESS_FIXTURES = {"redis_server", "redis_binary"}
#: Fixtures that drive the headless browser.
BROWSER_FIXTURES = {"browser", "new_page"}
#: Folders whose every test is in a tier of its own.
FOLDER_TIERS = {"cluster": "cluster", "lab": "lab"}
TIERS = ("e2e", "cluster", "browser", "lab")
#: Audit events of a new process.
SPAWNS = {"subprocess.Popen", "os.posix_spawn", "os.fork", "os.system"}

_running: list[str] = []  # the quick-tier test now running, if any


def _refuse_processes(event: str, args: tuple[Any, ...]) -> None:
    if _running and event in SPAWNS:
        raise RuntimeError(f"{_running[0]} started a process ({event} {str(args[:2])[:120]}) but is not marked "
                           "e2e: mark it pytest.mark.e2e, since the quick tier (-m 'not e2e') starts none")  # fmt: skip


sys.addaudithook(_refuse_processes)


def tiers_of(item: pytest.Item) -> set[str]:
    """The tiers ``item`` belongs to, from its marks, the fixtures it uses and its folder."""
    fixtures = set(getattr(item, "fixturenames", ()))
    found = {name for name in TIERS if item.get_closest_marker(name) is not None}
    if BROWSER_FIXTURES & fixtures:
        found.add("browser")
    folder = item.path.parent.name
    if folder in FOLDER_TIERS and item.path.parent.parent.name == "tests":
        found.add(FOLDER_TIERS[folder])
    if found or PROCESS_FIXTURES & fixtures:
        found.add("e2e")
    return found


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        for name in tiers_of(item) - {m.name for m in item.iter_markers()}:
            item.add_marker(getattr(pytest.mark, name))


@pytest.fixture(autouse=True)
def _quick_tier_starts_no_process(request: pytest.FixtureRequest) -> Iterator[None]:
    if request.node.get_closest_marker("e2e") is None:
        _running[:] = [request.node.nodeid]
    yield
    _running.clear()
