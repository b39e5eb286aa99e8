"""``shoal.v1.HeartBeats``: direct and indirect (SWIM) liveness probes, served over a ``PeerAPI``.

Only nodes reach it (the auth interceptor refuses the user token here). IsAlive answers from memory and
never waits on the store, so a node whose Redis is slow still proves it is alive. AskAlive probes
another node on the caller's behalf within the caller's own deadline, keeping back a margin so that the
answer arrives before the caller gives up.
"""

from __future__ import annotations

import logging

from shoal._utils import is_digits
from shoal.errors import InvalidInput
from shoal.rpc.convert import hb_grpc, hb_pb
from shoal.rpc.peer_auth import caller_name
from shoal.rpc.services._status import Context, answer
from shoal.types import PeerAPI

log = logging.getLogger("shoal.rpc.services.heartbeats")

#: Full name of the service, for health, reflection and the auth interceptor.
SERVICE_NAME: str = hb_pb.DESCRIPTOR.services_by_name["HeartBeats"].full_name
#: Probe budget when the caller set no deadline.
DEFAULT_PROBE_S = 1.0
#: Share of the caller's remaining time given to the indirect probe; the rest carries the answer back.
PROBE_SHARE = 0.8
MAX_NAME_CHARS = 256


class HeartBeatsServicer(hb_grpc.HeartBeatsServicer):
    """Serves ``shoal.v1.HeartBeats`` over ``peer``. Safe for any number of concurrent calls."""

    def __init__(self, peer: PeerAPI) -> None:
        self._peer = peer
        self.probed = 0

    async def IsAlive(self, request: hb_pb.HeartBeat, context: Context) -> hb_pb.OK:
        async def call() -> hb_pb.OK:
            name, incarnation = self._peer.identity()
            return hb_pb.OK(ok=True, name=name, incarnation=incarnation)

        return await answer(context, "IsAlive", call)

    async def AskAlive(self, request: hb_pb.Node, context: Context) -> hb_pb.OK:
        async def call() -> hb_pb.OK:
            name, addr = target(request)
            budget = probe_budget(context.time_remaining())
            ok = await self._peer.probe(name, addr, budget)
            self.probed += 1
            log.debug(
                "indirect probe of %s at %s for %s: %s",
                name,
                addr,
                caller_name(context.invocation_metadata()),
                "alive" if ok else "no answer",
            )
            return hb_pb.OK(ok=ok)

        return await answer(context, "AskAlive", call)

    def __repr__(self) -> str:
        return f"HeartBeatsServicer(probed={self.probed})"


def target(node: hb_pb.Node) -> tuple[str, str]:
    """The name and ``host:port`` of the node to probe, refusing what cannot name one."""
    if not node.name or len(node.name) > MAX_NAME_CHARS:
        raise InvalidInput(f"Node.name must be 1-{MAX_NAME_CHARS} characters")
    host, sep, port = node.host.rpartition(":")
    if not sep or not host or not is_digits(port) or not 0 < int(port) < 65536:
        raise InvalidInput(f"Node.host must be the node's gRPC address host:port, got {node.host!r}")
    return node.name, node.host


def probe_budget(remaining: float | None) -> float:
    """How long the indirect probe may take, given the caller's remaining time (None: no deadline)."""
    if remaining is None:
        return DEFAULT_PROBE_S
    return max(0.0, remaining * PROBE_SHARE)
