"""Call other nodes: probes, admission, hand-over, token rotation, and signed channels for forwarding.

``PeerClient`` keeps one channel per node and address, signs every call with the cluster token for the
node it is meant for and over its request (``CallSigner``), puts a deadline on every call, and closes
channels left idle. It is made for the cluster's loops: no
method raises (but for cancellation); a failure returns None or False, with the reason logged at debug,
and ``verify`` also says why in its ``Verdict``.

    peers = PeerClient(keeper, "node-a")
    who = await peers.is_alive("node-b", "10.0.0.2:6666", timeout_s=0.5)   # ("node-b", 3) or None
    verdict = await peers.verify("10.0.0.2:6666", "node-b", timeout_s=2)
    async with peers.link("node-b", "10.0.0.2:6666") as channel:          # forward a Tasks call
        task = await tasks_stub(channel).GetTask(pb.ID(id=[task_id]), timeout=5)

A channel that failed with UNAVAILABLE or DEADLINE_EXCEEDED is replaced by a fresh one on the next call,
and reconnection back-off is kept short, so a node that restarts on the same address is reached at once.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
import grpc.aio

from shoal.rpc.client import metadata_interceptors
from shoal.rpc.convert import el_grpc, el_pb, hb_grpc, hb_pb
from shoal.rpc.peer_auth import CallSigner, proof_matches
from shoal.rpc.sealing import seal
from shoal.rpc.tokens import TokenKeeper

log = logging.getLogger("shoal.rpc.peers")

T = TypeVar("T")

#: A channel unused for this long is closed.
DEFAULT_IDLE_S = 60.0
#: Deadline of the calls that take no timeout argument from the caller's loop.
DEFAULT_TIMEOUT_S = 5.0
CHALLENGE_BYTES = 32
#: Room for forwarded Tasks answers; short reconnect back-off, so a restarted node is reached at once; a
#: private subchannel pool, so a replaced channel really opens a new connection.
PEER_CHANNEL_OPTIONS: tuple[tuple[str, Any], ...] = (
    ("grpc.max_receive_message_length", 32 * 1024 * 1024),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1_000),
    ("grpc.use_local_subchannel_pool", 1),
)
_REPLACE_ON = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})
#: Statuses that mean the call got no answer from the node's code, as opposed to a refusal.
_NO_ANSWER = _REPLACE_ON | {grpc.StatusCode.CANCELLED, grpc.StatusCode.RESOURCE_EXHAUSTED}


@dataclass(frozen=True, slots=True)
class Verdict:
    """The outcome of an admission check; true when the node proved it holds the cluster token."""

    ok: bool
    #: Why not, for ``GET /api/v1/cluster`` ("verified" when ok).
    reason: str
    #: The incarnation the node answered with (0 when it did not answer).
    incarnation: int = 0
    #: True when no answer came (down, unreachable, too slow, overloaded): worth trying again later,
    #: unlike a wrong proof or refused credentials.
    unreachable: bool = False

    def __bool__(self) -> bool:
        return self.ok


class _Link:
    """One channel to one node at one address, with the stubs on it and who is using it."""

    __slots__ = (
        "address", "channel", "closed", "elections", "heartbeats", "in_flight", "last_used", "name", "retired",
    )  # fmt: skip

    def __init__(self, name: str, address: str, channel: grpc.aio.Channel, now: float) -> None:
        self.name = name
        self.address = address
        self.channel = channel
        self.heartbeats = hb_grpc.HeartBeatsStub(channel)
        self.elections = el_grpc.ElectionsStub(channel)
        self.in_flight = 0
        self.last_used = now
        self.retired = False
        self.closed = False


class PeerClient:
    """Calls to other nodes on behalf of node ``my_name``. Safe for concurrent use within one event loop.

    Parameters:
        keeper: the node's tokens; a rotation applies to the next call.
        my_name: this node's name, sent (signed) with every call.
        idle_s: a channel unused this long is closed.
        options: channel arguments.
        signing_clock: the time calls are signed with: the node's reading of the store's clock
            (``NodeClock.store_time``), so that a node with a wrong clock is not refused by the others.
    """

    def __init__(
        self,
        keeper: TokenKeeper,
        my_name: str,
        *,
        idle_s: float = DEFAULT_IDLE_S,
        options: tuple[tuple[str, Any], ...] = PEER_CHANNEL_OPTIONS,
        clock: Callable[[], float] = time.monotonic,
        signing_clock: Callable[[], float] = time.time,
    ) -> None:
        self.keeper = keeper
        self.my_name = my_name
        self.signer = CallSigner(keeper, my_name, clock=signing_clock)
        self.idle_s = idle_s
        self._options = list(options)
        self._clock = clock
        self._links: dict[tuple[str, str], _Link] = {}
        self._closing: set[asyncio.Task[None]] = set()
        self.failures = 0

    # -- probes --------------------------------------------------------------------------------------

    async def is_alive(self, name: str, addr: str, timeout_s: float) -> tuple[str, int] | None:
        """Direct probe of node ``name`` at ``addr``: the name and incarnation it answers with, or None if
        it did not answer (another node there refuses a call meant for ``name``)."""

        async def call(link: _Link) -> tuple[str, int] | None:
            ok = await link.heartbeats.IsAlive(hb_pb.HeartBeat(alive=True, who=self.my_name), timeout=timeout_s)
            return (ok.name, ok.incarnation) if ok.ok and ok.name else None

        answer, _, _ = await self._invoke("IsAlive", name, addr, timeout_s, call)
        return answer

    async def probe(self, name: str, addr: str, timeout_s: float) -> bool:
        """Whether node ``name`` answers at ``addr`` (another name there counts as no answer)."""
        answer = await self.is_alive(name, addr, timeout_s)
        if answer is not None and answer[0] != name:
            log.debug("probe of %s at %s: answered by %s", name, addr, answer[0])
            return False
        return answer is not None

    async def ask_alive(
        self, via_name: str, via_addr: str, target_name: str, target_addr: str, timeout_s: float
    ) -> bool:
        """Indirect probe: ask node ``via_name`` at ``via_addr`` to probe ``target_name`` at ``target_addr``."""

        async def call(link: _Link) -> bool:
            ok = await link.heartbeats.AskAlive(hb_pb.Node(name=target_name, host=target_addr), timeout=timeout_s)
            return ok.ok

        answer, _, _ = await self._invoke("AskAlive", via_name, via_addr, timeout_s, call)
        return bool(answer)

    # -- admission, hand-over, rotation ---------------------------------------------------------------

    async def verify(self, addr: str, expected_name: str, timeout_s: float) -> Verdict:
        """Challenge the node at ``addr`` to prove, as ``expected_name``, that it holds the cluster token."""
        challenge = secrets.token_bytes(CHALLENGE_BYTES)
        request = el_pb.Challenge(challenge=challenge, verifier=self.my_name, name=expected_name)

        async def call(link: _Link) -> Verdict:
            answer = await link.elections.VerifyNode(request, timeout=timeout_s)
            if answer.name != expected_name:
                return Verdict(False, f"answered as {answer.name!r}, not {expected_name!r}", answer.incarnation)
            if not proof_matches(self.keeper, answer.proof, challenge, self.my_name, expected_name):
                return Verdict(False, "wrong admission proof: it does not hold the cluster token", answer.incarnation)
            return Verdict(True, "verified", answer.incarnation)

        verdict, reason, code = await self._invoke("VerifyNode", expected_name, addr, timeout_s, call)
        if verdict is None:
            return Verdict(False, reason, unreachable=code is None or code in _NO_ANSWER)
        if not verdict:
            log.debug("VerifyNode %s at %s: %s", expected_name, addr, verdict.reason)
        return verdict

    async def request_election(
        self, name: str, addr: str, candidate: str | None, timeout_s: float = DEFAULT_TIMEOUT_S
    ) -> bool:
        """Ask the master, node ``name`` at ``addr``, to hand its role to ``candidate`` (None: the next in line)."""

        async def call(link: _Link) -> bool:
            answer = await link.elections.RequestElection(el_pb.Election(candidate=candidate or ""), timeout=timeout_s)
            return bool(answer.succeed.get(candidate or "", False))

        handed, _, _ = await self._invoke("RequestElection", name, addr, timeout_s, call)
        return bool(handed)

    async def update_secret(self, name: str, addr: str, new_token: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> bool:
        """Send ``new_token`` to node ``name`` at ``addr``, sealed under the token it holds now.

        That is this node's current token, or its previous one if this node has already rotated to
        ``new_token``; so the fan-out may come before or after ``keeper.rotate(new_token)``.
        """
        under = self.keeper.current if self.keeper.current != new_token else self.keeper.previous
        if under is None:
            log.debug("UpdateSecret %s: already rotated and the old token's grace period is over", addr)
            return False

        async def call(link: _Link) -> bool:
            sealed, kid = seal(new_token, under=under)
            answer = await link.elections.UpdateSecret(el_pb.Secret(sealed=sealed, key_id=kid), timeout=timeout_s)
            return bool(answer.succeed) and all(answer.succeed.values())

        adopted, _, _ = await self._invoke("UpdateSecret", name, addr, timeout_s, call)
        return bool(adopted)

    # -- channels -------------------------------------------------------------------------------------

    @asynccontextmanager
    async def link(self, name: str, addr: str) -> AsyncIterator[grpc.aio.Channel]:
        """A channel to node ``name`` at ``addr``, its calls signed for that node, for any shoal service
        (e.g. forwarding a Tasks call), kept open while the block runs. Errors inside the block are the
        caller's; put a deadline on each call."""
        async with self._use(name, addr) as link:
            yield link.channel

    def open_channels(self) -> list[str]:
        """The addresses this client holds a channel to."""
        return sorted({addr for _, addr in self._links})

    async def close(self) -> None:
        """Close every channel (calls in flight are cancelled)."""
        links, self._links = list(self._links.values()), {}
        for link in links:
            link.retired = True
            self._close_later(link)
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)

    def __repr__(self) -> str:
        return f"PeerClient({self.my_name!r}, channels={len(self._links)}, failures={self.failures})"

    async def _invoke(
        self, what: str, name: str, addr: str, timeout_s: float, call: Callable[[_Link], Awaitable[T]]
    ) -> tuple[T | None, str, grpc.StatusCode | None]:
        """Run ``call`` on the link to ``name`` at ``addr``: its result, or None with why it failed and the
        status."""
        code: grpc.StatusCode | None = None
        if not timeout_s > 0:
            reason = f"no time left for the call (timeout {timeout_s!r} s)"
        else:
            try:
                async with self._use(name, addr) as link:
                    return await call(link), "", None
            except grpc.aio.AioRpcError as err:
                code = err.code()
                reason = _describe(err, timeout_s)
            except Exception as exc:  # whatever goes wrong, the caller's loop must go on
                reason = f"{type(exc).__name__}: {exc}"
        self.failures += 1
        log.debug("%s %s failed: %s", what, addr, reason)
        return None, reason, code

    @asynccontextmanager
    async def _use(self, name: str, addr: str) -> AsyncIterator[_Link]:
        link = self._acquire(name, addr)
        try:
            yield link
        except grpc.aio.AioRpcError as err:
            if err.code() in _REPLACE_ON:
                self._retire(link)
            raise
        finally:
            link.in_flight -= 1
            link.last_used = self._clock()
            if link.retired and link.in_flight == 0:
                self._close_later(link)

    def _acquire(self, name: str, addr: str) -> _Link:
        now = self._clock()
        for idle in [k for k in self._links.values() if k.in_flight == 0 and now - k.last_used > self.idle_s]:
            self._retire(idle)
        link = self._links.get((name, addr))
        if link is None:
            interceptors = metadata_interceptors(self._signing_for(name))
            channel = grpc.aio.insecure_channel(addr, options=self._options, interceptors=interceptors)
            link = self._links[(name, addr)] = _Link(name, addr, channel, now)
        link.in_flight += 1
        link.last_used = now
        return link

    def _signing_for(self, name: str) -> Callable[[str | bytes, Any], list[tuple[str, str]]]:
        """The metadata maker of a channel to node ``name``: each call signed for it, over its request."""

        def sign(method: str | bytes, request: Any) -> list[tuple[str, str]]:
            return self.signer.metadata(method, name, b"" if request is None else request.SerializeToString())

        return sign

    def _retire(self, link: _Link) -> None:
        """Stop handing ``link`` out; close it once its last call ends."""
        if self._links.get((link.name, link.address)) is link:
            del self._links[(link.name, link.address)]
        link.retired = True
        if link.in_flight == 0:
            self._close_later(link)

    def _close_later(self, link: _Link) -> None:
        if link.closed:
            return
        link.closed = True
        task = asyncio.ensure_future(link.channel.close(None))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)


def _describe(err: grpc.aio.AioRpcError, timeout_s: float) -> str:
    code = err.code()
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return f"no answer within {timeout_s:g} s"
    if code == grpc.StatusCode.UNAVAILABLE:
        return f"unreachable: {err.details()}"
    if code == grpc.StatusCode.UNAUTHENTICATED:
        return f"refused this node's credentials: {err.details()}"
    return f"{code.name}: {err.details()}"
