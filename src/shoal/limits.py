"""Concurrency and rate limits: how many tasks of a type (or of one key, or fetches of one host) may run at
once cluster-wide, and how many may start per second.

The master enforces them when it places tasks (place.lua), so they hold across nodes and failovers: a
limit's running tasks are a set in the store, and its rate a token bucket there. Three kinds apply to a task:

- its type's (config ``limits``: ``{"fetch": {"concurrency": 4, "rate_per_s": 10}}``),
- its ``concurrency_key``'s within its type (``key_concurrency``, ``key_rate_per_s`` in the same table:
  each customer id, say, at most 1 at once),
- for a fetch, its host's (``fetch_host_concurrency``, ``fetch_host_rate_per_s``, overridden per host by
  ``fetch_hosts``), and a hold a host asked for with ``Retry-After``.

Each is named as the waiting reason shows it: ``fetch`` (a type), ``report#customer-7`` (a key of a type),
``fetch:example.org`` (a host). A task is placed only when every limit that applies to it has room.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

from shoal.errors import InvalidInput

#: The task type limited per host by default.
FETCH = "fetch"
#: Most limits one config may name (types and hosts together).
MAX_LIMITS = 10_000
#: Largest concurrency and rate a limit may have (beyond them a limit means nothing).
MAX_CONCURRENCY = 1_000_000
MAX_RATE_PER_S = 1_000_000.0


@dataclass(frozen=True, slots=True)
class Limit:
    """At most ``concurrency`` running at once (0: any number) and ``rate_per_s`` starts per second (0: any),
    with bursts of up to ``max(1, rate_per_s)`` starts."""

    concurrency: int = 0
    rate_per_s: float = 0.0

    def __bool__(self) -> bool:
        return bool(self.concurrency or self.rate_per_s)

    def describe(self) -> str:
        parts = [f"{self.concurrency} at once"] if self.concurrency else []
        return ", ".join([*parts, *([f"{self.rate_per_s:g}/s"] if self.rate_per_s else [])])


@dataclass(frozen=True, slots=True)
class TypeLimits:
    """A type's own limit, and the one each of its concurrency keys gets."""

    type: Limit = Limit()
    per_key: Limit = Limit()


@dataclass(frozen=True, slots=True)
class Limits:
    """Every limit a cluster's config sets (the master's config is the one that holds)."""

    types: Mapping[str, TypeLimits] = field(default_factory=dict)
    host: Limit = Limit(concurrency=2, rate_per_s=4.0)  # each host's, unless ``hosts`` names it
    hosts: Mapping[str, Limit] = field(default_factory=dict)

    def limited_types(self) -> set[str]:
        """Types none of whose tasks may be placed without the master looking (their limits apply to all)."""
        return {t for t, lim in self.types.items() if lim.type} | ({FETCH} if self.host else set())

    def applying(self, task_type: str, key: str | None, host: str | None) -> list[tuple[str, Limit]]:
        """The limits a task is held to, each with its name."""
        found: list[tuple[str, Limit]] = []
        own = self.types.get(task_type)
        if own and own.type:
            found.append((task_type, own.type))
        if own and key is not None and own.per_key:
            found.append((f"{task_type}#{key}", own.per_key))
        if host is not None:
            limit = self.hosts.get(host, self.host)
            if limit:
                found.append((f"{FETCH}:{host}", limit))
        return found


def host_of(url: str) -> str | None:
    """The host a fetch of ``url`` goes to, as its limits and holds are keyed: the host name in lower case,
    with the port when it is not the scheme's own (``example.org``, ``127.0.0.1:8081``); None for no URL."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError):
        return None
    if not parsed.host:
        return None
    host = parsed.host.lower()
    host = f"[{host}]" if ":" in host else host
    port = parsed.port
    own = {"http": 80, "https": 443}.get(parsed.scheme.lower())
    return host if port is None or port == own else f"{host}:{port}"


def limit(value: Any, where: str) -> Limit:
    """A ``{"concurrency": N, "rate_per_s": R}`` table (either may be left out)."""
    if not isinstance(value, Mapping):
        raise InvalidInput(f"{where} must be a table such as {{concurrency = 4, rate_per_s = 10}}")
    unknown = sorted(set(value) - {"concurrency", "rate_per_s"})
    if unknown:
        raise InvalidInput(f"{where}: unknown key(s) {', '.join(unknown)} (concurrency, rate_per_s)")
    return Limit(_concurrency(value.get("concurrency", 0), where), _rate(value.get("rate_per_s", 0), where))


def type_limits(value: Any, where: str) -> dict[str, TypeLimits]:
    """Config ``limits``: per type, ``concurrency``, ``rate_per_s``, ``key_concurrency``, ``key_rate_per_s``."""
    if not isinstance(value, Mapping):
        raise InvalidInput(f"{where} must be a table of task type to limits")
    if len(value) > MAX_LIMITS:
        raise InvalidInput(f"{where} names {len(value)} types; the limit is {MAX_LIMITS}")
    out: dict[str, TypeLimits] = {}
    for task_type, table in value.items():
        at = f"{where}.{task_type}"
        if not isinstance(table, Mapping):
            raise InvalidInput(f"{at} must be a table such as {{concurrency = 4, rate_per_s = 10}}")
        unknown = sorted(set(table) - {"concurrency", "rate_per_s", "key_concurrency", "key_rate_per_s"})
        if unknown:
            raise InvalidInput(
                f"{at}: unknown key(s) {', '.join(unknown)} (concurrency, rate_per_s, key_concurrency, key_rate_per_s)"
            )
        out[str(task_type)] = TypeLimits(
            type=Limit(_concurrency(table.get("concurrency", 0), at), _rate(table.get("rate_per_s", 0), at)),
            per_key=Limit(_concurrency(table.get("key_concurrency", 0), at), _rate(table.get("key_rate_per_s", 0), at)),
        )
    return out


def host_limits(value: Any, where: str) -> dict[str, Limit]:
    """Config ``fetch_hosts``: per host (``example.org``, ``127.0.0.1:8081``), a limit of its own."""
    if not isinstance(value, Mapping):
        raise InvalidInput(f"{where} must be a table of host to limits")
    if len(value) > MAX_LIMITS:
        raise InvalidInput(f"{where} names {len(value)} hosts; the limit is {MAX_LIMITS}")
    return {str(host).lower(): limit(table, f"{where}.{host}") for host, table in value.items()}


def _concurrency(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_CONCURRENCY:
        raise InvalidInput(f"{where}: concurrency must be a whole number from 0 (no limit) to {MAX_CONCURRENCY}")
    return value


def _rate(value: Any, where: str) -> float:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or not 0 <= value <= MAX_RATE_PER_S:
        raise InvalidInput(f"{where}: rate_per_s must be a number from 0 (no limit) to {MAX_RATE_PER_S:g}")
    return float(value)
