"""The gRPC auth interceptor, on a real in-process grpc.aio server with the standard services."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping

import grpc
import grpc.aio
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2, reflection_pb2_grpc

from shoal.rpc.auth import AuthInterceptor, BearerToken, Refusal
from shoal.rpc.client import open_channel

TOKEN = "s3cret-token_value"


def test_bearer_token_says_what_is_wrong() -> None:
    check = BearerToken(TOKEN).authenticate
    assert check("/m", {"authorization": f"Bearer {TOKEN}"}) is None
    assert check("/m", {"authorization": f"bearer {TOKEN}"}) is None
    missing = check("/m", {})
    assert missing is not None and not missing.presented and "authorization: Bearer" in missing.message
    assert check("/m", {"authorization": f"Basic {TOKEN}"}) == Refusal(
        "malformed authorization metadata: expected 'Bearer <token>'", presented=True
    )
    assert check("/m", {"authorization": "Bearer nope"}) == Refusal("wrong token", presented=True)
    assert check("/m", {"authorization": f"Bearer {TOKEN}x"}) == Refusal("wrong token", presented=True)
    assert TOKEN not in repr(BearerToken(TOKEN))


class NodeKey:
    """A second kind of credential, as node-to-node auth will be: a header of its own."""

    def authenticate(self, method: str, metadata: Mapping[str, str]) -> Refusal | None:
        if "x-node-key" not in metadata:
            return Refusal("no node key", presented=False)
        return None if metadata["x-node-key"] == "k" else Refusal("bad node key", presented=True)


def test_any_authenticator_may_accept_and_the_telling_refusal_wins() -> None:
    interceptor = AuthInterceptor([BearerToken(TOKEN), NodeKey()])
    assert interceptor.check("/m", {"x-node-key": "k"}) is None
    assert interceptor.check("/m", {"authorization": f"Bearer {TOKEN}"}) is None
    refused = interceptor.check("/m", {"x-node-key": "z"})
    assert refused is not None and refused.message == "bad node key"
    anonymous = interceptor.check("/m", {})
    assert anonymous is not None and "authorization: Bearer" in anonymous.message


@pytest.fixture
async def server_addr() -> AsyncIterator[str]:
    server = grpc.aio.server(interceptors=[AuthInterceptor([BearerToken(TOKEN)])])
    servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    reflection.enable_server_reflection((health.SERVICE_NAME, reflection.SERVICE_NAME), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    await servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        await server.stop(None)


async def _list_services(addr: str, token: str | None) -> list[str]:
    channel = open_channel(addr, token)
    try:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        call = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10)
        return [s.name async for r in call for s in r.list_services_response.service]
    finally:
        await channel.close(None)


async def test_health_is_open_to_anyone(server_addr: str) -> None:
    channel = open_channel(server_addr, None)
    try:
        stub = health_pb2_grpc.HealthStub(channel)
        reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=10)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        watch = stub.Watch(health_pb2.HealthCheckRequest(), timeout=10)
        first = await watch.read()
        assert first.status == health_pb2.HealthCheckResponse.SERVING
        watch.cancel()
    finally:
        await channel.close(None)


async def test_reflection_needs_the_token(server_addr: str) -> None:
    assert "grpc.health.v1.Health" in await _list_services(server_addr, TOKEN)
    for token, says in ((None, "missing credentials"), ("wrong", "wrong token")):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await _list_services(server_addr, token)
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert says in (refused.value.details() or "")


async def test_unknown_methods_reveal_nothing_to_strangers(server_addr: str) -> None:
    for token, code in ((None, grpc.StatusCode.UNAUTHENTICATED), (TOKEN, grpc.StatusCode.UNIMPLEMENTED)):
        channel = open_channel(server_addr, token)
        try:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await channel.unary_unary("/shoal.v1.Secret/Peek")(b"", timeout=10)
            assert refused.value.code() == code
        finally:
            await channel.close(None)
