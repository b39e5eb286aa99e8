"""Who may call the gRPC server: a server interceptor in front of every service.

Every method needs a credential except those of the public services (the standard health service, so
that load balancers and orchestrators can probe a node without the token). Server reflection is behind
the check too: it answers token holders only.

A credential is checked by an ``Authenticator``; a call passes when any of them accepts it. Users hold
the cluster token (``BearerToken``); nodes sign each call with it (``shoal.rpc.peer_auth.NodeCredentials``:
an HMAC over the call and its request, proving the token without sending it). An authenticator refuses to
vouch for methods it does not cover by returning a ``Refusal``: the bearer token is refused on the
node-to-node services, which only nodes may call.

A credential that covers the request body answers with a ``BodyCheck`` instead: the interceptor then lets
the call reach its handler only through a deserializer that first hands the raw request bytes to that
check, so a call whose body was changed after signing is refused before any handler (or later
interceptor) sees it.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn, Protocol

import grpc
import grpc.aio

from shoal.auth import bearer
from shoal.rpc.tokens import TokenKeeper

log = logging.getLogger("shoal.rpc.auth")

#: Services anyone may call: the standard health service.
PUBLIC_SERVICES = frozenset({"grpc.health.v1.Health"})

if TYPE_CHECKING:  # grpc's classes are generic only in their type stubs
    Handler = grpc.RpcMethodHandler[Any, Any]
    HandlerContinuation = Callable[[grpc.HandlerCallDetails], Awaitable[Handler]]
    ServerInterceptor = grpc.aio.ServerInterceptor[Any, Any]
else:
    ServerInterceptor = grpc.aio.ServerInterceptor


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why an authenticator did not accept a call. ``presented`` is true when the caller sent this
    kind of credential (so its message, e.g. "wrong token", says more than "no credential")."""

    message: str
    presented: bool


@dataclass(frozen=True, slots=True)
class BodyCheck:
    """The credentials are good so far; the call passes only if ``check(raw request bytes)`` returns None.
    ``check`` must not raise or block."""

    check: Callable[[bytes], Refusal | None]


class Authenticator(Protocol):
    """One way a caller may prove it belongs to the cluster. Called for every call, concurrently; must
    not block (no I/O)."""

    def authenticate(self, method: str, metadata: Mapping[str, str]) -> Refusal | BodyCheck | None:
        """None to accept the call, a BodyCheck to accept it if its request passes, or a Refusal."""
        ...


class BearerToken:
    """Accepts ``authorization: Bearer <cluster token>`` metadata, compared in constant time.

    Parameters:
        token: the token, or a ``TokenKeeper`` whose accepted tokens (the current one, and the previous
            one during a rotation's grace period) are all good.
        node_only: full service names on which this credential is refused: only nodes may call them.
    """

    def __init__(self, token: str | TokenKeeper, *, node_only: Iterable[str] = ()) -> None:
        self.keeper = token if isinstance(token, TokenKeeper) else TokenKeeper(token)
        self._node_only = frozenset(node_only)

    def authenticate(self, method: str, metadata: Mapping[str, str]) -> Refusal | None:
        header = metadata.get("authorization")
        if _service_of(method) in self._node_only:
            return Refusal(
                f"{_service_of(method)} accepts node credentials only, not a user token",
                presented=header is not None,
            )
        if header is None:
            return Refusal("missing credentials: send metadata 'authorization: Bearer <token>'", presented=False)
        given = bearer(header)
        if given is None:
            return Refusal("malformed authorization metadata: expected 'Bearer <token>'", presented=True)
        if not self.keeper.matches(given):
            return Refusal("wrong token", presented=True)
        return None

    def __repr__(self) -> str:
        return "BearerToken(<hidden>)"


class AuthInterceptor(ServerInterceptor):
    """Refuses, with UNAUTHENTICATED and a message, every call that no authenticator accepts.

    Parameters:
        authenticators: tried in order; the first to accept lets the call through.
        public_services: full service names (``package.Service``) that need no credential.
    """

    def __init__(
        self,
        authenticators: Sequence[Authenticator],
        *,
        public_services: Iterable[str] = PUBLIC_SERVICES,
    ) -> None:
        if not authenticators:
            raise ValueError("at least one authenticator is required")
        self._authenticators = tuple(authenticators)
        self._public = frozenset(public_services)
        self.refused = 0

    async def intercept_service(
        self,
        continuation: HandlerContinuation,
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler:
        method: str = handler_call_details.method
        if _service_of(method) in self._public:
            return await continuation(handler_call_details)
        refusal = self.check(method, metadata_of(handler_call_details.invocation_metadata))
        if refusal is None:
            return await continuation(handler_call_details)
        if isinstance(refusal, BodyCheck):
            return self._checked(await continuation(handler_call_details), method, refusal)
        self.refused += 1
        log.debug("refused %s: %s", method, refusal.message)
        # Answer in the shape of the method the caller asked for, so streaming clients see the
        # status cleanly too. An unknown method is refused the same way, revealing nothing.
        handler: Handler | None = await continuation(handler_call_details)
        return _deny(handler, refusal.message)

    def check(self, method: str, metadata: Mapping[str, str]) -> Refusal | BodyCheck | None:
        """None if some authenticator accepts the call outright, else the first check of its request,
        else the most telling refusal."""
        refusals: list[Refusal] = []
        body_check: BodyCheck | None = None
        for authenticator in self._authenticators:
            answer = authenticator.authenticate(method, metadata)
            if answer is None:
                return None
            if isinstance(answer, BodyCheck):
                body_check = body_check or answer
            else:
                refusals.append(answer)
        if body_check is not None:
            return body_check
        return next((r for r in refusals if r.presented), refusals[0])

    def _checked(self, handler: Handler | None, method: str, body: BodyCheck) -> Handler:
        """``handler`` behind ``body``: its request bytes are checked before they are parsed."""

        def refuse(message: str) -> _Refused:
            self.refused += 1
            log.debug("refused %s: %s", method, message)
            return _Refused(message)

        if handler is None:  # an unknown method: still answer only a caller whose whole call is good

            def check_only(raw: bytes) -> _Refused:
                refusal = body.check(raw)
                if refusal is not None:
                    return refuse(refusal.message)
                return _Refused("Method not found!", grpc.StatusCode.UNIMPLEMENTED)

            return grpc.unary_unary_rpc_method_handler(_refuse_call, request_deserializer=check_only)
        if handler.request_streaming:
            self.refused += 1
            return _deny(handler, "a node call carries one request message, which its signature covers")
        inner = handler.request_deserializer

        def deserialize(raw: bytes) -> Any:
            refusal = body.check(raw)
            if refusal is not None:
                return refuse(refusal.message)
            return inner(raw) if inner is not None else raw

        if handler.response_streaming:
            return grpc.unary_stream_rpc_method_handler(
                _streaming(handler.unary_stream), deserialize, handler.response_serializer
            )
        return grpc.unary_unary_rpc_method_handler(
            _unary(handler.unary_unary), deserialize, handler.response_serializer
        )

    def __repr__(self) -> str:
        return f"AuthInterceptor(authenticators={len(self._authenticators)}, refused={self.refused})"


def _service_of(method: str) -> str:
    """``/package.Service/Method`` -> ``package.Service``."""
    return method.lstrip("/").partition("/")[0]


def metadata_of(items: Any) -> dict[str, str]:
    """Text metadata as a dict (keys are lower case on the wire); binary ``-bin`` entries are left out."""
    found: dict[str, str] = {}
    for key, value in items or ():
        if isinstance(value, str):
            found.setdefault(key.lower(), value)
    return found


@dataclass(frozen=True, slots=True)
class _Refused:
    """What a checking deserializer returns instead of the request: the call is answered with ``code``."""

    message: str
    code: grpc.StatusCode = grpc.StatusCode.UNAUTHENTICATED


async def _refuse_call(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> NoReturn:
    assert isinstance(request, _Refused)
    await context.abort(request.code, request.message)


def _unary(behavior: Callable[..., Any] | None) -> Callable[..., Awaitable[Any]]:
    assert behavior is not None

    async def call(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        if isinstance(request, _Refused):
            await _refuse_call(request, context)
        answer = behavior(request, context)
        return await answer if inspect.isawaitable(answer) else answer

    return call


def _streaming(behavior: Callable[..., Any] | None) -> Callable[..., Any]:
    assert behavior is not None

    async def stream(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        if isinstance(request, _Refused):
            await _refuse_call(request, context)
        answers = behavior(request, context)
        if hasattr(answers, "__aiter__"):
            async for answer in answers:
                yield answer
        elif inspect.isawaitable(answers):
            await answers

    return stream


def _deny(handler: Handler | None, message: str) -> Handler:
    async def deny(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> NoReturn:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    if handler is not None and handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(deny)
    if handler is not None and handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(deny)
    if handler is not None and handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(deny)
    return grpc.unary_unary_rpc_method_handler(deny)
