"""The webhook loops every node runs: task events into deliveries (``EventIngest``), deliveries onto the wire
(``Sender``).

Any node may ingest any event and send any delivery; the store decides who does what (a consumer group for
events, leases for deliveries), so a node's death loses nothing and a node's start needs no hand-over. Both
loops idle, reading nothing, while the cluster holds no subscription.

A POST goes through the node's outbound client for webhooks (``shoal.outbound``, with ``guard.Resolver``):
addresses checked at connect time, no redirects followed, no environment proxies, the whole attempt bounded
by ``webhook_timeout`` and at most ``SNIPPET_BYTES`` of the answer read. Any 2xx is a delivery; anything else
(another status, a refused address, a timeout, a reset) is retried after ``backoff`` until the retry window
since the first attempt is spent, then the delivery is failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import httpx
import orjson

from shoal.addresses import AddressRefused, Unresolvable
from shoal.errors import TaskNotFound
from shoal.models import Task, TaskResult
from shoal.store.webhooks import Leased, Outcome, WebhookStore
from shoal.version import __version__
from shoal.webhooks import signing
from shoal.webhooks.model import RESPONSE_SNIPPET_CHARS, message_id

log = logging.getLogger("shoal.webhooks")

USER_AGENT = f"shoal-webhooks/{__version__}"
#: Bytes of a receiver's answer read, at most (the log keeps RESPONSE_SNIPPET_CHARS characters of them).
SNIPPET_BYTES = 4 * RESPONSE_SNIPPET_CHARS
#: Seconds a lease outlasts the attempt's own time limit: room for building the body and recording the outcome.
LEASE_MARGIN_S = 5.0
#: Seconds between two looks at the queue or the stream while nothing woke the loop.
POLL_S = 1.0
#: Seconds between two looks for subscriptions while there are none.
IDLE_S = 1.0
#: Stream entries read per call.
BATCH = 100


def backoff(attempt: int, base_s: float, max_s: float, rand: Callable[[], float] = random.random) -> float:
    """Seconds before the retry after failed attempt ``attempt`` (1 for the first): ``base_s`` doubled per
    attempt, at most ``max_s``, and jittered by up to a fifth either way so that the retries of many
    deliveries that failed together do not all come back together."""
    delay: float = min(max_s, base_s * 2.0 ** min(max(attempt - 1, 0), 40))
    return min(max_s, delay * (0.8 + 0.4 * rand()))


async def _tick_forever(tick: Callable[[], Awaitable[None]], what: str) -> None:
    """Run ``tick`` again and again, from a random instant (nodes started together do not look together); a
    failure (the store away) is logged and retried a second later."""
    await asyncio.sleep(random.uniform(0, 0.2))
    while True:
        try:
            await tick()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("could not %s: %s", what, exc)
            await asyncio.sleep(1.0)


class TaskReader(Protocol):
    """What a delivery's body is made of (``shoal.store.tasks.TaskStore``)."""

    async def get_with_result(self, task_id: str, *, result: bool = True) -> tuple[Task, TaskResult | None]: ...


class _Active:
    """Whether the cluster holds any subscription, read from the store at most every ``every_s`` seconds."""

    def __init__(self, store: WebhookStore, every_s: float) -> None:
        self.store = store
        self.every_s = every_s
        self._known = False
        self._at = -math.inf

    async def __call__(self) -> bool:
        if time.monotonic() - self._at >= self.every_s:
            self._known = await self.store.count() > 0
            self._at = time.monotonic()
        return self._known


class EventIngest:
    """Reads the task-events stream through the group ``webhooks`` as consumer ``consumer`` (the node's name)
    and turns entries into deliveries; takes over entries other consumers left unacknowledged for
    ``claim_idle_s``. ``on_made`` is called (in the loop) when deliveries were made. One ``run`` per node."""

    def __init__(self, *, store: WebhookStore, consumer: str, claim_idle_s: float, on_made: Callable[[], None]) -> None:
        self.store = store
        self.consumer = consumer
        self.claim_idle_s = claim_idle_s
        self.on_made = on_made
        self.active = _Active(store, IDLE_S)
        self.made = 0
        self._next_claim = 0.0

    def __repr__(self) -> str:
        return f"EventIngest(consumer={self.consumer!r}, made={self.made})"

    async def run(self) -> None:
        await _tick_forever(self.tick, "read task events for webhooks")

    async def tick(self, block_ms: int = int(POLL_S * 1000)) -> None:
        if not await self.active():
            await asyncio.sleep(IDLE_S)
            return
        await self._ingest(await self.store.read_events(self.consumer, count=BATCH, block_ms=block_ms))
        if time.monotonic() >= self._next_claim:
            self._next_claim = time.monotonic() + max(self.claim_idle_s / 2, 0.5)
            start = "0-0"
            for _ in range(100):  # at most 10,000 entries per look
                start, entries = await self.store.claim_events(
                    self.consumer, idle_ms=int(self.claim_idle_s * 1000), start=start, count=BATCH
                )
                if entries:
                    log.info("took over %d task event entries another node left unread", len(entries))
                await self._ingest(entries)
                if start == "0-0":
                    break

    async def _ingest(self, entries: list[Any]) -> None:
        made = await self.store.ingest(entries)
        if made:
            self.made += made
            self.on_made()


class Sender:
    """Leases due deliveries, sends up to ``concurrency`` at once, and records each outcome. ``wake()`` makes
    it look at the queue now (this node made deliveries). One ``run`` per node; ``tick`` for tests.

    Parameters:
        store: the deliveries.
        tasks: reads a delivery's task (and result) for its body.
        client: the outbound client for webhooks (checked addresses, no redirects).
        node: this node's name, recorded with each attempt and in its lease.
        timeout_s: longest attempt, in all (the node's ``webhook_timeout``).
        backoff_s, max_backoff_s: the first retry's delay and the longest (doubling in between).
        retry_for_s: how long after the first attempt a delivery is still retried.
        result_max_bytes: largest result (as JSON) a body carries for an ``include_result`` subscription.
        concurrency: deliveries sent at once.
    """

    def __init__(
        self,
        *,
        store: WebhookStore,
        tasks: TaskReader,
        client: httpx.AsyncClient,
        node: str,
        timeout_s: float,
        backoff_s: float,
        max_backoff_s: float,
        retry_for_s: float,
        result_max_bytes: int,
        concurrency: int = 16,
    ) -> None:
        self.store = store
        self.tasks = tasks
        self.client = client
        self.node = node
        self.timeout_s = timeout_s
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.retry_for_s = retry_for_s
        self.result_max_bytes = result_max_bytes
        self.concurrency = concurrency
        self.active = _Active(store, IDLE_S)
        self.sent = 0
        self.failed = 0
        self._wake = asyncio.Event()
        self._sending: set[asyncio.Task[None]] = set()

    def __repr__(self) -> str:
        return f"Sender(node={self.node!r}, sending={len(self._sending)}, sent={self.sent}, failed={self.failed})"

    @property
    def lease_s(self) -> float:
        return self.timeout_s + LEASE_MARGIN_S

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        try:
            await _tick_forever(self.tick, "lease webhook deliveries")
        finally:
            for task in list(self._sending):  # their leases lapse, and other nodes send them
                task.cancel()
            await asyncio.gather(*self._sending, return_exceptions=True)

    async def tick(self) -> None:
        """Lease what is due and start sending it; then wait until the next delivery is due, a send ends with
        the slots full, or ``wake``, at most POLL_S."""
        self._wake.clear()
        if not self._sending and not await self.active():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), IDLE_S)
            return
        free = self.concurrency - len(self._sending)
        now, nxt, leased = await self.store.claim(self.node, free, self.lease_s)
        for delivery in leased:
            task = asyncio.create_task(self._send(delivery), name=f"webhook-{delivery.id}")
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)
        wait = POLL_S if nxt is None else min(POLL_S, max(0.0, nxt - now))
        if self.concurrency - len(self._sending) <= 0:
            await asyncio.wait(self._sending, timeout=POLL_S, return_when=asyncio.FIRST_COMPLETED)
        elif wait > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), wait)

    async def _send(self, d: Leased) -> None:
        try:
            body = d.body or await self.body(d)
            outcome = await self.post(d, body)
            delay = backoff(d.attempts + 1, self.backoff_s, self.max_backoff_s)
            status, nxt = await self.store.done(
                d, outcome, node=self.node, body="" if d.body else body, retry_in_s=delay, retry_for_s=self.retry_for_s
            )
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the store failed: the lease lapses, and the delivery is sent again
            log.warning("webhook delivery %s: could not record its attempt: %s", d.id, exc)
            return
        if outcome.ok:
            self.sent += 1
        else:
            self.failed += 1
            log.info(
                "webhook delivery %s to %s failed (%s); %s",
                d.id,
                d.url,
                outcome.error or outcome.status_code,
                f"next attempt in {nxt - time.time():.1f}s" if nxt else status,
            )

    async def body(self, d: Leased) -> str:
        """The JSON a delivery sends: the task as it is now (the first attempt fixes it for the rest), with its
        result when the subscription asked for it and it is small enough."""
        try:
            task, result = await self.tasks.get_with_result(d.task_id, result=d.include_result)
        except TaskNotFound:  # deleted since: what the event itself says
            return signing.payload(d.state, d.at, {"id": d.task_id, "state": d.state, "type": d.task_type,
                                                   "deleted": True})  # fmt: skip
        data = task.to_json()
        if d.include_result:
            data["result"] = None
            if result is not None:
                shown = result.to_json()
                if len(orjson.dumps(shown)) <= self.result_max_bytes:
                    data["result"] = shown
                else:
                    data["result_omitted"] = (
                        f"the result is over {self.result_max_bytes} bytes; GET /api/v1/tasks/{task.id}/result"
                    )
        return signing.payload(d.state, d.at, data)

    async def post(self, d: Leased, body: str) -> Outcome:
        """One signed POST of ``body`` to the subscription's URL, and what came of it."""
        headers = {
            "content-type": "application/json",
            "user-agent": USER_AGENT,
            **signing.headers(d.secret, message_id(d.webhook_id, d.id), body, time.time()),
        }
        started = time.monotonic()

        def took() -> float:
            return (time.monotonic() - started) * 1000

        try:
            async with asyncio.timeout(self.timeout_s):
                async with self.client.stream("POST", d.url, content=body.encode(), headers=headers) as response:
                    snippet = await _snippet(response)
        except TimeoutError:
            return Outcome(False, None, took(), error=f"no answer within {self.timeout_s:g}s")
        except (AddressRefused, Unresolvable) as exc:
            return Outcome(False, None, took(), error=str(exc))
        except httpx.HTTPError as exc:
            return Outcome(False, None, took(), error=f"{type(exc).__name__}: {exc}"[:RESPONSE_SNIPPET_CHARS])
        code = response.status_code
        if 200 <= code < 300:
            return Outcome(True, code, took(), response=snippet)
        why = f"HTTP {code}" + (" (redirects are not followed)" if 300 <= code < 400 else "")
        return Outcome(False, code, took(), response=snippet, error=why)


async def _snippet(response: httpx.Response) -> str:
    """The start of the answer's body, as text: at most SNIPPET_BYTES read, RESPONSE_SNIPPET_CHARS kept."""
    got = bytearray()
    async for chunk in response.aiter_raw():
        got += chunk
        if len(got) >= SNIPPET_BYTES:
            break
    return bytes(got[:SNIPPET_BYTES]).decode("utf-8", errors="replace")[:RESPONSE_SNIPPET_CHARS]
