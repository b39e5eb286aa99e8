"""The task center while the cluster changes under it, in a real browser: the node serving the page dies
and the page carries on through another node; the master dies and the nodes page shows the new one, with
the verdict and its rule on the membership timeline (and each node's cache use); and the pages in a
phone-sized, dark window, driven by the keyboard alone."""

from __future__ import annotations

import re
from typing import Any

import pytest

pytest.importorskip("playwright", reason="browser tests need Python Playwright (pip install -e '.[test]')")

from playwright.sync_api import expect

from shoal.testing import wait_for

from .center import LIVE_S, api, mark_page, ms, row, sign_in, state_cell, still_same_page, submit

pytestmark = [pytest.mark.e2e, pytest.mark.browser]
#: Seconds for the cluster to notice a dead node and elect a master (5 missed beats, probes, lease).
FAILOVER_S = 30.0


def master_of(node: Any) -> str | None:
    with api(node) as client:
        master: str | None = client.get("/api/v1/cluster").json()["master"]
    return master


def test_the_page_carries_on_through_another_node_when_its_node_dies(
    cluster: list[Any], new_page: Any, shot: Any
) -> None:
    serving, *others = cluster
    page = new_page()
    sign_in(page, serving)
    expect(page.locator("#live")).to_have_text("live")
    submit(others[0], "before the loss")
    expect(state_cell(page, "before the loss")).to_have_text("SUCCEED", timeout=ms(LIVE_S))
    mark_page(page)

    serving.kill()
    live = page.locator("#live")
    names = "|".join(n.name for n in others)
    expect(live).to_have_text(re.compile(f"^live via ({names})$"), timeout=ms(FAILOVER_S))
    now_serving = next(n for n in others if live.text_content() == f"live via {n.name}")
    expect(page.locator("#stale")).to_contain_text(f"{serving.name} stopped answering")
    expect(page.locator("#served-by")).to_have_text(now_serving.name)

    wait_for(lambda: master_of(others[0]) in {n.name for n in others}, FAILOVER_S, "a master among the living")
    submit(others[1], "after the loss")
    expect(state_cell(page, "after the loss")).to_have_text("SUCCEED", timeout=ms(FAILOVER_S))
    assert still_same_page(page), "the page reloaded"
    # actions go through the new node too, with the session and its CSRF token
    page.get_by_label("Select task after the loss").check()
    page.get_by_role("button", name="Delete selected").click()
    page.get_by_role("dialog", name="Delete 1 task?").get_by_role("button", name="Delete 1 task").click()
    expect(page.locator("#outcome").get_by_role("heading")).to_have_text("Deleted 1 of 1 task")
    expect(row(page, "after the loss")).to_have_count(0)
    # a link followed now opens on the node that answers
    assert page.get_by_role("link", name="Nodes").get_attribute("href") == f"{now_serving.http_url}/nodes"
    shot(page, "failover")
    assert not page.script_errors


def test_the_page_says_it_is_stale_when_no_node_answers(cluster: list[Any], new_page: Any, shot: Any) -> None:
    page = new_page()
    sign_in(page, cluster[0])
    for node in cluster:
        node.kill()
    stale = page.locator("#stale")
    expect(page.locator("#live")).to_have_text("stale", timeout=ms(FAILOVER_S))
    expect(stale).to_contain_text("Stale: no connection to the cluster since")
    expect(stale.get_by_role("link", name=cluster[1].name)).to_be_visible()
    shot(page, "stale")


def test_the_nodes_page_shows_a_new_master_after_the_master_dies(cluster: list[Any], new_page: Any, shot: Any) -> None:
    old = master_of(cluster[0])
    assert old is not None
    watcher = next(n for n in cluster if n.name != old)
    victim = next(n for n in cluster if n.name == old)
    ids = [submit(watcher, f"long {i}", delay_s=120)["id"] for i in range(6)]
    with api(watcher) as client:

        def placed() -> list[str]:
            tasks = [client.get(f"/api/v1/tasks/{i}").json() for i in ids]
            return [t["id"] for t in tasks if t["state"] == "RUNNING" and t["node"] == old]

        on_victim = wait_for(lambda: len(ids) == sum(
            client.get(f"/api/v1/tasks/{i}").json()["state"] == "RUNNING" for i in ids) and placed(),
            FAILOVER_S, "the long tasks running, some on the master")  # fmt: skip
    with api(watcher) as client:  # a cached value shows on the nodes page: two owners hold it, one was read
        wait_for(lambda: len(client.get("/api/v1/cache").json()["nodes"]) == 3, LIVE_S, "all three in the cache ring")
        assert client.put("/api/v1/cache/page/one", content=b"x" * 300_000).status_code == 204
        assert client.get("/api/v1/cache/page/one").status_code == 200
    page = new_page()
    sign_in(page, watcher, "/nodes")
    expect(page.locator("#master-name")).to_have_text(old)
    held = page.locator('#node-rows td[data-label="Cache"]', has_text=re.compile(r"^29\d\.\d KiB / 256\.0 MiB1 item"))
    expect(held).to_have_count(2, timeout=ms(LIVE_S))
    expect(held.filter(has_text="100.0% hits")).to_have_count(1)
    expect(held.first.get_by_role("meter")).to_have_attribute("aria-valuemax", str(256 * 1024 * 1024))
    expect(page.locator(f'#node-rows tr[data-node="{old}"]')).to_have_class("master")
    expect(page.locator("#node-rows tr")).to_have_count(3)
    expect(page.locator("#node-rows tr.master")).to_contain_text("★ master")
    expect(page.locator("#membership li[data-kind=elected]").first).to_contain_text(old)
    shot(page, "nodes")
    mark_page(page)

    victim.kill()
    expect(page.locator("#master-name")).not_to_have_text(old, timeout=ms(FAILOVER_S))
    new = page.locator("#master-name").text_content()
    assert new in {n.name for n in cluster if n.name != old}
    expect(page.locator(f'#node-rows tr[data-node="{new}"]')).to_have_class("master")
    expect(page.locator(f'#node-rows tr[data-node="{old}"]')).not_to_have_class("master")
    expect(page.locator("#membership li[data-kind=elected]").first).to_contain_text(new)
    # the dead master's verdict comes with the rule that fired
    dead = page.locator(f'#node-rows tr[data-node="{old}"]')
    expect(dead).to_have_attribute("data-state", "dead", timeout=ms(FAILOVER_S))
    expect(dead).to_contain_text("beats missed")
    expect(page.locator("#membership li[data-kind=dead]").first).to_contain_text("beats missed")
    # and the tasks it held were re-placed, each one linked
    replaced = page.locator("#membership li[data-kind=re-placed]").first
    expect(replaced).to_contain_text(f"{old}", timeout=ms(FAILOVER_S))
    expect(replaced).to_contain_text(f"re-placed {len(on_victim)} task(s)")
    for task_id in on_victim:
        expect(replaced.get_by_role("link", name=task_id[:8])).to_have_attribute("href", f"/tasks/{task_id}")
    assert still_same_page(page), "the page reloaded"
    shot(page, "nodes-after-failover")
    assert not page.script_errors


def test_phone_width_dark_mode_and_keyboard_only(cluster: list[Any], new_page: Any, shot: Any) -> None:
    node = cluster[1]
    page = new_page(viewport={"width": 390, "height": 844}, color_scheme="dark", is_mobile=True, has_touch=True)
    sign_in(page, node)
    page.keyboard.press("n")  # the page's shortcut for New task
    dialog = page.get_by_role("dialog", name="New task")
    expect(dialog).to_be_visible()
    expect(dialog.get_by_label("Name")).to_be_focused()
    page.keyboard.type("typed task")
    page.keyboard.press("Tab")
    expect(dialog.get_by_label("Type")).to_be_focused()
    page.keyboard.type("echo")
    page.keyboard.press("Tab")
    expect(dialog.get_by_label("Target")).to_be_focused()
    page.keyboard.type("from the keyboard")
    page.keyboard.press("Enter")
    expect(dialog).to_be_hidden()
    expect(state_cell(page, "typed task")).to_have_text("SUCCEED", timeout=ms(LIVE_S))

    # on a fresh page, Tab reaches the skip link first, then the links and buttons in order
    page.goto(f"{node.http_url}/")
    expect(row(page, "typed task")).to_have_count(1)
    page.keyboard.press("Tab")
    expect(page.get_by_role("link", name="Skip to content")).to_be_focused()
    for _ in range(60):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.closest('#task-rows') !== null"):
            break
    else:
        pytest.fail("the keyboard never reached the task rows")
    page.keyboard.press("Space")  # the row's checkbox
    expect(page.locator("#selected-count")).to_have_text("1 selected")

    assert _fits(page), "the tasks page scrolls sideways at phone width"
    expect(row(page, "typed task")).to_have_count(1)  # shown as a card, still a row of the table
    assert _contrast(page, "body") >= 7 and _contrast(page, ".state") >= 4.5
    assert _luminance(page, "body") < 0.05  # a dark page, not a light one in a dark window
    shot(page, "tasks-phone-dark")
    page.goto(f"{node.http_url}/nodes")
    expect(page.locator("#node-rows tr")).to_have_count(3)
    assert _fits(page), "the nodes page scrolls sideways at phone width"
    shot(page, "nodes-phone-dark")
    assert not page.script_errors


def _fits(page: Any) -> bool:
    return bool(page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1"))


_COLOURS = """(selector) => {
  const el = document.querySelector(selector);
  const parse = (c) => c.match(/[\\d.]+/g).slice(0, 3).map(Number);
  let bg = el;
  while (bg && getComputedStyle(bg).backgroundColor.match(/rgba\\(.*, 0\\)|transparent/)) bg = bg.parentElement;
  return [parse(getComputedStyle(el).color), parse(getComputedStyle(bg || document.body).backgroundColor)];
}"""


def _rel(rgb: list[float]) -> float:
    def channel(c: float) -> float:
        c /= 255
        return c / 12.92 if c <= 0.03928 else float(((c + 0.055) / 1.055) ** 2.4)

    r, g, b = (channel(c) for c in rgb)
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def _luminance(page: Any, selector: str) -> float:
    return _rel(page.evaluate(_COLOURS, selector)[1])


def _contrast(page: Any, selector: str) -> float:
    fg, bg = (_rel(c) for c in page.evaluate(_COLOURS, selector))
    light, dark = max(fg, bg), min(fg, bg)
    return (light + 0.05) / (dark + 0.05)
