"""HeartBeats and Elections between real in-process gRPC servers, through ``PeerClient``.

Each member is a real ``start_rpc_server`` on a free loopback port, serving a small real ``PeerAPI``
(below: what the node implements, without the cluster logic). A recording interceptor on the callee keeps
the exact request bytes and metadata it received, so the tests can show that no token ever travels.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import grpc
import grpc.aio
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from shoal.errors import TaskNotFound
from shoal.models import TaskState
from shoal.rpc.auth import ServerInterceptor
from shoal.rpc.client import open_channel, tasks_stub
from shoal.rpc.convert import el_grpc, el_pb, hb_grpc, hb_pb, pb
from shoal.rpc.peer_auth import CallSigner, admission_proof
from shoal.rpc.peers import PeerClient
from shoal.rpc.sealing import SealError, adopt_sealed
from shoal.rpc.server import RpcServer, start_rpc_server
from shoal.rpc.tokens import TokenKeeper
from shoal.testing import free_port

TOKEN = "cluster-token-0123456789abcdef"
NEW_TOKEN = "rotated-token-fedcba9876543210"
OTHER = "someone-elses-token-000000000000"
SCALE = float(os.environ.get("SHOAL_TEST_MULTIPLIER", "1"))
T = TypeVar("T")
IS_ALIVE = "/shoal.v1.HeartBeats/IsAlive"
ELECTION = "/shoal.v1.Elections/RequestElection"
VERIFY = "/shoal.v1.Elections/VerifyNode"


class Clock:
    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Peer:
    """A real PeerAPI, as small as it gets: identity, probes through a PeerClient, proofs, hand-over, rotation."""

    def __init__(self, name: str, keeper: TokenKeeper, *, incarnation: int, master: bool, prove_with: str | None):
        self.name = name
        self.keeper = keeper
        self.incarnation = incarnation
        self.master = master
        self.prove_with = prove_with
        self.client = PeerClient(keeper, name)
        self.handed_to: list[str | None] = []

    def identity(self) -> tuple[str, int]:
        return self.name, self.incarnation

    async def probe(self, name: str, grpc_addr: str, timeout_s: float) -> bool:
        return await self.client.probe(name, grpc_addr, timeout_s)

    def prove(self, challenge: bytes, verifier: str) -> bytes:
        return admission_proof(self.prove_with or self.keeper.current, challenge, verifier, self.name)

    async def hand_over(self, candidate: str | None) -> bool:
        if not self.master:
            return False
        self.master = False
        self.handed_to.append(candidate)
        return True

    async def update_secret(self, sealed: bytes, key_id: str) -> bool:
        try:
            adopt_sealed(self.keeper, sealed, key_id)
        except SealError:
            return False
        return True


class NoTasks:
    """The Tasks service's TaskAPI: knows no task. Only ``get`` may be reached in these tests."""

    async def get(self, task_id: str) -> Any:
        raise TaskNotFound(task_id)

    def __getattr__(self, name: str) -> Any:
        pytest.fail(f"Tasks.{name} was reached")


@dataclass
class Recorded:
    method: str
    metadata: list[tuple[str, Any]]
    request: bytes = b""
    response: bytes = b""


class Recorder(ServerInterceptor):
    """Keeps the raw bytes of each authenticated unary call, as they came off and went onto the wire."""

    def __init__(self) -> None:
        self.calls: list[Recorded] = []

    async def intercept_service(self, continuation: Any, details: Any) -> Any:
        handler = await continuation(details)
        if handler is None or handler.request_streaming or handler.response_streaming:
            return handler
        record = Recorded(details.method, list(details.invocation_metadata or ()))

        def deserialize(raw: bytes) -> Any:  # only reached when the auth interceptor let the call in
            record.request = raw
            self.calls.append(record)
            return handler.request_deserializer(raw)

        def serialize(message: Any) -> bytes:
            record.response = handler.response_serializer(message)
            return record.response

        return grpc.unary_unary_rpc_method_handler(
            handler.unary_unary, request_deserializer=deserialize, response_serializer=serialize
        )

    def only(self, method: str) -> Recorded:
        found = [c for c in self.calls if c.method == method]
        assert len(found) == 1, f"{method}: {len(found)} calls recorded"
        return found[0]


@dataclass
class Member:
    peer: Peer
    rpc: RpcServer
    recorder: Recorder
    clock: Clock = field(default_factory=Clock)

    @property
    def addr(self) -> str:
        return self.rpc.address


Start = Callable[..., Awaitable[Member]]


@pytest.fixture
async def start() -> AsyncIterator[Start]:
    members: list[Member] = []

    async def make(
        name: str,
        token: str = TOKEN,
        *,
        incarnation: int = 1,
        master: bool = False,
        prove_with: str | None = None,
        port: int = 0,
        peer: bool = True,
    ) -> Member:
        clock = Clock()
        keeper = TokenKeeper(token, grace_s=60, clock=clock)
        node = Peer(name, keeper, incarnation=incarnation, master=master, prove_with=prove_with)
        recorder = Recorder()
        rpc = await start_rpc_server(
            tasks=NoTasks(),
            token=keeper,
            bind=f"127.0.0.1:{port}",
            peer=node if peer else None,
            interceptors=[recorder],
            node_name=name,
        )
        member = Member(node, rpc, recorder, clock)
        members.append(member)
        return member

    yield make
    for member in members:
        await member.rpc.stop(None)
        await member.peer.client.close()


async def eventually(probe: Callable[[], Awaitable[T]], timeout: float = 5.0) -> T:
    """Poll ``probe`` until it returns something truthy, within a deadline."""
    deadline = time.monotonic() + timeout * SCALE
    while True:
        value = await probe()
        if value or time.monotonic() > deadline:
            return value
        await asyncio.sleep(0.02)


async def refused(call: Awaitable[Any]) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    return info.value


# --- probes -----------------------------------------------------------------------------------------


async def test_is_alive_answers_with_name_and_incarnation_over_one_reused_channel(start: Start) -> None:
    a, b = await start("a"), await start("b", incarnation=7)
    assert await a.peer.client.is_alive("b", b.addr, timeout_s=2) == ("b", 7)
    assert await a.peer.client.is_alive("b", b.addr, timeout_s=2) == ("b", 7)
    assert a.peer.client.open_channels() == [b.addr]
    hello = b.recorder.calls[0]
    assert hb_pb.HeartBeat.FromString(hello.request) == hb_pb.HeartBeat(alive=True, who="a")
    assert await a.peer.client.probe("b", b.addr, timeout_s=2)
    assert not await a.peer.client.probe("c", b.addr, timeout_s=2)  # someone else answers there


async def test_failures_come_back_as_none_or_false_never_as_exceptions(start: Start) -> None:
    a = await start("a")
    client = a.peer.client
    dead = f"127.0.0.1:{free_port()}"
    began = time.monotonic()
    assert await client.is_alive("x", dead, timeout_s=2) is None
    assert await client.is_alive("x", "not an address", timeout_s=1) is None
    assert await client.is_alive("a", a.addr, timeout_s=0) is None
    assert not await client.ask_alive("x", dead, "a", a.addr, timeout_s=1)
    assert not await client.request_election("x", dead, None, timeout_s=1)
    assert not await client.update_secret("x", dead, NEW_TOKEN, timeout_s=1)
    verdict = await client.verify(dead, "x", timeout_s=1)
    assert not verdict and "unreachable" in verdict.reason and verdict.unreachable
    assert time.monotonic() - began < 5 * SCALE
    assert client.failures == 7


async def test_ask_alive_probes_the_target_through_another_node(start: Start) -> None:
    a, b, c = await start("a"), await start("b"), await start("c")
    assert await a.peer.client.ask_alive("b", b.addr, "c", c.addr, timeout_s=2)
    assert b.recorder.only("/shoal.v1.HeartBeats/AskAlive")
    assert not await a.peer.client.ask_alive("b", b.addr, "not-c", c.addr, timeout_s=2)
    await c.rpc.stop(None)
    began = time.monotonic()
    assert not await a.peer.client.ask_alive("b", b.addr, "c", c.addr, timeout_s=1)
    assert time.monotonic() - began < 1.5 * SCALE  # b answered within a's deadline


async def test_ask_alive_refuses_a_target_without_an_address(start: Start) -> None:
    a, b = await start("a"), await start("b")
    async with a.peer.client.link("b", b.addr) as channel:
        error = await refused(el_hb(channel).AskAlive(hb_pb.Node(name="c", host="c"), timeout=2))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "host:port" in (error.details() or "")


def el_hb(channel: grpc.aio.Channel) -> Any:
    return hb_grpc.HeartBeatsStub(channel)


async def test_a_node_restarted_on_the_same_address_is_reached_at_once(start: Start) -> None:
    a, c = await start("a"), await start("c", incarnation=1)
    assert await a.peer.client.is_alive("c", c.addr, timeout_s=2) == ("c", 1)
    port = c.rpc.port
    await c.rpc.stop(None)
    assert await a.peer.client.is_alive("c", c.addr, timeout_s=1) is None
    await start("c", incarnation=2, port=port)
    began = time.monotonic()
    assert await eventually(lambda: a.peer.client.is_alive("c", c.addr, timeout_s=1)) == ("c", 2)
    assert time.monotonic() - began < 2 * SCALE


async def test_idle_channels_are_closed(start: Start) -> None:
    a, b, c = await start("a"), await start("b"), await start("c")
    clock = Clock(100.0)
    client = PeerClient(a.peer.keeper, "a", idle_s=60, clock=clock)
    try:
        assert await client.is_alive("b", b.addr, timeout_s=2)
        clock.now += 61
        assert await client.is_alive("c", c.addr, timeout_s=2)
        assert client.open_channels() == [c.addr]
        assert await client.is_alive("b", b.addr, timeout_s=2)  # reopened on demand
    finally:
        await client.close()
    assert client.open_channels() == []


# --- who may call -----------------------------------------------------------------------------------


async def test_the_user_token_is_refused_on_node_services_and_accepted_on_tasks(start: Start) -> None:
    b = await start("b")
    channel = open_channel(b.addr, TOKEN)
    anonymous = open_channel(b.addr, None)
    try:
        error = await refused(hb_grpc.HeartBeatsStub(channel).IsAlive(hb_pb.HeartBeat(), timeout=2))
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED
        assert "node credentials only" in (error.details() or "")
        challenge = el_pb.Challenge(challenge=b"x" * 32, verifier="user")
        error = await refused(el_grpc.ElectionsStub(channel).VerifyNode(challenge, timeout=2))
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED
        error = await refused(hb_grpc.HeartBeatsStub(anonymous).IsAlive(hb_pb.HeartBeat(), timeout=2))
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED
        error = await refused(tasks_stub(channel).GetTask(pb.ID(id=[TASK_ID]), timeout=2))
        assert error.code() == grpc.StatusCode.NOT_FOUND  # past auth, to the service
    finally:
        await channel.close(None)
        await anonymous.close(None)
    assert b.recorder.calls and all(c.method.endswith("/GetTask") for c in b.recorder.calls)


TASK_ID = "3f1c1a9e-0000-4000-8000-000000000000"


async def test_node_credentials_reach_tasks_too_so_a_node_can_forward(start: Start) -> None:
    a, b = await start("a"), await start("b")
    async with a.peer.client.link("b", b.addr) as channel:
        error = await refused(tasks_stub(channel).GetTask(pb.ID(id=[TASK_ID]), timeout=2))
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert "authorization" not in dict(b.recorder.only("/shoal.v1.Tasks/GetTask").metadata)


async def test_a_replayed_call_is_refused_on_the_wire(start: Start) -> None:
    a, b = await start("a"), await start("b")
    hello = hb_pb.HeartBeat().SerializeToString()
    metadata = CallSigner(a.peer.keeper, "a").metadata(IS_ALIVE, "b", hello)
    channel = grpc.aio.insecure_channel(b.addr)
    try:
        stub = hb_grpc.HeartBeatsStub(channel)
        assert (await stub.IsAlive(hb_pb.HeartBeat(), metadata=metadata, timeout=2)).name == "b"
        error = await refused(stub.IsAlive(hb_pb.HeartBeat(), metadata=metadata, timeout=2))
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED and "replayed" in (error.details() or "")
        old = CallSigner(a.peer.keeper, "a", clock=lambda: time.time() - 31).metadata(IS_ALIVE, "b", hello)
        error = await refused(stub.IsAlive(hb_pb.HeartBeat(), metadata=old, timeout=2))
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED and "timestamp" in (error.details() or "")
        wrong = CallSigner(TokenKeeper(OTHER), "a").metadata(IS_ALIVE, "b", hello)
        error = await refused(stub.IsAlive(hb_pb.HeartBeat(), metadata=wrong, timeout=2))
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED and "wrong node signature" in (error.details() or "")
    finally:
        await channel.close(None)
    assert b.rpc.node_auth.replays and len(b.recorder.calls) == 1


async def replay(addr: str, record: Recorded, body: bytes | None = None) -> grpc.aio.AioRpcError | bytes:
    """Send ``record``'s metadata with ``body`` (its own request bytes by default) to ``addr``, byte for byte."""
    metadata = [(k, v) for k, v in record.metadata if k.startswith("x-shoal-")]
    channel = grpc.aio.insecure_channel(addr)
    try:
        raw = channel.unary_unary(record.method, request_serializer=None, response_deserializer=None)
        answer: bytes = await raw(record.request if body is None else body, metadata=metadata, timeout=2)
        return answer
    except grpc.aio.AioRpcError as err:
        return err
    finally:
        await channel.close(None)


async def test_a_call_captured_on_its_way_to_one_node_is_refused_by_another_and_cannot_be_altered(
    start: Start,
) -> None:
    a, b, c = await start("a"), await start("b", master=True), await start("c", master=True)
    # A real signed call from a to b, as it came off the wire at b (metadata and request bytes).
    assert await a.peer.client.request_election("b", b.addr, "a")
    captured = b.recorder.only("/shoal.v1.Elections/RequestElection")
    assert el_pb.Election.FromString(captured.request).candidate == "a" and b.peer.handed_to == ["a"]

    # Played against c, which holds the same token: refused, and c is still master.
    error = await replay(c.addr, captured)
    assert isinstance(error, grpc.aio.AioRpcError) and error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "signed for 'b', this is 'c'" in (error.details() or "")
    assert c.peer.master and c.peer.handed_to == [] and c.recorder.calls == []
    # Played again against b itself: refused as a replay.
    again = await replay(b.addr, captured)
    assert isinstance(again, grpc.aio.AioRpcError) and "replayed" in (again.details() or "")

    # A fresh call to c whose request is changed after signing: refused, nothing handed over.
    c_call = CallSigner(a.peer.keeper, "a").metadata(ELECTION, "c", el_pb.Election(candidate="a").SerializeToString())
    forged = Recorded(ELECTION, c_call, el_pb.Election(candidate="a").SerializeToString())
    changed = await replay(c.addr, forged, body=el_pb.Election(candidate="mallory").SerializeToString())
    assert isinstance(changed, grpc.aio.AioRpcError) and changed.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "request was changed" in (changed.details() or "")
    assert c.peer.master and c.peer.handed_to == [] and c.recorder.calls == []
    # The same signed call with the request it was signed over goes through.
    answer = await replay(c.addr, forged)
    assert isinstance(answer, bytes) and dict(pb.OptResult.FromString(answer).succeed) == {"a": True}
    assert c.peer.handed_to == ["a"]


async def test_a_node_with_another_token_gets_no_answer(start: Start) -> None:
    b = await start("b")
    stranger = PeerClient(TokenKeeper(OTHER), "stranger")
    try:
        assert await stranger.is_alive("b", b.addr, timeout_s=2) is None
        assert not await stranger.request_election("b", b.addr, "stranger")
        verdict = await stranger.verify(b.addr, "b", timeout_s=2)
        assert not verdict and "refused this node's credentials" in verdict.reason
    finally:
        await stranger.close()
    assert b.recorder.calls == []  # nothing got past authentication


# --- admission --------------------------------------------------------------------------------------


async def test_verify_proves_the_token_without_sending_it(start: Start) -> None:
    a, b = await start("a"), await start("b", incarnation=3)
    verdict = await a.peer.client.verify(b.addr, "b", timeout_s=2)
    assert verdict and verdict.reason == "verified" and verdict.incarnation == 3
    call = b.recorder.only(VERIFY)
    challenge = el_pb.Challenge.FromString(call.request)
    assert len(challenge.challenge) == 32 and challenge.verifier == "a" and challenge.name == "b"
    proof = el_pb.Proof.FromString(call.response)
    assert proof.name == "b" and len(proof.proof) == 32
    wire = call.request + call.response + repr(call.metadata).encode()
    assert TOKEN.encode() not in wire
    assert set(el_pb.Challenge.DESCRIPTOR.fields_by_name) == {"challenge", "verifier", "name"}
    assert "token" not in hb_pb.Node.DESCRIPTOR.fields_by_name  # the seed's Node.token is reserved
    # A second verification uses a fresh challenge.
    assert await a.peer.client.verify(b.addr, "b", timeout_s=2)
    challenges = [el_pb.Challenge.FromString(c.request).challenge for c in b.recorder.calls if c.method == VERIFY]
    assert len(set(challenges)) == 2


async def test_verify_fails_for_a_wrong_token_wrong_proof_or_wrong_name(start: Start) -> None:
    a = await start("a")
    other_cluster = await start("x", OTHER)
    verdict = await a.peer.client.verify(other_cluster.addr, "x", timeout_s=2)
    assert not verdict and "credentials" in verdict.reason and not verdict.unreachable
    # A node that lets the call in but cannot prove the token (its proof is made with another one).
    liar = await start("liar", prove_with=OTHER)
    verdict = await a.peer.client.verify(liar.addr, "liar", timeout_s=2)
    assert not verdict and "wrong admission proof" in verdict.reason and not verdict.unreachable
    assert TOKEN.encode() not in liar.recorder.only(VERIFY).request
    b = await start("b")
    verdict = await a.peer.client.verify(b.addr, "someone", timeout_s=2)
    assert not verdict and "signed for 'someone', this is 'b'" in verdict.reason


async def test_verify_node_refuses_a_challenge_in_another_nodes_name_or_of_the_wrong_size(start: Start) -> None:
    a, b = await start("a"), await start("b")
    async with a.peer.client.link("b", b.addr) as channel:
        stub = el_grpc.ElectionsStub(channel)
        error = await refused(stub.VerifyNode(el_pb.Challenge(challenge=b"c" * 32, verifier="b"), timeout=2))
        assert error.code() == grpc.StatusCode.PERMISSION_DENIED
        error = await refused(stub.VerifyNode(el_pb.Challenge(challenge=b"c" * 3, verifier="a"), timeout=2))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "16-64 bytes" in (error.details() or "")


# --- hand-over --------------------------------------------------------------------------------------


async def test_request_election_asks_the_master_to_hand_over(start: Start) -> None:
    a, b = await start("a"), await start("b", master=True)
    assert await a.peer.client.request_election("b", b.addr, "c")
    assert b.peer.handed_to == ["c"]
    assert not await a.peer.client.request_election("b", b.addr, None)  # b is no longer master
    assert el_pb.Election.FromString(b.recorder.calls[-1].request).candidate == ""


# --- token rotation ---------------------------------------------------------------------------------


async def test_update_secret_rotates_the_token_without_sending_it_in_clear(start: Start) -> None:
    a, b = await start("a"), await start("b")
    assert await a.peer.client.update_secret("b", b.addr, NEW_TOKEN, timeout_s=2)
    assert b.peer.keeper.current == NEW_TOKEN and b.peer.keeper.previous == TOKEN
    call = b.recorder.only("/shoal.v1.Elections/UpdateSecret")
    wire = call.request + call.response + repr(call.metadata).encode()
    assert NEW_TOKEN.encode() not in wire and TOKEN.encode() not in wire
    secret = el_pb.Secret.FromString(call.request)
    assert len(secret.key_id) == 16 and secret.sealed
    assert dict(pb.OptResult.FromString(call.response).succeed) == {"b": True}

    # a, not rotated yet, is still let in during the grace period; then it rotates too.
    assert await a.peer.client.is_alive("b", b.addr, timeout_s=2) == ("b", 1)
    a.peer.keeper.rotate(NEW_TOKEN)
    assert await a.peer.client.is_alive("b", b.addr, timeout_s=2) == ("b", 1)
    # Sending it again, after rotating, is harmless (sealed under the previous token).
    assert await a.peer.client.update_secret("b", b.addr, NEW_TOKEN, timeout_s=2)
    assert b.peer.keeper.generation == 1


async def test_a_sender_that_rotated_first_seals_under_the_token_the_receiver_holds(start: Start) -> None:
    a, b = await start("a"), await start("b")
    a.peer.keeper.rotate(NEW_TOKEN)
    assert await a.peer.client.update_secret("b", b.addr, NEW_TOKEN, timeout_s=2)
    assert b.peer.keeper.current == NEW_TOKEN


async def test_update_secret_from_outside_the_cluster_changes_nothing(start: Start) -> None:
    b = await start("b")
    stranger = PeerClient(TokenKeeper(OTHER), "stranger")
    try:
        assert not await stranger.update_secret("b", b.addr, NEW_TOKEN, timeout_s=2)
    finally:
        await stranger.close()
    assert b.peer.keeper.current == TOKEN and b.peer.keeper.generation == 0


async def test_the_old_token_works_during_the_grace_period_only(start: Start) -> None:
    a, b = await start("a"), await start("b")
    assert await a.peer.client.update_secret("b", b.addr, NEW_TOKEN, timeout_s=2)
    old_node = PeerClient(TokenKeeper(TOKEN), "old")
    new_user, old_user = open_channel(b.addr, NEW_TOKEN), open_channel(b.addr, TOKEN)
    try:
        for user in (new_user, old_user):
            error = await refused(tasks_stub(user).GetTask(pb.ID(id=[TASK_ID]), timeout=2))
            assert error.code() == grpc.StatusCode.NOT_FOUND  # accepted, then not found
        assert await old_node.is_alive("b", b.addr, timeout_s=2) == ("b", 1)

        b.clock.now += 61  # past b's grace period
        error = await refused(tasks_stub(old_user).GetTask(pb.ID(id=[TASK_ID]), timeout=2))
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED and error.details() == "wrong token"
        assert await old_node.is_alive("b", b.addr, timeout_s=2) is None
        error = await refused(tasks_stub(new_user).GetTask(pb.ID(id=[TASK_ID]), timeout=2))
        assert error.code() == grpc.StatusCode.NOT_FOUND
        a.peer.keeper.rotate(NEW_TOKEN)
        assert await a.peer.client.is_alive("b", b.addr, timeout_s=2) == ("b", 1)
    finally:
        await old_node.close()
        await new_user.close(None)
        await old_user.close(None)


# --- what the server lists --------------------------------------------------------------------------


async def _services(addr: str) -> list[str]:
    channel = open_channel(addr, TOKEN)
    try:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        call = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5)
        return sorted([s.name async for r in call for s in r.list_services_response.service])
    finally:
        await channel.close(None)


async def test_node_services_are_served_and_listed_only_with_a_peer(start: Start) -> None:
    with_peer, without = await start("b"), await start("lone", peer=False)
    assert {"shoal.v1.HeartBeats", "shoal.v1.Elections"} <= set(await _services(with_peer.addr))
    assert with_peer.rpc.services == ("shoal.v1.Tasks", "shoal.v1.HeartBeats", "shoal.v1.Elections")
    channel = open_channel(with_peer.addr, None)
    try:
        for service in ("shoal.v1.HeartBeats", "shoal.v1.Elections"):
            check = health_pb2.HealthCheckRequest(service=service)
            status = await health_pb2_grpc.HealthStub(channel).Check(check, timeout=2)
            assert status.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        await channel.close(None)
    listed = await _services(without.addr)
    assert "shoal.v1.Tasks" in listed and "shoal.v1.HeartBeats" not in listed
    async with with_peer.peer.client.link("lone", without.addr) as channel:
        error = await refused(hb_grpc.HeartBeatsStub(channel).IsAlive(hb_pb.HeartBeat(), timeout=2))
    assert error.code() == grpc.StatusCode.UNIMPLEMENTED


# --- against a real node ----------------------------------------------------------------------------


@pytest.mark.e2e
async def test_a_real_node_takes_a_task_forwarded_with_node_credentials(shoal_node: Any) -> None:
    client = PeerClient(TokenKeeper(shoal_node.token), "forwarder")
    try:
        async with client.link(shoal_node.name, shoal_node.grpc_addr) as channel:
            stub = tasks_stub(channel)
            created = await stub.CreateTask(pb.TaskSpec(name="fwd", type="echo", target="hi"), timeout=10)
            done = await stub.GetTask(pb.ID(id=[created.id], wait_s=20 * SCALE), timeout=30 * SCALE)
    finally:
        await client.close()
    assert done.state == pb.Task.State.ValueType(TaskState.SUCCEED)
