"""Operator actions on the whole cluster, callable on any node: hand the master role to a chosen node,
and rotate the cluster token on every live node without a restart.

Handing over is something only the master may do, so the node that got the request forwards it to the
master over gRPC (``Elections.RequestElection``, signed with the cluster token). A rotation is sent to
every live node sealed under the current token (``Elections.UpdateSecret``), so the new token never
crosses the wire in clear; the old one stays accepted for a grace period. Rotations are serialized
cluster-wide by a lease in the store (``shoal.store.rotation``): one started while another runs is refused
(409), so two at once cannot leave the nodes on different tokens.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from pathlib import Path

from shoal.cluster.election import Election
from shoal.cluster.peer import write_token
from shoal.errors import InvalidInput, NotFound, ShoalError
from shoal.liveness import liveness
from shoal.rpc.peers import PeerClient
from shoal.rpc.tokens import TokenKeeper
from shoal.store.nodes import NodeRegistry
from shoal.store.rotation import RotationLease

log = logging.getLogger("shoal.cluster.admin")


class NoMaster(ShoalError):
    """Raised when an action needs the master and none is elected (or it cannot be reached)."""

    http_status = 503
    grpc_code = "UNAVAILABLE"


class RotationInProgress(ShoalError):
    """Raised when a token rotation is asked for while another one runs."""

    http_status = 409
    grpc_code = "ABORTED"


#: How long a rotation may hold the lease: its calls to the nodes have deadlines well within it.
ROTATION_LEASE_S = 60.0


class ClusterAdmin:
    """Operator actions. Safe to call concurrently; each action is idempotent for the same arguments."""

    def __init__(
        self,
        *,
        name: str,
        registry: NodeRegistry,
        election: Election,
        peers: PeerClient,
        keeper: TokenKeeper,
        data_dir: Path,
        alive_within: float,
        rotations: RotationLease,
    ) -> None:
        self.name = name
        self.registry = registry
        self.election = election
        self.peers = peers
        self.keeper = keeper
        self.data_dir = data_dir
        self.alive_within = alive_within
        self.rotations = rotations

    async def hand_over(self, candidate: str, timeout_s: float = 10.0) -> tuple[str, int]:
        """Make ``candidate`` the master; return (master, epoch) once it is, or raise."""
        now, records = await self.registry.all_with_time()
        target = next((r for r in records if r.name == candidate), None)
        if target is None:
            raise NotFound(f"no node named {candidate!r}")
        seen = liveness(target, now, self.alive_within)
        if not target.master_eligible or seen.draining or seen.refused:
            raise InvalidInput(f"node {candidate!r} cannot be master (not eligible, draining, dead or rejected)")
        if not seen.may_stand:
            raise InvalidInput(f"node {candidate!r} is not beating; it cannot take over")
        master, epoch = await self.registry.master()
        if master == candidate:
            return master, epoch
        if master is None:
            raise NoMaster("no master is elected right now; try again in a moment")
        if master == self.name:
            handed = await self.election.hand_over(candidate)
        else:
            holder = next((r for r in records if r.name == master), None)
            handed = holder is not None and await self.peers.request_election(holder.name, holder.grpc, candidate)
        if not handed:
            raise NoMaster(f"the master {master} did not hand over (it may be stepping down); try again")
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            now_master, now_epoch = await self.registry.master()
            if now_master is not None and now_epoch > epoch:
                return now_master, now_epoch
            await asyncio.sleep(0.05)
        raise NoMaster(f"no new master within {timeout_s:g}s after {master} stepped down")

    async def rotate_token(self) -> tuple[str, dict[str, bool]]:
        """Give every live node a new token; return it and which nodes took it. Raises RotationInProgress
        while another rotation runs."""
        held = await self.rotations.acquire(self.name, ttl_s=ROTATION_LEASE_S)
        if held is None:
            holder = await self.rotations.holder()
            raise RotationInProgress(
                f"a token rotation is already under way (started on {holder or 'another node'}); "
                "try again once it has ended"
            )
        try:
            return await self._rotate()
        finally:
            try:
                await self.rotations.release(held)
            except Exception as exc:  # the rotation's own outcome matters more; the lease lapses by itself
                log.warning("could not release the token rotation lease (it lapses in %gs): %s", ROTATION_LEASE_S, exc)

    async def _rotate(self) -> tuple[str, dict[str, bool]]:
        new_token = secrets.token_urlsafe(32)
        now, records = await self.registry.all_with_time()
        live = [r for r in records if r.name != self.name and liveness(r, now, self.alive_within).present]
        answers = await asyncio.gather(*(self.peers.update_secret(r.name, r.grpc, new_token) for r in live))
        self.keeper.rotate(new_token)
        write_token(self.data_dir, new_token)
        taken = {r.name: ok for r, ok in zip(live, answers, strict=True)}
        taken[self.name] = True
        missed = sorted(n for n, ok in taken.items() if not ok)
        if missed:
            log.warning("token rotated, but %s did not take it; they are locked out after %gs", missed,
                        self.keeper.grace_s)  # fmt: skip
        else:
            log.info("token rotated on %d node(s)", len(taken))
        return new_token, taken
