"""The schedules page in a real browser against a real node: a schedule with its next three ticks in its own
time zone, its runs appearing live and linking to their tasks, pause and resume, the add form's messages
next to its fields, and delete."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from shoal.testing import TestNode

pytest.importorskip("playwright", reason="browser tests need Python Playwright (pip install -e '.[test]')")

from playwright.sync_api import expect

from .center import LIVE_S, api, ms, sign_in

pytestmark = [pytest.mark.e2e, pytest.mark.browser]


def test_a_schedule_shows_its_next_ticks_and_runs_and_pauses(shoal_node: TestNode, new_page: Any, shot: Any) -> None:
    with api(shoal_node) as client:
        body = {"name": "heartbeat", "cron": "@every 1s", "timezone": "Asia/Tokyo",
                "task": {"type": "echo", "target": "tick"}}  # fmt: skip
        assert client.post("/api/v1/schedules", json=body).status_code == 201
    page = new_page()
    sign_in(page, shoal_node, "/schedules")
    expect(page.get_by_role("link", name="Schedules")).to_have_attribute("aria-current", "page")
    row = page.locator("#schedule-rows tr", has_text="heartbeat")
    expect(row).to_have_count(1)
    expect(row.locator("td").nth(1)).to_have_text("@every 1s")
    expect(row.locator("td").nth(2)).to_have_text("Asia/Tokyo")
    ticks = row.locator(".next-fires li")
    expect(ticks).to_have_count(3)
    shown = ticks.first.locator("time")
    at = datetime.fromisoformat(shown.get_attribute("datetime").replace("Z", "+00:00"))  # type: ignore[union-attr]
    assert shown.inner_text() == at.astimezone(ZoneInfo("Asia/Tokyo")).strftime("%Y-%m-%d %H:%M:%S")

    run_link = row.locator(".run-list a").first
    expect(run_link).to_be_visible(timeout=ms(LIVE_S))  # fired by the master, shown without a reload
    task_id = run_link.get_attribute("data-path").removeprefix("/tasks/")  # type: ignore[union-attr]
    shot(page, "schedules")

    row.get_by_role("button", name="Pause").click()
    expect(row.locator(".sched-state")).to_have_text("paused")
    expect(row.locator(".next-fires")).to_have_text("paused")
    with api(shoal_node) as client:
        assert client.get("/api/v1/schedules/heartbeat").json()["paused"] is True
    row.get_by_role("button", name="Resume").click()
    expect(row.locator(".sched-state")).to_have_text("active")
    expect(row.locator(".next-fires li")).to_have_count(3)

    page.locator(f'a[data-path="/tasks/{task_id}"]').first.click()
    expect(page).to_have_url(f"{shoal_node.http_url}/tasks/{task_id}")
    expect(page.get_by_role("heading", name="heartbeat")).to_be_visible()
    assert not page.script_errors


def test_the_add_form_says_what_is_wrong_next_to_the_field_and_delete_asks_first(
    shoal_node: TestNode, new_page: Any
) -> None:
    page = new_page()
    sign_in(page, shoal_node, "/schedules")
    expect(page.locator("#schedules-empty")).to_be_visible()
    form = page.locator("#schedule-form")
    form.get_by_role("button", name="Add schedule").click()
    expect(page.locator("#s-name-error")).to_have_text("name is required")
    expect(page.locator("#s-cron-error")).to_have_text("cron is required")

    form.get_by_label("Name").fill("nightly")
    form.get_by_label("Cron").fill("61 * * * *")
    form.get_by_label("Type").fill("echo")
    form.get_by_label("Target").fill("report")
    form.get_by_role("button", name="Add schedule").click()
    expect(page.locator("#s-cron-error")).to_contain_text("invalid cron expression")

    form.get_by_label("Cron").fill("30 2 * * *")
    form.get_by_label("Time zone").fill("Europe/Nowhere")
    form.get_by_role("button", name="Add schedule").click()
    expect(page.locator("#s-timezone-error")).to_contain_text("no time zone is named 'Europe/Nowhere'")

    form.get_by_label("Time zone").fill("Europe/Paris")
    form.get_by_label("Missed ticks").select_option("run_once")
    form.get_by_role("button", name="Add schedule").click()
    row = page.locator("#schedule-rows tr", has_text="nightly")
    expect(row).to_have_count(1)
    expect(row).to_contain_text("catch up: run_once")
    expect(row.locator(".next-fires li").first).to_contain_text(":30:00")

    row.get_by_role("button", name="Delete").click()
    page.get_by_role("dialog").get_by_role("button", name="Delete").click()
    expect(row).to_have_count(0)
    with api(shoal_node) as client:
        assert client.get("/api/v1/schedules/nightly").status_code == 404
    assert not page.script_errors
