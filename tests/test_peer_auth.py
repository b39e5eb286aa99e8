"""Node-to-node credentials, admission proofs, sealed tokens and the token keeper, without a network.

Clocks are passed in, so the 30-second window and the rotation grace period are stepped through exactly.
The same checks over real gRPC servers are in ``test_rpc_peer.py``.
"""

from __future__ import annotations

import secrets

import pytest

from shoal.rpc.auth import BodyCheck, Refusal
from shoal.rpc.peer_auth import (
    H_NODE,
    H_NONCE,
    H_SIG,
    H_TO,
    H_TS,
    CallSigner,
    NodeCredentials,
    ReplayCache,
    admission_proof,
    caller_name,
    proof_matches,
)
from shoal.rpc.sealing import SealError, adopt_sealed, key_id, seal, unseal
from shoal.rpc.tokens import TokenKeeper

TOKEN = "cluster-token-0123456789abcdef"
NEW_TOKEN = "rotated-token-fedcba9876543210"
OTHER = "someone-elses-token-000000000000"
METHOD = "/shoal.v1.HeartBeats/IsAlive"
BODY = b"\x08\x01\x12\x06node-a"
T0 = 1_700_000_000.0


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def signed(
    token: str = TOKEN, *, node: str = "node-a", to: str = "node-b", at: float = T0, method: str = METHOD,
    body: bytes = BODY,
) -> dict[str, str]:  # fmt: skip
    return dict(CallSigner(TokenKeeper(token), node, clock=Clock(at)).metadata(method, to, body))


class Server:
    """Node ``node-b``'s check of a whole call: its metadata, then its request bytes."""

    def __init__(self, keeper: TokenKeeper, clock: Clock, name: str = "node-b", **kwargs: object) -> None:
        self.credentials = NodeCredentials(keeper, name=name, clock=clock, **kwargs)  # type: ignore[arg-type]
        self.replays = self.credentials.replays

    def authenticate(self, method: str, metadata: dict[str, str], body: bytes = BODY) -> Refusal | None:
        answer = self.credentials.authenticate(method, metadata)
        return answer.check(body) if isinstance(answer, BodyCheck) else answer


def server(token: str = TOKEN, clock: Clock | None = None, **kwargs: object) -> Server:
    return Server(TokenKeeper(token), clock or Clock(), **kwargs)


# --- per-call signatures ----------------------------------------------------------------------------


def test_a_signed_call_is_accepted_and_names_its_caller() -> None:
    metadata = signed(node="node a/1")
    assert set(metadata) == {H_NODE, H_TO, H_TS, H_NONCE, H_SIG}
    assert TOKEN not in "".join(metadata.values())
    assert server().authenticate(METHOD, metadata) is None
    assert caller_name(list(metadata.items())) == "node a/1"


def test_a_replayed_nonce_is_refused() -> None:
    check = server()
    metadata = signed()
    assert check.authenticate(METHOD, metadata) is None
    replay = check.authenticate(METHOD, metadata)
    assert replay is not None and replay.presented and "replayed" in replay.message


@pytest.mark.parametrize("offset", [-31.0, 31.0])
def test_a_timestamp_outside_30_seconds_is_refused(offset: float) -> None:
    refused = server().authenticate(METHOD, signed(at=T0 + offset))
    assert refused is not None and "timestamp" in refused.message and "30" in refused.message


@pytest.mark.parametrize("offset", [-29.0, 29.0])
def test_a_timestamp_within_30_seconds_is_accepted(offset: float) -> None:
    assert server().authenticate(METHOD, signed(at=T0 + offset)) is None


def test_a_wrong_token_is_refused() -> None:
    refused = server().authenticate(METHOD, signed(OTHER))
    assert refused is not None and refused.presented and "wrong node signature" in refused.message


def test_a_signature_holds_for_one_method_node_and_nonce_only() -> None:
    check = server()
    assert check.authenticate("/shoal.v1.Elections/UpdateSecret", signed()) is not None
    forged = signed() | {H_NODE: "node-b"}
    assert check.authenticate(METHOD, forged) is not None
    fresh_nonce = signed() | {H_NONCE: secrets.token_urlsafe(16)}
    assert check.authenticate(METHOD, fresh_nonce) is not None


def test_a_signature_holds_for_one_callee_and_one_request_only() -> None:
    """A call captured on its way to one node is refused by another, and its request cannot be changed."""
    metadata = signed(to="node-b")
    elsewhere = server(name="node-c").authenticate(METHOD, metadata)
    assert elsewhere is not None and elsewhere.presented
    assert "signed for 'node-b', this is 'node-c'" in elsewhere.message
    check = server()
    changed = check.authenticate(METHOD, metadata, body=BODY + b"\x18\x01")
    assert changed is not None and "request was changed" in changed.message
    assert check.authenticate(METHOD, metadata, body=b"") is not None
    assert len(check.replays) == 0  # a refused call uses up no nonce: the real one still goes through
    assert check.authenticate(METHOD, metadata) is None
    # The callee's name is in what is signed, not only in the header: rewriting the header fails too.
    redirected = server(name="node-c").authenticate(METHOD, metadata | {H_TO: "node-c"})
    assert redirected is not None and "wrong node signature" in redirected.message


def test_missing_and_malformed_credentials_say_what_is_wrong() -> None:
    check = server()
    none = check.authenticate(METHOD, {})
    assert none is not None and not none.presented and "x-shoal-sig" in none.message
    partial = check.authenticate(METHOD, {k: v for k, v in signed().items() if k != H_SIG})
    assert partial is not None and partial.presented and "missing x-shoal-sig" in partial.message
    for key, bad in [(H_TS, "soon"), (H_NONCE, "short"), (H_SIG, "zz"), (H_SIG, ",".join(["a" * 64] * 3)), (H_TO, "")]:
        refused = check.authenticate(METHOD, signed() | {key: bad})
        assert refused is not None and refused.message.startswith("malformed") and key in refused.message


def test_the_replay_cache_stays_bounded_and_still_refuses_forgotten_nonces() -> None:
    cache = ReplayCache(window_s=30, max_nonces=3)
    for i in range(3):
        assert cache.check_and_remember(f"nonce-{i}", T0 + i, T0 + 3) is None
    assert cache.check_and_remember("nonce-3", T0 + 3, T0 + 3) is None  # forgets nonce-0 (the oldest)
    assert len(cache) == 3
    refused = cache.check_and_remember("nonce-0", T0, T0 + 3)
    assert refused is not None and "too old" in refused
    assert cache.check_and_remember("nonce-2", T0 + 2, T0 + 3) == "replayed call: this nonce was already used"
    # Once the window has passed, nonces are dropped: their timestamps would be refused anyway.
    assert cache.check_and_remember("nonce-9", T0 + 60, T0 + 60) is None
    assert len(cache) == 1


def test_a_full_replay_cache_refuses_no_fresh_call() -> None:
    clock = Clock()
    check = server(clock=clock, max_nonces=10)
    for _ in range(100):
        clock.now += 0.01
        assert check.authenticate(METHOD, signed(at=clock.now)) is None
    assert len(check.replays) == 10


# --- admission proofs -------------------------------------------------------------------------------


def test_an_admission_proof_holds_for_its_token_challenge_verifier_and_name_only() -> None:
    keeper = TokenKeeper(TOKEN)
    challenge = secrets.token_bytes(32)
    proof = admission_proof(TOKEN, challenge, "verifier", "newcomer")
    assert len(proof) == 32 and TOKEN.encode() not in proof
    assert proof_matches(keeper, proof, challenge, "verifier", "newcomer")
    assert not proof_matches(
        keeper, admission_proof(OTHER, challenge, "verifier", "newcomer"), challenge, "verifier", "newcomer"
    )
    assert not proof_matches(keeper, proof, secrets.token_bytes(32), "verifier", "newcomer")
    assert not proof_matches(keeper, proof, challenge, "another-verifier", "newcomer")
    assert not proof_matches(keeper, proof, challenge, "verifier", "impostor")


# --- sealed tokens ----------------------------------------------------------------------------------


def test_a_sealed_token_opens_only_with_the_token_it_was_sealed_under() -> None:
    sealed, kid = seal(NEW_TOKEN, under=TOKEN)
    assert NEW_TOKEN.encode() not in sealed and TOKEN.encode() not in sealed
    assert kid == key_id(TOKEN) != key_id(OTHER) and TOKEN not in kid
    assert unseal(sealed, kid, TOKEN) == NEW_TOKEN
    with pytest.raises(SealError, match="does not open"):
        unseal(sealed, kid, OTHER)
    with pytest.raises(SealError, match="does not open"):  # the key id is bound in
        unseal(sealed, key_id(OTHER), TOKEN)
    tampered = bytearray(sealed)
    tampered[-1] ^= 1
    with pytest.raises(SealError, match="does not open"):
        unseal(bytes(tampered), kid, TOKEN)
    with pytest.raises(SealError, match="bytes"):
        unseal(b"\x01short", kid, TOKEN)
    assert seal(NEW_TOKEN, under=TOKEN)[0] != sealed  # fresh salt and nonce each time


def test_adopting_a_sealed_token_rotates_the_keeper() -> None:
    clock = Clock()
    keeper = TokenKeeper(TOKEN, grace_s=60, clock=clock)
    sealed, kid = seal(NEW_TOKEN, under=TOKEN)
    assert adopt_sealed(keeper, sealed, kid) == NEW_TOKEN
    assert keeper.current == NEW_TOKEN and keeper.previous == TOKEN and keeper.generation == 1
    # The same message again (a sender retrying) changes nothing; it is sealed under the previous token.
    assert adopt_sealed(keeper, sealed, kid) == NEW_TOKEN and keeper.generation == 1
    # A message under the previous token carrying yet another token would undo this rotation.
    stale, stale_kid = seal("a-third-token-0000000000000000", under=TOKEN)
    with pytest.raises(SealError, match="already replaced"):
        adopt_sealed(keeper, stale, stale_kid)
    foreign, foreign_kid = seal("a-third-token-0000000000000000", under=OTHER)
    with pytest.raises(SealError, match="does not hold"):
        adopt_sealed(keeper, foreign, foreign_kid)
    assert keeper.current == NEW_TOKEN


# --- the token keeper -------------------------------------------------------------------------------


def test_the_previous_token_is_accepted_during_the_grace_period_only() -> None:
    clock = Clock()
    keeper = TokenKeeper(TOKEN, grace_s=60, clock=clock)
    check = Server(keeper, Clock())
    assert keeper.rotate(NEW_TOKEN)
    assert not keeper.rotate(NEW_TOKEN)
    assert keeper.accepted() == (NEW_TOKEN, TOKEN)
    assert keeper.matches(TOKEN) and keeper.matches(NEW_TOKEN) and not keeper.matches(OTHER)
    assert check.authenticate(METHOD, signed(TOKEN)) is None
    clock.now += 59.9
    assert keeper.matches(TOKEN)
    clock.now += 0.2
    assert not keeper.matches(TOKEN) and keeper.previous is None
    refused = check.authenticate(METHOD, signed(TOKEN))
    assert refused is not None and "wrong node signature" in refused.message
    assert check.authenticate(METHOD, signed(NEW_TOKEN)) is None


def test_during_a_rotation_calls_are_signed_so_both_sides_accept_them() -> None:
    keeper = TokenKeeper(TOKEN)
    keeper.rotate(NEW_TOKEN)
    metadata = dict(CallSigner(keeper, "node-a", clock=Clock()).metadata(METHOD, "node-b", BODY))
    assert len(metadata[H_SIG].split(",")) == 2
    assert server(TOKEN).authenticate(METHOD, metadata) is None  # a node not told yet
    assert server(NEW_TOKEN).authenticate(METHOD, metadata) is None  # a node that started with the new one
    assert server(OTHER).authenticate(METHOD, metadata) is not None


def test_the_keeper_refuses_unusable_tokens_and_hides_them() -> None:
    with pytest.raises(ValueError):
        TokenKeeper("")
    keeper = TokenKeeper(TOKEN)
    for bad in ["short", "has a space in it, so no header", "x" * 600]:
        with pytest.raises(ValueError):
            keeper.rotate(bad)
    assert keeper.current == TOKEN
    assert TOKEN not in repr(keeper) and TOKEN not in repr(NodeCredentials(keeper, name="node-b"))
