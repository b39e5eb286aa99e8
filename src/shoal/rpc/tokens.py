"""The cluster token as a value that can change while the node runs.

One ``TokenKeeper`` per node is shared by everything that checks or uses the token: the user bearer
check (gRPC and REST), node-to-node call signatures, admission proofs and the sealing of a new token.
``rotate()`` swaps in a new token and keeps the one it replaces acceptable for a grace period, so calls
already signed, nodes not yet told, and users whose token file is being updated are not cut off at once.

Stdlib only (no grpc), so the web layer can use it too. Reads are lock-free: the state is one immutable
snapshot replaced whole, so a reader in any thread sees either the old pair or the new one.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from shoal.auth import token_matches

#: How long the token a rotation replaced is still accepted.
DEFAULT_GRACE_S = 60.0
#: Bounds on a token received from another node (a configured token is only required to be non-empty).
MIN_TOKEN_CHARS = 16
MAX_TOKEN_CHARS = 512


@dataclass(frozen=True, slots=True)
class _State:
    current: str
    previous: str | None
    previous_until: float
    generation: int


class TokenKeeper:
    """Holds the current cluster token and, for ``grace_s`` after a rotation, the previous one.

    Parameters:
        token: the token the node starts with.
        grace_s: default grace period of a rotation.
        clock: monotonic seconds; tests pass their own to step through a grace period.
    """

    def __init__(
        self, token: str, *, grace_s: float = DEFAULT_GRACE_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if not token:
            raise ValueError("the cluster token must not be empty")
        if grace_s < 0:
            raise ValueError("grace_s must not be negative")
        self.grace_s = grace_s
        self._clock = clock
        self._state = _State(token, None, 0.0, 0)

    @property
    def current(self) -> str:
        """The token to use for anything new (signing, proving, sealing)."""
        return self._state.current

    @property
    def previous(self) -> str | None:
        """The token the last rotation replaced, while its grace period lasts; else None."""
        state = self._state
        if state.previous is not None and self._clock() < state.previous_until:
            return state.previous
        return None

    @property
    def generation(self) -> int:
        """How many rotations this keeper has seen; lets a holder of derived values tell they are stale."""
        return self._state.generation

    def accepted(self) -> tuple[str, ...]:
        """Every token a caller may hold now: the current one first, then the previous in its grace."""
        previous = self.previous
        return (self.current,) if previous is None else (self.current, previous)

    def matches(self, given: str | None) -> bool:
        """Whether ``given`` is an accepted token, compared in constant time against each."""
        found = False
        for token in self.accepted():
            found |= token_matches(given, token)
        return found

    def rotate(self, new: str, *, grace_s: float | None = None) -> bool:
        """Make ``new`` current; the old one stays accepted for ``grace_s`` (default: the keeper's).

        Returns False, changing nothing, when ``new`` already is the current token.
        Raises ValueError when ``new`` is not a usable token (see ``check_token``).
        """
        check_token(new)
        state = self._state
        if token_matches(new, state.current):
            return False
        grace = self.grace_s if grace_s is None else grace_s
        self._state = _State(new, state.current, self._clock() + grace, state.generation + 1)
        return True

    def __repr__(self) -> str:
        return f"TokenKeeper(generation={self.generation}, previous={'yes' if self.previous else 'no'})"


def check_token(token: str) -> None:
    """Refuse a token that could not travel in an ``Authorization`` header or is too short to be secret."""
    if not MIN_TOKEN_CHARS <= len(token) <= MAX_TOKEN_CHARS:
        raise ValueError(f"a cluster token must be {MIN_TOKEN_CHARS}-{MAX_TOKEN_CHARS} characters")
    if not all("!" <= ch <= "~" for ch in token):
        raise ValueError("a cluster token must be printable ASCII without spaces")
