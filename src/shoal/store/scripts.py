"""The Lua scripts that make every state change one atomic step, loaded once per connection pool.

Each ``scripts/*.lua`` file is prefixed with ``_lib.lua`` (shared helpers) and registered with redis-py,
which runs it by SHA and reloads it by itself after a Redis restart. Its body runs as a function, after
which ``flush`` (in ``_lib.lua``) makes the index writes and publishes the task events it gathered.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

from redis.asyncio import Redis
from redis.commands.core import AsyncScript

from shoal.keys import channel_suffix
from shoal.store.redis import database_of

#: A task's attempt list keeps its first attempts (how it began) and its latest (how it is going); the ones
#: in between are dropped past that and counted in ``Task.attempts_dropped``.
KEEP_FIRST_ATTEMPTS = 5
KEEP_LAST_ATTEMPTS = 20

_NAMES = (
    *("submit", "roster", "place", "start", "finish", "kill", "delete", "requeue", "promote", "migrate"),
    *("expire", "prune", "page", "index_names"),
    *("lease", "release", "member", "break", "note", "nodes"),
    *("schedule_add", "schedule_pause", "schedule_delete", "schedule_tick", "schedule_fired"),
)


class Scripts:
    """One registered script per name; call as ``await scripts.run("kill", prefix, id)``."""

    def __init__(self, redis: Redis) -> None:
        folder = resources.files("shoal.store") / "scripts"
        suffix = channel_suffix(database_of(redis))
        settings = {
            "local EVENTS_CHANNEL": f"P .. 'events{suffix}'",
            "local PUBLIC_CHANNEL": f"P .. 'public{suffix}'",
            "local ELECTIONS_CHANNEL": f"P .. 'elections{suffix}'",
            "local KEEP_FIRST, KEEP_LAST": f"{KEEP_FIRST_ATTEMPTS}, {KEEP_LAST_ATTEMPTS}",
        }
        lib = (folder / "_lib.lua").read_text()
        for name, value in settings.items():  # the settings _lib.lua declares without a value
            lib = lib.replace(f"{name}\n", f"{name} = {value}\n", 1)
        self._scripts: dict[str, AsyncScript] = {
            name: redis.register_script(
                f"{lib}\nlocal function main()\n{(folder / f'{name}.lua').read_text()}\nend\n"
                "local reply = main()\nflush()\nreturn reply\n"
            )
            for name in _NAMES
        }

    async def run(self, name: str, *args: Any) -> Any:
        return await self._scripts[name](keys=[], args=list(args))
