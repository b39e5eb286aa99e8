"""Cache calls from one node to another (``shoal.v1.CacheShards``), over the ``PeerClient``'s signed channels.

Unlike the membership calls of ``PeerClient``, these raise: the cache must tell a miss (None) from a
node it could not ask (``PeerCallFailed``), to go on to the key's next owner. Every call has a deadline.
"""

from __future__ import annotations

import math
from typing import Any

import grpc
import grpc.aio

from shoal.models import CacheGrant, CacheItem
from shoal.rpc import cache_convert as cc
from shoal.rpc.convert import cache_grpc, cache_pb
from shoal.rpc.peers import PEER_CHANNEL_OPTIONS, PeerClient

#: Statuses that say the node did not answer (rather than refusing the request).
UNREACHABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED})
#: Room for a message's fields beside its value.
MESSAGE_SLACK = 1024 * 1024


class PeerCallFailed(Exception):
    """A cache call to another node got no good answer. ``unreachable``: the node did not answer at all."""

    def __init__(self, addr: str, code: grpc.StatusCode | None, details: str) -> None:
        super().__init__(f"{addr}: {code.name if code else 'error'}: {details}")
        self.addr = addr
        self.code = code
        self.unreachable = code is None or code in UNREACHABLE


def channel_options(max_value: int) -> tuple[tuple[str, Any], ...]:
    """The peer channel options, with room to receive a value of ``max_value`` bytes."""
    limit = max(32 * 1024 * 1024, max_value + MESSAGE_SLACK)
    kept = tuple(o for o in PEER_CHANNEL_OPTIONS if o[0] != "grpc.max_receive_message_length")
    return (("grpc.max_receive_message_length", limit), ("grpc.max_send_message_length", limit), *kept)


class CachePeers:
    """CacheShards calls to other nodes. Safe for concurrent use within one event loop.

    Parameters:
        peers: the node's ``PeerClient`` (its channels, its signatures).
        timeout_s: deadline of Load, Store, Drop and Release.
        lease_margin_s: added to a Lease call's wait for its deadline.
    """

    def __init__(self, peers: PeerClient, *, timeout_s: float = 2.0, lease_margin_s: float = 2.0) -> None:
        self.peers = peers
        self.timeout_s = timeout_s
        self.lease_margin_s = lease_margin_s
        self.calls = 0
        self.failures = 0

    def __repr__(self) -> str:
        return f"<CachePeers calls={self.calls} failures={self.failures}>"

    async def load(self, node: str, addr: str, key: str) -> CacheItem | None:
        entry = await self._call(node, addr, "Load", cache_pb.CacheKey(key=key), self.timeout_s)
        assert isinstance(entry, cache_pb.CacheEntry)
        return cc.entry_from_proto(entry)

    async def store(self, node: str, addr: str, key: str, value: bytes, ttl_s: float | None, keep_s: float) -> None:
        await self._call(node, addr, "Store", cc.write_to_proto(key, value, ttl_s, keep_s), self.timeout_s)

    async def drop(self, node: str, addr: str, key: str) -> bool:
        deleted = await self._call(node, addr, "Drop", cache_pb.CacheKey(key=key), self.timeout_s)
        assert isinstance(deleted, cache_pb.CacheDeleted)
        return deleted.found

    async def lease(self, node: str, addr: str, key: str, wait_s: float) -> CacheGrant:
        wait_s = max(0.0, min(wait_s, cc.MAX_LEASE_WAIT_S))
        request = cache_pb.LeaseRequest(key=key, wait_s=wait_s)
        grant = await self._call(node, addr, "Lease", request, wait_s + self.lease_margin_s)
        assert isinstance(grant, cache_pb.LeaseGrant)
        return cc.grant_from_proto(grant)

    async def release(self, node: str, addr: str, key: str, lease: str) -> None:
        await self._call(node, addr, "Release", cache_pb.LeaseRelease(key=key, lease=lease), self.timeout_s)

    async def _call(self, node: str, addr: str, method: str, request: Any, timeout_s: float) -> Any:
        """``method`` on node ``node`` at ``addr``."""
        self.calls += 1
        if not (timeout_s > 0 and math.isfinite(timeout_s)):
            raise ValueError(f"bad deadline {timeout_s!r}")
        try:
            async with self.peers.link(node, addr) as channel:
                stub = cache_grpc.CacheShardsStub(channel)
                return await getattr(stub, method)(request, timeout=timeout_s)
        except grpc.aio.AioRpcError as err:
            self.failures += 1
            raise PeerCallFailed(addr, err.code(), err.details() or "") from None
        except OSError as exc:
            self.failures += 1
            raise PeerCallFailed(addr, None, str(exc)) from None
