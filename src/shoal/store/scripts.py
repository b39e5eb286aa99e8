"""The Lua scripts that make every state change one atomic step, loaded once per connection pool.

Each ``scripts/*.lua`` file is prefixed with ``_lib.lua`` (shared helpers) and registered with redis-py,
which runs it by SHA and reloads it by itself after a Redis restart.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

from redis.asyncio import Redis
from redis.commands.core import AsyncScript

_NAMES = (
    *("submit", "place", "start", "finish", "kill", "delete", "requeue", "promote", "migrate"),
    *("lease", "release", "member", "break", "note"),
)


class Scripts:
    """One registered script per name; call as ``await scripts.run("kill", prefix, id)``."""

    def __init__(self, redis: Redis) -> None:
        folder = resources.files("shoal.store") / "scripts"
        lib = (folder / "_lib.lua").read_text()
        self._scripts: dict[str, AsyncScript] = {
            name: redis.register_script(lib + "\n" + (folder / f"{name}.lua").read_text()) for name in _NAMES
        }

    async def run(self, name: str, *args: Any) -> Any:
        return await self._scripts[name](keys=[], args=list(args))
