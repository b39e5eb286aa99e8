"""``shoal.v1.Cache`` (users) over a ``CacheAPI``, and ``shoal.v1.CacheShards`` (nodes) over a ``CacheOwnerAPI``.

Thin adapters: requests are checked by ``shoal.rpc.cache_convert`` (the same rules as REST), errors
become statuses by ``_status.answer`` (a value over the limit is RESOURCE_EXHAUSTED, a bad key or ttl
INVALID_ARGUMENT). Cache calls are routed by the node called: any node serves any key.
"""

from __future__ import annotations

from shoal import validation
from shoal.errors import NotFound
from shoal.rpc import cache_convert as cc
from shoal.rpc.convert import cache_grpc, cache_pb
from shoal.rpc.services._status import Context, answer
from shoal.types import CacheAPI, CacheOwnerAPI

#: Full names of the services, for health, reflection and the auth interceptor.
SERVICE_NAME: str = cache_pb.DESCRIPTOR.services_by_name["Cache"].full_name
SHARDS_SERVICE_NAME: str = cache_pb.DESCRIPTOR.services_by_name["CacheShards"].full_name


class CacheServicer(cache_grpc.CacheServicer):
    """Serves ``shoal.v1.Cache`` over ``cache``. Safe for any number of concurrent calls."""

    def __init__(self, cache: CacheAPI, node: str) -> None:
        self._cache = cache
        self._node = node

    async def Get(self, request: cache_pb.CacheKey, context: Context) -> cache_pb.CacheEntry:
        async def call() -> cache_pb.CacheEntry:
            key = validation.cache_key(request.key)
            item = await self._cache.get(key)
            if item is None:
                raise NotFound(f"no cache entry for key {key!r}")
            return cc.entry_to_proto(item)

        return await answer(context, "Cache.Get", call)

    async def Set(self, request: cache_pb.CacheWrite, context: Context) -> cache_pb.CacheStored:
        async def call() -> cache_pb.CacheStored:
            key, value, ttl_s, keep_s = cc.write_from_proto(request)
            await self._cache.set(key, value, ttl_s, keep_s)
            return cache_pb.CacheStored()

        return await answer(context, "Cache.Set", call)

    async def Delete(self, request: cache_pb.CacheKey, context: Context) -> cache_pb.CacheDeleted:
        async def call() -> cache_pb.CacheDeleted:
            return cache_pb.CacheDeleted(found=await self._cache.delete(validation.cache_key(request.key)))

        return await answer(context, "Cache.Delete", call)

    async def Stats(self, request: cache_pb.CacheStatsRequest, context: Context) -> cache_pb.CacheStats:
        async def call() -> cache_pb.CacheStats:
            stats = await self._cache.cluster_stats()
            nodes = {name: cc.stats_to_proto(s) for name, s in stats.items()}
            return cache_pb.CacheStats(node=self._node, nodes=nodes)

        return await answer(context, "Cache.Stats", call)


class CacheShardsServicer(cache_grpc.CacheShardsServicer):
    """Serves ``shoal.v1.CacheShards`` over ``owner`` (this node's shard). Nodes only."""

    def __init__(self, owner: CacheOwnerAPI) -> None:
        self._owner = owner

    async def Load(self, request: cache_pb.CacheKey, context: Context) -> cache_pb.CacheEntry:
        async def call() -> cache_pb.CacheEntry:
            return cc.entry_to_proto(self._owner.load(validation.cache_key(request.key)))

        return await answer(context, "CacheShards.Load", call)

    async def Store(self, request: cache_pb.CacheWrite, context: Context) -> cache_pb.CacheStored:
        async def call() -> cache_pb.CacheStored:
            key, value, ttl_s, keep_s = cc.write_from_proto(request)
            self._owner.store(key, value, ttl_s, keep_s)
            return cache_pb.CacheStored()

        return await answer(context, "CacheShards.Store", call)

    async def Drop(self, request: cache_pb.CacheKey, context: Context) -> cache_pb.CacheDeleted:
        async def call() -> cache_pb.CacheDeleted:
            return cache_pb.CacheDeleted(found=self._owner.drop(validation.cache_key(request.key)))

        return await answer(context, "CacheShards.Drop", call)

    async def Lease(self, request: cache_pb.LeaseRequest, context: Context) -> cache_pb.LeaseGrant:
        async def call() -> cache_pb.LeaseGrant:
            key = validation.cache_key(request.key)
            wait_s = cc.lease_wait(request.wait_s)
            remaining = context.time_remaining()
            if remaining is not None:  # answer before the caller gives up
                wait_s = max(0.0, min(wait_s, remaining - 0.5))
            return cc.grant_to_proto(await self._owner.lease(key, wait_s))

        return await answer(context, "CacheShards.Lease", call)

    async def Release(self, request: cache_pb.LeaseRelease, context: Context) -> cache_pb.CacheStored:
        async def call() -> cache_pb.CacheStored:
            self._owner.release(validation.cache_key(request.key), request.lease)
            return cache_pb.CacheStored()

        return await answer(context, "CacheShards.Release", call)
