"""The store's layout version (shoal.store.schema): written on a new store, recorded on an older shoal's store
after its upgrade, agreed on by nodes starting at once, and a newer shoal's store refused untouched."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import redis
from redis.asyncio import Redis

from shoal.errors import InvalidInput
from shoal.keys import Keys
from shoal.models import TaskSpec, TaskState
from shoal.store import schema, search
from shoal.store.redis import connect
from shoal.store.tasks import TaskStore
from shoal.testing import TestNode, wait_for

KEYS = Keys("shoal")
NEWER = schema.CURRENT + 1


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[Redis]:
    """The suite's Redis as shoal's user, as a node connects: a command the check sends that the store's ACL
    refuses fails the test."""
    store = connect(redis_url, name="shoal-schema-test")
    yield store
    await store.aclose()


@pytest.fixture
def tasks(client: Redis) -> TaskStore:
    return TaskStore(client, KEYS, result_max_bytes=4096)


def snapshot(admin_url: str) -> dict[bytes, Any]:
    """Every key of the store with its DUMP payload: what a refused start must leave as it found it."""
    with redis.Redis.from_url(admin_url) as admin:
        return {key: admin.dump(key) for key in admin.scan_iter(count=1000)}


async def test_a_new_store_gets_the_current_version(tasks: TaskStore, client: Redis) -> None:
    assert await client.get(KEYS.schema) is None
    assert await schema.ensure(tasks) == schema.CURRENT
    assert await client.get(KEYS.schema) == str(schema.CURRENT).encode()
    assert await schema.ensure(tasks) == schema.CURRENT, "a second start finds it and goes on"


async def test_nodes_starting_at_once_agree_on_one_version(client: Redis) -> None:
    stores = [TaskStore(client, KEYS, result_max_bytes=4096) for _ in range(8)]
    assert await asyncio.gather(*(schema.ensure(s) for s in stores)) == [schema.CURRENT] * 8
    assert await client.get(KEYS.schema) == str(schema.CURRENT).encode()


async def test_an_older_shoals_store_is_upgraded_in_place_and_keeps_its_tasks(
    tasks: TaskStore, client: Redis, redis_admin_url: str
) -> None:
    """A store of a shoal from before the key: tasks, one still waiting in the single pending stream of the
    oldest versions. The check records the version; every task is still there, and the old stream is left
    for the master to move (an older master may still read it during a rolling upgrade)."""
    created = await tasks.create([TaskSpec(name=f"t{i}", type="echo", target=str(i)) for i in range(3)])
    with redis.Redis.from_url(redis_admin_url) as admin:  # as the oldest versions queued a task
        admin.xadd(KEYS.legacy_pending, {"id": created[0].id})
        assert admin.get(KEYS.schema) is None
    assert await schema.ensure(tasks) == schema.CURRENT
    assert await client.get(KEYS.schema) == str(schema.CURRENT).encode()
    for task in created:
        kept = await tasks.get(task.id)
        assert (kept.state, kept.target) == (TaskState.WAITING, task.target)
    assert await client.xlen(KEYS.legacy_pending) == 1
    assert await tasks.migrate_pending() == 1, "the master's move still finds it, as before"


async def test_a_schema_2_store_loses_its_index_of_all_tasks_and_lists_them_as_before(
    tasks: TaskStore, client: Redis, redis_admin_url: str
) -> None:
    """Schema 2 kept every task in ``index:all`` and every finished one in ``ended`` too; schema 3 names a
    task in its state's index only. The upgrade drops the two; listing all tasks, counting and a search
    find the same tasks, newest first, and a page cursor goes on where it stopped."""
    created = await tasks.create([TaskSpec(name=f"t{i}", type="echo", target=str(i)) for i in range(5)])
    await tasks.kill(created[1].id)
    with redis.Redis.from_url(redis_admin_url) as admin:  # as schema 2 left them
        admin.set(KEYS.schema, 2)
        admin.zadd(KEYS.legacy_all, {t.id: i + 1 for i, t in enumerate(created)})
        admin.zadd(KEYS.legacy_ended, {created[1].id: 1.0})
    assert await schema.ensure(tasks) == schema.CURRENT
    assert not await client.exists(KEYS.legacy_all, KEYS.legacy_ended)
    newest_first = [t.id for t in reversed(created)]
    first = await tasks.list(None, 3, None)
    rest = await tasks.list(None, 3, first.next_cursor)
    assert [t.id for t in first.tasks + rest.tasks] == newest_first and rest.next_cursor is None
    assert first.total == 5 and (await tasks.counts())["total"] == 5
    assert [t.id for t in (await tasks.list(TaskState.KILLED, 10, None)).tasks] == [created[1].id]


async def test_a_schema_3_store_gets_a_name_index_of_every_task_it_holds(
    tasks: TaskStore, client: Redis, redis_admin_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Schema 3 had no name index: the upgrade adds every task, whatever its state, in calls of NAME_BATCH
    sequence numbers, and a search by name prefix then finds them all, newest first."""
    monkeypatch.setattr(schema, "NAME_BATCH", 4)  # several calls, the last one partly empty
    created = await tasks.create([TaskSpec(name=f"Report {i}", type="echo", target=str(i)) for i in range(10)])
    await tasks.kill(created[2].id)
    with redis.Redis.from_url(redis_admin_url) as admin:  # as schema 3 left them
        admin.set(KEYS.schema, 3)
        admin.delete(KEYS.names)
    assert (await search.search_names(tasks, None, "report", 50, None))[0].total == 0
    assert await schema.ensure(tasks) == schema.CURRENT
    page, complete = await search.search_names(tasks, None, "REPORT", 50, None)
    assert complete and page.total == 10 and [t.id for t in page.tasks] == [t.id for t in reversed(created)]
    killed, _ = await search.search_names(tasks, TaskState.KILLED, "report 2", 50, None)
    assert [t.id for t in killed.tasks] == [created[2].id]
    assert await client.zcard(KEYS.names) == 10, "each task named once"


def test_a_later_layout_adds_one_numbered_step() -> None:
    assert sorted(schema.STEPS) == list(range(1, schema.CURRENT + 1))


async def test_a_newer_shoals_store_is_refused_and_left_untouched(
    tasks: TaskStore, client: Redis, redis_admin_url: str
) -> None:
    await tasks.create([TaskSpec(name="t", type="echo", target="x")])
    await client.set(KEYS.schema, NEWER)
    before = snapshot(redis_admin_url)
    with pytest.raises(schema.NewerStore) as refused:
        await schema.ensure(tasks)
    assert refused.value.message == (
        f"the store was written by a newer shoal (schema {NEWER}; this shoal reads up to {schema.CURRENT}): "
        "upgrade this node"
    )
    assert isinstance(refused.value, InvalidInput), "the CLI exits 2 on it"
    assert snapshot(redis_admin_url) == before


async def test_a_schema_key_shoal_never_wrote_is_refused_clearly(tasks: TaskStore, client: Redis) -> None:
    await client.set(KEYS.schema, "two")
    with pytest.raises(InvalidInput, match="schema key holds 'two', not a version"):
        await schema.ensure(tasks)


def test_a_node_on_a_fresh_store_records_the_version(
    node_factory: Callable[..., TestNode], redis_admin_url: str
) -> None:
    node_factory()
    with redis.Redis.from_url(redis_admin_url) as admin:
        assert admin.get(KEYS.schema) == str(schema.CURRENT).encode()


def test_a_node_on_a_newer_shoals_store_exits_2_in_one_line_and_changes_nothing(
    node_factory: Callable[..., TestNode], redis_admin_url: str
) -> None:
    with redis.Redis.from_url(redis_admin_url) as admin:
        admin.set(KEYS.schema, NEWER)
        admin.set(KEYS.seq, 7)
    before = snapshot(redis_admin_url)
    node = node_factory(ready=False)
    wait_for(lambda: not node.proc.alive(), 30, "the node to exit")
    assert node.proc.wait(5) == 2
    log = node.log()
    line = (f"the store was written by a newer shoal (schema {NEWER}; this shoal reads up to {schema.CURRENT}): "
            "upgrade this node")  # fmt: skip
    assert line in log and "Traceback" not in log, log
    assert snapshot(redis_admin_url) == before, "no beat, no node record, no task touched"
