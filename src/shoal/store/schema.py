"""The version of shoal's store layout, kept in the store, so that no node runs on a layout it does not know.

The ``schema`` key (shoal.keys) holds an integer: the layout of the cluster's keys. Every node reads it
before it touches anything else of the cluster (``ensure``, from ``Node.start``):

- absent, and the store holds none of the cluster's keys: a new cluster; the node writes ``CURRENT``;
- absent, but the cluster has run before: the store of a shoal from before the key (version 0); the
  node runs the upgrade steps in place, then records the version;
- lower than ``CURRENT``: the steps from there on, each recorded as it is done;
- equal: nothing to do;
- greater: the store was written by a newer shoal; the node refuses to start (InvalidInput, so that the
  CLI says so in one line and exits 2) and has changed nothing.

Every write of the key is a compare-and-set script, so that nodes starting at once agree on one version:
the first writes it, the others read it. A later change of the layout adds one numbered step to
``STEPS`` (which must be safe to run twice, by two nodes at once, and beside nodes of the older shoal
still running during a rolling upgrade) and raises ``CURRENT``.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from shoal.errors import InvalidInput
from shoal.keys import Keys
from shoal.store.tasks import TaskStore

log = logging.getLogger("shoal.store.schema")

#: The layout this shoal writes and reads.
CURRENT = 4


def _traces(keys: Keys) -> list[str]:
    """What any shoal writes to a cluster's store once it has run (a task's sequence number, a master's
    epoch, a node's beat, the task index, the single pending stream of the oldest versions): one of them
    present with no ``schema`` key is a store of a shoal from before the key."""
    return [keys.seq, keys.epoch, keys.nodes, keys.legacy_all, keys.legacy_pending]


#: KEYS: the schema key, then the traces. ARGV: the version a new store gets. Returns the version found
#: ("0": an older shoal's store), or the one written on a store the cluster never used.
_READ_OR_CLAIM = """
local found = redis.call('GET', KEYS[1])
if found then return found end
for k = 2, #KEYS do
  if redis.call('EXISTS', KEYS[k]) == 1 then return '0' end
end
redis.call('SET', KEYS[1], ARGV[1])
return ARGV[1]
"""

#: KEYS: the schema key. ARGV: the version the step started from ("0": absent), the one it reached.
#: Raises the key only from where the step started; returns what it holds then (another node's upgrade,
#: or a newer shoal's, may have moved it meanwhile).
_ADVANCE = """
local found = redis.call('GET', KEYS[1]) or '0'
if found == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2])
  return ARGV[2]
end
return found
"""


async def _from_before_the_key(tasks: TaskStore) -> None:
    """0 -> 1: the layout of shoal before the schema key, which this shoal reads as it is. Its two changes
    are carried out by the master as it works, not here: the scheduler moves what the single pending stream
    of older versions holds to the per-type streams (when it starts, and again while nodes of an older
    shoal still queue there). Moving the pending stream at a node's start would take
    tasks out of the reach of an older master still running during a rolling upgrade."""


async def _compact_tasks(tasks: TaskStore) -> None:
    """1 -> 2: tasks are stored compactly (no field a task did not ask for, nor its id; a result without the
    task's own fields; a latest attempt without what the task's fields say). This shoal reads both forms,
    so nothing is rewritten; the version tells an older shoal, which cannot read the new form, to stop."""


async def _one_index_entry(tasks: TaskStore) -> None:
    """2 -> 3: a task is named in its state's index only. The index of all tasks (listings merge the state
    indexes instead) and the retention index of finished tasks by end time (the sweep reads the finished
    states' indexes) go, in the background of the store (UNLINK). Entries a node of the older shoal still
    writes there during a rolling upgrade leave with their task (expire.lua, delete.lua)."""
    await tasks.drop_legacy_indexes()


#: Sequence numbers the upgrade to schema 4 indexes per call (a few milliseconds of the store's time each).
NAME_BATCH = 1000


async def _name_index(tasks: TaskStore) -> None:
    """3 -> 4: every task is named in the name index (``names``), which a search by name prefix reads. Tasks
    submitted from now on are added by their submit; those already stored are added here, ``NAME_BATCH``
    sequence numbers per call (a million tasks take a few seconds). Tasks a node of the older shoal submits
    during a rolling upgrade are not indexed: a search by name does not find them."""
    last = await tasks.last_seq()
    for lowest in range(1, last + 1, NAME_BATCH):
        await tasks.index_names(lowest, lowest + NAME_BATCH)


#: STEPS[n] takes a store from version n - 1 to n.
STEPS: dict[int, Callable[[TaskStore], Awaitable[None]]] = {
    1: _from_before_the_key,
    2: _compact_tasks,
    3: _one_index_entry,
    4: _name_index,
}


class NewerStore(InvalidInput):
    """Raised when the store's layout is newer than this shoal reads: the node must be upgraded."""

    def __init__(self, found: int) -> None:
        super().__init__(
            f"the store was written by a newer shoal (schema {found}; this shoal reads up to {CURRENT}): "
            "upgrade this node"
        )
        self.found = found


async def ensure(tasks: TaskStore) -> int:
    """Check the store's layout version, upgrade an older store in place, and return the version (CURRENT).
    Raise NewerStore, having written nothing, when a newer shoal wrote the store."""
    redis, keys = tasks.redis, tasks.keys
    found = _version(await redis.register_script(_READ_OR_CLAIM)(keys=[keys.schema, *_traces(keys)], args=[CURRENT]))
    if found > CURRENT:
        raise NewerStore(found)
    if found < CURRENT:
        log.info("store upgrade: schema %d to %d", found, CURRENT)
    advance = redis.register_script(_ADVANCE)
    while found < CURRENT:
        await STEPS[found + 1](tasks)
        found = _version(await advance(keys=[keys.schema], args=[found, found + 1]))
        if found > CURRENT:  # a newer shoal upgraded the store meanwhile
            raise NewerStore(found)
    return found


def _version(value: Any) -> int:
    text = value.decode("ascii", "replace") if isinstance(value, bytes) else str(value)
    if not text.isascii() or not text.isdigit():
        raise InvalidInput(f"the store's schema key holds {text[:40]!r}, not a version: it was not written by shoal")
    return int(text)
