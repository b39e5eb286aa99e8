"""Assemble and run the node's gRPC server: auth interceptor, Tasks, Schedules when the node gives its
schedules, the node-to-node services (HeartBeats, Elections) when the node gives a ``PeerAPI``, Cache and
CacheShards when it gives its cache, health and reflection.

``start_rpc_server`` binds (port 0 picks a free port), starts, and returns an ``RpcServer`` that knows
its port. The standard health service reports SERVING for the whole server ("") and for each shoal
service while the node serves, and NOT_SERVING from the moment shutdown begins, so a balancer drains the
node before its port closes. Anyone may call it; the Watch streams of callers without credentials are
capped apart (``shoal.rpc.health``), so they cannot take the calls token holders need.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import grpc
import grpc.aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import Counter

from shoal._utils import is_digits
from shoal.rpc.auth import Authenticator, AuthInterceptor, BearerToken, ServerInterceptor
from shoal.rpc.census import CallCensus, methods_of
from shoal.rpc.convert import cache_grpc, el_grpc, hb_grpc, pb_grpc, sched_grpc
from shoal.rpc.health import WATCH, PublicHealth, public_watch_limit
from shoal.rpc.peer_auth import DEFAULT_WINDOW_S, NodeCredentials
from shoal.rpc.services.cache import SERVICE_NAME as CACHE_SERVICE
from shoal.rpc.services.cache import SHARDS_SERVICE_NAME as CACHE_SHARDS_SERVICE
from shoal.rpc.services.cache import CacheServicer, CacheShardsServicer
from shoal.rpc.services.elections import SERVICE_NAME as ELECTIONS_SERVICE
from shoal.rpc.services.elections import ElectionsServicer
from shoal.rpc.services.heartbeats import SERVICE_NAME as HEARTBEATS_SERVICE
from shoal.rpc.services.heartbeats import HeartBeatsServicer
from shoal.rpc.services.schedules import SERVICE_NAME as SCHEDULES_SERVICE
from shoal.rpc.services.schedules import SchedulesServicer
from shoal.rpc.services.tasks import SERVICE_NAME as TASKS_SERVICE
from shoal.rpc.services.tasks import TasksServicer
from shoal.rpc.tokens import TokenKeeper
from shoal.schedules import ScheduleService
from shoal.types import CacheAPI, CacheOwnerAPI, PeerAPI, TaskAPI

log = logging.getLogger("shoal.rpc.server")


#: Services that only nodes may call: the user bearer token is refused on them.
NODE_SERVICES = frozenset({HEARTBEATS_SERVICE, ELECTIONS_SERVICE, CACHE_SHARDS_SERVICE})

MiB = 1024 * 1024
#: Largest request a caller may send. A TaskSpec is at most ~80 KiB (validation's limits), so this
#: leaves room for bulk calls (1000 ids) while refusing floods early, before they are parsed.
MAX_RECEIVE_BYTES = 4 * MiB
#: Largest answer the server sends: a fetch result may hold up to 10 MiB of source, plus its metadata.
MAX_SEND_BYTES = 32 * MiB
#: Calls served at once; beyond it callers get RESOURCE_EXHAUSTED instead of queueing without bound.
MAX_CONCURRENT_RPCS = 1000

#: Channel arguments. Keepalive pings find clients that vanished (a watcher whose machine died) within
#: about a minute; clients may ping every 10 s without being cut off. SO_REUSEPORT is off so that a
#: second node on the same port fails to bind instead of silently sharing it.
SERVER_OPTIONS: tuple[tuple[str, Any], ...] = (
    ("grpc.max_receive_message_length", MAX_RECEIVE_BYTES),
    ("grpc.max_send_message_length", MAX_SEND_BYTES),
    ("grpc.max_metadata_size", 16 * 1024),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
    ("grpc.http2.max_ping_strikes", 3),
    ("grpc.so_reuseport", 0),
)
#: Room for a cache message's fields beside its value.
CACHE_SLACK = 1 * MiB


def server_options(cache_max_value: int = 0) -> tuple[tuple[str, Any], ...]:
    """SERVER_OPTIONS with message limits raised, if need be, to carry a cache value of that size."""
    receive = max(MAX_RECEIVE_BYTES, cache_max_value + CACHE_SLACK)
    send = max(MAX_SEND_BYTES, cache_max_value + CACHE_SLACK)
    limits = {"grpc.max_receive_message_length": receive, "grpc.max_send_message_length": send}
    return tuple((k, limits.get(k, v)) for k, v in SERVER_OPTIONS)


class RpcServer:
    """A running gRPC server. ``stop()`` may be called once; the other methods at any time."""

    def __init__(
        self,
        server: grpc.aio.Server,
        *,
        host: str,
        port: int,
        health_servicer: PublicHealth,
        tasks_servicer: TasksServicer,
        services: Sequence[str],
        keeper: TokenKeeper,
        node_auth: NodeCredentials,
    ) -> None:
        self.server = server
        self.host = host
        self.port = port
        self.health = health_servicer
        self.tasks = tasks_servicer
        self.keeper = keeper
        self.node_auth = node_auth
        self._services = tuple(services)
        self._stopped = False

    @property
    def services(self) -> tuple[str, ...]:
        """The shoal services this server serves (full names), as health and reflection list them."""
        return self._services

    @property
    def address(self) -> str:
        """``host:port`` as bound (with the real port when 0 was asked for)."""
        return f"{self.host}:{self.port}"

    async def set_serving(self, serving: bool) -> None:
        """Report SERVING or NOT_SERVING for the whole server and each shoal service."""
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        for service in ("", *self._services):
            await self.health.set(service, status)

    async def stop(self, grace: float | None = 5.0) -> None:
        """Report NOT_SERVING for good, end watch streams, then let calls finish for ``grace`` seconds."""
        if self._stopped:
            return
        self._stopped = True
        await self.health.enter_graceful_shutdown()
        self.tasks.close()
        await self.server.stop(grace)
        log.info("gRPC server on %s stopped", self.address)

    async def wait_for_termination(self) -> None:
        await self.server.wait_for_termination()

    def __repr__(self) -> str:
        return f"RpcServer({self.address}, stopped={self._stopped})"


async def start_rpc_server(
    *,
    tasks: TaskAPI,
    token: str | TokenKeeper,
    bind: str,
    peer: PeerAPI | None = None,
    authenticators: Sequence[Authenticator] = (),
    interceptors: Sequence[ServerInterceptor] = (),
    calls: Counter | None = None,
    maximum_concurrent_rpcs: int = MAX_CONCURRENT_RPCS,
    node_auth_window_s: float = DEFAULT_WINDOW_S,
    cache: CacheAPI | None = None,
    cache_owner: CacheOwnerAPI | None = None,
    cache_max_value: int = 0,
    node_name: str = "",
    node_clock: Callable[[], float] = time.time,
    schedules: ScheduleService | None = None,
) -> RpcServer:
    """Build, bind and start the server.

    Parameters:
        tasks: what the Tasks service serves.
        token: the cluster token, or the node's ``TokenKeeper`` so that a rotation takes effect here at
            once. Users send it as ``authorization: Bearer <token>`` (Tasks and reflection only); nodes
            sign each call with it (``shoal.rpc.peer_auth``), which every service accepts.
        bind: ``host:port`` to listen on; port 0 picks a free one (see ``RpcServer.port``).
        peer: what the HeartBeats and Elections services serve; without it they are not registered.
        authenticators: accepted beside the token and node credentials.
        calls: counts every call received by method (``shoal.rpc.census``), refused ones too.
        interceptors: run after the auth interceptor; the handlers they return serve authenticated calls
            only (a refused call is answered by the auth interceptor's own handler).
        maximum_concurrent_rpcs: calls served at once before RESOURCE_EXHAUSTED; health Watch streams
            without credentials may take a quarter of them at most (``shoal.rpc.health``).
        node_auth_window_s: how far a node call's timestamp may be from this node's clock.
        cache: what the Cache service serves (users); without it the service is not registered.
        cache_owner: this node's shard, served to the other nodes by CacheShards.
        cache_max_value: the largest cache value: messages up to it (and their fields) are accepted.
        node_name: this node's name, as the Cache service's Stats names it and as node calls must be signed
            for (default: the peer's name; with neither, no node call is accepted).
        node_clock: the time node calls' timestamps are held to: the node's reading of the store's clock
            (``NodeClock.store_time``), as callers sign with theirs.
        schedules: what the Schedules service serves (same token as Tasks); without it, not registered.
    Raises:
        OSError: when the address cannot be bound.
    """
    keeper = token if isinstance(token, TokenKeeper) else TokenKeeper(token)
    me = node_name or (peer.identity()[0] if peer is not None else "")
    node_auth = NodeCredentials(keeper, name=me, window_s=node_auth_window_s, clock=node_clock)
    interceptor = AuthInterceptor([BearerToken(keeper, node_only=NODE_SERVICES), node_auth, *authenticators])
    census = CallCensus(calls) if calls is not None else None
    server = grpc.aio.server(
        interceptors=[*([census] if census else []), interceptor, *interceptors],
        options=server_options(cache_max_value),
        maximum_concurrent_rpcs=maximum_concurrent_rpcs,
    )
    tasks_servicer = TasksServicer(tasks)
    pb_grpc.add_TasksServicer_to_server(tasks_servicer, server)
    shoal_services: tuple[str, ...] = (TASKS_SERVICE,)
    if schedules is not None:
        sched_grpc.add_SchedulesServicer_to_server(SchedulesServicer(schedules), server)
        shoal_services += (SCHEDULES_SERVICE,)
    if peer is not None:
        hb_grpc.add_HeartBeatsServicer_to_server(HeartBeatsServicer(peer), server)
        el_grpc.add_ElectionsServicer_to_server(ElectionsServicer(peer), server)
        shoal_services += (HEARTBEATS_SERVICE, ELECTIONS_SERVICE)
    if cache is not None:
        cache_grpc.add_CacheServicer_to_server(CacheServicer(cache, node_name), server)
        shoal_services += (CACHE_SERVICE,)
    if cache_owner is not None:
        cache_grpc.add_CacheShardsServicer_to_server(CacheShardsServicer(cache_owner), server)
        shoal_services += (CACHE_SHARDS_SERVICE,)
    health_servicer = PublicHealth(
        max_public_watches=public_watch_limit(maximum_concurrent_rpcs),
        is_member=lambda metadata: interceptor.check(WATCH, metadata) is None,
    )
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    served = (*shoal_services, health.SERVICE_NAME, reflection.SERVICE_NAME)
    reflection.enable_server_reflection(served, server)
    if census is not None:
        census.methods = methods_of(served)
    host = bind.rpartition(":")[0]
    try:
        port = _bind(server, bind)
    except (OSError, ValueError):
        await server.stop(None)
        raise
    await server.start()
    rpc = RpcServer(
        server,
        host=host,
        port=port,
        health_servicer=health_servicer,
        tasks_servicer=tasks_servicer,
        services=shoal_services,
        keeper=keeper,
        node_auth=node_auth,
    )
    await rpc.set_serving(True)
    log.info("gRPC server listening on %s", rpc.address)
    return rpc


def _bind(server: grpc.aio.Server, bind: str) -> int:
    host, sep, port = bind.rpartition(":")
    if not sep or not host or not is_digits(port):
        raise ValueError(f"gRPC bind address must be host:port, got {bind!r}")
    try:
        bound = server.add_insecure_port(bind)
    except RuntimeError as exc:  # grpcio raises on a failed bind in newer releases, returns 0 in older
        raise OSError(f"cannot listen for gRPC on {bind}: {exc}") from None
    if bound == 0:
        raise OSError(f"cannot listen for gRPC on {bind}: address in use or not available")
    return bound
