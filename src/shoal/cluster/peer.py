"""What this node answers to other nodes (shoal.types.PeerAPI), over the HeartBeats and Elections services."""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import Callable
from pathlib import Path

from shoal.auth import TOKEN_FILE
from shoal.cluster.election import Election
from shoal.cluster.heartbeat import Heartbeat
from shoal.rpc.peer_auth import admission_proof
from shoal.rpc.peers import PeerClient
from shoal.rpc.sealing import SealError, adopt_sealed
from shoal.rpc.tokens import TokenKeeper

log = logging.getLogger("shoal.cluster.peer")


class Peer:
    """This node as other nodes see it. Called concurrently by the RPC server; holds no state of its own."""

    def __init__(
        self,
        *,
        name: str,
        heartbeat: Heartbeat,
        election: Election,
        keeper: TokenKeeper,
        client: PeerClient,
        data_dir: Path,
        on_token: Callable[[str], None] = lambda token: None,
    ) -> None:
        self.name = name
        self.heartbeat = heartbeat
        self.election = election
        self.keeper = keeper
        self.client = client
        self.data_dir = data_dir
        self.on_token = on_token

    def identity(self) -> tuple[str, int]:
        return self.name, self.heartbeat.incarnation

    async def probe(self, name: str, grpc_addr: str, timeout_s: float) -> bool:
        answer = await self.client.is_alive(name, grpc_addr, timeout_s)
        return answer is not None and answer[0] == name

    def prove(self, challenge: bytes, verifier: str) -> bytes:
        return admission_proof(self.keeper.current, challenge, verifier, self.name)

    async def hand_over(self, candidate: str | None) -> bool:
        return await self.election.hand_over(candidate)

    async def update_secret(self, sealed: bytes, key_id: str) -> bool:
        """Adopt a token sealed under the current one and keep it in the data directory (mode 0600)."""
        try:
            token = adopt_sealed(self.keeper, sealed, key_id)
        except SealError as exc:
            log.warning("refused a new cluster token: %s", exc)
            return False
        write_token(self.data_dir, token)
        self.on_token(token)
        log.info("adopted a new cluster token (the previous one stays accepted for %gs)", self.keeper.grace_s)
        return True


def write_token(data_dir: Path, token: str) -> None:
    """Replace ``data_dir/token`` atomically, readable by this user only."""
    path = data_dir / TOKEN_FILE
    # Nodes of one ``shoal up`` share the data directory and write the same token at once: each writes its
    # own temporary file, so none replaces (or removes) another's half-written one.
    tmp = path.with_name(f".{TOKEN_FILE}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    os.replace(tmp, path)
