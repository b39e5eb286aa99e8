"""Node-to-node credentials: every call signed with the cluster token, which itself never travels.

A calling node adds five metadata entries (``CallSigner``); the callee checks them (``NodeCredentials``,
an ``Authenticator`` for ``shoal.rpc.auth.AuthInterceptor``):

    x-shoal-node   the caller's name (percent-encoded, so any name is valid metadata)
    x-shoal-to     the callee's name, the node the call is meant for (percent-encoded)
    x-shoal-ts     the caller's clock, Unix milliseconds (a node's reading of the store's, ``shoal.clock``)
    x-shoal-nonce  22 random URL-safe characters
    x-shoal-sig    hex HMAC-SHA256(token, "shoal/v1 call" | method | node | to | ts | nonce | sha256(request))

The callee refuses a call meant for another node, a timestamp more than ``window_s`` (30 s) off its own
clock (nodes sign and check on the store's clock, so one machine's wrong clock refuses nothing), a nonce
it has seen within that window (``ReplayCache``), and a signature under none of its
accepted tokens over the request bytes it received. So a captured call can be played neither against
another node (it names its callee) nor again against the same one (its nonce), and its request cannot be
changed (the digest). During a rotation the caller signs under both its tokens (comma-separated), so a
callee that has rotated and one that has not yet both accept the call.

The signature keeps requests from being forged or redirected, not from being read: that needs TLS on
the channel (the sealed token of UpdateSecret is AEAD for that reason).

Admission uses the same key differently: ``admission_proof`` answers a verifier's random challenge, bound
to the verifier's and the prover's names, so a proof is good for one exchange only.
"""

from __future__ import annotations

import hashlib
import heapq
import hmac
import re
import secrets
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any
from urllib.parse import quote, unquote

from shoal._utils import is_digits
from shoal.rpc.auth import BodyCheck, Refusal
from shoal.rpc.tokens import TokenKeeper

H_NODE = "x-shoal-node"
H_TO = "x-shoal-to"
H_TS = "x-shoal-ts"
H_NONCE = "x-shoal-nonce"
H_SIG = "x-shoal-sig"
HEADERS = (H_NODE, H_TO, H_TS, H_NONCE, H_SIG)

#: How far a call's timestamp may be from the callee's clock, either way.
DEFAULT_WINDOW_S = 30.0
#: Nonces remembered at most; past it the oldest are forgotten and older timestamps refused (see ReplayCache).
DEFAULT_MAX_NONCES = 50_000
#: Sizes of an admission challenge, in bytes.
MIN_CHALLENGE = 16
MAX_CHALLENGE = 64

_CALL_LABEL = b"shoal/v1 call"
_ADMISSION_LABEL = b"shoal/v1 admission"
_NONCE = re.compile(r"[A-Za-z0-9_-]{16,64}")
_SIG = re.compile(r"[0-9a-f]{64}")
_MAX_NODE_CHARS = 256


def frame(*parts: bytes) -> bytes:
    """Each part prefixed with its 4-byte length, so no two different field lists make the same bytes."""
    return b"".join(len(p).to_bytes(4, "big") + p for p in parts)


def call_signature(token: str, method: str, node: str, to: str, ts: str, nonce: str, request: bytes) -> str:
    """The hex HMAC that proves a token holder, node ``node``, made this call to ``method`` on node ``to``
    with this request (``node`` and ``to`` as they travel, percent-encoded)."""
    digest = hashlib.sha256(request).digest()
    message = frame(_CALL_LABEL, method.encode(), node.encode(), to.encode(), ts.encode(), nonce.encode(), digest)
    return hmac.new(token.encode(), message, hashlib.sha256).hexdigest()


def admission_proof(token: str, challenge: bytes, verifier: str, name: str) -> bytes:
    """HMAC-SHA256(token, "shoal/v1 admission" | challenge | verifier | name): node ``name``'s answer to
    ``verifier``'s challenge. ``PeerAPI.prove`` returns this with the node's current token."""
    message = frame(_ADMISSION_LABEL, challenge, verifier.encode(), name.encode())
    return hmac.new(token.encode(), message, hashlib.sha256).digest()


def proof_matches(keeper: TokenKeeper, proof: bytes, challenge: bytes, verifier: str, name: str) -> bool:
    """Whether ``proof`` answers the challenge under any token the keeper accepts (constant time each)."""
    found = False
    for token in keeper.accepted():
        found |= hmac.compare_digest(proof, admission_proof(token, challenge, verifier, name))
    return found


class CallSigner:
    """Makes the credential metadata for one call from node ``node``. Cheap; safe to share."""

    def __init__(self, keeper: TokenKeeper, node: str, *, clock: Callable[[], float] = time.time) -> None:
        if not node:
            raise ValueError("a node name is required")
        self.keeper = keeper
        self.node = node
        self._wire_node = quote(node, safe="")
        self._clock = clock

    def metadata(self, method: str | bytes, to: str, request: bytes) -> list[tuple[str, str]]:
        """The ``x-shoal-*`` entries for a call to ``method`` (``/package.Service/Method``) on node ``to``
        whose serialized request is ``request``."""
        if not to:
            raise ValueError("the called node's name is required")
        path = method.decode() if isinstance(method, bytes) else method
        wire_to = quote(to, safe="")
        ts = str(int(self._clock() * 1000))
        nonce = secrets.token_urlsafe(16)
        sigs = ",".join(
            call_signature(t, path, self._wire_node, wire_to, ts, nonce, request) for t in self.keeper.accepted()
        )
        return [(H_NODE, self._wire_node), (H_TO, wire_to), (H_TS, ts), (H_NONCE, nonce), (H_SIG, sigs)]

    def __repr__(self) -> str:
        return f"CallSigner(node={self.node!r})"


def caller_name(metadata: Iterable[Any] | None) -> str | None:
    """The calling node's name from call metadata (after ``NodeCredentials`` accepted it), else None."""
    for key, value in metadata or ():
        if key.lower() == H_NODE and isinstance(value, str):
            return unquote(value)
    return None


class ReplayCache:
    """Nonces seen within the window, bounded in memory without letting a replay through.

    A nonce is remembered until its timestamp leaves the window (after that the timestamp check refuses
    it anyway). When ``max_nonces`` are remembered, the one with the oldest timestamp is forgotten and the
    cache refuses, from then on, every call whose timestamp is not newer than it: a replay of a forgotten
    nonce is refused that way, and under normal load nothing is ever forgotten early.
    """

    def __init__(self, window_s: float = DEFAULT_WINDOW_S, max_nonces: int = DEFAULT_MAX_NONCES) -> None:
        if max_nonces < 1:
            raise ValueError("max_nonces must be at least 1")
        self.window_s = window_s
        self.max_nonces = max_nonces
        self._seen: set[str] = set()
        self._by_ts: list[tuple[float, str]] = []
        self._floor = float("-inf")

    def __len__(self) -> int:
        return len(self._seen)

    def check_and_remember(self, nonce: str, ts_s: float, now_s: float) -> str | None:
        """None (and remember the nonce) on its first use; else why the call is refused."""
        horizon = now_s - self.window_s
        while self._by_ts and self._by_ts[0][0] < horizon:
            self._seen.discard(heapq.heappop(self._by_ts)[1])
        if nonce in self._seen:
            return "replayed call: this nonce was already used"
        if ts_s <= self._floor:
            return "call too old for this node's replay cache (too many calls in the window); retry"
        if len(self._seen) >= self.max_nonces:
            oldest_ts, oldest = heapq.heappop(self._by_ts)
            self._seen.discard(oldest)
            self._floor = max(self._floor, oldest_ts)
        heapq.heappush(self._by_ts, (ts_s, nonce))
        self._seen.add(nonce)
        return None


class NodeCredentials:
    """An ``Authenticator`` accepting calls signed by a holder of the cluster token (see module doc).

    Parameters:
        keeper: the tokens a signature may be made with (current, and previous during a rotation).
        name: this node's name: calls meant for another node are refused.
        window_s: how far a call's timestamp may be from this node's clock.
        max_nonces: bound on the replay cache.
        clock: wall-clock seconds (timestamps cross machines, so not monotonic).
    """

    def __init__(
        self,
        keeper: TokenKeeper,
        *,
        name: str,
        window_s: float = DEFAULT_WINDOW_S,
        max_nonces: int = DEFAULT_MAX_NONCES,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.keeper = keeper
        self.name = name
        self._wire_name = quote(name, safe="")
        self.window_s = window_s
        self.replays = ReplayCache(window_s, max_nonces)
        self._clock = clock

    def authenticate(self, method: str, metadata: Mapping[str, str]) -> Refusal | BodyCheck | None:
        """Check what the metadata alone can tell; the signature, which covers the request, is checked
        by the returned ``BodyCheck`` once the request's bytes have arrived."""
        values = [metadata.get(h) for h in HEADERS]
        if all(v is None for v in values):
            return Refusal(f"missing node credentials: send {', '.join(HEADERS)}", presented=False)
        missing = [h for h, v in zip(HEADERS, values, strict=True) if v is None]
        if missing:
            return Refusal(f"incomplete node credentials: missing {', '.join(missing)}", presented=True)
        node, to, ts, nonce, sig = (v or "" for v in values)
        malformed = _malformed(node, to, ts, nonce, sig)
        if malformed:
            return Refusal(f"malformed node credentials: {malformed}", presented=True)
        if not self.name or not hmac.compare_digest(to.encode(), self._wire_name.encode()):
            return Refusal(
                f"node credentials for another node: the call was signed for {unquote(to)!r}, this is {self.name!r}",
                presented=True,
            )
        now = self._clock()
        skew = int(ts) / 1000 - now
        if abs(skew) > self.window_s:
            return Refusal(
                f"node credentials out of date: timestamp {skew:+.1f} s off this node's clock "
                f"(limit ±{self.window_s:g} s; are the clocks in sync?)",
                presented=True,
            )

        def check(request: bytes) -> Refusal | None:
            return self._check_signature(method, node, ts, nonce, sig.split(","), request, now)

        return BodyCheck(check)

    def _check_signature(
        self, method: str, node: str, ts: str, nonce: str, given: list[str], request: bytes, now: float
    ) -> Refusal | None:
        good = False
        for token in self.keeper.accepted():
            expected = call_signature(token, method, node, self._wire_name, ts, nonce, request)
            for candidate in given:
                good |= hmac.compare_digest(candidate, expected)
        if not good:
            return Refusal(
                "wrong node signature: the caller holds another cluster token, or the request was changed",
                presented=True,
            )
        replay = self.replays.check_and_remember(nonce, int(ts) / 1000, now)
        if replay:
            return Refusal(replay, presented=True)
        return None

    def __repr__(self) -> str:
        return f"NodeCredentials(window_s={self.window_s:g}, remembered={len(self.replays)})"


def _malformed(node: str, to: str, ts: str, nonce: str, sig: str) -> str | None:
    for header, name in ((H_NODE, node), (H_TO, to)):
        if not name or len(name) > _MAX_NODE_CHARS:
            return f"{header} must be 1-{_MAX_NODE_CHARS} characters"
    if not is_digits(ts) or len(ts) > 16:
        return f"{H_TS} must be Unix milliseconds"
    if not _NONCE.fullmatch(nonce):
        return f"{H_NONCE} must be 16-64 URL-safe characters"
    parts = sig.split(",")
    if len(parts) > 2 or not all(_SIG.fullmatch(p) for p in parts):
        return f"{H_SIG} must be one or two comma-separated 64-digit hex HMACs"
    return None
