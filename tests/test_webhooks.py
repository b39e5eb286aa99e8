"""Signed webhooks: the signature a receiver checks (with the Standard Webhooks library and with the stdlib in a
few lines), the checks of a subscription's body and URL, the backoff; the store's scripts against the suite's
real Redis (events into deliveries once, events a dead reader left claimed by another, a lapsed lease sent by
another node, the retry window); and real nodes POSTing to a receiver on loopback: every SUCCEED signed, a
delivery retried after two 500s, a replay of one delivery and of everything since a time, refused URLs, the
CLI, and a node killed while it held a delivery's lease, which another node then delivers."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import orjson
import pytest
from redis.asyncio import Redis
from standardwebhooks import Webhook as Verifier
from standardwebhooks import WebhookVerificationError

from shoal.client import Client
from shoal.errors import InvalidInput, WebhookNotFound
from shoal.keys import WEBHOOKS_GROUP, Keys
from shoal.models import TaskSpec
from shoal.store.tasks import TaskStore
from shoal.store.webhooks import Outcome, WebhookStore
from shoal.testing import TestNode, multiplier, wait_for
from shoal.webhooks import guard, signing
from shoal.webhooks.delivery import backoff
from shoal.webhooks.model import since_time, webhook_spec

SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()
#: A node that may reach the receiver on loopback, and retries quickly.
FAST = ["--webhook-retry-backoff", "0.2", "--webhook-retry-max-backoff", "1"]
LOOPBACK = {"SHOAL_WEBHOOK_ALLOW_LOOPBACK": "1"}


# -- signing, bodies, URLs, backoff (no process) ------------------------------------------------------------


def stdlib_verify(secret: str, headers: dict[str, str], body: bytes) -> bool:
    """What a receiver without the library does: HMAC-SHA256 of "id.timestamp.body" keyed with the secret's
    bytes, compared with each ``v1,`` signature the header lists."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    return any(hmac.compare_digest(sig.removeprefix("v1,"), expected) for sig in headers["webhook-signature"].split())


def test_a_signature_verifies_with_the_standard_webhooks_library_and_the_stdlib() -> None:
    body = signing.payload("SUCCEED", 1_800_000_000.25, {"id": "t1", "state": "SUCCEED"})
    headers = signing.headers(SECRET, "msg_1", body, time.time())
    assert headers["webhook-id"] == "msg_1"
    assert headers["webhook-signature"].startswith("v1,")
    assert Verifier(SECRET).verify(body, headers) == {
        "type": "task.succeed",
        "timestamp": "2027-01-15T08:00:00.250000Z",
        "data": {"id": "t1", "state": "SUCCEED"},
    }
    assert stdlib_verify(SECRET, headers, body.encode())
    with pytest.raises(WebhookVerificationError):
        Verifier(signing.new_secret()).verify(body, headers)  # another secret
    with pytest.raises(WebhookVerificationError):
        Verifier(SECRET).verify(body.replace("t1", "t2"), headers)  # another body
    made = signing.new_secret()
    assert made.startswith("whsec_") and len(base64.b64decode(made[6:])) == 32 and made != signing.new_secret()


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ([], "must be a JSON object"),
        ({"events": ["SUCCEED"]}, "url is required"),
        ({"url": "http://x.org/h"}, "events is required"),
        ({"url": "http://x.org/h", "events": []}, "events is required"),
        ({"url": "http://x.org/h", "events": ["DONE"]}, "'DONE' is not a task state"),
        ({"url": "http://x.org/h", "events": ["succeed"]}, "'succeed' is not a task state"),
        ({"url": "http://x.org/h", "events": "SUCCEED"}, "events is required: a list"),
        ({"url": "http://x.org/h", "events": ["SUCCEED"], "types": "fetch"}, "types must be a list"),
        ({"url": "http://x.org/h", "events": ["SUCCEED"], "types": ["a,b"]}, "not a task type name"),
        ({"url": "http://x.org/h", "events": ["SUCCEED"], "include_result": "yes"}, "include_result must be"),
        ({"url": "http://x.org/h", "events": ["SUCCEED"], "secret": "hunter2"}, "secret must be whsec_"),
        ({"url": "http://x.org/h", "events": ["SUCCEED"], "secret": "whsec_c2hvcnQ="}, "it holds 5 bytes"),
        ({"url": "http://x.org/h", "events": ["SUCCEED"], "every": 1}, "unknown field"),
        ({"url": "http://x.org/" + "a" * 2100, "events": ["SUCCEED"]}, "url is over 2048"),
    ],
)
def test_a_bad_webhook_body_is_refused_with_what_is_wrong(body: Any, words: str) -> None:
    with pytest.raises(InvalidInput, match=words):
        webhook_spec(body)


def test_a_webhook_body_takes_each_state_once_and_types() -> None:
    spec = webhook_spec({"url": " http://x.org/h ", "events": ["SUCCEED", "SUCCEED", "KILLED"], "types": ["fetch"]})
    assert (spec.url, spec.events, spec.types, spec.include_result, spec.secret) == (
        "http://x.org/h", ("SUCCEED", "KILLED"), ("fetch",), False, None
    )  # fmt: skip


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data",
        "http://[fe80::1]/hook",
        "http://169.254.10.10:8080/hook",
        "http://metadata.google.internal/hook",
        "http://[::ffff:169.254.169.254]/hook",
        "http://100.100.100.200/hook",
    ],
)
async def test_metadata_and_link_local_urls_are_refused_even_with_loopback_allowed(url: str) -> None:
    with pytest.raises(InvalidInput, match="^url refused: "):
        await guard.check_url(url, allow_loopback=True)


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:9/h", "http://localhost:9/h", "http://[::1]:9/h", "http://0.0.0.0:9/h", "http://127.8.0.1/"],
)
async def test_loopback_urls_are_refused_unless_the_operator_allows_them(url: str) -> None:
    with pytest.raises(InvalidInput, match="webhook_allow_loopback"):
        await guard.check_url(url, allow_loopback=False)
    assert await guard.check_url(url, allow_loopback=True) == url


async def test_a_url_must_be_absolute_http() -> None:
    for url in ("ftp://x.org/h", "/hook", "http://"):
        with pytest.raises(InvalidInput, match="url"):
            await guard.check_url(url, allow_loopback=True)


def test_backoff_doubles_with_jitter_up_to_its_most() -> None:
    assert [backoff(n, 5, 3600, rand=lambda: 0.5) for n in (1, 2, 3, 4)] == [5, 10, 20, 40]
    assert backoff(30, 5, 3600, rand=lambda: 0.5) == 3600
    assert backoff(1, 5, 3600, rand=lambda: 0.0) == 4.0 and backoff(1, 5, 3600, rand=lambda: 1.0) == pytest.approx(6.0)
    assert backoff(1000, 5, 3600, rand=lambda: 1.0) == 3600


def test_since_is_unix_seconds_or_an_iso_time_with_its_offset() -> None:
    now = 1_800_000_000.0
    assert since_time(1_700_000_000, now) == 1_700_000_000.0
    assert since_time("1700000000.5", now) == 1_700_000_000.5
    assert since_time("2023-11-14T22:13:20Z", now) == 1_700_000_000.0
    for bad, words in ((None, "since is required"), ("yesterday", "neither"), ("2023-11-14T22:13:20", "offset"),
                       (now + 3600, "in the future"), (True, "since is required")):  # fmt: skip
        with pytest.raises(InvalidInput, match=words):
            since_time(bad, now)


# -- the store's scripts on the suite's real Redis ----------------------------------------------------------


class Stores:
    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self.keys = Keys("test")
        self.tasks = TaskStore(redis, self.keys, result_max_bytes=4096)
        self.webhooks = WebhookStore(self.tasks, most=3)

    async def add(self, events: tuple[str, ...] = ("KILLED",), types: tuple[str, ...] = ()) -> str:
        spec = webhook_spec({"url": "http://receiver.example/hook", "events": list(events), "types": list(types)})
        return (await self.webhooks.add(spec, SECRET)).id

    async def killed_task(self, task_type: str = "echo") -> str:
        """A task stored and killed: its events (WAITING, KILLED) go to the task-events stream."""
        created = await self.tasks.create([TaskSpec(name="t", type=task_type, target="x")])
        task_id = created[0].id
        await self.tasks.kill(task_id)
        return task_id


@pytest.fixture
async def stores(redis_url: str) -> AsyncIterator[Stores]:
    redis = Redis.from_url(redis_url)  # shoal's own user: a command the ACL lacks fails the test
    try:
        yield Stores(redis)
    finally:
        await redis.aclose()


async def test_events_become_one_delivery_per_matching_subscription_once(stores: Stores) -> None:
    killed = await stores.add(("KILLED",))
    fetches = await stores.add(("KILLED", "WAITING"), types=("fetch",))
    echo_id = await stores.killed_task("echo")
    fetch_id = await stores.killed_task("fetch")
    entries = await stores.webhooks.read_events("node-1", count=100, block_ms=None)
    assert entries, "the task events are in the stream"
    assert await stores.webhooks.ingest(entries) == 4  # killed: 2 KILLED; fetches: WAITING and KILLED of fetch
    assert await stores.webhooks.ingest(entries) == 0  # acknowledged already: nothing made twice
    pending: Any = await stores.redis.xpending(stores.keys.task_events, WEBHOOKS_GROUP)
    assert pending["pending"] == 0
    shown = {(d.task_id, d.state, d.task_type) for d in await stores.webhooks.deliveries(killed)}
    assert shown == {(echo_id, "KILLED", "echo"), (fetch_id, "KILLED", "fetch")}
    shown = {(d.task_id, d.state) for d in await stores.webhooks.deliveries(fetches)}
    assert shown == {(fetch_id, "WAITING"), (fetch_id, "KILLED")}
    assert all(d.status == "pending" and d.attempts == 0 for d in await stores.webhooks.deliveries(killed))


async def test_events_a_dead_reader_left_are_taken_over_and_ingested_once(stores: Stores) -> None:
    webhook = await stores.add(("KILLED",))
    task_id = await stores.killed_task()
    read = await stores.webhooks.read_events("dead-node", count=100, block_ms=None)
    assert read  # read, never ingested: the node died
    assert await stores.webhooks.claim_events("node-2", idle_ms=60_000) == ("0-0", [])  # not idle long enough
    start, taken = await stores.webhooks.claim_events("node-2", idle_ms=0)
    assert [e for e, _ in taken] == [e for e, _ in read]
    assert await stores.webhooks.ingest(taken) == 1
    assert await stores.webhooks.ingest(read) == 0  # the dead node's late ingest makes nothing
    assert [(d.task_id, d.state) for d in await stores.webhooks.deliveries(webhook)] == [(task_id, "KILLED")]


async def test_a_lapsed_lease_goes_to_another_node_and_the_first_ones_outcome_is_stale(stores: Stores) -> None:
    webhook = await stores.add(("KILLED",))
    await stores.killed_task()
    await stores.webhooks.ingest(await stores.webhooks.read_events("n1", count=100, block_ms=None))
    _, _, first = await stores.webhooks.claim("node-1", 10, 0.2)
    assert len(first) == 1 and first[0].url == "http://receiver.example/hook" and first[0].secret == SECRET
    assert (await stores.webhooks.claim("node-2", 10, 5.0))[2] == []  # leased to node-1
    deadline = time.monotonic() + 5 * multiplier()
    taken: list[Any] = []
    while not taken and time.monotonic() < deadline:
        taken = (await stores.webhooks.claim("node-2", 10, 5.0))[2]
    assert [d.id for d in taken] == [first[0].id] and taken[0].lease != first[0].lease
    ok = Outcome(True, 200, 12.5, response="thanks")
    assert (await stores.webhooks.done(first[0], ok, node="node-1", body="{}", retry_in_s=1, retry_for_s=60))[0] == (
        "stale"
    )
    status, _ = await stores.webhooks.done(taken[0], ok, node="node-2", body='{"a": 1}', retry_in_s=1, retry_for_s=60)
    assert status == "delivered"
    (shown,) = await stores.webhooks.deliveries(webhook)
    assert (shown.status, shown.attempts, shown.last.status_code, shown.last.node) == ("delivered", 1, 200, "node-2")  # type: ignore[union-attr]


async def test_a_failing_delivery_is_due_again_until_its_retry_window_is_spent(stores: Stores) -> None:
    webhook = await stores.add(("KILLED",))
    await stores.killed_task()
    await stores.webhooks.ingest(await stores.webhooks.read_events("n1", count=100, block_ms=None))
    (d,) = (await stores.webhooks.claim("node-1", 10, 5.0))[2]
    bad = Outcome(False, 500, 3.0, response="oops", error="HTTP 500")
    status, nxt = await stores.webhooks.done(d, bad, node="node-1", body="{}", retry_in_s=30, retry_for_s=60)
    assert status == "pending" and nxt is not None and nxt > time.time() + 20
    assert (await stores.webhooks.claim("node-1", 10, 5.0))[2] == []  # not due for 30 s
    await stores.webhooks.replay(webhook, d.id)  # a replay makes it due now, with a new window
    (d,) = (await stores.webhooks.claim("node-1", 10, 5.0))[2]
    status, nxt = await stores.webhooks.done(d, bad, node="node-1", body="", retry_in_s=90, retry_for_s=60)
    assert (status, nxt) == ("failed", None)  # the next attempt would be past the window
    (shown,) = await stores.webhooks.deliveries(webhook)
    assert (shown.status, shown.attempts, shown.replays) == ("failed", 2, 1)
    assert [a.status_code for a in shown.history] == [500, 500] and shown.history[0].response == "oops"


async def test_deleting_a_subscription_drops_its_log_and_queue(stores: Stores) -> None:
    webhook = await stores.add(("KILLED",))
    await stores.killed_task()
    await stores.webhooks.ingest(await stores.webhooks.read_events("n1", count=100, block_ms=None))
    assert await stores.redis.zcard(stores.keys.webhook_due) == 1
    await stores.webhooks.delete(webhook)
    assert await stores.redis.zcard(stores.keys.webhook_due) == 0
    assert await stores.webhooks.list() == []
    with pytest.raises(InvalidInput, match="its most"):
        for _ in range(4):
            await stores.add()


# -- real nodes and a receiver on loopback ------------------------------------------------------------------


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float = field(default_factory=time.time)

    def json(self) -> Any:
        return orjson.loads(self.body)


class Receiver:
    """A webhook receiver on loopback: records every POST and answers from a script per path (statuses in
    order, then 200); a path in ``hold`` is held until its event is set (at most 30 s)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.got: list[Received] = []
        self.answers: dict[str, list[int]] = {}
        self.hold: dict[str, threading.Event] = {}
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                got = Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                with receiver.lock:
                    receiver.got.append(got)
                    held = receiver.hold.get(self.path)
                    script = receiver.answers.get(self.path) or []
                    code = script.pop(0) if script else 200
                if held is not None:
                    held.wait(30)
                answer = b'{"ok": true}' if code < 300 else b"receiver says no"
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def posts(self, path: str) -> list[Received]:
        with self.lock:
            return [r for r in self.got if r.path == path]

    def close(self) -> None:
        for event in self.hold.values():
            event.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.close()


def api(node: TestNode) -> httpx.Client:
    return httpx.Client(base_url=node.http_url, headers=node.headers(), timeout=30.0, trust_env=False)


def subscribe(client: httpx.Client, url: str, **fields: Any) -> dict[str, Any]:
    response = client.post("/api/v1/webhooks", json={"url": url, "events": ["SUCCEED"], **fields})
    assert response.status_code == 201, response.text
    made: dict[str, Any] = response.json()
    return made


def run_echo(client: httpx.Client, target: str) -> str:
    response = client.post("/api/v1/tasks?wait=30", json={"name": "hooked", "type": "echo", "target": target})
    assert response.status_code in (200, 201), response.text
    assert response.json()["state"] == "SUCCEED", response.text
    return str(response.json()["id"])


def deliveries(client: httpx.Client, webhook_id: str) -> list[dict[str, Any]]:
    response = client.get(f"/api/v1/webhooks/{webhook_id}/deliveries")
    assert response.status_code == 200, response.text
    found: list[dict[str, Any]] = response.json()["deliveries"]
    return found


@pytest.mark.e2e
def test_every_succeed_reaches_the_receiver_signed_and_replays_resend_it(node_factory: Any, receiver: Receiver) -> None:
    node = node_factory(args=FAST, env=LOOPBACK)
    with api(node) as client:
        plain = subscribe(client, receiver.url + "/plain")
        with_result = subscribe(client, receiver.url + "/result", include_result=True, types=["echo"])
        other_type = subscribe(client, receiver.url + "/fetches", types=["fetch"])
        assert plain["secret"].startswith("whsec_") and plain["id"].startswith("wh_")
        listed = client.get("/api/v1/webhooks").json()["webhooks"]
        assert [w["id"] for w in listed] == [plain["id"], with_result["id"], other_type["id"]]
        assert all("secret" not in w for w in listed)  # shown once, at creation
        ids = [run_echo(client, f"hello {n}") for n in range(5)]

        posts = wait_for(lambda: len(receiver.posts("/plain")) >= 5 and receiver.posts("/plain"), 20, "5 POSTs")
        seen = {}
        for post in posts:
            data = Verifier(plain["secret"]).verify(post.body, post.headers)
            assert stdlib_verify(plain["secret"], post.headers, post.body)
            assert data["type"] == "task.succeed" and data["data"]["state"] == "SUCCEED"
            assert "result" not in data["data"]
            assert post.headers["content-type"] == "application/json"
            seen[data["data"]["id"]] = post.headers["webhook-id"]
        assert sorted(seen) == sorted(ids)
        assert len(set(seen.values())) == 5

        results = wait_for(lambda: len(receiver.posts("/result")) >= 5 and receiver.posts("/result"), 20, "results")
        codes = {Verifier(with_result["secret"]).verify(p.body, p.headers)["data"]["result"]["code"] for p in results}
        assert codes == {f"hello {n}" for n in range(5)}
        assert receiver.posts("/fetches") == []  # echo tasks only: its types filter them out

        log = wait_for(
            lambda: (d := deliveries(client, plain["id"])) and all(x["status"] == "delivered" for x in d) and d,
            10,
            "the delivery log",
        )
        assert len(log) == 5 and {d["task_id"] for d in log} == set(ids)
        assert all(d["status_code"] == 200 and d["latency_ms"] >= 0 and d["attempts"] == 1 for d in log)
        assert all(d["response"] == '{"ok": true}' and d["type"] == "task.succeed" for d in log)

        # a replay of one delivery: the same body and webhook-id again, with a fresh valid signature
        chosen = log[-1]
        before = len(receiver.posts("/plain"))
        response = client.post(f"/api/v1/webhooks/{plain['id']}/deliveries/{chosen['id']}/replay")
        assert response.status_code == 202, response.text
        again = wait_for(lambda: receiver.posts("/plain")[before:], 10, "the replayed POST")
        assert len(again) == 1 and again[0].headers["webhook-id"] == chosen["message_id"]
        original = next(p for p in posts if p.headers["webhook-id"] == chosen["message_id"])
        assert again[0].body == original.body
        Verifier(plain["secret"]).verify(again[0].body, again[0].headers)
        wait_for(lambda: deliveries(client, plain["id"])[-1]["replays"] == 1, 10, "the replay in the log")

        # replay since a time: the deliveries of events at or after it, none before
        since = sorted(d["event_at"] for d in log)[2]
        before = len(receiver.posts("/plain"))
        response = client.post(f"/api/v1/webhooks/{plain['id']}/replay", json={"since": since})
        assert response.status_code == 202, response.text
        assert response.json()["replayed"] == 3
        resent = wait_for(lambda: len(receiver.posts("/plain")) >= before + 3 and receiver.posts("/plain")[before:],
                          10, "3 POSTs replayed")  # fmt: skip
        expected = {d["message_id"] for d in log if d["event_at"] >= since}
        assert {p.headers["webhook-id"] for p in resent} == expected

        # deleting the subscription stops its POSTs
        assert client.delete(f"/api/v1/webhooks/{plain['id']}").status_code == 204
        assert client.get(f"/api/v1/webhooks/{plain['id']}/deliveries").status_code == 404
        count = len(receiver.posts("/plain"))
        run_echo(client, "after delete")
        wait_for(lambda: len(receiver.posts("/result")) >= 6, 20, "the other webhook's POST")
        assert len(receiver.posts("/plain")) == count


@pytest.mark.e2e
def test_a_delivery_answered_500_twice_is_retried_until_delivered(node_factory: Any, receiver: Receiver) -> None:
    receiver.answers["/flaky"] = [500, 500]
    node = node_factory(args=FAST, env=LOOPBACK)
    with api(node) as client:
        hook = subscribe(client, receiver.url + "/flaky", events=["SUCCEED", "RUNTIME_ERROR"])
        task_id = run_echo(client, "flaky")
        posts = wait_for(lambda: len(receiver.posts("/flaky")) >= 3 and receiver.posts("/flaky"), 30, "3 attempts")
        assert len({p.headers["webhook-id"] for p in posts}) == 1  # one message, three attempts
        assert all(Verifier(hook["secret"]).verify(p.body, p.headers)["data"]["id"] == task_id for p in posts)
        assert len({p.body for p in posts}) == 1
        (shown,) = wait_for(
            lambda: (d := deliveries(client, hook["id"])) and d[0]["status"] == "delivered" and d, 10, "delivered"
        )
        assert shown["attempts"] == 3 and [a["status_code"] for a in shown["history"]] == [500, 500, 200]
        assert shown["history"][0]["error"] == "HTTP 500" and shown["history"][0]["response"] == "receiver says no"
        assert posts[2].at - posts[0].at >= 0.2 * 0.8 * 3 * 0.9  # waited the backoff: 0.2 s, then 0.4 s (jittered)
        time.sleep(1.5)  # would a fourth come? (a delivered delivery is never sent again by itself)
        assert len(receiver.posts("/flaky")) == 3


@pytest.mark.e2e
def test_refused_urls_and_bad_input_get_400_and_unknown_ids_404(shoal_node: TestNode, receiver: Receiver) -> None:
    with api(shoal_node) as client:  # the node does not allow loopback
        for url, words in (
            ("http://169.254.169.254/latest/meta-data/", "169.254.169.254 is a link-local address"),
            ("http://[fe80::1]:8080/hook", "is a link-local address"),
            ("http://metadata.google.internal/hook", "cloud metadata service"),
            (receiver.url + "/hook", "loopback address; webhook_allow_loopback"),
            ("http://localhost:9/hook", "webhook_allow_loopback"),
            ("file:///etc/passwd", "http:// or https://"),
        ):
            response = client.post("/api/v1/webhooks", json={"url": url, "events": ["SUCCEED"]})
            assert response.status_code == 400, (url, response.text)
            assert response.json()["error"] == "invalid_input" and words in response.json()["message"], response.text
        for body in ({"url": "http://example.org/h"}, {"url": "http://example.org/h", "events": ["NOPE"]}, []):
            response = client.post("/api/v1/webhooks", json=body)
            assert response.status_code == 400 and response.json()["error"] == "invalid_input", response.text
        assert client.get("/api/v1/webhooks").json() == {"webhooks": []}  # nothing was stored

        missing = "wh_0123456789abcdef"
        for method, path in (
            ("DELETE", f"/api/v1/webhooks/{missing}"),
            ("GET", f"/api/v1/webhooks/{missing}/deliveries"),
            ("POST", f"/api/v1/webhooks/{missing}/deliveries/1/replay"),
        ):
            response = client.request(method, path)
            assert response.status_code == 404 and response.json()["error"] == "webhook_not_found", response.text
        response = client.post(f"/api/v1/webhooks/{missing}/replay", json={"since": 0})
        assert response.status_code == 404, response.text
        response = client.delete("/api/v1/webhooks/not-an-id")
        assert response.status_code == 400 and "not a webhook id" in response.json()["message"]
        made = subscribe(client, "http://example.org/hook")
        response = client.post(f"/api/v1/webhooks/{made['id']}/deliveries/42/replay")
        assert response.status_code == 404 and response.json()["error"] == "delivery_not_found", response.text
        response = client.post(f"/api/v1/webhooks/{made['id']}/replay", json={"since": "last tuesday"})
        assert response.status_code == 400 and "since" in response.json()["message"], response.text
        response = client.get(f"/api/v1/webhooks/{made['id']}/deliveries?status=lost")
        assert response.status_code == 400, response.text

    with Client(shoal_node.http_url, shoal_node.token) as c:  # the Python client raises shoal's errors
        with pytest.raises(WebhookNotFound, match="no webhook with id"):
            c.deliveries(missing)
        with pytest.raises(InvalidInput, match="link-local"):
            c.add_webhook("http://169.254.169.254/", ["SUCCEED"])
        added = c.add_webhook("http://example.org/other", ["KILLED"], types=["fetch"], include_result=True)
        assert added.secret and added.types == ("fetch",) and added.include_result
        assert c.webhook(added.id).secret is None and [w.id for w in c.webhooks()] == [made["id"], added.id]
        c.delete_webhook(added.id)
        assert c.deliveries(made["id"]) == []


def shoal(node: TestNode, *args: str) -> subprocess.CompletedProcess[str]:
    env = {"SHOAL_API": node.http_url, "SHOAL_TOKEN": node.token, "PATH": "/usr/bin:/bin", "NO_COLOR": "1"}
    return subprocess.run(
        [sys.executable, "-m", "shoal", *args], capture_output=True, text=True, env=env, timeout=60 * multiplier()
    )


@pytest.mark.e2e
def test_the_cli_adds_lists_shows_deliveries_replays_and_removes(node_factory: Any, receiver: Receiver) -> None:
    node = node_factory(args=FAST, env=LOOPBACK)
    added = shoal(node, "webhook", "add", receiver.url + "/cli", "--events", "SUCCEED,RUNTIME_ERROR", "--json")
    assert added.returncode == 0, added.stderr
    hook = json.loads(added.stdout)
    assert hook["events"] == ["SUCCEED", "RUNTIME_ERROR"] and hook["secret"].startswith("whsec_")
    shown = shoal(node, "webhook", "add", receiver.url + "/cli", "--events", "SUCCEED", "--secret", SECRET)
    assert shown.returncode == 0 and SECRET in shown.stdout and "not shown again" in shown.stderr
    listed = shoal(node, "webhook", "list")
    assert listed.returncode == 0 and hook["id"] in listed.stdout and SECRET not in listed.stdout

    with api(node) as client:
        task_id = run_echo(client, "from the cli")
    wait_for(lambda: len(receiver.posts("/cli")) >= 2, 20, "both webhooks' POSTs")
    log = wait_for(
        lambda: (
            (r := shoal(node, "webhook", "deliveries", hook["id"], "--json")).returncode == 0
            and (d := json.loads(r.stdout)["deliveries"])
            and d[0]["status"] == "delivered"
            and d
        ),
        20,
        "the delivery log",
    )
    assert log[0]["task_id"] == task_id
    table = shoal(node, "webhook", "deliveries", hook["id"])
    assert table.returncode == 0 and "delivered" in table.stdout and "200" in table.stdout

    replayed = shoal(node, "webhook", "replay", hook["id"], log[0]["id"])
    assert replayed.returncode == 0 and f"replaying delivery {log[0]['id']}" in replayed.stdout
    wait_for(lambda: len(receiver.posts("/cli")) >= 3, 10, "the replayed POST")
    since = shoal(node, "webhook", "replay", hook["id"], "--since", "10m")
    assert since.returncode == 0 and "replaying 1 deliveries" in since.stdout, since.stdout + since.stderr
    wait_for(lambda: len(receiver.posts("/cli")) >= 4, 10, "the POST replayed since")

    for args, words in (
        (["webhook", "add", receiver.url, "--events", "DONE"], "'DONE' is not a task state"),
        (["webhook", "add", "http://169.254.169.254/", "--events", "SUCCEED"], "link-local"),
        (["webhook", "replay", hook["id"]], "either a DELIVERY_ID or --since"),
        (["webhook", "replay", hook["id"], "--since", "soon"], "--since"),
        (["webhook", "rm", "nope"], "not a webhook id"),
    ):
        refused = shoal(node, *args)
        assert refused.returncode == 2 and words in refused.stderr, (args, refused.stderr)
        assert "Traceback" not in refused.stderr
    gone = shoal(node, "webhook", "rm", hook["id"])
    assert gone.returncode == 0 and f"deleted webhook {hook['id']}" in gone.stdout
    again = shoal(node, "webhook", "rm", hook["id"])
    assert again.returncode == 1 and "no webhook with id" in again.stderr


@pytest.mark.e2e
def test_a_node_killed_while_it_holds_a_delivery_leaves_it_to_another(node_factory: Any, receiver: Receiver) -> None:
    held = receiver.hold["/slow"] = threading.Event()  # the first POST gets no answer while node-1 lives
    settings = [*FAST, "--webhook-timeout", "2", "--heartbeat-interval", "0.2"]
    node1 = node_factory(name="node-1", args=settings, env=LOOPBACK)
    with api(node1) as client:
        hook = subscribe(client, receiver.url + "/slow")
        task_id = run_echo(client, "slow")
    wait_for(lambda: receiver.posts("/slow"), 20, "node-1's POST")
    node2 = node_factory(name="node-2", args=settings, env=LOOPBACK)
    node1.kill()
    held.set()  # node-1's connection is gone: later POSTs are answered at once
    posts = wait_for(lambda: len(receiver.posts("/slow")) >= 2 and receiver.posts("/slow"), 30, "node-2's POST")
    assert posts[0].headers["webhook-id"] == posts[1].headers["webhook-id"]
    assert Verifier(hook["secret"]).verify(posts[1].body, posts[1].headers)["data"]["id"] == task_id
    with api(node2) as client:
        (shown,) = wait_for(
            lambda: (d := deliveries(client, hook["id"])) and d[0]["status"] == "delivered" and d, 20, "delivered"
        )
    assert shown["history"][-1]["node"] == "node-2" and shown["history"][-1]["status_code"] == 200
