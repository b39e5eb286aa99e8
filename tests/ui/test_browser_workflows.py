"""A task's workflow on its page, in a real browser against a real cluster: the graph draws its parents and
children, each coloured by its state and linking to its page, follows their changes live, and shows names
as text, never as markup."""

from __future__ import annotations

from typing import Any

import pytest

pytest.importorskip("playwright", reason="browser tests need Python Playwright (pip install -e '.[test]')")

from playwright.sync_api import expect

from .center import LIVE_S, api, ms, sign_in

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

MARKUP = "<img src=x onerror=window.__pwned=1>"


def test_a_tasks_page_draws_its_workflow_live(cluster: list[Any], new_page: Any, shot: Any) -> None:
    node = cluster[0]
    batch = [
        {"name": "fetch pages", "type": "echo", "target": "a", "ref": "a", "params": {"delay_s": 120}},
        {"name": MARKUP, "type": "echo", "target": "b", "ref": "b", "depends_on": ["a"]},
        {"name": "report", "type": "echo", "target": "c", "ref": "c", "depends_on": ["b"]},
        {"name": "side", "type": "echo", "target": "d", "ref": "d"},
        {"name": "join", "type": "echo", "target": "e", "depends_on": ["d", "b"]},
    ]
    with api(node) as client:
        created = client.post("/api/v1/tasks/batch", json={"tasks": batch})
        assert created.status_code == 201, created.text
        a, b, c, d, e = created.json()["tasks"]

    page = new_page()
    sign_in(page, node, f"/tasks/{b['id']}")
    graph = page.locator("#workflow-graph")
    expect(page.locator("#workflow-card")).to_be_visible()
    nodes = graph.locator("a.wf-node")
    expect(nodes).to_have_count(5)
    expect(graph.locator("path.wf-edge")).to_have_count(4)
    here = graph.locator(f'a.wf-node[data-task-id="{b["id"]}"]')
    expect(here.locator("rect")).to_have_class("wf-box s-WAITING wf-here")
    expect(graph.locator(f'a.wf-node[data-task-id="{a["id"]}"]')).to_have_attribute("data-state", "RUNNING",
                                                                                   timeout=ms(LIVE_S))  # fmt: skip
    expect(here.locator("text.wf-name")).to_have_text(MARKUP[:23] + "…")
    expect(graph.locator("img")).to_have_count(0)
    expect(page.locator("#fields")).to_contain_text("waiting for 1 of 1 parent")
    expect(graph).to_contain_text("5 task(s)")
    shot(page, "workflow-waiting")

    with api(node) as client:
        assert client.post(f"/api/v1/tasks/{a['id']}/kill").status_code == 200
    for task_id in (a["id"], b["id"], c["id"], e["id"]):  # the kill goes down the graph, shown without a reload
        expect(graph.locator(f'a.wf-node[data-task-id="{task_id}"]')).to_have_attribute("data-state", "KILLED",
                                                                                       timeout=ms(LIVE_S))  # fmt: skip
    expect(graph.locator(f'a.wf-node[data-task-id="{d["id"]}"]')).to_have_attribute("data-state", "SUCCEED",
                                                                                   timeout=ms(LIVE_S))  # fmt: skip
    expect(page.locator("#error-text")).to_contain_text(f"parent {a['id']} ended KILLED")
    shot(page, "workflow-killed")
    assert page.evaluate("window.__pwned === undefined"), "a name ran as markup"

    graph.locator(f'a.wf-node[data-task-id="{c["id"]}"]').click()
    expect(page).to_have_url(f"{node.http_url}/tasks/{c['id']}")
    expect(page.locator("#task-name")).to_contain_text("report")
    expect(page.locator("#workflow-graph a.wf-node")).to_have_count(5)
    assert not page.script_errors
