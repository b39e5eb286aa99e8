"""The store's state machine against a real Redis: every legal change, every refused one, and what each
leaves in the hash, the indexes, the assigned sets and the streams.

These run in-process over redis.asyncio; the Lua scripts are the only writers, as in a node.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson
import pytest
from redis.asyncio import Redis

from shoal.errors import IllegalTransition, ResultNotFound, StaleEpoch, TaskNotFound
from shoal.keys import SCHEDULER_GROUP, Keys
from shoal.models import DEFAULT_MAX_LOST_ATTEMPTS, AttemptOutcome, Footprint, TaskResult, TaskSpec, TaskState
from shoal.store.inbox import NodeInbox
from shoal.store.nodes import NodeRecord, NodeRegistry
from shoal.store.scripts import KEEP_FIRST_ATTEMPTS, KEEP_LAST_ATTEMPTS
from shoal.store.tasks import HandedBack, Report, TaskStore
from shoal.testing import multiplier

RESULT_MAX = 4096
TTL_S = 30.0


class Store:
    """A TaskStore and a NodeRegistry on one cluster prefix, plus raw Redis for looking underneath."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self.keys = Keys("test")
        self.tasks = TaskStore(redis, self.keys, result_max_bytes=RESULT_MAX)
        self.nodes = NodeRegistry(redis, self.keys)

    async def new(self, name: str = "t", **spec: Any) -> str:
        task = (await self.tasks.create([TaskSpec(name=name, type="echo", target="x", **spec)]))[0]
        return task.id

    async def epoch(self) -> int:
        """Win the master lease (once) and return its epoch."""
        return (await self.nodes.take_lease("master", TTL_S)).epoch

    async def pending(self) -> list[tuple[str, str]]:
        """Read new entries of the echo tasks' pending stream as the scheduler does: (entry id, task id)."""
        await self.tasks.ensure_groups(types=["echo"])
        reply: Any = await self.redis.xreadgroup(SCHEDULER_GROUP, "master", {self.keys.pending("echo"): ">"}, count=100)
        if not reply:
            return []
        return [(e.decode(), f[b"id"].decode()) for e, f in reply[0][1]]

    async def place(self, task_id: str, node: str = "n1", slots: int = 4) -> int:
        return (await self.tasks.place(await self.epoch(), node, slots, [task_id]))[0]

    async def running(self, task_id: str, node: str = "n1") -> int:
        """Place and start ``task_id`` on ``node``; return the attempt number."""
        assert await self.place(task_id, node) == 1
        attempt = await self.tasks.start(task_id, node)
        assert attempt is not None
        return attempt

    async def inbox(self, node: str) -> list[tuple[str, str]]:
        entries: Any = await self.redis.xrange(self.keys.inbox(node))
        return [(f[b"op"].decode(), (f.get(b"ids") or f[b"id"]).decode()) for _, f in entries]

    async def indexed(self, task_id: str) -> set[str]:
        """The names of the indexes that hold ``task_id``."""
        names = ["all", *(s.name for s in TaskState)]
        found = set()
        for name in names:
            if await self.redis.zscore(self.keys.prefix + f"index:{name}", task_id) is not None:
                found.add(name)
        return found

    async def assigned(self, node: str) -> set[str]:
        members: Any = await self.redis.smembers(self.keys.assigned(node))
        return {m.decode() for m in members}

    async def field(self, task_id: str, name: str) -> str | None:
        value: Any = await self.redis.hget(self.keys.task(task_id), name)
        return None if value is None else value.decode()


pytestmark = pytest.mark.every_server


@pytest.fixture
async def store(redis_admin_url: str) -> AsyncIterator[Store]:
    redis = Redis.from_url(redis_admin_url)  # the tests look with commands shoal never sends (EXISTS, HDEL)
    try:
        yield Store(redis)
    finally:
        await redis.aclose()


async def eventually(check: Callable[[], Awaitable[Any]], timeout: float, message: str) -> Any:
    """Await ``check`` until it returns something truthy, within a deadline."""
    deadline = time.monotonic() + timeout * multiplier()
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {message}")
        await asyncio.sleep(0.02)


def result(task_id: str, code: str = "done", node: str = "n1", attempt: int = 1) -> TaskResult:
    return TaskResult(task_id=task_id, code=code, node=node, attempt=attempt, finished_at=time.time())


# -- create ------------------------------------------------------------------------------------------


async def test_create_stores_waiting_tasks_indexed_and_queued(store: Store) -> None:
    specs = [TaskSpec(name=f"t{i}", type="echo", target=f"x{i}", params={"i": i}, timeout_s=5.0) for i in range(3)]
    created = await store.tasks.create(specs)
    assert [t.state for t in created] == [TaskState.WAITING] * 3
    for spec, task in zip(specs, created, strict=True):
        stored = await store.tasks.get(task.id)
        assert (stored.name, stored.type, stored.target, stored.params) == (spec.name, "echo", spec.target, spec.params)
        assert stored.state is TaskState.WAITING and stored.attempts == 0 and stored.node is None
        assert stored.timeout_s == 5.0 and stored.max_retries == 0 and stored.history == ()
        assert await store.indexed(task.id) == {"WAITING"}
    entries = await store.pending()
    assert [task_id for _, task_id in entries] == [t.id for t in created]
    assert await store.tasks.pending_types() == {"echo"}
    assert await store.tasks.pending_count() == 3
    assert (await store.tasks.counts())["WAITING"] == 3


async def test_get_unknown_task_is_not_found(store: Store) -> None:
    with pytest.raises(TaskNotFound):
        await store.tasks.get("no-such-task")


# -- place -------------------------------------------------------------------------------------------


async def test_place_with_current_epoch_puts_task_in_queue_and_acks_its_entry(store: Store) -> None:
    task_id = await store.new()
    [(entry, _)] = await store.pending()
    verdicts = await store.tasks.place(await store.epoch(), "n1", 2, [task_id], [entry])
    assert verdicts == [1]
    task = await store.tasks.get(task_id)
    assert task.state is TaskState.INQUEUE and task.node == "n1"
    assert await store.indexed(task_id) == {"INQUEUE"}
    assert await store.assigned("n1") == {task_id}
    assert await store.inbox("n1") == [("run", task_id)]
    assert await store.redis.xlen(store.keys.pending("echo")) == 0  # acknowledged and deleted in the same step
    pending: Any = await store.redis.xpending(store.keys.pending("echo"), SCHEDULER_GROUP)
    assert pending["pending"] == 0


async def test_place_twice_is_gone_the_second_time(store: Store) -> None:
    task_id = await store.new()
    assert await store.place(task_id, "n1") == 1
    assert await store.place(task_id, "n2") == 0
    assert (await store.tasks.get(task_id)).node == "n1"
    assert await store.assigned("n2") == set() and await store.inbox("n2") == []


async def test_place_with_stale_epoch_raises_and_changes_nothing(store: Store) -> None:
    task_id = await store.new()
    [(entry, _)] = await store.pending()
    old = await store.epoch()
    await store.nodes.release_lease("master")
    assert (await store.nodes.take_lease("other", TTL_S)).epoch == old + 1
    with pytest.raises(StaleEpoch) as caught:
        await store.tasks.place(old, "n1", 2, [task_id], [entry])
    assert (caught.value.held, caught.value.current) == (old, old + 1)
    task = await store.tasks.get(task_id)
    assert task.state is TaskState.WAITING and task.node is None
    assert await store.indexed(task_id) == {"WAITING"}
    assert await store.assigned("n1") == set() and await store.inbox("n1") == []
    pending: Any = await store.redis.xpending(store.keys.pending("echo"), SCHEDULER_GROUP)
    assert pending["pending"] == 1  # still there for the next master


async def test_place_never_exceeds_slots(store: Store) -> None:
    first, second, third = [await store.new(f"t{i}") for i in range(3)]
    entries = [e for e, _ in await store.pending()]
    epoch = await store.epoch()
    assert await store.tasks.place(epoch, "n1", 1, [first], entries[:1]) == [1]
    # The node's one slot is taken: nothing more goes there, and the refused entries stay unacknowledged.
    assert await store.tasks.place(epoch, "n1", 1, [second, third], entries[1:]) == [-1, -1]
    for task_id in (second, third):
        task = await store.tasks.get(task_id)
        assert task.state is TaskState.WAITING and task.node is None
    assert await store.assigned("n1") == {first}
    assert await store.inbox("n1") == [("run", first)]
    assert await store.redis.xlen(store.keys.pending("echo")) == 2
    # With two slots, one more fits and the last is refused.
    assert await store.tasks.place(epoch, "n1", 2, [second, third], entries[1:]) == [1, -1]
    assert (await store.tasks.get(third)).state is TaskState.WAITING


# -- start -------------------------------------------------------------------------------------------


async def test_start_from_wrong_node_is_refused(store: Store) -> None:
    task_id = await store.new()
    assert await store.place(task_id, "n1") == 1
    assert await store.tasks.start(task_id, "n2") is None
    task = await store.tasks.get(task_id)
    assert task.state is TaskState.INQUEUE and task.attempts == 0 and task.history == ()


async def test_start_of_a_waiting_task_is_refused(store: Store) -> None:
    task_id = await store.new()
    assert await store.tasks.start(task_id, "n1") is None
    assert (await store.tasks.get(task_id)).state is TaskState.WAITING


async def test_start_opens_an_attempt(store: Store) -> None:
    task_id = await store.new()
    assert await store.place(task_id, "n1") == 1
    assert await store.tasks.start(task_id, "n1") == 1
    task = await store.tasks.get(task_id)
    assert task.state is TaskState.RUNNING and task.attempts == 1 and task.node == "n1"
    assert task.started_at is not None and task.finished_at is None
    assert await store.indexed(task_id) == {"RUNNING"}
    [attempt] = task.history
    assert (attempt.number, attempt.node, attempt.outcome, attempt.finished_at) == (1, "n1", None, None)
    assert attempt.started_at == pytest.approx(task.started_at, abs=1e-3)
    assert await store.tasks.start(task_id, "n1") is None  # not twice
    assert (await store.tasks.get(task_id)).attempts == 1


# -- finish ------------------------------------------------------------------------------------------


async def test_finish_succeeded_stores_the_result(store: Store) -> None:
    task_id = await store.new()
    attempt = await store.running(task_id)
    done = await store.tasks.finish(task_id, "n1", attempt, "succeeded", result=result(task_id, "the code"))
    assert (done.verdict, done.state) == ("done", "SUCCEED")
    task = await store.tasks.get(task_id)
    assert task.state is TaskState.SUCCEED and task.error is None and task.finished_at is not None
    assert await store.indexed(task_id) == {"SUCCEED"}
    assert await store.assigned("n1") == set()
    assert [(a.outcome, a.error) for a in task.history] == [("succeeded", "")]
    stored = await store.tasks.result(task_id)
    assert (stored.code, stored.node, stored.attempt, stored.duplicates) == ("the code", "n1", 1, 0)


async def test_text_of_every_kind_reaches_the_store_and_comes_back_as_it_was(store: Store) -> None:
    """The hot path's scripts take their arguments as one JSON array: quotes, backslashes, escapes, control
    characters, text that looks like a number or JSON, and characters beyond ASCII come back unchanged."""
    odd = 'q"uo\\te \\n \u0000\u0001\t é 漢字 🦈 [1] {"a": 1} 12 -0 1e3 null true '
    params = {"k": odd, odd: [odd, 1.5, None, True, 2**53]}
    task_id = (await store.tasks.create([TaskSpec(name=odd, type="echo", target=odd, params=params)]))[0].id
    attempt = await store.running(task_id)
    await store.tasks.finish(task_id, "n1", attempt, "succeeded", result=result(task_id, odd * 20))
    task = await store.tasks.get(task_id)
    assert (task.name, task.target, task.params, task.state) == (odd, odd, params, TaskState.SUCCEED)
    assert (await store.tasks.result(task_id)).code == odd * 20


async def test_result_before_finish_is_not_found(store: Store) -> None:
    task_id = await store.new()
    with pytest.raises(ResultNotFound):
        await store.tasks.result(task_id)
    with pytest.raises(TaskNotFound):
        await store.tasks.result("no-such-task")


async def test_failed_with_retries_waits_delayed_then_is_promoted(store: Store) -> None:
    task_id = await store.new(max_retries=1)
    await store.pending()  # the scheduler has read the first entry
    attempt = await store.running(task_id)
    backoff = 0.3
    retry = await store.tasks.finish(task_id, "n1", attempt, "failed", error="boom", backoff=backoff)
    assert retry.verdict == "retry"
    task = await store.tasks.get(task_id)
    assert task.state is TaskState.WAITING and task.node is None and task.error == "boom"
    assert await store.indexed(task_id) == {"WAITING"}
    assert await store.assigned("n1") == set()
    assert [(a.outcome, a.error) for a in task.history] == [("failed", "boom")]
    due = await store.redis.zscore(store.keys.delayed, task_id)
    assert due is not None and float(retry.state or 0) == pytest.approx(due)

    # Not due yet: nothing is queued, and placing it now is refused as "not placeable".
    next_due = await store.tasks.promote_due()
    if next_due is not None:  # unless the machine was slow enough for it to be due already
        assert next_due == pytest.approx(due)
        assert await store.pending() == []
        assert await store.place(task_id) == 0
        assert (await store.tasks.get(task_id)).state is TaskState.WAITING

    async def promoted() -> list[tuple[str, str]]:
        await store.tasks.promote_due()
        return await store.pending()

    entries = await eventually(promoted, 5.0, "the retry to be queued once due")
    assert [t for _, t in entries] == [task_id]
    assert await store.redis.zscore(store.keys.delayed, task_id) is None
    assert await store.tasks.promote_due() is None

    assert await store.running(task_id, "n2") == 2
    await store.tasks.finish(task_id, "n2", 2, "succeeded", result=result(task_id, node="n2", attempt=2))
    task = await store.tasks.get(task_id)
    assert task.state is TaskState.SUCCEED and task.attempts == 2
    assert [(a.number, a.node, a.outcome) for a in task.history] == [(1, "n1", "failed"), (2, "n2", "succeeded")]


async def test_retries_run_out_into_runtime_error(store: Store) -> None:
    task_id = await store.new(max_retries=1)
    await store.tasks.finish(task_id, "n1", await store.running(task_id), "failed", error="one", backoff=0.01)
    await eventually(lambda: _promote_and_check(store, task_id), 5.0, "the retry to be due")
    done = await store.tasks.finish(task_id, "n1", await store.running(task_id), "failed", error="two")
    assert (done.verdict, done.state) == ("done", "RUNTIME_ERROR")
    task = await store.tasks.get(task_id)
    assert task.state is TaskState.RUNTIME_ERROR and task.error == "two" and task.attempts == 2


async def _promote_and_check(store: Store, task_id: str) -> bool:
    await store.tasks.promote_due()
    return await store.redis.zscore(store.keys.delayed, task_id) is None


async def test_failed_without_retries_is_runtime_error(store: Store) -> None:
    task_id = await store.new()
    attempt = await store.running(task_id)
    done = await store.tasks.finish(task_id, "n1", attempt, "failed", error="ValueError: bad input")
    assert (done.verdict, done.state) == ("done", "RUNTIME_ERROR")
    task = await store.tasks.get(task_id)
    assert task.state is TaskState.RUNTIME_ERROR and task.error == "ValueError: bad input"
    assert task.finished_at is not None and task.node == "n1"
    assert await store.indexed(task_id) == {"RUNTIME_ERROR"}
    assert await store.assigned("n1") == set()
    assert await store.redis.zscore(store.keys.delayed, task_id) is None
    with pytest.raises(ResultNotFound):
        await store.tasks.result(task_id)


async def test_timed_out_attempt_is_recorded_as_such(store: Store) -> None:
    task_id = await store.new()
    attempt = await store.running(task_id)
    await store.tasks.finish(task_id, "n1", attempt, "timed out", error="timed out after 1s")
    task = await store.tasks.get(task_id)
    assert task.state is TaskState.RUNTIME_ERROR and task.error == "timed out after 1s"
    assert [a.outcome for a in task.history] == ["timed out"]


async def test_result_over_the_limit_fails_the_task_with_a_message(store: Store) -> None:
    task_id = await store.new()
    attempt = await store.running(task_id)
    big = result(task_id, "x" * (RESULT_MAX + 1))
    done = await store.tasks.finish(task_id, "n1", attempt, "succeeded", result=big)
    assert (done.verdict, done.state) == ("done", "RUNTIME_ERROR")
    task = await store.tasks.get(task_id)
    assert task.state is TaskState.RUNTIME_ERROR
    assert task.error is not None and f"the limit is {RESULT_MAX}" in task.error
    assert [a.outcome for a in task.history] == ["failed"]
    with pytest.raises(ResultNotFound):
        await store.tasks.result(task_id)


async def test_finish_of_a_deleted_task_is_gone(store: Store) -> None:
    task_id = await store.new()
    attempt = await store.running(task_id)
    await store.tasks.delete(task_id)
    assert (await store.tasks.finish(task_id, "n1", attempt, "succeeded", result=result(task_id))).verdict == "gone"
    assert await store.redis.exists(store.keys.task(task_id), store.keys.result(task_id)) == 0


# -- kill --------------------------------------------------------------------------------------------


async def test_kill_waiting(store: Store) -> None:
    task_id = await store.new()
    assert await store.tasks.kill(task_id) is TaskState.WAITING
    task = await store.tasks.get(task_id)
    assert task.state is TaskState.KILLED and task.error == "killed by user" and task.finished_at is not None
    assert await store.indexed(task_id) == {"KILLED"}
    assert await store.place(task_id) == 0  # its pending entry no longer places it
    assert (await store.tasks.get(task_id)).state is TaskState.KILLED


async def test_kill_waiting_for_a_retry_drops_it_from_delayed(store: Store) -> None:
    task_id = await store.new(max_retries=3)
    await store.tasks.finish(task_id, "n1", await store.running(task_id), "failed", error="e", backoff=0.01)
    assert await store.redis.zscore(store.keys.delayed, task_id) is not None
    assert await store.tasks.kill(task_id) is TaskState.WAITING
    assert await store.redis.zscore(store.keys.delayed, task_id) is None
    assert (await store.tasks.get(task_id)).state is TaskState.KILLED


async def test_kill_inqueue_sends_a_kill_order_and_frees_the_slot(store: Store) -> None:
    task_id = await store.new()
    assert await store.place(task_id, "n1", slots=1) == 1
    assert await store.tasks.kill(task_id) is TaskState.INQUEUE
    assert (await store.tasks.get(task_id)).state is TaskState.KILLED
    assert await store.inbox("n1") == [("run", task_id), ("kill", task_id)]
    assert await store.assigned("n1") == set()
    assert await store.tasks.start(task_id, "n1") is None  # the run order that was already sent does nothing
    other = await store.new()
    assert await store.place(other, "n1", slots=1) == 1  # the freed slot takes the next task


async def test_kill_running_closes_the_attempt(store: Store) -> None:
    task_id = await store.new()
    attempt = await store.running(task_id)
    assert await store.tasks.kill(task_id, "stop it") is TaskState.RUNNING
    task = await store.tasks.get(task_id)
    assert task.state is TaskState.KILLED and task.error == "stop it"
    assert [(a.outcome, a.error) for a in task.history] == [("killed", "stop it")]
    assert task.history[0].finished_at is not None
    assert await store.inbox("n1") == [("run", task_id), ("kill", task_id)]
    assert await store.assigned("n1") == set()
    # The worker's report arrives after the kill: kept as a duplicate, never written over KILLED.
    late = await store.tasks.finish(task_id, "n1", attempt, "succeeded", result=result(task_id))
    assert (late.verdict, late.state) == ("duplicate", "KILLED")
    assert (await store.tasks.get(task_id)).state is TaskState.KILLED
    with pytest.raises(ResultNotFound):
        await store.tasks.result(task_id)


async def test_kill_terminal_is_illegal(store: Store) -> None:
    succeeded, failed, killed = await store.new("a"), await store.new("b"), await store.new("c")
    await store.tasks.finish(succeeded, "n1", await store.running(succeeded), "succeeded", result=result(succeeded))
    await store.tasks.finish(failed, "n1", await store.running(failed), "failed", error="e")
    await store.tasks.kill(killed)
    for task_id, state in ((succeeded, "SUCCEED"), (failed, "RUNTIME_ERROR"), (killed, "KILLED")):
        with pytest.raises(IllegalTransition) as caught:
            await store.tasks.kill(task_id)
        assert caught.value.current == state
        assert (await store.tasks.get(task_id)).state.name == state
    with pytest.raises(TaskNotFound):
        await store.tasks.kill("no-such-task")


# -- requeue and late duplicates ---------------------------------------------------------------------


async def test_requeue_hands_back_a_lost_nodes_tasks_and_late_finish_is_a_duplicate(store: Store) -> None:
    running, queued = await store.new("running"), await store.new("queued")
    await store.pending()
    attempt = await store.running(running, "n1")
    assert await store.place(queued, "n1") == 1

    handed_back = await store.tasks.requeue("n1", "node n1 died", epoch=await store.epoch())
    assert sorted(handed_back) == sorted([running, queued])
    for task_id in (running, queued):
        task = await store.tasks.get(task_id)
        assert task.state is TaskState.WAITING and task.node is None
        assert await store.indexed(task_id) == {"WAITING"}
    history = (await store.tasks.get(running)).history
    assert [(a.outcome, a.error) for a in history] == [("node lost", "node n1 died")]
    assert (await store.tasks.get(queued)).history == ()
    assert await store.assigned("n1") == set()
    assert await store.redis.exists(store.keys.inbox("n1")) == 0  # a returning n1 cannot run them
    assert sorted(t for _, t in await store.pending()) == sorted([running, queued])

    assert await store.running(running, "n2") == 2
    late = await store.tasks.finish(running, "n1", attempt, "succeeded", result=result(running, "late"))
    assert (late.verdict, late.state) == ("duplicate", "RUNNING")
    task = await store.tasks.get(running)
    assert task.state is TaskState.RUNNING and task.node == "n2" and task.attempts == 2
    assert [a.outcome for a in task.history] == ["node lost", None]
    dupes: Any = await store.redis.lrange(store.keys.dupes(running), 0, -1)
    assert len(dupes) == 1 and b'"node":"n1"' in dupes[0]
    with pytest.raises(ResultNotFound):
        await store.tasks.result(running)

    await store.tasks.finish(running, "n2", 2, "succeeded", result=result(running, "winner", "n2", 2))
    stored = await store.tasks.result(running)
    assert (stored.code, stored.node, stored.attempt, stored.duplicates) == ("winner", "n2", 2, 1)


async def test_requeue_with_stale_epoch_changes_nothing(store: Store) -> None:
    task_id = await store.new()
    await store.running(task_id, "n1")
    stale = await store.epoch()
    await store.nodes.release_lease("master")
    await store.nodes.take_lease("other", TTL_S)
    with pytest.raises(StaleEpoch):
        await store.tasks.requeue("n1", "lost", epoch=stale)
    task = await store.tasks.get(task_id)
    assert task.state is TaskState.RUNNING and task.node == "n1" and task.history[0].outcome is None
    assert await store.assigned("n1") == {task_id}


# -- footprint, lost attempts and quarantine ---------------------------------------------------------


async def test_finish_keeps_the_footprint_with_the_attempt(store: Store) -> None:
    measured, crashed, bare = await store.new("measured"), await store.new("crashed"), await store.new("bare")
    footprint = Footprint(wall_s=2.0, cpu_s=1.23456789, max_rss_bytes=6 * 2**30 + 1)
    await store.tasks.finish(
        measured, "n1", await store.running(measured), "succeeded", result=result(measured), footprint=footprint
    )
    died = Footprint(wall_s=0.5, signal="SIGSEGV")
    await store.tasks.finish(crashed, "n1", await store.running(crashed), "crashed", error="segv", footprint=died)
    await store.tasks.finish(bare, "n1", await store.running(bare), "succeeded", result=result(bare))

    [a] = (await store.tasks.get(measured)).history
    assert (a.wall_s, a.cpu_s, a.max_rss_bytes, a.exit_code, a.signal) == (2.0, 1.2346, 6 * 2**30 + 1, None, None)
    assert isinstance(a.wall_s, float) and isinstance(a.max_rss_bytes, int)
    [a] = (await store.tasks.get(crashed)).history
    assert (a.outcome, a.wall_s, a.cpu_s, a.max_rss_bytes, a.signal) == ("crashed", 0.5, None, None, "SIGSEGV")
    [a] = (await store.tasks.get(bare)).history
    assert (a.wall_s, a.cpu_s, a.max_rss_bytes, a.exit_code, a.signal) == (None,) * 5
    raw: Any = await store.redis.hget(store.keys.task(bare), "run")
    assert b"wall_s" not in raw and b"null" not in raw  # what was not measured takes no room


async def test_crashed_and_over_limit_are_retried_per_max_retries(store: Store) -> None:
    task_id = await store.new(max_retries=1)
    retry = await store.tasks.finish(
        task_id, "n1", await store.running(task_id), "crashed", error="crashed: exit code 1", backoff=0.01
    )
    assert retry.verdict == "retry"
    task = await store.tasks.get(task_id)
    assert task.state is TaskState.WAITING and task.lost_attempts == 1 and task.error == "crashed: exit code 1"
    await eventually(lambda: _promote_and_check(store, task_id), 5.0, "the retry to be due")
    done = await store.tasks.finish(task_id, "n2", await store.running(task_id, "n2"), "over limit", error="memory_mb")
    assert (done.verdict, done.state) == ("done", "RUNTIME_ERROR")
    task = await store.tasks.get(task_id)
    assert task.state is TaskState.RUNTIME_ERROR and task.error == "memory_mb" and task.lost_attempts == 1
    assert [a.outcome for a in task.history] == ["crashed", "over limit"]

    once = await store.new(max_retries=0)
    done = await store.tasks.finish(once, "n1", await store.running(once), "over limit", error="cpu_s_limit")
    assert (done.verdict, done.state) == ("done", "RUNTIME_ERROR")


async def lose(store: Store, task_id: str, node: str, outcome: AttemptOutcome = AttemptOutcome.NODE_LOST) -> HandedBack:
    """Start ``task_id`` on ``node``, then hand back everything of ``node`` as its death (or stop) does."""
    await store.running(task_id, node)
    return await store.tasks.requeue(node, f"{node} went away", outcome=outcome)


async def test_requeue_counts_lost_attempts_and_quarantines_at_max_lost_attempts(store: Store) -> None:
    task_id, other = await store.new("poison", max_lost_attempts=3), await store.new("bystander")
    assert (await store.tasks.get(task_id)).max_lost_attempts == 3
    assert await store.place(other, "n3") == 1
    for node in ("n1", "n2"):
        back = await lose(store, task_id, node)
        assert list(back) == [task_id] and back.quarantined == ()
        task = await store.tasks.get(task_id)
        assert task.state is TaskState.WAITING and task.lost_attempts == int(node[1])

    await store.running(task_id, "n3")
    await store.pending()  # what was queued before
    back = await store.tasks.requeue("n3", "n3 went away")
    assert list(back) == [other] and back.quarantined == (task_id,)
    task = await store.tasks.get(task_id)
    assert task.state is TaskState.RUNTIME_ERROR and task.node == "n3" and task.finished_at is not None
    assert task.error == "lost 3 attempts: n1 lost, n2 lost, n3 lost"
    assert [a.outcome for a in task.history] == ["node lost"] * 3
    assert await store.indexed(task_id) == {"RUNTIME_ERROR"}
    assert await store.assigned("n3") == set()
    assert [t for _, t in await store.pending()] == [other]  # never placed again
    assert await store.place(task_id, "n4") == 0
    assert (await store.tasks.get(other)).state is TaskState.WAITING  # what the node held besides goes back


async def test_a_crashed_attempt_counts_and_can_be_the_one_that_quarantines(store: Store) -> None:
    task_id = await store.new(max_retries=5, max_lost_attempts=3)
    attempt = await store.running(task_id, "n2")
    segv = Footprint(wall_s=0.1, signal="SIGSEGV")
    await store.tasks.finish(task_id, "n2", attempt, "crashed", error="segv", footprint=segv, backoff=0.01)
    await eventually(lambda: _promote_and_check(store, task_id), 5.0, "the retry to be due")
    await lose(store, task_id, "n1")
    attempt = await store.running(task_id, "n3")
    done = await store.tasks.finish(task_id, "n3", attempt, "crashed", error="exit", footprint=Footprint(exit_code=139))
    assert (done.verdict, done.state) == ("done", "RUNTIME_ERROR")  # retries were left: lost attempts were not
    task = await store.tasks.get(task_id)
    assert task.state is TaskState.RUNTIME_ERROR and task.lost_attempts == 3
    assert task.error == "lost 3 attempts: n2 crashed (SIGSEGV), n1 lost, n3 crashed (exit code 139)"
    assert await store.redis.zscore(store.keys.delayed, task_id) is None
    assert await store.assigned("n3") == set()


async def test_a_handed_back_attempt_is_not_held_against_the_task(store: Store) -> None:
    task_id = await store.new(max_lost_attempts=1, max_retries=1)
    for node in ("n1", "n2"):
        back = await lose(store, task_id, node, AttemptOutcome.HANDED_BACK)
        assert list(back) == [task_id]
    task = await store.tasks.get(task_id)
    assert task.state is TaskState.WAITING and task.lost_attempts == 0
    assert [(a.outcome, a.error) for a in task.history] == [("handed back", f"{n} went away") for n in ("n1", "n2")]

    # Nor against its retries: the first failure after two hand-backs is retried.
    retry = await store.tasks.finish(task_id, "n3", await store.running(task_id, "n3"), "failed", error="e")
    assert retry.verdict == "retry"
    await eventually(lambda: _promote_and_check(store, task_id), 5.0, "the retry to be due")

    back = await lose(store, task_id, "n4")  # one lost attempt is all it may have
    assert back.quarantined == (task_id,)
    task = await store.tasks.get(task_id)
    assert task.state is TaskState.RUNTIME_ERROR and task.error == "lost 1 attempt: n4 lost"


async def test_hand_back_of_given_ids_counts_and_takes_the_outcome(store: Store) -> None:
    lost, handed = await store.new("lost", max_lost_attempts=1), await store.new("handed", max_lost_attempts=1)
    await store.running(lost, "n1")
    await store.running(handed, "n1")
    back = await store.tasks.hand_back("n1", [handed], "stopping", outcome=AttemptOutcome.HANDED_BACK)
    assert list(back) == [handed] and back.quarantined == ()
    back = await store.tasks.hand_back("n1", [lost], "its run order was lost")
    assert list(back) == [] and back.quarantined == (lost,)
    assert (await store.tasks.get(lost)).state is TaskState.RUNTIME_ERROR
    assert (await store.tasks.get(handed)).history[-1].outcome == "handed back"
    assert await store.assigned("n1") == set()


async def test_max_lost_attempts_defaults_to_the_stores_setting(store: Store) -> None:
    strict = TaskStore(store.redis, store.keys, result_max_bytes=RESULT_MAX, max_lost_attempts=2)
    [task] = await strict.create([TaskSpec(name="t", type="echo", target="x")])
    assert task.max_lost_attempts == 2 and (await strict.get(task.id)).max_lost_attempts == 2
    assert (await store.tasks.get(await store.new())).max_lost_attempts == DEFAULT_MAX_LOST_ATTEMPTS
    # A task stored before the field existed takes the default of the store that hands it back.
    await store.redis.hdel(store.keys.task(task.id), "max_lost_attempts")
    await store.running(task.id, "n1")
    assert (await strict.requeue("n1", "gone")).quarantined == ()
    await store.running(task.id, "n2")
    assert (await strict.requeue("n2", "gone")).quarantined == (task.id,)


async def test_the_attempt_list_keeps_the_first_and_the_latest(store: Store) -> None:
    task_id = await store.new()
    total = KEEP_FIRST_ATTEMPTS + KEEP_LAST_ATTEMPTS + 7
    for k in range(total):
        await lose(store, task_id, f"n{k}", AttemptOutcome.HANDED_BACK)
    task = await store.tasks.get(task_id)
    assert task.attempts == total and task.attempts_dropped == 7
    assert len(task.history) == KEEP_FIRST_ATTEMPTS + KEEP_LAST_ATTEMPTS
    first = list(range(1, KEEP_FIRST_ATTEMPTS + 1))
    latest = list(range(total - KEEP_LAST_ATTEMPTS + 1, total + 1))
    assert [a.number for a in task.history] == first + latest
    assert all(a.outcome == "handed back" for a in task.history)
    attempt = await store.running(task_id, "last")  # the open attempt is the latest, and closes as usual
    await store.tasks.finish(
        task_id, "last", attempt, "succeeded", result=result(task_id, node="last", attempt=attempt)
    )
    task = await store.tasks.get(task_id)
    assert task.state is TaskState.SUCCEED and task.attempts_dropped == 8
    assert [a.number for a in task.history][-2:] == [total, total + 1] and task.history[-1].outcome == "succeeded"


# -- delete ------------------------------------------------------------------------------------------


async def test_delete_removes_everything_kept_about_a_task(store: Store) -> None:
    task_id = await store.new()
    await store.pending()
    old = await store.running(task_id, "n1")
    await store.tasks.requeue("n1", "lost")
    await store.running(task_id, "n2")
    await store.tasks.finish(task_id, "n2", 2, "succeeded", result=result(task_id, node="n2", attempt=2))
    await store.tasks.finish(task_id, "n1", old, "succeeded", result=result(task_id))  # a duplicate
    await store.redis.set(store.keys.result(task_id), b"{}")  # where earlier versions kept the result
    keys = [store.keys.task(task_id), store.keys.attempts(task_id), store.keys.result(task_id)]
    keys.append(store.keys.dupes(task_id))
    assert await store.redis.exists(*keys) == 4

    await store.tasks.delete(task_id)
    assert await store.redis.exists(*keys) == 0
    assert await store.indexed(task_id) == set()
    with pytest.raises(TaskNotFound):
        await store.tasks.get(task_id)
    with pytest.raises(TaskNotFound):
        await store.tasks.delete(task_id)
    assert (await store.tasks.counts())["total"] == 0


async def test_delete_running_kills_it_first(store: Store) -> None:
    task_id = await store.new()
    await store.running(task_id, "n1")
    await store.tasks.delete(task_id)
    assert await store.inbox("n1") == [("run", task_id), ("kill", task_id)]
    assert await store.assigned("n1") == set()
    assert await store.indexed(task_id) == set()
    assert await store.redis.exists(store.keys.task(task_id), store.keys.attempts(task_id)) == 0


# -- list --------------------------------------------------------------------------------------------


async def test_list_newest_first_with_cursor_totals_and_state_filter(store: Store) -> None:
    ids = [t.id for t in await store.tasks.create([TaskSpec(f"t{i}", "echo", "x") for i in range(5)])]
    ids += [await store.new(f"t{i}") for i in range(5, 7)]  # a second call continues the order
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        page = await store.tasks.list(None, 3, cursor)
        assert page.total == 7
        seen += [t.id for t in page.tasks]
        pages += 1
        cursor = page.next_cursor
        if cursor is None:
            break
    assert seen == ids[::-1] and pages == 3

    exact = await store.tasks.list(None, 7, None)
    assert len(exact.tasks) == 7 and exact.next_cursor is None

    for task_id in (ids[1], ids[4]):
        await store.tasks.kill(task_id)
    killed = await store.tasks.list(TaskState.KILLED, 10, None)
    assert (killed.total, [t.id for t in killed.tasks]) == (2, [ids[4], ids[1]])
    waiting = await store.tasks.list(TaskState.WAITING, 2, None)
    assert waiting.total == 5 and [t.id for t in waiting.tasks] == [ids[6], ids[5]]
    rest = await store.tasks.list(TaskState.WAITING, 10, waiting.next_cursor)
    assert [t.id for t in rest.tasks] == [ids[3], ids[2], ids[0]] and rest.next_cursor is None
    assert (await store.tasks.list(TaskState.SUCCEED, 10, None)).total == 0
    counts = await store.tasks.counts()
    assert (counts["WAITING"], counts["KILLED"], counts["total"]) == (5, 2, 7)


# -- lease, epoch and node records -------------------------------------------------------------------


async def test_lease_take_renew_held_release_and_epochs(store: Store) -> None:
    assert await store.nodes.master() == (None, 0)
    won = await store.nodes.take_lease("a", TTL_S)
    assert (won.verdict, won.holder, won.epoch) == ("won", "a", 1)
    renewed = await store.nodes.take_lease("a", TTL_S)
    assert (renewed.verdict, renewed.epoch) == ("renewed", 1)
    held = await store.nodes.take_lease("b", TTL_S)
    assert (held.verdict, held.holder, held.epoch) == ("held", "a", 1)
    assert await store.nodes.master() == ("a", 1)

    assert await store.nodes.release_lease("b") is False  # only the holder may release
    assert await store.nodes.master() == ("a", 1)
    assert await store.nodes.release_lease("a") is True
    assert await store.nodes.master() == (None, 1)
    assert (await store.nodes.take_lease("b", TTL_S)).epoch == 2
    assert (await store.nodes.take_lease("a", TTL_S)).verdict == "held"


async def test_lease_lapses_unless_renewed_and_the_next_master_fences_the_last(store: Store) -> None:
    first = await store.nodes.take_lease("a", 0.3)
    task_id = await store.new()

    async def lapsed() -> bool:
        return (await store.nodes.master())[0] is None

    await eventually(lapsed, 5.0, "the unrenewed lease to lapse")
    second = await store.nodes.take_lease("b", TTL_S)
    assert (second.verdict, second.epoch) == ("won", first.epoch + 1)
    with pytest.raises(StaleEpoch):
        await store.tasks.place(first.epoch, "n1", 4, [task_id])
    assert await store.tasks.place(second.epoch, "n1", 4, [task_id]) == [1]


async def test_node_records_beat_and_count_assigned_tasks(store: Store) -> None:
    record = NodeRecord(name="n1", host="127.0.0.1", http="127.0.0.1:1", grpc="127.0.0.1:2", slots=3, running=0,
                        pid=42, types=("echo", "fetch"), run_tasks=True, last_beat=0.0)  # fmt: skip
    beat = await store.nodes.beat(record)
    assert beat == pytest.approx(await store.nodes.now(), abs=5)
    await store.running(await store.new(), "n1")
    [seen] = await store.nodes.all()
    assert (seen.name, seen.slots, seen.types, seen.assigned, seen.last_beat) == ("n1", 3, ("echo", "fetch"), 1, beat)
    await store.nodes.forget("n1")
    assert await store.nodes.all() == []


async def test_a_task_keeps_the_limits_it_asked_for_and_none_when_it_asked_for_none(store: Store) -> None:
    specs = [
        TaskSpec(name="bounded", type="echo", target="x", memory_mb=512, cpu_s_limit=2.5),
        TaskSpec(name="whole", type="echo", target="x", memory_mb=2**20, cpu_s_limit=86_400.0),
        TaskSpec(name="free", type="echo", target="x"),
    ]
    created = await store.tasks.create(specs)
    stored = await store.tasks.get_many([t.id for t in created])
    assert [(t.memory_mb, t.cpu_s_limit) for t in created] == [(512, 2.5), (2**20, 86_400.0), (None, None)]
    assert [(t.memory_mb, t.cpu_s_limit) for t in stored] == [(512, 2.5), (2**20, 86_400.0), (None, None)]
    assert isinstance(stored[0].cpu_s_limit, float) and isinstance(stored[0].memory_mb, int)
    # A task stored before the fields existed reads as one that asked for none.
    await store.redis.hdel(store.keys.task(created[0].id), "memory_mb", "cpu_s_limit")
    older = await store.tasks.get(created[0].id)
    assert (older.memory_mb, older.cpu_s_limit) == (None, None)


# -- batches: one script call for many tasks -------------------------------------------------------


async def _script_calls(redis: Redis) -> int:
    stats: Any = await redis.info("commandstats")
    return sum(int(v["calls"]) for k, v in stats.items() if k in ("cmdstat_evalsha", "cmdstat_eval"))


async def test_a_batch_of_starts_and_reports_is_one_call_each_and_treats_each_task_on_its_own(store: Store) -> None:
    first, gone, third = [await store.new(f"t{k}", max_retries=1) for k in range(3)]
    epoch = await store.epoch()
    assert await store.tasks.place(epoch, "n1", 8, [first, gone, third]) == [1, 1, 1]
    assert await store.inbox("n1") == [("run", f"{first},{gone},{third}")]  # one run order for the batch
    await store.tasks.kill(gone)
    await store.tasks.begin_many("n1", [])  # the scripts loaded, so that a call below is one call
    await store.tasks.finish_many("n1", [])

    calls = await _script_calls(store.redis)
    started = await store.tasks.begin_many("n1", [(first, False), (gone, False), (third, False)])
    assert await _script_calls(store.redis) == calls + 1
    assert [t.attempts if t else None for t in started] == [1, None, 1]
    assert {t.state for t in started if t} == {TaskState.RUNNING}

    reports = [
        Report(first, 1, AttemptOutcome.SUCCEEDED, result=result(first, "one")),
        Report(third, 1, AttemptOutcome.FAILED, error="ValueError: no"),
        Report(gone, 1, AttemptOutcome.SUCCEEDED, result=result(gone)),
    ]
    calls = await _script_calls(store.redis)
    finished = await store.tasks.finish_many("n1", reports, backoff=30)
    assert await _script_calls(store.redis) == calls + 1
    assert [(f.verdict, f.state) for f in finished][::2] == [("done", "SUCCEED"), ("duplicate", "KILLED")]
    assert finished[1].verdict == "retry"
    assert (await store.tasks.result(first)).code == "one"
    assert await store.indexed(first) == {"SUCCEED"}
    assert await store.indexed(third) == {"WAITING"}
    assert await store.field(third, "due") == finished[1].state  # waits out its backoff, not placed before
    assert await store.tasks.place(epoch, "n1", 8, [third]) == [0]
    assert await store.assigned("n1") == set()
    history = (await store.tasks.get(third)).history
    assert [(a.number, a.outcome, a.error) for a in history] == [(1, AttemptOutcome.FAILED, "ValueError: no")]


async def test_a_result_kept_where_earlier_versions_kept_it_is_still_read(store: Store) -> None:
    task_id = await store.new()
    await store.running(task_id)
    await store.redis.hset(store.keys.task(task_id), mapping={"state": "SUCCEED"})
    with pytest.raises(ResultNotFound):
        await store.tasks.result(task_id)
    old = orjson.dumps(result(task_id, "from before").to_json() | {"duplicates": 0})
    await store.redis.set(store.keys.result(task_id), old)
    assert (await store.tasks.result(task_id)).code == "from before"


async def test_the_reconcilers_view_of_the_inbox_names_every_task_of_a_batched_run_order(store: Store) -> None:
    ids = [await store.new(f"t{k}") for k in range(3)]
    assert await store.tasks.place(await store.epoch(), "n1", 8, ids) == [1, 1, 1]
    snapshot = await NodeInbox.of(store.tasks, "n1").snapshot(ids, 100)
    assert [(o.task_id, o.op, o.unacked, o.acked) for o in snapshot.orders] == [(i, "run", False, False) for i in ids]


async def test_an_attempt_opened_by_an_earlier_version_is_closed_where_it_was_kept(store: Store) -> None:
    """Earlier versions kept the open attempt as the last entry of the list, not in the task's hash."""
    first, second = await store.new("a"), await store.new("b")
    for task_id in (first, second):
        await store.running(task_id)
        tkey = store.keys.task(task_id)
        opened = orjson.loads(await store.redis.hget(tkey, "run"))  # as those versions wrote it: whole
        opened["started_at"] = float(await store.redis.hget(tkey, "started_at"))
        await store.redis.rpush(store.keys.attempts(task_id), orjson.dumps(opened))
        await store.redis.hdel(tkey, "run")
    await store.tasks.finish(first, "n1", 1, AttemptOutcome.SUCCEEDED, result=result(first))
    await store.tasks.requeue("n1", "lost")
    for task_id, outcome in ((first, AttemptOutcome.SUCCEEDED), (second, AttemptOutcome.NODE_LOST)):
        history = (await store.tasks.get(task_id)).history
        assert [(a.number, a.outcome) for a in history] == [(1, outcome)]


async def test_a_finished_task_is_kept_in_the_compact_encoding_and_read_back_whole(store: Store) -> None:
    """What the task's fields say already is not written again in its result and its last attempt, so a
    finished echo task's hash stays within the server's compact (listpack) encoding; reads put it back."""
    task_id = await store.new("compact")
    await store.running(task_id)
    meta = {"status": 200}
    done = TaskResult(task_id=task_id, code="0123456789", node="n1", attempt=1, finished_at=time.time(), meta=meta)
    await store.tasks.finish(task_id, "n1", 1, AttemptOutcome.SUCCEEDED, result=done, footprint=Footprint(wall_s=0.5))
    encoding = await store.redis.object("encoding", store.keys.task(task_id))
    assert encoding in (b"listpack", b"ziplist")  # ziplist: Redis 6.2's name for it

    task, found = await store.tasks.get_with_result(task_id)
    assert found is not None and found == await store.tasks.result(task_id)
    assert task.finished_at is not None and task.started_at is not None
    assert (found.task_id, found.code, found.node, found.attempt, found.meta) == (task_id, "0123456789", "n1", 1, meta)
    assert found.finished_at == task.finished_at
    [attempt] = task.history
    assert (attempt.number, attempt.node, attempt.outcome, attempt.error) == (1, "n1", "succeeded", "")
    assert (attempt.started_at, attempt.finished_at, attempt.wall_s) == (task.started_at, task.finished_at, 0.5)
    assert attempt.epoch == int(await store.field(task_id, "epoch") or 0)


async def test_an_attempt_retried_elsewhere_keeps_its_own_node_and_times(store: Store) -> None:
    task_id = await store.new(max_retries=1)
    await store.running(task_id)
    started = await store.tasks.get(task_id)
    assert [(a.number, a.node, a.started_at) for a in started.history] == [(1, "n1", started.started_at)]
    await store.tasks.finish(task_id, "n1", 1, AttemptOutcome.FAILED, error="once", backoff=0.01)

    async def queued() -> bool:
        await store.tasks.promote_due()
        return await store.field(task_id, "due") is None

    await eventually(queued, 5, "the retry queued")
    await store.running(task_id, "n2")
    await store.tasks.finish(task_id, "n2", 2, AttemptOutcome.SUCCEEDED, result=result(task_id, node="n2", attempt=2))
    task = await store.tasks.get(task_id)
    first, second = task.history
    assert (first.number, first.node, first.outcome, first.error) == (1, "n1", "failed", "once")
    assert first.started_at == pytest.approx(started.started_at, abs=1e-3)  # a JSON number in the list: 14 digits
    assert first.finished_at is not None
    assert first.started_at < first.finished_at <= second.started_at
    assert (second.number, second.node, second.started_at, second.finished_at) == (2, "n2", task.started_at,
                                                                                   task.finished_at)  # fmt: skip
    found = await store.tasks.result(task_id)
    assert (found.node, found.attempt) == ("n2", 2)


async def test_a_task_that_runs_once_keeps_its_attempt_in_its_hash(store: Store) -> None:
    task_id = await store.new(max_retries=1)
    await store.running(task_id)
    running = await store.tasks.get(task_id)
    assert [(a.number, a.node, a.outcome) for a in running.history] == [(1, "n1", None)]
    await store.tasks.finish(task_id, "n1", 1, AttemptOutcome.FAILED, error="once", backoff=0.01)
    assert await store.redis.exists(store.keys.attempts(task_id)) == 0  # no list for one attempt

    async def queued() -> bool:
        await store.tasks.promote_due()
        return await store.field(task_id, "due") is None

    await eventually(queued, 5, "the retry queued")
    await store.running(task_id, "n2")  # the second attempt sends the first to the list
    await store.tasks.finish(task_id, "n2", 2, AttemptOutcome.SUCCEEDED, result=result(task_id, node="n2", attempt=2))
    assert await store.redis.llen(store.keys.attempts(task_id)) == 1
    history = (await store.tasks.get(task_id)).history
    assert [(a.number, a.node, a.outcome) for a in history] == [(1, "n1", "failed"), (2, "n2", "succeeded")]
