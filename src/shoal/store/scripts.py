"""The Lua scripts that make every state change one atomic step, loaded once per connection pool.

Each ``scripts/*.lua`` file is prefixed with ``_lib.lua`` (shared helpers) and registered with redis-py,
which runs it by SHA and reloads it by itself after a Redis restart. Its body runs as a function, after
which ``settle_children`` settles the workflow children of the tasks that ended in it, and ``flush`` (both in
``_lib.lua``) makes the index writes and adds the task events it gathered to the cluster's event stream
(``shoal.store.task_events``); last, ``read_back`` reads the tasks its caller asked to have back.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

import orjson
from redis.asyncio import Redis
from redis.commands.core import AsyncScript

from shoal.keys import channel_suffix
from shoal.store.redis import database_of
from shoal.store.task_events import EVENT_RETENTION

#: A task's attempt list keeps its first attempts (how it began) and its latest (how it is going); the ones
#: in between are dropped past that and counted in ``Task.attempts_dropped``.
KEEP_FIRST_ATTEMPTS = 5
KEEP_LAST_ATTEMPTS = 20

_NAMES = (
    *("submit", "roster", "place", "start", "finish", "kill", "delete", "requeue", "promote", "migrate"),
    *("expire", "prune", "page", "index_names"),
    *("lease", "release", "member", "break", "note", "nodes"),
    *("schedule_add", "schedule_pause", "schedule_delete", "schedule_tick", "schedule_fired"),
    *("webhook_add", "webhook_delete", "webhook_ingest", "webhook_claim", "webhook_done", "webhook_replay"),
    *("workflow_kill",),
)
#: The scripts that take many arguments per task: ``run`` sends their arguments after the prefix as one JSON
#: array of strings, which ``unpacked_argv`` (in _lib.lua) makes their ARGV again.
PACKED = frozenset({"submit", "place", "start", "finish"})
#: Scripts made of packed ones run one after the other in one atomic step, each on its own arguments
#: (``run_steps``), their replies in a list: a task that ran on the node that submits it (submit, then finish:
#: see ``TaskStore.create_ended``) is stored in one call; a node's reports of ended attempts and its starts of
#: the next go in one call, ends first (``TaskStore.finish_and_begin``).
STEPS = {"submit_finish": ("submit", "finish"), "finish_start": ("finish", "start")}


class Scripts:
    """One registered script per name; call as ``await scripts.run("kill", prefix, id)``. ``event_retention``:
    about how many entries the task event stream keeps (each script call that changes tasks adds one)."""

    def __init__(self, redis: Redis, *, event_retention: int = EVENT_RETENTION) -> None:
        folder = resources.files("shoal.store") / "scripts"
        suffix = channel_suffix(database_of(redis))
        settings = {
            "local EVENTS_KEEP": str(int(event_retention)),
            "local EVENTS_CHANNEL": f"P .. 'task-events{suffix}'",
            "local PROGRESS_CHANNEL": f"P .. 'task-progress{suffix}'",
            "local PUBLIC_CHANNEL": f"P .. 'public{suffix}'",
            "local ELECTIONS_CHANNEL": f"P .. 'elections{suffix}'",
            "local KEEP_FIRST, KEEP_LAST": f"{KEEP_FIRST_ATTEMPTS}, {KEEP_LAST_ATTEMPTS}",
        }
        lib = (folder / "_lib.lua").read_text()
        for name, value in settings.items():  # the settings _lib.lua declares without a value
            lib = lib.replace(f"{name}\n", f"{name} = {value}\n", 1)
        end = "local reply = main()\nsettle_children()\nflush()\nread_back()\nreturn reply\n"
        self._scripts: dict[str, AsyncScript] = {
            name: redis.register_script(
                f"{lib}\nlocal function main()\n{'local ARGV = unpacked_argv()' if name in PACKED else ''}\n"
                f"{(folder / f'{name}.lua').read_text()}\nend\n{end}"
            )
            for name in _NAMES
        }
        for name, steps in STEPS.items():
            bodies = "".join(
                f"local function step_{k}(ARGV)\n{(folder / f'{step}.lua').read_text()}\nend\n"
                for k, step in enumerate(steps, 1)
            )
            calls = "".join(f"  out[{k}] = step_{k}(unpacked_argv({k + 1}))\n" for k in range(1, len(steps) + 1))
            main = f"local function main()\n  local out = {{}}\n{calls}  return out\nend\n"
            self._scripts[name] = redis.register_script(f"{lib}\n{bodies}{main}{end}")

    async def run_steps(self, name: str, prefix: str, *steps: list[Any]) -> list[Any]:
        """A script of ``STEPS``, each of its steps on its arguments: their replies, in order."""
        packed = [orjson.dumps([_text(a) for a in args]) for args in steps]
        reply: list[Any] = await self._scripts[name](keys=[], args=[prefix, *packed])
        return reply

    async def run(self, name: str, prefix: str, *args: Any) -> Any:
        if name in PACKED:
            return await self._scripts[name](keys=[], args=[prefix, orjson.dumps([_text(a) for a in args])])
        return await self._scripts[name](keys=[], args=[prefix, *args])


def _text(value: object) -> str:
    """An argument as redis-py would send it (numbers as their repr), but as text for a JSON array. The exact
    types are tried first: a batch of a thousand tasks has tens of thousands of arguments."""
    if type(value) is str:
        return value
    if type(value) is int or type(value) is float:
        return repr(value)
    if isinstance(value, str):
        return value
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, int | float) and not isinstance(value, bool):
        return repr(value)
    raise TypeError(f"a script argument must be text, bytes or a number, not {type(value).__name__}")
