"""The standard gRPC health service, open to anyone, with the streams strangers may hold kept apart.

Health answers without a token so that balancers and orchestrators can probe a node. ``Check`` is one quick
answer, but a ``Watch`` is a stream that stays open, and every open call counts toward the server's
``maximum_concurrent_rpcs``: strangers holding that many watches would leave no room for token holders'
calls. So at most ``max_public_watches`` watches from callers without cluster credentials are open at
once; one more gets RESOURCE_EXHAUSTED. A watch that carries the token (or a node's signature) is not
counted among them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import grpc
import grpc.aio
from grpc_health.v1 import health, health_pb2

from shoal.rpc.auth import metadata_of

#: Full name of the standard health service.
SERVICE_NAME = "grpc.health.v1.Health"
WATCH = f"/{SERVICE_NAME}/Watch"
#: Watch streams open at once from callers without credentials, at most (see ``public_watch_limit``).
MAX_PUBLIC_WATCHES = 100


def public_watch_limit(maximum_concurrent_rpcs: int) -> int:
    """Watches strangers may hold: ``MAX_PUBLIC_WATCHES``, and never more than a quarter of all calls."""
    return max(1, min(MAX_PUBLIC_WATCHES, maximum_concurrent_rpcs // 4))


class PublicHealth:
    """The health servicer (grpc's own asyncio one, wrapped). ``set`` and ``enter_graceful_shutdown`` as
    grpc's; served calls may run concurrently in the server's event loop.

    Parameters:
        max_public_watches: Watch streams without credentials open at once.
        is_member: whether a call's metadata carries the cluster's credentials.
    """

    def __init__(self, *, max_public_watches: int, is_member: Callable[[Mapping[str, str]], bool]) -> None:
        self.inner: Any = health.aio.HealthServicer()  # type: ignore[attr-defined]  # not in the type stubs
        self.max_public_watches = max_public_watches
        self.is_member = is_member
        self.public_watches = 0
        self.refused = 0
        self.List = self.inner.List  # as grpc serves it (newer releases add List)

    def __repr__(self) -> str:
        return f"PublicHealth(public_watches={self.public_watches}/{self.max_public_watches}, refused={self.refused})"

    async def Check(self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        return await self.inner.Check(request, context)

    async def Watch(self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        if self.is_member(metadata_of(context.invocation_metadata())):
            await self.inner.Watch(request, context)
            return
        if self.public_watches >= self.max_public_watches:
            self.refused += 1
            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"{self.max_public_watches} health watches without credentials are open already; "
                "use Check, or send the token",
            )
        self.public_watches += 1
        try:
            await self.inner.Watch(request, context)
        finally:
            self.public_watches -= 1

    async def set(self, service: str, status: health_pb2.HealthCheckResponse.ServingStatus.ValueType) -> None:
        await self.inner.set(service, status)

    async def enter_graceful_shutdown(self) -> None:
        await self.inner.enter_graceful_shutdown()
