"""The store's Redis client: redis-py's, with every error it raises turned into shoal's store errors.

A call that fails because the store cannot serve for now (no connection, a timeout, a server still loading
its data, a replica or a master short of replicas refusing writes: see ``shoal.store.refusals``) raises
``StoreUnavailable``; any other refusal raises ``StoreFault``. The translation happens once, at the edge
of the client (commands, scripts, pipelines, pub/sub), so no method of a store class needs a try block,
and redis-py's own retries and reconnects, which run further in, see its exceptions unchanged.

Each translated error is also an instance of the redis-py exception it replaces (``translated`` builds one
class per pair, named after shoal's), so code that still catches redis-py's classes (``ResponseError``
for NOGROUP, a ``ConnectionError`` in a test) keeps working while callers move to shoal's errors.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any, TypeVar, cast

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline, PubSub
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ReadOnlyError, RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from shoal.errors import StoreError, StoreFault, StoreUnavailable

T = TypeVar("T")

#: redis-py's errors that mean "not now" rather than "not this": the store is down, slow or read-only.
#: ``ConnectionError`` covers BusyLoadingError, AuthenticationError, MasterNotFoundError and StoreRefused.
UNAVAILABLE: tuple[type[RedisError], ...] = (RedisConnectionError, RedisTimeoutError, ReadOnlyError)


_HYBRIDS: dict[tuple[type[StoreError], type[RedisError]], type[StoreError]] = {}


def _hybrid(base: type[StoreError], original: type[RedisError]) -> type[StoreError]:
    """The class of a translated error: shoal's ``base`` first, then the redis-py class it replaces; one
    per pair, made on first use.

    Named as ``base`` (the API's error kind is the class name) and kept out of ``shoal.errors`` (whose
    classes the client maps kinds to); its qualified name shows both in tracebacks.
    """
    hybrid = _HYBRIDS.get((base, original))
    if hybrid is None:
        namespace = {"__module__": __name__, "__qualname__": f"{base.__name__}[{original.__name__}]"}
        hybrid = _HYBRIDS[base, original] = cast(type[StoreError], type(base.__name__, (base, original), namespace))
    return hybrid


def translated(exc: RedisError) -> StoreError:
    """Shoal's error for a redis-py error: StoreUnavailable or StoreFault, with the store's words as detail."""
    base: type[StoreError] = StoreUnavailable if isinstance(exc, UNAVAILABLE) else StoreFault
    detail = str(exc) or type(exc).__name__
    try:
        return _hybrid(base, type(exc))(detail=detail)
    except Exception:  # a redis-py class that cannot be a base, or wants other arguments (cluster-only ones)
        return base(detail=detail)


async def translating(call: Awaitable[T]) -> T:
    """Await ``call``, raising shoal's store errors for redis-py's: for calls that reach the store other than
    through a StoreClient (a raw connection of shoal.store.wire, a plain client)."""
    try:
        return await call
    except StoreError:
        raise  # translated further in (a script's call inside a pipeline's, say)
    except RedisError as exc:
        raise translated(exc) from exc


class StoreClient(Redis):
    """redis-py's asyncio client raising shoal's store errors; its pipelines and subscriptions do too.

    Built by ``shoal.store.redis.connect``; shared by every coroutine of a node, as redis-py's is."""

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        try:  # as translating() does, without a coroutine more per command
            return await super().execute_command(*args, **options)  # type: ignore[no-untyped-call]
        except StoreError:
            raise
        except RedisError as exc:
            raise translated(exc) from exc

    def pipeline(self, transaction: bool = True, shard_hint: str | None = None) -> StorePipeline:
        return StorePipeline(self.connection_pool, self.response_callbacks, transaction, shard_hint)

    def pubsub(self, **kwargs: Any) -> StorePubSub:
        return StorePubSub(self.connection_pool, event_dispatcher=self._event_dispatcher, **kwargs)


class StorePipeline(Pipeline):
    """A pipeline or MULTI of a StoreClient. Queued commands send nothing: only running them can fail."""

    async def execute(self, raise_on_error: bool = True) -> list[Any]:
        """Run the queued commands. With ``raise_on_error=False``, a command's own error is returned in its
        place as redis-py's (``translated`` makes it shoal's); failing to run them at all raises shoal's."""
        try:
            return await super().execute(raise_on_error)
        except StoreError:
            raise
        except RedisError as exc:
            raise translated(exc) from exc

    async def immediate_execute_command(self, *args: Any, **options: Any) -> Any:
        """A command sent at once: WATCH, and every command after it until MULTI."""
        return await translating(super().immediate_execute_command(*args, **options))  # type: ignore[no-untyped-call]


class StorePubSub(PubSub):
    """A subscription of a StoreClient: (un)subscribing, pinging and reading messages raise shoal's errors."""

    async def execute_command(self, *args: Any) -> Any:
        return await translating(super().execute_command(*args))

    async def parse_response(self, block: bool = True, timeout: float = 0) -> Any:
        return await translating(super().parse_response(block, timeout))
