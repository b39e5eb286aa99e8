"""The tiers are given by rule: a test that drives the browser, runs in tests/cluster or tests/lab, or uses
the suite's redis-server is out of the quick tier whatever marks its file carries."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import tiers

TESTS = Path(__file__).parent


class Item:
    """What tiers_of reads of a collected test."""

    def __init__(self, path: Path, fixtures: tuple[str, ...] = (), marks: tuple[str, ...] = ()) -> None:
        self.path = path
        self.fixturenames = fixtures
        self._marks = [getattr(pytest.mark, m).mark for m in marks]

    def get_closest_marker(self, name: str) -> Any:
        return next((m for m in self._marks if m.name == name), None)


@pytest.mark.parametrize(
    ("path", "fixtures", "marks", "expected"),
    [
        (TESTS / "test_validation.py", (), (), set()),
        (TESTS / "test_store.py", ("redis_server",), (), {"e2e"}),
        (TESTS / "test_api.py", (), ("e2e",), {"e2e"}),
        (TESTS / "ui" / "test_browser_tasks.py", ("new_page",), (), {"browser", "e2e"}),
        (TESTS / "ui" / "test_listing_api.py", ("shoal_node",), ("e2e",), {"e2e"}),
        (TESTS / "cluster" / "test_cache.py", (), (), {"cluster", "e2e"}),
        (TESTS / "lab" / "test_partition.py", (), (), {"lab", "e2e"}),
        (TESTS / "deploy" / "test_files.py", (), ("browser",), {"browser", "e2e"}),
    ],
)
def test_each_test_is_in_the_tiers_its_folder_fixtures_and_marks_give(
    path: Path, fixtures: tuple[str, ...], marks: tuple[str, ...], expected: set[str]
) -> None:
    assert tiers.tiers_of(Item(path, fixtures, marks)) == expected


def test_a_folder_named_cluster_elsewhere_is_not_the_cluster_tier() -> None:
    assert tiers.tiers_of(Item(TESTS / "plugins" / "cluster" / "test_x.py")) == set()
