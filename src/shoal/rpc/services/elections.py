"""``shoal.v1.Elections``: admission proofs, hand-over of the master role, token rotation.

Only nodes reach it (the auth interceptor refuses the user token here). The servicer checks the shape of
each request and leaves every decision to the ``PeerAPI``: whether this node is master and may hand
over, and whether a sealed token opens and is adopted. VerifyNode binds the proof to the verifier the
call's credentials name, so a node cannot collect proofs in another node's name.
"""

from __future__ import annotations

import logging

import grpc

from shoal.errors import InvalidInput
from shoal.rpc.convert import el_grpc, el_pb, pb
from shoal.rpc.peer_auth import MAX_CHALLENGE, MIN_CHALLENGE, caller_name
from shoal.rpc.sealing import KEY_ID_CHARS, MAX_SEALED_BYTES
from shoal.rpc.services._status import Context, answer
from shoal.types import PeerAPI

log = logging.getLogger("shoal.rpc.services.elections")

#: Full name of the service, for health, reflection and the auth interceptor.
SERVICE_NAME: str = el_pb.DESCRIPTOR.services_by_name["Elections"].full_name
MAX_NAME_CHARS = 256
_HEX = frozenset("0123456789abcdef")


class ElectionsServicer(el_grpc.ElectionsServicer):
    """Serves ``shoal.v1.Elections`` over ``peer``. Safe for any number of concurrent calls."""

    def __init__(self, peer: PeerAPI) -> None:
        self._peer = peer

    async def RequestElection(self, request: el_pb.Election, context: Context) -> pb.OptResult:
        async def call() -> pb.OptResult:
            if len(request.candidate) > MAX_NAME_CHARS:
                raise InvalidInput(f"Election.candidate must be at most {MAX_NAME_CHARS} characters")
            caller = caller_name(context.invocation_metadata())
            handed = await self._peer.hand_over(request.candidate or None)
            log.info(
                "%s asked to hand the master role to %s: %s",
                caller,
                request.candidate or "the next in line",
                "handed over" if handed else "refused (not master)",
            )
            return pb.OptResult(succeed={request.candidate: handed})

        return await answer(context, "RequestElection", call)

    async def VerifyNode(self, request: el_pb.Challenge, context: Context) -> el_pb.Proof:
        caller = caller_name(context.invocation_metadata())
        if request.verifier != caller:
            await context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                "Challenge.verifier must name the calling node (its x-shoal-node credential)",
            )

        async def call() -> el_pb.Proof:
            if not MIN_CHALLENGE <= len(request.challenge) <= MAX_CHALLENGE:
                raise InvalidInput(f"Challenge.challenge must be {MIN_CHALLENGE}-{MAX_CHALLENGE} bytes")
            name, incarnation = self._peer.identity()
            if request.name and request.name != name:
                log.info("%s verifies this node as %r; answering as %r", caller, request.name, name)
            proof = self._peer.prove(request.challenge, request.verifier)
            return el_pb.Proof(name=name, proof=proof, incarnation=incarnation)

        return await answer(context, "VerifyNode", call)

    async def UpdateSecret(self, request: el_pb.Secret, context: Context) -> pb.OptResult:
        async def call() -> pb.OptResult:
            if not request.sealed or len(request.sealed) > MAX_SEALED_BYTES:
                raise InvalidInput(f"Secret.sealed must be 1-{MAX_SEALED_BYTES} bytes")
            if len(request.key_id) != KEY_ID_CHARS or not set(request.key_id) <= _HEX:
                raise InvalidInput(f"Secret.key_id must be {KEY_ID_CHARS} lower-case hex digits")
            adopted = await self._peer.update_secret(request.sealed, request.key_id)
            log.info(
                "new cluster token from %s: %s",
                caller_name(context.invocation_metadata()),
                "adopted" if adopted else "refused",
            )
            return pb.OptResult(succeed={self._peer.identity()[0]: adopted})

        return await answer(context, "UpdateSecret", call)

    def __repr__(self) -> str:
        return "ElectionsServicer()"
