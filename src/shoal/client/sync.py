"""``Client``: the blocking REST client (httpx.Client). Safe to share between threads, as httpx.Client is."""

from __future__ import annotations

import builtins
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import httpx

from shoal.client import _calls, _config, _webhooks
from shoal.client._sse import Follow, Parser, StreamItem
from shoal.client.errors import ApiUnreachable, WaitTimeout, from_response, unreachable
from shoal.errors import InvalidInput, ResultNotFound, ShoalError
from shoal.models import ClusterView, Task, TaskPage, TaskResult, TaskSpec, TaskState
from shoal.schedules import Schedule
from shoal.webhooks.model import Delivery, Webhook
from shoal.workflows import WorkflowGraph

T = TypeVar("T")

DEFAULT_TIMEOUT_S = _config.DEFAULT_TIMEOUT_S
#: How long ``run`` waits for its task by default, in seconds.
DEFAULT_RUN_TIMEOUT_S = 60.0


class Client:
    """Talks to one shoal node's REST API; any node answers any call.

    Parameters:
        api: base URL; default ``SHOAL_API``, then ``http://127.0.0.1:8080``.
        token: cluster token; default ``SHOAL_TOKEN``, then ``./.shoal/token``.
        timeout_s: per-request timeout; long polls add the time the server may hold them.
        transport: an httpx transport, to talk to an app in-process.
    """

    def __init__(
        self,
        api: str | None = None,
        token: str | None = None,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        token_file: Path | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = _config.base_url(api)
        self.token = _config.token(token, token_file)
        self.timeout_s = timeout_s
        headers = _config.headers(self.token)
        self._http = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout_s, transport=transport)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def __repr__(self) -> str:
        return f"Client({self.base_url!r})"

    def _send(self, call: _calls.Call[T]) -> T:
        timeout = httpx.Timeout(self.timeout_s, read=self.timeout_s + call.hold_s)
        headers = call.headers()
        try:
            response = self._http.request(
                call.method, call.path, params=call.params, content=call.content(), headers=headers, timeout=timeout
            )
        except httpx.TransportError as exc:
            raise unreachable(self.base_url, exc) from None
        if response.is_error and response.status_code not in call.accept:
            raise from_response(response)
        return call.read(response)

    # tasks

    def submit(
        self,
        type: str,
        target: str = "",
        name: str | None = None,
        params: dict[str, Any] | None = None,
        timeout_s: float | None = None,
        max_retries: int | None = None,
        wait: float | None = None,
        max_lost_attempts: int | None = None,
        memory_mb: int | None = None,
        cpu_s_limit: float | None = None,
        result_ttl_s: float | str | None = None,
        run_at: float | str | None = None,
        delay_s: float | str | None = None,
        idempotency_key: str | None = None,
        priority: int | None = None,
        requires: dict[str, str] | None = None,
        concurrency_key: str | None = None,
        args: Iterable[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        depends_on: Iterable[str] | None = None,
        on_parent_failure: str | None = None,
    ) -> Task:
        """Submit a task (``name`` defaults to ``type``); with ``wait``, answer once it ends or after ``wait`` s.

        ``max_lost_attempts``: attempts lost with their node or worker process before the task is quarantined
        (ends RUNTIME_ERROR); None leaves it to the cluster's default. ``memory_mb`` (MiB) and ``cpu_s_limit``
        (seconds) bound each attempt in its worker process; None leaves them to the type's bound, else the
        node's default, and a value above the type's bound is held to it when the attempt runs.
        ``result_ttl_s``: how long the task and its result are kept once it has ended, if less than the
        cluster's retention: seconds or a duration such as ``"90s"``, ``"15m"``, ``"12h"``, ``"7d"`` (above 0,
        at most a year); None keeps it for the retention. ``run_at`` (Unix seconds or an RFC 3339 date-time
        with its offset) or ``delay_s`` (seconds or a duration) hold the task back until then (WAITING, its
        ``waiting_for`` saying so), at most a year. ``idempotency_key``: a second submit with the same key
        within the cluster's idempotency window (a day by default) stores nothing and answers with the first
        task. ``priority``: 0 (lowest) to 9 (highest), default 5. ``requires``: node labels the task may only
        run on (``{"gpu": "1"}``). ``concurrency_key``: the key its type's per-key limits count it under.
        ``args`` and ``kwargs``: the arguments of a function task (``@shoal.task``; JSON values), which needs
        no ``target``; they are checked against the function's signature, and a type run by a handler refuses
        them (InvalidInput). See ``shoal.task`` for submitting a function by itself. ``depends_on``: ids of
        tasks that must SUCCEED first (it waits until then; ``ctx.parents`` has their results); a parent that
        ends otherwise kills it, unless ``on_parent_failure`` is "run". See ``shoal.chain`` for workflows.
        """
        return self._send(
            _calls.submit(
                type,
                target,
                name=name,
                params=params,
                timeout_s=timeout_s,
                max_retries=max_retries,
                max_lost_attempts=max_lost_attempts,
                wait=wait,
                memory_mb=memory_mb,
                cpu_s_limit=cpu_s_limit,
                result_ttl_s=result_ttl_s,
                run_at=run_at,
                delay_s=delay_s,
                idempotency_key=idempotency_key,
                priority=priority,
                requires=requires,
                concurrency_key=concurrency_key,
                args=args,
                kwargs=kwargs,
                depends_on=depends_on,
                on_parent_failure=on_parent_failure,
            )
        )

    def submit_many(
        self,
        specs: Iterable[TaskSpec | Mapping[str, Any]],
        *,
        chunk: int = _calls.MAX_BATCH,
        on_chunk: Callable[[builtins.list[Task]], None] | None = None,
    ) -> builtins.list[Task]:
        """Submit many tasks, ``chunk`` (at most 1000) per request, and return them stored, in order.

        Each spec is a ``TaskSpec`` or a mapping of the REST fields (``name`` defaults to ``type``). Every
        spec is checked before anything is sent: a malformed one raises InvalidInput naming its ``index`` and
        nothing is stored. Each chunk is stored whole or not at all, so a chunk the server refuses (e.g. a type
        no live node runs) raises the server's error (UnknownTaskType, InvalidInput...) with ``index`` counted
        over the whole list; the chunks before it stay stored, and the error's ``stored`` lists their tasks
        (its message says how many). Requests also stay under the server's body limit. ``on_chunk`` is
        called with each chunk's tasks once stored (e.g. to show progress).
        """
        stored: builtins.list[Task] = []
        for part in _calls.chunked(_calls.batch_bodies(specs), chunk):
            try:
                created = self._send(_calls.submit_batch(part))
            except ShoalError as exc:
                raise _calls.refused_chunk(exc, len(stored), stored) from None
            stored.extend(created)
            if on_chunk is not None:
                on_chunk(created)
        return stored

    def run(
        self,
        type: str,
        target: str,
        *,
        name: str | None = None,
        params: dict[str, Any] | None = None,
        timeout: float = DEFAULT_RUN_TIMEOUT_S,
        **spec_fields: Any,
    ) -> TaskResult:
        """Submit a task and return its result once it succeeded, in one call (and one request when it ends
        within a minute). ``spec_fields`` are the other task fields (``timeout_s``, ``max_retries``,
        ``max_lost_attempts``, ``memory_mb``, ``cpu_s_limit``, ``result_ttl_s``).

        Raises WaitTimeout (a TimeoutError, with the task) if it has not ended within ``timeout`` seconds; it
        runs on. Raises TaskFailed (with the task) if it ended RUNTIME_ERROR or KILLED.
        """
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout > 0:
            raise InvalidInput("timeout must be a number of seconds above 0")
        body = _calls.spec_body({"type": type, "target": target, "name": name, "params": params, **spec_fields})
        deadline = time.monotonic() + timeout
        task, found = self._send(_calls.submit_and_wait(body, timeout))
        while not task.state.terminal:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise WaitTimeout(task, timeout)
            task, found = self._send(_calls.get_with_result(task.id, remaining))
        return _calls.outcome(task, found)

    def wait_result(self, task_id: str, timeout: float | None = None) -> TaskResult:
        """The result of a task once it has succeeded (a function task's return value is its ``value``).

        Raises TaskFailed (with the task, its state and error) if it ended RUNTIME_ERROR or KILLED, and
        WaitTimeout (a TimeoutError, with the task) if it has not ended within ``timeout`` seconds (None: wait
        as long as it takes); it runs on.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            remaining = _calls.MAX_WAIT_S if deadline is None else deadline - time.monotonic()
            task, found = self._send(_calls.get_with_result(task_id, max(remaining, 0.001)))
            if task.state.terminal:
                return _calls.outcome(task, found)
            if deadline is not None and deadline - time.monotonic() <= 0:
                raise WaitTimeout(task, timeout or 0.0)

    def get(self, task_id: str, wait: float | None = None) -> Task:
        return self._send(_calls.get(task_id, wait))

    def list(
        self,
        state: TaskState | str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
        *,
        name: str | None = None,
    ) -> TaskPage:
        """One page of tasks, newest first; pass the page's ``next_cursor`` for the next one. ``name``: only
        tasks whose name starts with it (ASCII letters in any case)."""
        return self._send(_calls.list_tasks(state, limit, cursor, name))

    def iter_tasks(
        self,
        state: TaskState | str | None = None,
        page_size: int = 200,
        cursor: str | None = None,
        *,
        name: str | None = None,
    ) -> Iterator[Task]:
        """Every task matching ``state`` (and ``name``, a prefix), page after page (from ``cursor``, if given)."""
        while True:
            page = self.list(state, page_size, cursor, name=name)
            yield from page.tasks
            if not page.next_cursor or not page.tasks:
                return
            cursor = page.next_cursor

    def workflow(self, workflow_id: str) -> WorkflowGraph:
        """A workflow's tasks (oldest first) and which depends on which."""
        return self._send(_calls.workflow(workflow_id))

    def kill_workflow(self, workflow_id: str) -> dict[str, str]:
        """Kill every unfinished task of a workflow; the killed ones' ids, with the state each was in."""
        return self._send(_calls.kill_workflow(workflow_id))

    def kill(self, task_id: str) -> Task:
        return self._send(_calls.kill(task_id))

    def kill_many(self, task_ids: builtins.list[str]) -> dict[str, bool]:
        return self._send(_calls.kill_many(task_ids))

    def delete(self, task_id: str) -> None:
        self._send(_calls.delete(task_id))

    def delete_many(self, task_ids: builtins.list[str]) -> dict[str, bool]:
        return self._send(_calls.delete_many(task_ids))

    def result(self, task_id: str, wait: float | None = None) -> TaskResult:
        """The result; with ``wait``, wait up to that long for it. Raises ResultNotFound if there is none."""
        if wait is None:
            return self._send(_calls.result(task_id))
        deadline = time.monotonic() + wait
        while True:
            remaining = deadline - time.monotonic()
            try:
                return self._send(_calls.result(task_id, max(remaining, 0.001)))
            except ResultNotFound:
                if remaining <= _calls.MAX_WAIT_S or self.get(task_id).state.terminal:
                    raise

    def wait(self, task_id: str, timeout: float) -> Task:
        """The task once it is terminal; raises WaitTimeout (a TimeoutError) if it is not within ``timeout`` s."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            task = self._send(_calls.get(task_id, max(remaining, 0.001)))
            if task.state.terminal:
                return task
            if deadline - time.monotonic() <= 0:
                raise WaitTimeout(task, timeout)

    def events(
        self,
        read_timeout_s: float = 60.0,
        *,
        types: Iterable[str] | None = None,
        states: Iterable[TaskState | str] | None = None,
        since: str | None = None,
        reconnect: bool = True,
        give_up_after_s: float = 60.0,
    ) -> Iterator[StreamItem]:
        """Task events as they happen (``TaskEvent``; ``Lagged`` when some were dropped for a slow reader,
        ``Gap`` when a resume came too late to get them all), until the caller stops; the parameters are
        ``AsyncClient.events``'s: filters, a resume point, and reconnection after the last event received."""
        follow = Follow(types, states, since, give_up_after_s)
        timeout = httpx.Timeout(self.timeout_s, read=read_timeout_s)
        while True:
            try:
                with self._http.stream("GET", "/api/v1/events", headers=follow.headers(), timeout=timeout) as response:
                    if response.is_error:
                        response.read()
                        raise from_response(response)
                    follow.connected()
                    parser = Parser()
                    for line in response.iter_lines():
                        item = parser.feed(line)
                        if item is not None and follow.wanted(item):
                            yield item
            except (httpx.TransportError, httpx.StreamError) as exc:
                failure: httpx.TransportError | httpx.StreamError | None = exc
            else:
                failure = None  # the server ended the stream (a node stopping)
            delay = follow.backoff() if reconnect else None
            if delay is None:
                if isinstance(failure, httpx.TransportError):
                    raise unreachable(self.base_url, failure) from None
                if failure is not None:
                    raise ApiUnreachable(self.base_url, str(failure) or type(failure).__name__) from None
                return
            time.sleep(delay)

    # cache

    def cache_get(self, key: str) -> bytes | None:
        """The value of ``key`` in the cluster cache, or None when no live owner holds a fresh copy."""
        return self._send(_calls.cache_get(key))

    def cache_set(self, key: str, value: bytes, ttl: float | None = None) -> None:
        """Store ``value`` on every owner of ``key``, fresh for ``ttl`` seconds (None: until evicted)."""
        self._send(_calls.cache_set(key, value, ttl))

    def cache_delete(self, key: str) -> bool:
        """Remove ``key`` from every owner; False if none had it."""
        return self._send(_calls.cache_delete(key))

    def cache_stats(self) -> dict[str, dict[str, int]]:
        """Every live node's cache shard (items, bytes, capacity, hits, misses, evictions, ...), by name."""
        return self._send(_calls.cache_stats())

    # schedules

    def add_schedule(
        self,
        name: str,
        cron: str,
        task: Mapping[str, Any],
        *,
        timezone: str | None = None,
        catch_up: str | None = None,
        overlap: str | None = None,
    ) -> Schedule:
        """Add a named schedule: ``task`` (as ``submit`` takes it: type, target, params, ...; its name defaults
        to the schedule's) fired at each tick of ``cron`` (five fields, ``@every 30s``, ``@daily``) read in
        ``timezone`` (default UTC). ``catch_up``: "skip" or "run_once"; ``overlap``: "allow" or "skip".
        Raises ScheduleExists if the name is taken, InvalidInput for a bad expression, zone or task."""
        return self._send(_calls.add_schedule(name, cron, task, timezone=timezone, catch_up=catch_up, overlap=overlap))

    def schedules(self) -> builtins.list[Schedule]:
        """Every schedule, by name, each with its next ticks and latest runs."""
        return self._send(_calls.schedules())

    def schedule(self, name: str) -> Schedule:
        """One schedule; raises ScheduleNotFound."""
        return self._send(_calls.schedule(name))

    def pause_schedule(self, name: str) -> Schedule:
        return self._send(_calls.pause_schedule(name))

    def resume_schedule(self, name: str) -> Schedule:
        """Fire again from the next tick after now (none of those missed while paused)."""
        return self._send(_calls.resume_schedule(name))

    def delete_schedule(self, name: str) -> None:
        """Stop and remove a schedule; the tasks it fired stay."""
        self._send(_calls.delete_schedule(name))

    # webhooks

    def add_webhook(
        self,
        url: str,
        events: Iterable[str],
        *,
        types: Iterable[str] | None = None,
        include_result: bool | None = None,
        secret: str | None = None,
    ) -> Webhook:
        """Subscribe ``url`` to the events of tasks entering ``events`` (states: "SUCCEED", ...), of ``types``
        only when given. The answer's ``secret`` (made when none is given) signs every POST; it is shown only
        here. Raises InvalidInput for a bad URL (metadata, link-local, loopback unless the cluster allows it)."""
        call = _webhooks.add(url, list(events), types=list(types or ()), include_result=include_result, secret=secret)
        return self._send(call)

    def webhooks(self) -> builtins.list[Webhook]:
        """Every subscription, without secrets."""
        return self._send(_webhooks.webhooks())

    def webhook(self, webhook_id: str) -> Webhook:
        """One subscription; raises WebhookNotFound."""
        return self._send(_webhooks.webhook(webhook_id))

    def delete_webhook(self, webhook_id: str) -> None:
        """Remove a subscription with its delivery log and pending deliveries."""
        self._send(_webhooks.delete(webhook_id))

    def deliveries(
        self, webhook_id: str, *, limit: int | None = None, status: str | None = None
    ) -> builtins.list[Delivery]:
        """A subscription's delivery log, newest event first (``status``: pending, delivered or failed)."""
        return self._send(_webhooks.deliveries(webhook_id, limit=limit, status=status))

    def replay_delivery(self, webhook_id: str, delivery_id: str) -> Delivery:
        """Send one delivery again now: same body and webhook-id, a fresh signature."""
        return self._send(_webhooks.replay(webhook_id, delivery_id))

    def replay_webhook(self, webhook_id: str, since: float | str) -> builtins.list[str]:
        """Send again every delivery of an event at or after ``since`` (Unix seconds or ISO 8601); their ids."""
        return self._send(_webhooks.replay_since(webhook_id, since))

    # cluster

    def cluster(self) -> ClusterView:
        return self._send(_calls.cluster())

    def hand_over(self, node: str) -> tuple[str, int]:
        """Make ``node`` the master; the new (master, epoch)."""
        return self._send(_calls.hand_over(node))

    def rotate_token(self) -> tuple[str, dict[str, bool]]:
        """Give every live node a new cluster token; the token and which nodes took it. This client keeps
        using the new token."""
        token, taken = self._send(_calls.rotate_token())
        self._http.headers["Authorization"] = f"Bearer {token}"
        return token, taken

    def timeline(self, limit: int = 200) -> builtins.list[dict[str, Any]]:
        """Membership events, newest first."""
        return self._send(_calls.timeline(limit))

    def types(self) -> builtins.list[str]:
        return self._send(_calls.types())

    def health(self) -> dict[str, Any]:
        return self._send(_calls.health())

    def ready(self) -> tuple[bool, str]:
        """Whether the node is ready (store reachable, master known), and why not."""
        return self._send(_calls.ready())
