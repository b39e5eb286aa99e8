"""The nodes page shows each node's clock against the store's, in a real browser: a node whose clock is
75 s ahead shows it, is refused with the reason beside it, and turns alive on the page once its clock is
set right (``SHOAL_TEST_CLOCK_OFFSET_FILE``, see ``shoal.clock``)."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("playwright", reason="browser tests need Python Playwright (pip install -e '.[test]')")

from playwright.sync_api import expect

from shoal.clock import OFFSET_FILE_VAR
from shoal.testing import TestNode

from .center import LIVE_S, ms, sign_in

pytestmark = [pytest.mark.e2e, pytest.mark.browser]


def set_offset(path: Path, seconds: float) -> None:
    partial = path.with_suffix(".new")
    partial.write_text(f"{seconds}\n")
    os.replace(partial, path)


def test_the_nodes_page_shows_a_nodes_clock_skew_and_its_refusal_until_the_clock_is_right(
    node_factory: Callable[..., TestNode], new_page: Any, shot: Any, tmp_path: Path
) -> None:
    offset = tmp_path / "offset"
    set_offset(offset, 75.0)
    master = node_factory("node-a", args=["--shutdown-grace", "2", "--priority", "10"])
    node_factory("node-b", args=["--shutdown-grace", "2"], env={OFFSET_FILE_VAR: str(offset)})
    page = new_page()
    sign_in(page, master, "/nodes")

    ahead = page.locator('#node-rows tr[data-node="node-b"]')
    expect(ahead.locator('td[data-label="Clock skew"]')).to_have_text(
        re.compile(r"^\+7[45]\.\d s$"), timeout=ms(LIVE_S)
    )
    expect(ahead.locator('td[data-label="State"]')).to_have_text("rejected", timeout=ms(LIVE_S))
    expect(ahead.locator('td[data-label="Why"]')).to_contain_text("its clock is +7")
    right = page.locator('#node-rows tr[data-node="node-a"]').locator('td[data-label="Clock skew"]')
    expect(right).to_have_text(re.compile(r"^[+-]?\d{1,3} ms$"))
    shot(page, "nodes-clock-skew")

    set_offset(offset, 0.0)
    expect(ahead.locator('td[data-label="State"]')).to_have_text("alive", timeout=ms(LIVE_S))
    expect(ahead.locator('td[data-label="Clock skew"]')).to_have_text(re.compile(r"^[+-]?\d{1,3} ms$"))
