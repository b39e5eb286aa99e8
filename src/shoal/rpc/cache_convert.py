"""Cache messages <-> ``CacheItem``/``CacheGrant``, and the checks on what a cache caller sends.

Times travel as seconds from now: the sender turns its item's clock readings into durations and the
receiver back into readings of its own clock, so nodes whose clocks differ still agree on freshness.
"""

from __future__ import annotations

import math
import time

from shoal import validation
from shoal.errors import InvalidInput
from shoal.models import CacheGrant, CacheItem
from shoal.rpc.convert import cache_pb

#: Longest a Lease caller may ask to wait for another caller's fill.
MAX_LEASE_WAIT_S = 600.0


def entry_to_proto(item: CacheItem | None, now: float | None = None) -> cache_pb.CacheEntry:
    """The item as a CacheEntry (``found`` false for None)."""
    if item is None:
        return cache_pb.CacheEntry(found=False)
    now = time.time() if now is None else now
    entry = cache_pb.CacheEntry(found=True, value=item.value, fresh=item.fresh(now))
    if item.stale_at is not None:
        entry.fresh_s = item.stale_at - now
    if item.expires_at is not None:
        entry.keep_s = item.expires_at - now
    return entry


def entry_from_proto(entry: cache_pb.CacheEntry, now: float | None = None) -> CacheItem | None:
    """The item a CacheEntry describes, timed by this node's clock; None when not ``found``."""
    if not entry.found:
        return None
    now = time.time() if now is None else now
    stale_at = now + entry.fresh_s if entry.HasField("fresh_s") else None
    expires_at = now + entry.keep_s if entry.HasField("keep_s") else None
    if stale_at is not None and expires_at is not None and expires_at < stale_at:
        expires_at = stale_at
    return CacheItem(entry.value, stale_at=stale_at, expires_at=expires_at)


def write_to_proto(key: str, value: bytes, ttl_s: float | None, keep_s: float) -> cache_pb.CacheWrite:
    write = cache_pb.CacheWrite(key=key, value=value, keep_s=keep_s)
    if ttl_s is not None:
        write.ttl_s = ttl_s
    return write


def write_from_proto(write: cache_pb.CacheWrite) -> tuple[str, bytes, float | None, float]:
    """(key, value, ttl_s, keep_s), checked as REST checks them; the value's size is the cache's to check."""
    key = validation.cache_key(write.key)
    ttl_s = validation.cache_ttl(write.ttl_s) if write.HasField("ttl_s") else None
    return key, write.value, ttl_s, keep_from(write.keep_s)


def keep_from(value: float) -> float:
    """How long a stale item is kept: 0 <= keep_s <= one year."""
    if not math.isfinite(value) or not 0 <= value <= validation.MAX_CACHE_TTL_S:
        raise InvalidInput(f"keep_s must be between 0 and {validation.MAX_CACHE_TTL_S:g} seconds")
    return float(value)


def lease_wait(value: float) -> float:
    if not math.isfinite(value) or not 0 <= value <= MAX_LEASE_WAIT_S:
        raise InvalidInput(f"wait_s must be between 0 and {MAX_LEASE_WAIT_S:g} seconds")
    return float(value)


def grant_to_proto(grant: CacheGrant) -> cache_pb.LeaseGrant:
    return cache_pb.LeaseGrant(hit=grant.hit, lease=grant.lease, item=entry_to_proto(grant.item))


def grant_from_proto(grant: cache_pb.LeaseGrant) -> CacheGrant:
    item = entry_from_proto(grant.item)
    hit = grant.hit and item is not None
    return CacheGrant(item, hit=hit, lease="" if hit else grant.lease)


def stats_to_proto(stats: dict[str, int]) -> cache_pb.ShardStats:
    fields = cache_pb.ShardStats.DESCRIPTOR.fields_by_name
    return cache_pb.ShardStats(**{k: max(0, int(v)) for k, v in stats.items() if k in fields})


def stats_from_proto(stats: cache_pb.ShardStats) -> dict[str, int]:
    return {f.name: int(getattr(stats, f.name)) for f in cache_pb.ShardStats.DESCRIPTOR.fields}
