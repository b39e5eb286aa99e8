"""The cluster's task event stream: every task state change, in order, kept for a while.

Key ``shoal:{cluster}:task-events`` (``Keys.task_events``), a Redis stream. Every Lua script that changes
tasks adds ONE entry at its end (``flush`` in ``scripts/_lib.lua``), however many tasks it changed:

    entry id   "<ms>-<seq>", the store's: entries are in the order the scripts ran
    field e    a JSON array of the script's events, in the order they happened, each an object:
                 {"id": task id, "state": TaskState name or "DELETED", "node": node name or null,
                  "at": Unix seconds (float, the store's clock), "type": the task's type ("" if unknown)}

A state change is one event; a task deleted (by a user or the retention sweep) is an event of state
``DELETED``. An event's id is ``"<entry id>/<index in the entry's array>"`` (``shoal.event_ids``): it names one
event, orders events, and a reader that resumes after it misses none (``TaskEventStream.after``).

The stream is capped: ``XADD MAXLEN ~ event_retention`` (``EVENT_RETENTION`` entries by default, about a
few MB). Entries are per script call, so at a typical 100 script calls a second (a few hundred tasks a
second, submitted, placed, started and finished in batches) 100,000 entries are about 15 minutes of
history; a quiet cluster keeps days of it. A reader that comes back after more than that has missed
events, and is told so (``trimmed_after``).

The script publishes the entry as well, on the channel ``Keys.task_events_channel`` (its name ends in the
database number: pub/sub ignores database numbers), as ``b"<entry id> <JSON array>"`` (``split_message``);
the entry of a script that only stored, placed or started tasks, and ended none, goes to
``Keys.task_progress_channel`` instead, which only nodes with a watch open hear.

Readers: every node's event hub (shoal.events) hears the channel (and the progress channel while watched),
which feeds waits, SSE and gRPC watches, the scheduler's wake-up and the throughput chart, and reads the
stream (XREAD) only for what was added while it was not subscribed; a watch that resumes reads the past
with XRANGE. A consumer group may read it too (XREADGROUP): entries are never deleted but by the cap, so a
group that falls further behind than the cap loses the oldest.
"""

from __future__ import annotations

import re
from typing import Any

import orjson
from redis.asyncio import Redis

from shoal.event_ids import EventId
from shoal.models import TaskEvent, TaskState

#: Entries the stream keeps by default (XADD MAXLEN ~): one per script call that changed tasks.
EVENT_RETENTION = 100_000
#: Entries one read of the past (XRANGE) or of what came while not subscribed (XREAD) takes at most.
PAGE = 200
#: The field of an entry that holds its events.
FIELD = b"e"

_ENTRY = re.compile(rb"(\d+)-(\d+)")


def _entry_parts(entry: bytes | str) -> tuple[int, int]:
    raw = entry.encode() if isinstance(entry, str) else entry
    found = _ENTRY.fullmatch(raw)
    if found is None:
        return 0, 0
    return int(found[1]), int(found[2])


#: One event of an entry: the task's id, and the event, or None for a deletion (state ``DELETED``), which
#: ends waits but is shown to no watcher.
Change = tuple[str, TaskEvent | None]
#: An entry: its id and its events.
Entry = tuple[str, list[Change]]
#: An entry as read, its events not made yet: its id and the rows of its JSON array (``change`` makes one).
RawEntry = tuple[str, list[Any]]


def rows_of(body: bytes) -> list[Any]:
    """The rows of an entry's JSON array; none for a malformed one."""
    try:
        rows = orjson.loads(body)
    except orjson.JSONDecodeError:
        return []
    return rows if isinstance(rows, list) else []


def change(entry: str, index: int, row: Any) -> Change | None:
    """Row ``index`` of entry ``entry`` as a change, with its ``event_id``; None for a malformed row."""
    try:
        task_id, name = str(row["id"]), row["state"]
        state = TaskState.__members__.get(name)
        if state is None:
            return (task_id, None) if name == "DELETED" else None
        return task_id, TaskEvent(id=task_id, state=state, node=row.get("node") or None, at=float(row["at"]),
                                  type=str(row.get("type") or ""), event_id=f"{entry}/{index}")  # fmt: skip
    except (KeyError, TypeError, ValueError, AttributeError):
        return None


def decode(entry: bytes | str, fields: dict[bytes, bytes]) -> list[Change]:
    """The events of one entry, each with its ``event_id``; a malformed event (or entry) is skipped."""
    entry = _entry_id(entry)
    made = (change(entry, index, row) for index, row in enumerate(rows_of(fields.get(FIELD, b"[]"))))
    return [c for c in made if c is not None]


def split_message(message: bytes) -> RawEntry:
    """An entry as the channel carries it (``b"<entry id> <JSON array>"``): its id and its rows."""
    entry, _, body = message.partition(b" ")
    return _entry_id(entry), rows_of(body)


def is_after(entry: str, last: str) -> bool:
    """Whether entry id ``entry`` comes after entry id ``last``."""
    return _entry_parts(entry) > _entry_parts(last)


def _entry_id(entry: bytes | str) -> str:
    """An entry's id as text, "0-0" for a malformed one (its events' ids are then never taken as new)."""
    ms, seq = _entry_parts(entry)
    return f"{ms}-{seq}"


class TaskEventStream:
    """Reads the stream (the scripts write it). Safe to share between coroutines: each call is one command."""

    def __init__(self, redis: Redis, key: str) -> None:
        self.redis = redis
        self.key = key

    async def last_entry(self) -> str:
        """The id of the newest entry, "0-0" when there is none: where a reader that wants only what comes
        next starts."""
        reply: Any = await self.redis.xrevrange(self.key, count=1)
        return _text(reply[0][0]) if reply else "0-0"

    async def read(self, after: str, *, count: int = PAGE) -> list[RawEntry]:
        """At most ``count`` entries after entry ``after``, their events not made yet."""
        reply: Any = await self.redis.xread({self.key: after}, count=count)
        return [
            (_entry_id(entry), rows_of(fields.get(FIELD, b"[]")))
            for _stream, entries in reply or ()
            for entry, fields in entries
        ]

    async def newest_after(self, after: str, *, count: int = PAGE) -> list[RawEntry]:
        """The newest ``count`` entries after entry ``after`` at most, oldest first, their events not made yet."""
        reply: Any = await self.redis.xrevrange(self.key, max="+", min=f"({after}", count=count)
        return [(_entry_id(entry), rows_of(fields.get(FIELD, b"[]"))) for entry, fields in reversed(reply or ())]

    async def after(self, since: EventId, *, count: int = PAGE) -> list[Entry]:
        """At most ``count`` entries from the one ``since`` is in on (inclusive: the caller skips the events up
        to ``since``, which the entry may be followed by)."""
        reply: Any = await self.redis.xrange(self.key, min=since.entry, max="+", count=count)
        return [(_text(entry), decode(entry, fields)) for entry, fields in reply or ()]

    async def trimmed_after(self, since: EventId) -> tuple[bool, str | None]:
        """Whether events after ``since`` may have been trimmed away by the cap, and the id of the oldest event
        kept (None when none is). The store says which entries were trimmed only by how many (XINFO STREAM's
        entries-added less its length, Redis 7 and Valkey), so this errs on the side of a gap: when ``since``
        is older than the oldest entry kept and any entry was ever trimmed."""
        reply: Any = await self.redis.xrange(self.key, count=1)
        if not reply:  # nothing kept: whatever followed ``since`` is gone
            return True, None
        oldest = f"{_text(reply[0][0])}/0"
        if _entry_parts(reply[0][0]) <= (since.ms, since.seq):
            return False, oldest
        info: Any = await self.redis.xinfo_stream(self.key)
        added = info.get("entries-added") if isinstance(info, dict) else None
        if added is not None and int(added) == int(info.get("length", -1)):
            return False, oldest  # nothing was ever trimmed: ``since`` is from before the stream began
        return True, oldest


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
