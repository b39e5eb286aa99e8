"""Which nodes own a cache key: rendezvous (highest random weight) hashing over the live node names.

Every node scores every key with a hash of (key, node name); the nodes with the highest scores own it,
the best first. A key's scores on the other nodes do not change when a node joins or leaves, so only
the keys the newcomer wins move to it, and only the keys of the leaver move away: each about 1/N of
them. There is no table to build or share: any node with the same list of names gets the same owners.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable


def score(key: str, node: str) -> int:
    """The weight of ``node`` for ``key``: 64 bits of BLAKE2b over both, length-framed so that no two
    different pairs hash the same bytes."""
    k, n = key.encode(), node.encode()
    digest = hashlib.blake2b(len(k).to_bytes(4, "big") + k + n, digest_size=8).digest()
    return int.from_bytes(digest, "big")


def rank(key: str, nodes: Iterable[str]) -> list[str]:
    """Every node in ``nodes``, best owner of ``key`` first (ties, which need a 64-bit collision, by name)."""
    return sorted(set(nodes), key=lambda n: (-score(key, n), n))


def owners(key: str, nodes: Iterable[str], replicas: int) -> list[str]:
    """The ``replicas`` nodes that hold ``key`` (fewer if there are fewer nodes), owner first."""
    if replicas < 1:
        raise ValueError("replicas must be at least 1")
    return rank(key, nodes)[:replicas]


def owner(key: str, nodes: Iterable[str]) -> str | None:
    """The node that owns ``key``, or None when there are no nodes."""
    ranked = rank(key, nodes)
    return ranked[0] if ranked else None
