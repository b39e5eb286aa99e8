"""What a person does on the task center, as steps the browser tests share."""

from __future__ import annotations

from typing import Any

import httpx
from playwright.sync_api import Locator, Page, expect

from shoal.testing import TestNode, multiplier

#: Seconds a live change may take to show; generous, since the machine may be busy (the bench measures it).
LIVE_S = 15.0


def ms(seconds: float) -> float:
    return seconds * 1000 * multiplier()


def sign_in(page: Page, node: TestNode, path: str = "/") -> None:
    page.goto(node.http_url + path)
    expect(page).to_have_url(f"{node.http_url}/signin?next=" + path.replace("/", "%2F"))
    page.get_by_label("API token").fill(node.token)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(node.http_url + path)
    expect(page.locator("#live")).to_have_text("live", timeout=ms(LIVE_S))


def row(page: Page, text: str) -> Locator:
    return page.locator("#task-rows tr", has_text=text)


def state_cell(page: Page, text: str) -> Locator:
    return row(page, text).locator("td .state")


def api(node: TestNode) -> httpx.Client:
    return httpx.Client(base_url=node.http_url, headers=node.headers(), timeout=30, trust_env=False)


def submit(node: TestNode, name: str, target: str = "x", type_: str = "echo", **params: Any) -> dict[str, Any]:
    with api(node) as client:
        response = client.post("/api/v1/tasks", json={"name": name, "type": type_, "target": target, "params": params})
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def mark_page(page: Page) -> None:
    """Leave a mark in the page's window; ``still_same_page`` proves no reload happened since."""
    page.evaluate("window.__shoalMark = 'kept'")


def still_same_page(page: Page) -> bool:
    return bool(page.evaluate("window.__shoalMark === 'kept'"))
