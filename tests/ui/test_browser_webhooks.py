"""The webhooks page in a real browser against a real node and a receiver on loopback: the add form's messages
next to its fields, the secret shown once, the delivery log with status, HTTP status and latency, a replay of
one delivery and of everything since a time reaching the receiver again, and delete."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from shoal.testing import TestNode, wait_for

pytest.importorskip("playwright", reason="browser tests need Python Playwright (pip install -e '.[test]')")

from playwright.sync_api import expect

from .center import LIVE_S, api, ms, sign_in, submit

pytestmark = [pytest.mark.e2e, pytest.mark.browser]


class Receiver:
    """Answers every POST 200 and counts them."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.ids: list[str] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with receiver.lock:
                    receiver.ids.append(self.headers.get("webhook-id", ""))
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def count(self) -> int:
        with self.lock:
            return len(self.ids)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.server.shutdown()
    server.server.server_close()


def test_add_see_deliveries_replay_and_delete_a_webhook(node_factory: Any, receiver: Receiver, new_page: Any) -> None:
    node: TestNode = node_factory(env={"SHOAL_WEBHOOK_ALLOW_LOOPBACK": "1"})
    page = new_page()
    sign_in(page, node, "/webhooks")
    expect(page.get_by_role("link", name="Webhooks")).to_have_attribute("aria-current", "page")
    expect(page.locator("#webhooks-empty")).to_be_visible()

    form = page.locator("#webhook-form")
    form.get_by_role("button", name="Add webhook").click()
    expect(page.locator("#w-url-error")).to_have_text("url is required")
    form.get_by_label("URL").fill("http://169.254.169.254/latest/meta-data/")
    form.get_by_role("button", name="Add webhook").click()
    expect(page.locator("#w-url-error")).to_contain_text("169.254.169.254 is a link-local address")
    form.get_by_label("URL").fill(receiver.url)
    form.get_by_label("SUCCEED").uncheck()
    form.get_by_role("button", name="Add webhook").click()
    expect(page.locator("#w-events-error")).to_contain_text("events is required")
    form.get_by_label("SUCCEED").check()
    form.get_by_role("button", name="Add webhook").click()

    expect(page.locator("#webhook-secret")).to_be_visible()
    secret = page.locator("#secret-value").inner_text()
    assert secret.startswith("whsec_")
    row = page.locator("#webhook-rows tr", has_text=receiver.url)
    expect(row).to_have_count(1)
    expect(row).to_contain_text("SUCCEED")
    page.get_by_role("button", name="Done").click()
    expect(page.locator("#webhook-secret")).to_be_hidden()
    with api(node) as client:
        (hook,) = client.get("/api/v1/webhooks").json()["webhooks"]
        assert "secret" not in hook

    task = submit(node, "hooked")
    wait_for(lambda: receiver.count() >= 1, 20, "the POST")
    row.get_by_role("button", name="Deliveries").click()
    delivery = page.locator("#delivery-rows tr")
    expect(delivery).to_have_count(1, timeout=ms(LIVE_S))
    expect(delivery.locator(".dlv-status")).to_have_text("delivered", timeout=ms(LIVE_S))
    expect(delivery.locator(".http-status")).to_have_text("200")
    expect(delivery.locator(".latency")).to_contain_text(" ms")
    expect(delivery).to_contain_text("task.succeed")
    expect(delivery.locator(f'a[data-path="/tasks/{task["id"]}"]')).to_be_visible()

    delivery.get_by_role("button", name="Replay").click()
    expect(page.locator("#deliveries-note")).to_contain_text("is being sent again")
    wait_for(lambda: receiver.count() >= 2, 10, "the replayed POST")
    expect(delivery).to_contain_text("1 replay(s)", timeout=ms(LIVE_S))

    page.locator("#replay-since").fill("2020-01-01T00:00")
    page.get_by_role("button", name="Replay since").click()
    expect(page.locator("#deliveries-note")).to_contain_text("1 deliveries are being sent again")
    wait_for(lambda: receiver.count() >= 3, 10, "the POST replayed since")
    assert len(set(receiver.ids)) == 1  # one message, sent three times

    row.get_by_role("button", name="Delete").click()
    page.get_by_role("dialog").get_by_role("button", name="Delete").click()
    expect(row).to_have_count(0)
    expect(page.locator("#deliveries")).to_be_hidden()
    with api(node) as client:
        assert client.get(f"/api/v1/webhooks/{hook['id']}").status_code == 404
    assert not page.script_errors
