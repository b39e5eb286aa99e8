"""Search tasks by text in their name or target, or by the start of their name.

A text search (``search``) has no index to read, and keeping one would cost every submit a write for each
word. It walks what a listing reads (``index:{STATE}``, or the six merged) from the newest task down,
``CHUNK`` ids at a time, and matches only the two fields it needs (``name``, ``target``). It looks at no
more than ``SEARCH_SCAN`` tasks, so a search costs at most that many small reads however big the store
grows; when the index holds more, the answer says it is not complete and ``total`` counts the matches
among the newest ``SEARCH_SCAN``. Every page re-walks from the newest task so that ``total`` means the
same on every page; the cursor (a sequence number, as in a listing) only picks where the page starts.

An ASCII query is matched inside Redis, one short Lua call per chunk (``_CHUNK_LUA``: about a
millisecond of Redis time for a thousand tasks, so other clients wait no longer than that), and only the
matching ids travel back. Any other query is matched here, after ``HMGET`` of each task in the chunk,
with Unicode case folding, which Lua's ``string.lower`` does not know.

A search by name prefix (``search_names``) reads the name index (``names``, kept by the scripts: "name in
lower case NUL seq NUL id" at score 0), where the tasks whose name starts with a text are one lexical range:
its size, one ``ZLEXCOUNT``, is the exact total, and up to ``NAME_READ`` entries are read whole, sorted
newest first here and filtered by state with one ``ZMSCORE``. A prefix that more tasks share than that is
common enough that the newest-first walk above, matching the name's start, fills a page after a few chunks;
its total is still exact when no state is asked for. Case is ASCII's on both sides (the scripts lower names
with Lua's ``string.lower``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from redis.commands.core import AsyncScript

from shoal.models import TaskPage, TaskState
from shoal.store.tasks import TaskStore

#: Most index entries one search looks at.
SEARCH_SCAN = 20_000
#: Index entries read (and matched) per round trip.
CHUNK = 1000

#: Most name index entries a search by name prefix reads whole (about 4 MB; a few milliseconds a chunk).
NAME_READ = 50_000
#: Name index entries read per round trip.
NAME_CHUNK = 10_000

# ARGV: key prefix of the cluster, top score ('+inf' or '(N'), how many, lower-case text the name or the
# target must contain ('' = any), lower-case text the name must start with ('' = any), then the states whose
# indexes are merged. Returns {entries looked at, score of the last one or '', id, score, ...} of the matches.
_CHUNK_LUA = """
local count, needle, start, rows = tonumber(ARGV[3]), ARGV[4], ARGV[5], {}
local function contains(value) return value and string.find(string.lower(value), needle, 1, true) end
local function starts(value) return value and string.lower(string.sub(value, 1, #start)) == start end
for k = 6, #ARGV do
  local got = redis.call('ZREVRANGEBYSCORE', ARGV[1] .. 'index:' .. ARGV[k], ARGV[2], '-inf', 'WITHSCORES',
                         'LIMIT', 0, count)
  for i = 1, #got, 2 do rows[#rows + 1] = {got[i], tonumber(got[i + 1])} end
end
table.sort(rows, function(a, b) return a[2] > b[2] end)
local looked = math.min(count, #rows)
local out = {looked, looked > 0 and rows[looked][2] or ''}
for i = 1, looked do
  local f = redis.call('HMGET', ARGV[1] .. 'task:' .. rows[i][1], 'name', 'target')
  if (start == '' or starts(f[1])) and (needle == '' or contains(f[1]) or contains(f[2])) then
    out[#out + 1] = rows[i][1]
    out[#out + 1] = rows[i][2]
  end
end
return out
"""


@dataclass(frozen=True, slots=True)
class _Chunk:
    """One round trip of the scan: how many entries it looked at, where to go on, and what matched."""

    scanned: int
    top: str
    matches: list[tuple[str, int]]


async def search(
    store: TaskStore,
    state: TaskState | None,
    query: str,
    limit: int,
    cursor: str | None,
    *,
    scan: int = SEARCH_SCAN,
    prefix: str = "",
) -> tuple[TaskPage, bool]:
    """One page of the tasks whose name or target contains ``query`` (case-insensitive; "" = any) and whose
    name starts with ``prefix`` (ASCII case-insensitive; "" = any), newest first.

    Returns the page (``total``: matches found by the scan) and whether the scan reached the oldest task.
    """
    states = [s.name for s in TaskState] if state is None else [state.name]
    before = int(cursor) if cursor else None
    page: list[tuple[str, int]] = []
    more = False
    total = scanned = 0
    top = "+inf"
    complete = False
    script = store.redis.register_script(_CHUNK_LUA) if query.isascii() else None
    start = prefix.encode().lower()  # ASCII's lower case, as Lua's (the query's too, when it is ASCII)
    while scanned < scan:
        asked = min(CHUNK, scan - scanned)
        chunk = await (_chunk_in_redis(script, store, states, top, asked, query.lower(), start) if script else
                       _chunk_here(store, state, top, asked, query, start))  # fmt: skip
        scanned += chunk.scanned
        total += len(chunk.matches)
        for task_id, seq in chunk.matches:
            if before is not None and seq >= before:
                continue
            if len(page) < limit:
                page.append((task_id, seq))
            else:
                more = True
        if chunk.scanned < asked:
            complete = True
            break
        top = chunk.top
    if not complete:  # the scan stopped at its bound: complete all the same if nothing older is left
        complete = not (await store.newest(state, top, 1))[1]
    tasks = await store.get_many([task_id for task_id, _ in page])
    next_cursor = str(page[-1][1]) if more and page else None
    return TaskPage(tasks=tasks, total=total, next_cursor=next_cursor), complete


async def _chunk_in_redis(script: AsyncScript, store: TaskStore, states: list[str], top: str, count: int,
                          needle: str, start: bytes) -> _Chunk:  # fmt: skip
    reply: Any = await script(keys=[], args=[store.keys.prefix, top, count, needle, start, *states])
    flat = [v.decode() if isinstance(v, bytes) else str(v) for v in reply]
    matches = [(flat[i], int(float(flat[i + 1]))) for i in range(2, len(flat), 2)]
    return _Chunk(int(flat[0]), f"({int(float(flat[1]))}" if flat[1] else top, matches)


async def _chunk_here(
    store: TaskStore, state: TaskState | None, top: str, count: int, query: str, start: bytes
) -> _Chunk:
    _, rows = await store.newest(state, top, count)
    if not rows:
        return _Chunk(0, top, [])
    async with store.redis.pipeline(transaction=False) as pipe:
        for task_id, _ in rows:
            pipe.hmget(store.keys.task(task_id), "name", "target")
        fields = await pipe.execute()
    needle = query.casefold()
    matches = [
        (task_id, seq)
        for (task_id, seq), (name, target) in zip(rows, fields, strict=True)
        if (name or b"").lower().startswith(start)
        and any(needle in value.decode(errors="replace").casefold() for value in (name, target) if value)
    ]
    return _Chunk(len(rows), f"({rows[-1][1]}", matches)


async def search_names(
    store: TaskStore,
    state: TaskState | None,
    prefix: str,
    limit: int,
    cursor: str | None,
    *,
    read: int = NAME_READ,
) -> tuple[TaskPage, bool]:
    """One page of the tasks whose name starts with ``prefix`` (ASCII case-insensitive), newest first, from
    the name index. Returns the page (``total``: every match, in ``state`` if given) and whether ``total``
    is exact, which it is but for a prefix of more than ``read`` tasks with a state asked for."""
    low = prefix.encode().lower()
    first, last = b"[" + low, b"[" + low + b"\xff"  # no name holds the byte 0xff (it is UTF-8)
    shared = int(await store.redis.zlexcount(store.keys.names, first, last))
    if shared > read:
        page, complete = await search(store, state, "", limit, cursor, prefix=prefix)
        if state is None:
            return TaskPage(tasks=page.tasks, total=shared, next_cursor=page.next_cursor), True
        return page, complete
    found: dict[str, int] = {}  # by id: a submit between two chunks may shift an entry into both
    for offset in range(0, shared, NAME_CHUNK):
        entries: Any = await store.redis.zrangebylex(store.keys.names, first, last, start=offset, num=NAME_CHUNK)
        for entry in entries:
            _, seq, task_id = entry.rsplit(b"\0", 2)
            found[task_id.decode()] = int(seq)
    rows = list(found.items())
    if state is not None and rows:
        scores = await store.redis.zmscore(store.keys.state_index(state.name), [task_id for task_id, _ in rows])
        rows = [row for row, score in zip(rows, scores, strict=True) if score is not None]
    rows.sort(key=lambda row: row[1], reverse=True)
    before = int(cursor) if cursor else None
    after_cursor = [row for row in rows if before is None or row[1] < before]
    shown = after_cursor[:limit]
    tasks = await store.get_many([task_id for task_id, _ in shown])
    next_cursor = str(shown[-1][1]) if len(after_cursor) > limit else None
    return TaskPage(tasks=tasks, total=len(rows), next_cursor=next_cursor), True
