"""Fixtures for driving the web task center in a real headless Chromium (Debian's ``chromium``, through
Python Playwright; never ``playwright install``), against real node processes.

Without a browser the browser tests skip and say why; on CI (``CI=true``) they fail instead, since CI
installs the browser (``.ci/run``). Screenshots of each page go to ``test-artifacts/ui/``.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from shoal.testing import TestNode, multiplier

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "ui"
#: The flags checked on this machine kind (see the lab notes): no sandbox as root, no GPU, nothing phoned home.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic", "--disable-dev-shm-usage"]  # fmt: skip
NAMES = ("node-a", "node-b", "node-c")


def _chromium() -> str | None:
    for candidate in (os.environ.get("SHOAL_CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium")):
        if candidate and Path(candidate).exists():
            return candidate
    return None


def _no_browser(reason: str) -> None:
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"browser tests cannot run on CI: {reason}")
    pytest.skip(f"browser tests skipped: {reason}")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One headless Chromium per module; each test gets its own context (cookies, storage).

    Per module, not per session: Playwright's sync API runs an event loop in this thread while it is open,
    and async tests in other modules need the thread to themselves."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _no_browser("Python Playwright is not installed (pip install -e '.[test]')")
    path = _chromium()
    if path is None:
        _no_browser("no chromium binary (apt-get install chromium, or set SHOAL_CHROMIUM)")
    with sync_playwright() as p:
        instance = p.chromium.launch(executable_path=path, headless=True, args=CHROMIUM_ARGS)
        yield instance
        instance.close()


@pytest.fixture
def new_page(browser: Any) -> Iterator[Callable[..., Any]]:
    """``new_page(**context_options)``: a page in a fresh browser context, closed after the test."""
    contexts: list[Any] = []

    def make(**options: Any) -> Any:
        options.setdefault("viewport", {"width": 1280, "height": 900})
        context = browser.new_context(**options)
        context.set_default_timeout(15_000 * multiplier())
        contexts.append(context)
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.script_errors = errors
        return page

    yield make
    for context in contexts:
        context.close()


@pytest.fixture
def cluster(node_factory: Callable[..., TestNode]) -> list[TestNode]:
    """Three real node processes on the test's Redis, one token, all ready."""
    nodes = [node_factory(name, args=["--shutdown-grace", "2"], ready=False) for name in NAMES]
    for node in nodes:
        node.wait_ready(30.0)
    return nodes


@pytest.fixture
def shot() -> Callable[[Any, str], Path]:
    """``shot(page, "tasks")`` saves a full-page screenshot under test-artifacts/ui/."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)

    def save(page: Any, name: str) -> Path:
        path = ARTIFACTS / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        return path

    return save
