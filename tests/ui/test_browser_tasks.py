"""The tasks pages in a real browser against a real three-node cluster: sign in and out, create a task
through the form and watch it finish without a reload, read its fetched source, validation messages,
selection and bulk kill / delete with each task's outcome, and a task's own kill and delete buttons."""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from shoal.keys import Keys
from shoal.models import Footprint, TaskResult, TaskSpec
from shoal.store.tasks import TaskStore
from shoal.testing import multiplier

pytest.importorskip("playwright", reason="browser tests need Python Playwright (pip install -e '.[test]')")

from playwright.sync_api import expect

from .center import LIVE_S, api, mark_page, ms, row, sign_in, state_cell, still_same_page, submit

pytestmark = [pytest.mark.e2e, pytest.mark.browser]


def test_sign_in_keeps_the_token_out_of_urls_and_sign_out_ends_it(cluster: list[Any], new_page: Any, shot: Any) -> None:
    node = cluster[1]
    page = new_page()
    urls: list[str] = []
    page.on("request", lambda request: urls.append(request.url))
    page.goto(node.http_url + "/")
    page.get_by_label("API token").fill("not the token")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_text("wrong token")).to_be_visible()
    shot(page, "signin")

    sign_in(page, node)
    expect(page.locator("#served-by")).to_have_text(node.name)
    cookies = {c["name"]: c for c in page.context.cookies()}
    session = cookies[f"shoal_session_{node.http_port}"]
    assert session["httpOnly"] and session["sameSite"] == "Strict"
    assert page.evaluate("document.cookie") == ""  # scripts cannot read it
    assert urls and not any(node.token in url for url in urls)

    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("heading", name="Sign in to shoal")).to_be_visible()
    page.goto(node.http_url + "/nodes")
    expect(page.get_by_label("API token")).to_be_visible()
    assert not page.script_errors


def test_a_task_created_in_the_form_goes_live_to_succeed_and_shows_its_fetched_source(
    cluster: list[Any], new_page: Any, shot: Any, origin: Any
) -> None:
    node = cluster[2]
    page = new_page(accept_downloads=True)
    sign_in(page, node)
    mark_page(page)
    seen: list[str] = []
    page.expose_function("sawState", lambda state: seen.append(state))
    page.evaluate("""() => {
        const body = document.getElementById('task-rows');
        let last = null;
        new MutationObserver(() => {
            const tr = [...body.querySelectorAll('tr')].find(r => r.textContent.includes('slow page'));
            const state = tr && tr.querySelector('.state').textContent;
            if (state && state !== last) { last = state; window.sawState(state); }
        }).observe(body, {subtree: true, childList: true, characterData: true});
    }""")
    page.get_by_role("button", name="New task").click()
    dialog = page.get_by_role("dialog", name="New task")
    dialog.get_by_label("Name").fill("slow page")
    dialog.get_by_label("Type").select_option("fetch")
    dialog.get_by_label("Target").fill(f"{origin.url}/slow?s=1")
    dialog.get_by_label("Lost attempts").fill("2")
    dialog.get_by_label("Memory").fill("512")
    dialog.get_by_label("CPU limit").fill("2.5")
    dialog.get_by_role("button", name="Create").click()
    expect(dialog).to_be_hidden()

    expect(row(page, "slow page")).to_have_count(1)
    expect(state_cell(page, "slow page")).to_have_text("SUCCEED", timeout=ms(LIVE_S + 5))
    assert still_same_page(page), "the page reloaded"
    # it moved through the states live, not in one jump at the end
    assert seen[-1] == "SUCCEED" and {"WAITING", "INQUEUE", "RUNNING"} & set(seen[:-1]), seen
    expect(row(page, "slow page").locator("td").nth(3)).to_have_text("fetch")
    expect(page.locator('[data-count="SUCCEED"]')).to_have_text("1")
    shot(page, "tasks")

    row(page, "slow page").get_by_role("link").click()
    expect(page.get_by_role("heading", name="slow page")).to_be_visible()
    source = page.get_by_label("Fetched source")
    expect(source).to_have_text("slow done")
    result = page.locator("#result")
    expect(result).to_contain_text("9 B (9 bytes)")
    expect(result).to_contain_text("200")
    expect(result).to_contain_text("text/plain")
    expect(page.locator("#timeline li")).to_have_count(3)  # created, attempt started, attempt succeeded
    expect(page.locator("#timeline")).to_contain_text("attempt 1 succeeded on ")
    expect(page.locator("#fields")).to_contain_text("0 (quarantined at 2)")
    expect(page.locator("#fields")).to_contain_text("512 MiB")
    expect(page.locator("#fields")).to_contain_text("2.5 s")
    expect(page.locator("#attempt-rows tr")).to_have_count(1)
    expect(page.locator("#attempt-rows")).to_contain_text("memory_mb and cpu_s_limit not applied")  # fetch: inline
    with page.expect_download() as download:
        page.get_by_role("link", name="Download").click()
    assert download.value.suggested_filename.startswith("slow-page-")
    assert Path(download.value.path()).read_bytes() == b"slow done"
    shot(page, "task")
    assert not page.script_errors


def test_validation_messages_appear_next_to_the_fields(cluster: list[Any], new_page: Any, shot: Any) -> None:
    node = cluster[0]
    page = new_page()
    sign_in(page, node)
    page.get_by_role("button", name="New task").click()
    dialog = page.get_by_role("dialog", name="New task")
    dialog.get_by_label("Type").select_option("fetch")
    dialog.get_by_role("button", name="Create").click()
    name_field = dialog.locator(".field", has=page.get_by_label("Name"))
    target_field = dialog.locator(".field", has=page.get_by_label("Target"))
    expect(name_field).to_contain_text("name is required")
    expect(target_field).to_contain_text("target is required")
    expect(dialog.get_by_label("Name")).to_have_attribute("aria-invalid", "true")

    dialog.get_by_label("Name").fill("bad")
    dialog.get_by_label("Target").fill("not a url")
    dialog.get_by_role("button", name="Create").click()
    expect(name_field.locator(".field-error")).to_be_hidden()
    expect(target_field).to_contain_text("target must be an absolute http:// or https:// URL")

    # the server's own check, for what the form cannot know: a metadata address, an echo delay out of range
    dialog.get_by_label("Target").fill("http://169.254.169.254/latest")
    dialog.get_by_role("button", name="Create").click()
    expect(target_field).to_contain_text("refused")
    dialog.get_by_label("Type").select_option("echo")
    dialog.get_by_label("Target").fill("x")
    dialog.get_by_label("Params").fill('{"delay_s": -1}')
    dialog.get_by_role("button", name="Create").click()
    params_field = dialog.locator(".field", has=page.get_by_label("Params"))
    expect(params_field).to_contain_text("params.delay_s must be between 0 and 3600")
    dialog.get_by_label("Lost attempts").fill("0")
    dialog.get_by_role("button", name="Create").click()
    lost_field = dialog.locator(".field", has=page.get_by_label("Lost attempts"))
    expect(lost_field).to_contain_text("max_lost_attempts must be between 1 and 100")
    dialog.get_by_label("Lost attempts").fill("")
    dialog.get_by_label("Memory").fill("63")
    dialog.get_by_label("CPU limit").fill("0")
    dialog.get_by_role("button", name="Create").click()
    memory_field = dialog.locator(".field", has=page.get_by_label("Memory"))
    cpu_field = dialog.locator(".field", has=page.get_by_label("CPU limit"))
    expect(memory_field).to_contain_text("memory_mb must be between 64 and 1048576")
    expect(cpu_field).to_contain_text("cpu_s_limit must be above 0 and at most 86400 seconds")
    shot(page, "create-form")
    with api(node) as client:
        assert client.get("/api/v1/tasks").json()["total"] == 0  # nothing was created
    assert not page.script_errors


def test_select_all_invert_bulk_kill_and_bulk_delete(cluster: list[Any], new_page: Any, shot: Any) -> None:
    node = cluster[0]
    long = [submit(node, f"long {i}", delay_s=120) for i in range(3)]
    short = [submit(node, f"short {i}") for i in range(2)]
    page = new_page()
    sign_in(page, node)
    expect(page.locator("#task-rows tr")).to_have_count(5)
    for t in short:
        expect(state_cell(page, t["name"])).to_have_text("SUCCEED", timeout=ms(LIVE_S))
    for t in long:
        expect(state_cell(page, t["name"])).to_have_text("RUNNING", timeout=ms(LIVE_S))

    page.get_by_role("button", name="Select all").click()
    expect(page.locator("#selected-count")).to_have_text("5 selected")
    page.get_by_role("button", name="Invert selection").click()
    expect(page.locator("#selected-count")).to_have_text("0 selected")
    page.get_by_label("Select task short 0").check()
    page.get_by_role("button", name="Invert selection").click()
    expect(page.locator("#selected-count")).to_have_text("4 selected")
    expect(page.get_by_label("Select task short 0")).not_to_be_checked()
    expect(page.get_by_label("Select task short 1")).to_be_checked()

    page.get_by_role("button", name="Kill selected").click()
    confirm = page.get_by_role("dialog", name="Kill 4 tasks?")
    expect(confirm).to_be_visible()
    confirm.get_by_role("button", name="Kill 4 tasks").click()
    outcome = page.locator("#outcome")
    expect(outcome.get_by_role("heading")).to_have_text("Killed 3 of 4 tasks")
    expect(outcome.locator("li[data-outcome=ok]")).to_have_count(3)
    expect(outcome.locator("li", has_text="short 1")).to_contain_text("not killed: it had already ended")
    for t in long:
        expect(state_cell(page, t["name"])).to_have_text("KILLED", timeout=ms(LIVE_S))
    shot(page, "bulk-kill")

    page.get_by_role("button", name="Select all").click()
    page.get_by_role("button", name="Delete selected").click()
    confirm = page.get_by_role("dialog", name="Delete 5 tasks?")
    confirm.get_by_role("button", name="Cancel").click()
    with api(node) as client:
        assert client.get("/api/v1/tasks").json()["total"] == 5  # cancelled: nothing deleted
    page.get_by_role("button", name="Delete selected").click()
    page.get_by_role("dialog", name="Delete 5 tasks?").get_by_role("button", name="Delete 5 tasks").click()
    expect(outcome.get_by_role("heading")).to_have_text("Deleted 5 of 5 tasks")
    expect(page.locator("#task-rows tr")).to_have_count(0)
    expect(page.locator('[data-count="total"]')).to_have_text("0")
    with api(node) as client:
        assert client.get("/api/v1/tasks").json()["total"] == 0
    assert not page.script_errors


def test_filter_search_and_pages(cluster: list[Any], new_page: Any) -> None:
    node = cluster[1]
    with api(node) as client:
        for i in range(55):
            client.post("/api/v1/tasks", json={"name": f"batch {i:02d}", "type": "echo", "target": f"t{i}"})
        client.post("/api/v1/tasks", json={"name": "odd one", "type": "echo", "target": "needle-target"})
        blocked = client.post("/api/v1/tasks", json={"name": "sleeper", "type": "echo", "target": "z",
                                                     "params": {"delay_s": 120}}).json()  # fmt: skip
    page = new_page()
    sign_in(page, node)
    expect(page.locator('[data-count="total"]')).to_have_text("57")
    expect(page.locator("#task-rows tr")).to_have_count(50)
    expect(page.locator("#page-info")).to_have_text("1–50 of 57 tasks")
    page.get_by_role("button", name="Older →").click()
    expect(page.locator("#task-rows tr")).to_have_count(7)
    expect(page.locator("#page-info")).to_have_text("51–57 of 57 tasks")
    page.get_by_role("button", name="← Newer").click()
    expect(page.locator("#task-rows tr")).to_have_count(50)

    page.get_by_label("Search").fill("NEEDLE")
    expect(page.locator("#task-rows tr")).to_have_count(1)
    expect(row(page, "odd one")).to_be_visible()
    page.get_by_label("Search").fill("")
    page.locator("#counts").get_by_role("button", name="RUNNING").click()
    expect(page.locator("#task-rows tr")).to_have_count(1, timeout=ms(LIVE_S))
    expect(row(page, "sleeper")).to_be_visible()
    assert "state=RUNNING" in page.url
    with api(node) as client:
        client.post(f"/api/v1/tasks/{blocked['id']}/kill")
    expect(page.locator("#task-rows tr")).to_have_count(0, timeout=ms(LIVE_S))  # it left the filter, live
    assert not page.script_errors


def test_a_tasks_page_kills_and_deletes_it(cluster: list[Any], new_page: Any) -> None:
    node = cluster[0]
    task = submit(node, "detail victim", delay_s=120)
    page = new_page()
    sign_in(page, node, f"/tasks/{task['id']}")
    expect(page.locator("#task-state")).to_have_text("RUNNING", timeout=ms(LIVE_S))
    page.get_by_role("button", name="Kill").click()
    page.get_by_role("dialog", name="Kill this task?").get_by_role("button", name="Kill").click()
    expect(page.locator("#task-state")).to_have_text("KILLED", timeout=ms(LIVE_S))
    expect(page.locator("#timeline")).to_contain_text("KILLED")
    expect(page.locator("#error-text")).to_contain_text("killed")
    page.get_by_role("button", name="Delete").click()
    page.get_by_role("dialog", name="Delete this task?").get_by_role("button", name="Delete").click()
    expect(page.get_by_text("This task no longer exists")).to_be_visible()
    with api(node) as client:
        assert client.get(f"/api/v1/tasks/{task['id']}").status_code == 404
    assert not page.script_errors


def test_a_tasks_attempts_show_what_each_cost_with_its_arguments_and_value(
    cluster: list[Any], new_page: Any, shot: Any
) -> None:
    """A function task's page: its attempts with their cost, its args and kwargs as pretty JSON (as text, never
    markup), and its return value, large enough to be folded away until opened."""
    node = cluster[0]
    with concurrent.futures.ThreadPoolExecutor(1) as pool:  # the browser's event loop holds this thread
        task_id = pool.submit(asyncio.run, _attempts_with_footprints(node.redis_url)).result()
    page = new_page()
    sign_in(page, node, f"/tasks/{task_id}")
    expect(page.locator("#task-state")).to_have_text("SUCCEED", timeout=ms(LIVE_S))
    rows = page.locator("#attempt-rows tr")
    expect(rows).to_have_count(2)
    cells = ["#", "Node", "Outcome", "Wall", "CPU", "Peak RSS"]
    crashed = [rows.nth(0).locator(f'td[data-label="{c}"]') for c in cells]
    for cell, text in zip(crashed, ["1", "ghost-1", "crashed (SIGKILL)", "1.50 s", "250 ms", "700.0 MiB"], strict=True):
        expect(cell).to_have_text(text)
    succeeded = [rows.nth(1).locator(f'td[data-label="{c}"]') for c in cells]
    for cell, text in zip(succeeded, ["2", "ghost-2", "succeeded", "42 ms", "12 ms", "52.0 MiB"], strict=True):
        expect(cell).to_have_text(text)
    expect(rows.nth(0)).to_contain_text("worker process killed by SIGKILL")
    expect(page.locator("#fields")).to_contain_text("1 (quarantined at 2)")
    expect(page.locator("#attempts-dropped")).to_be_hidden()
    expect(page.locator("#args-json")).to_contain_text('"<img src=x onerror=alert(1)>"')
    expect(page.locator("#kwargs-json")).to_contain_text('"deep": {')
    expect(page.locator("#fields img")).to_have_count(0)
    expect(page.locator("#value-details summary")).to_contain_text("value:")
    expect(page.locator("#value-json")).to_be_hidden()  # over 2 KB: folded
    page.locator("#value-details summary").click()
    expect(page.locator("#value-json")).to_be_visible()
    expect(page.locator("#value-json")).to_contain_text('"name": "row 99"')
    shot(page, "task-attempts")
    assert not page.script_errors


async def _attempts_with_footprints(redis_url: str) -> str:
    """A function task of a type no node runs, whose attempts the test makes as workers would (on nodes that
    do not exist): one crashed, one that succeeded with a value, each with what it cost."""
    redis = Redis.from_url(redis_url)
    try:
        store = TaskStore(redis, Keys("shoal"), result_max_bytes=4096)
        spec = TaskSpec(name="hungry", type="nobody-runs-this", target="x", max_retries=1, max_lost_attempts=2,
                        args=[1, "<img src=x onerror=alert(1)>"], kwargs={"deep": {"list": [1, 2]}})  # fmt: skip
        [task] = await store.create([spec])
        epoch = int(await redis.get(store.keys.epoch) or 0)
        assert await store.place(epoch, "ghost-1", 1, [task.id]) == [1]
        assert await store.start(task.id, "ghost-1") == 1
        died = Footprint(wall_s=1.5, cpu_s=0.25, max_rss_bytes=700 * 2**20, signal="SIGKILL")
        crash = await store.finish(
            task.id, "ghost-1", 1, "crashed", error="crashed: worker process killed by SIGKILL", footprint=died,
            backoff=0.001,
        )  # fmt: skip
        assert crash.verdict == "retry"
        while await store.promote_due() is not None:
            await asyncio.sleep(0.01)
        assert await store.place(epoch, "ghost-2", 1, [task.id]) == [1]
        assert await store.start(task.id, "ghost-2") == 2
        value = {"rows": [{"i": i, "name": f"row {i}"} for i in range(100)]}
        result = TaskResult(task.id, "fed", "ghost-2", 2, 0.0, value=value, has_value=True)
        cost = Footprint(wall_s=0.042, cpu_s=0.0123, max_rss_bytes=52 * 2**20)
        assert (
            await store.finish(task.id, "ghost-2", 2, "succeeded", result=result, footprint=cost)
        ).state == "SUCCEED"
        return task.id
    finally:
        await redis.aclose()


def test_a_change_made_before_the_live_stream_opened_still_shows(cluster: list[Any], new_page: Any) -> None:
    """The list is read before the event stream opens: a task that changed in between sent its event to
    nobody, so the page must re-read once the stream is open rather than show the old state for ever."""
    node = cluster[0]
    task = submit(node, "gap", delay_s=120)
    page = new_page()
    sign_in(page, node)
    expect(state_cell(page, "gap")).to_have_text("RUNNING", timeout=ms(LIVE_S))
    held: list[Any] = []
    page.route("**/api/v1/events", lambda route: held.append(route))
    page.reload()
    expect(state_cell(page, "gap")).to_have_text("RUNNING")
    deadline = time.monotonic() + LIVE_S * multiplier()
    while not held and time.monotonic() < deadline:
        page.wait_for_timeout(50)  # lets the route handler run; the loop ends on the condition
    assert held, "the page opened its event stream"
    expect(page.locator("#live")).not_to_have_text("live")
    with api(node) as client:
        assert client.post(f"/api/v1/tasks/{task['id']}/kill").status_code == 200
    held[0].continue_()
    expect(page.locator("#live")).to_have_text("live", timeout=ms(LIVE_S))
    expect(state_cell(page, "gap")).to_have_text("KILLED", timeout=ms(LIVE_S))
    assert not page.script_errors


def test_a_delayed_task_shows_when_it_is_due_then_runs_live(cluster: list[Any], new_page: Any) -> None:
    node = cluster[0]
    page = new_page()
    sign_in(page, node)
    page.get_by_role("button", name="New task").click()
    dialog = page.get_by_role("dialog", name="New task")
    dialog.get_by_label("Name").fill("due later")
    dialog.get_by_label("Type").select_option("echo")
    dialog.get_by_label("Target").fill("x")
    dialog.get_by_label("Run after").fill("soon")
    dialog.get_by_role("button", name="Create").click()
    expect(dialog.locator("#delay_s-error")).to_contain_text("delay_s must be seconds or a duration")
    dialog.get_by_label("Run after").fill("4s")
    dialog.get_by_role("button", name="Create").click()
    expect(row(page, "due later").locator(".waiting-for")).to_contain_text("due at ")
    with api(node) as client:
        [task] = client.get("/api/v1/tasks", params={"name": "due later"}).json()["tasks"]
    assert task["delay_s"] == 4 and task["state"] == "WAITING", task
    expect(row(page, "due later").locator(".waiting-for")).to_have_text(task["waiting_for"])
    page.goto(f"{node.http_url}/tasks/{task['id']}")
    expect(page.locator("#fields .waiting-for")).to_contain_text(task["waiting_for"])
    expect(page.locator("#fields")).to_contain_text("Due")
    expect(page.locator("#task-state")).to_have_text("SUCCEED", timeout=ms(LIVE_S + 4))
    expect(page.locator("#fields .waiting-for")).to_have_count(0)
    assert not page.script_errors


def test_the_form_sets_priority_and_required_labels_and_the_page_says_why_the_task_waits(
    cluster: list[Any], new_page: Any
) -> None:
    node = cluster[0]
    page = new_page()
    sign_in(page, node)
    page.get_by_role("button", name="New task").click()
    dialog = page.get_by_role("dialog", name="New task")
    dialog.get_by_label("Name").fill("needs a gpu")
    dialog.get_by_label("Type").select_option("echo")
    dialog.get_by_label("Target").fill("x")
    dialog.get_by_label("Priority").select_option("8")
    dialog.get_by_label("Requires").fill("gpu")
    dialog.get_by_role("button", name="Create").click()
    expect(dialog.locator("#requires-error")).to_contain_text("is not LABEL=VALUE")
    dialog.get_by_label("Requires").fill("gpu=1")
    dialog.get_by_role("button", name="Create").click()
    expect(row(page, "needs a gpu").locator(".waiting-for")).to_have_text("no live node has gpu=1")
    with api(node) as client:
        [task] = client.get("/api/v1/tasks", params={"name": "needs a gpu"}).json()["tasks"]
        assert (task["priority"], task["requires"], task["state"]) == (8, {"gpu": "1"}, "WAITING"), task
        page.goto(f"{node.http_url}/tasks/{task['id']}")
        expect(page.locator("#fields .waiting-for")).to_contain_text("no live node has gpu=1")
        expect(page.locator("#fields")).to_contain_text("gpu=1")
        expect(page.locator("#fields")).to_contain_text("Priority8")
        assert client.post(f"/api/v1/tasks/{task['id']}/kill").status_code == 200
    assert not page.script_errors
