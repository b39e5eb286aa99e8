"""The node: builds every part from a NodeConfig, runs them in one event loop, and stops them in order.

Start-up order: store (embedded redis-server if no URL) -> its layout version checked (store/schema.py)
-> hand back what an earlier life of this node held -> event subscription -> RPC and HTTP servers ->
heartbeat, worker. Stopping reverses it: stop taking work, hand over the master role, let running tasks
finish within the grace period, hand back the rest, close the servers, stop the embedded Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import Iterator

import uvicorn
from prometheus_client import CollectorRegistry, Counter, Gauge

from shoal._utils import cancel_and_wait
from shoal.auth import load_or_create_token
from shoal.cache.cluster import build_cache
from shoal.clock import NodeClock
from shoal.cluster.addresses import REFRESH_S as ADDRESSES_REFRESH_S
from shoal.cluster.addresses import ClusterAddresses, store_addresses
from shoal.cluster.admin import ClusterAdmin
from shoal.cluster.election import Election
from shoal.cluster.heartbeat import Heartbeat
from shoal.cluster.leader import LeaderRole
from shoal.cluster.peer import Peer
from shoal.config import NodeConfig, split_addr
from shoal.events import EventHub
from shoal.keys import Keys
from shoal.outbound import CheckedBackend
from shoal.outbound import client as outbound_client
from shoal.proxy.httpcache import HttpCache
from shoal.proxy.server import ProxyServer, start_proxy
from shoal.rpc.cache_peers import channel_options
from shoal.rpc.peers import PeerClient
from shoal.rpc.server import RpcServer, start_rpc_server
from shoal.rpc.tokens import TokenKeeper
from shoal.schedules import ScheduleService
from shoal.service import ClusterService, StoreService, TaskService
from shoal.store import schema
from shoal.store.client import StoreClient
from shoal.store.embedded import EmbeddedRedis
from shoal.store.hosts import HostHolds
from shoal.store.nodes import NodeRegistry
from shoal.store.redis import connect, database_of, redacted, wait_until_up
from shoal.store.rotation import RotationLease
from shoal.store.schedules import ScheduleStore
from shoal.store.sessions import SessionStore
from shoal.store.tasks import TaskStore
from shoal.store.webhooks import WebhookStore
from shoal.systemd.supervision import Supervision
from shoal.web.app import create_app
from shoal.web.metrics import ProxyCollector
from shoal.webhooks import guard as webhook_guard
from shoal.webhooks.delivery import EventIngest, Sender
from shoal.webhooks.service import WebhookService
from shoal.worker.executor import Executor
from shoal.worker.fence import StoreFence
from shoal.worker.handlers import Handler, TaskTypes, Validator, build, echo, fetch
from shoal.worker.metrics import AttemptMetrics
from shoal.worker.pool import ProcessPool
from shoal.worker.reconcile import RECONCILE_BEATS

log = logging.getLogger("shoal.node")


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the node owns SIGTERM and SIGINT."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class Node:
    """One shoal node. ``start()`` then ``serve()`` until ``stop()``; not reusable once stopped."""

    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        self.keeper = TokenKeeper(config.token or load_or_create_token(config.data_dir))
        self.alive_within = config.heartbeat_interval * config.dead_after
        self.embedded: EmbeddedRedis | None = None
        self.redis: StoreClient | None = None
        self.rpc: RpcServer | None = None
        self.http: _Server | None = None
        self.proxy: ProxyServer | None = None
        self._loops: list[asyncio.Task[None]] = []
        self.cluster_addresses = ClusterAddresses(nodes=self._node_addresses)  # fetch and the proxy refuse them
        self._http_client = outbound_client(  # checked addresses, pooled by name
            timeout=config.fetch_timeout, backend=CheckedBackend(self.cluster_addresses.resolve)
        )
        self._webhook_client = outbound_client(  # the same checks, loopback refused unless allowed
            timeout=config.webhook_timeout,
            backend=CheckedBackend(
                webhook_guard.Resolver(self.cluster_addresses.resolve, allow_loopback=config.webhook_allow_loopback)
            ),
        )
        self.metrics = CollectorRegistry()
        self._expired = Counter(
            "shoal_tasks_expired", "Finished tasks this node removed as master, past their retention.",
            registry=self.metrics,
        )  # fmt: skip
        self.clock = NodeClock.from_environ(os.environ)
        self.started = False

    async def start(self) -> None:
        c = self.config
        url = c.redis
        if url is None:
            self.embedded = EmbeddedRedis(c.data_dir, fsync=c.redis_fsync, binary=c.redis_server)
            await asyncio.to_thread(self.embedded.start)
            url = self.embedded.url
        self.redis = connect(url, name=f"shoal-{c.name}", password_file=c.redis_password_file)
        log.info("store: %s at %s", await wait_until_up(self.redis, url), redacted(url))
        keys = Keys(c.cluster, db=database_of(self.redis))
        self.store = TaskStore(
            self.redis,
            keys,
            result_max_bytes=c.result_max_bytes,
            max_lost_attempts=c.max_lost_attempts,
            idempotency_window_s=c.idempotency_window,
            event_retention=c.event_retention,
        )
        # before anything of the cluster is read or written: refuse a newer shoal's store, upgrade an older one
        await schema.ensure(self.store)
        self.registry = NodeRegistry(self.redis, keys)
        self.sessions = SessionStore(self.redis, keys, ttl_s=c.session_ttl)
        self.holds = HostHolds(self.redis, keys)  # hosts that asked fetches to wait (Retry-After)
        self.types = self._task_types()
        self.hub = EventHub(
            self.redis, keys.task_events, keys.task_events_channel, keys.public, keys.task_progress_channel
        )
        # Workers start on demand (the first process-isolated attempt boots the fork server), from the
        # loop's thread: a worker dies with the thread that started it (PR_SET_PDEATHSIG).
        self.pool = ProcessPool(
            c.slots,
            max_tasks_per_child=c.max_tasks_per_child,
            kill_grace=c.kill_grace,
            memory_mb=c.memory_mb or None,
            cpu_s_limit=c.cpu_s_limit or None,
            workdir=c.data_dir / "workers" / c.name,
        )
        self.executor = Executor(
            store=self.store,
            types=self.types,
            node=c.name,
            slots=c.slots,
            prefetch=c.prefetch,
            retry_backoff=c.retry_backoff,
            reconcile_every=RECONCILE_BEATS * c.heartbeat_interval,
            pool=self.pool,
            metrics=AttemptMetrics(self.metrics),
            waits=self.hub,
        )
        self.heartbeat = Heartbeat(
            config=c,
            registry=self.registry,
            types=self.types.names(),
            load=lambda: self.executor.busy,
            prefetch=lambda: self.executor.prefetch.current() if c.run_tasks else 0,
            on_declared_dead=self._drop_work,
            on_beat=self._poke_scheduler,
            cache_stats=lambda: self.cache.stats(),
            clock=self.clock,
        )
        self.executor.prefetch.on_change = self.heartbeat.beat_soon  # the master learns of it at once
        self.fence = StoreFence(
            store=self.store,
            node=c.name,
            worker=self.executor,
            reached_at=lambda: self.heartbeat.reached_at,
            beat=self.heartbeat.tick,
            incarnation=lambda: self.heartbeat.incarnation,
            interval=c.heartbeat_interval,
            dead_after=c.dead_after,
        )
        self.peers = PeerClient(
            self.keeper, c.name, options=channel_options(c.cache_max_value), signing_clock=self.clock.store_time
        )
        self.cache = build_cache(c, registry=self.registry, peers=self.peers, alive_within=self.alive_within)
        self.fetcher.cache = HttpCache(self.cache, max_value=c.cache_max_value)
        self.election = Election(
            config=c,
            registry=self.registry,
            heartbeat=self.heartbeat,
            on_elected=self._become_master,
            on_deposed=self._stop_master,
        )
        self.leader = LeaderRole(
            store=self.store,
            registry=self.registry,
            prober=self.peers,
            me=c.name,
            interval=c.heartbeat_interval,
            dead_after=c.dead_after,
            may_write=self.election.may_write,
            on_stopped=self.election.duty_stopped,
            owner_of=self.cache.owner_of,
            retention_s=c.retention,
            on_expired=self._expired.inc,
            limits=c.placement_limits(),
            ends_heard=lambda: self.hub.ends_heard,
        )
        self.peer = Peer(
            name=c.name,
            heartbeat=self.heartbeat,
            election=self.election,
            keeper=self.keeper,
            client=self.peers,
            data_dir=c.data_dir,
        )
        self.tasks = TaskService(
            store=self.store,
            registry=self.registry,
            hub=self.hub,
            local_types=self.types,
            alive_within=self.alive_within,
            limits=c.placement_limits(),
            type_requires=c.type_requirements(),
            worker=self.executor if c.run_tasks else None,
        )
        self.admin = ClusterAdmin(
            name=c.name,
            registry=self.registry,
            election=self.election,
            peers=self.peers,
            keeper=self.keeper,
            data_dir=c.data_dir,
            alive_within=self.alive_within,
            rotations=RotationLease(self.redis, keys),
        )
        self.cluster = ClusterService(
            registry=self.registry, alive_within=self.alive_within, ready=self._ready, admin=self.admin, hub=self.hub
        )
        self.schedules = ScheduleService(store=ScheduleStore(self.store), tasks=self.tasks)
        webhook_store = WebhookStore(self.store)
        self.webhooks = WebhookService(store=webhook_store, allow_loopback=c.webhook_allow_loopback)
        self.webhook_sender = Sender(
            store=webhook_store,
            tasks=self.store,
            client=self._webhook_client,
            node=c.name,
            timeout_s=c.webhook_timeout,
            backoff_s=c.webhook_retry_backoff,
            max_backoff_s=c.webhook_retry_max_backoff,
            retry_for_s=c.webhook_retry_for,
            result_max_bytes=c.webhook_result_max_bytes,
        )
        self.webhook_ingest = EventIngest(
            store=webhook_store, consumer=c.name, claim_idle_s=c.webhook_claim_idle, on_made=self.webhook_sender.wake
        )
        self.hub.on_entry.append(self.leader.poke)
        self._metrics()

        if c.run_tasks:
            await self.executor.recover()
            # before this node beats with its types: a submit of one of its functions is checked against these
            await self.tasks.signatures.publish(self.types.signatures())
        self._loops.append(asyncio.create_task(self.hub.run(), name="events"))
        await asyncio.wait_for(self.hub.subscribed.wait(), 10)
        self.rpc = await start_rpc_server(
            tasks=self.tasks,
            token=self.keeper,
            bind=c.grpc,
            peer=self.peer,
            cache=self.cache,
            cache_owner=self.cache.owner,
            cache_max_value=c.cache_max_value,
            node_name=c.name,
            node_clock=self.clock.store_time,
            schedules=self.schedules,
            calls=Counter(
                "shoal_grpc_calls",
                "gRPC calls this node's server received, by method (refused ones too).",
                ["method"],
                registry=self.metrics,
            ),  # fmt: skip
        )
        await self._start_http()
        await self.heartbeat.join()  # announce this node and stand for master before serving work
        await self.election.tick()
        await self.cache.refresh()
        listeners = [split_addr(addr, "address") for addr in (self.rpc.address, c.http)]
        self.cluster_addresses.add([*store_addresses(url), *listeners])
        await self.cluster_addresses.refresh()
        refresh_s = max(ADDRESSES_REFRESH_S, c.heartbeat_interval)
        addresses = self.cluster_addresses.run(refresh_s, version=self.registry.membership_version)
        self._loops.append(asyncio.create_task(addresses, name="cluster-addresses"))
        self.proxy = await start_proxy(c, self.cache, self.keeper.matches, cluster=self.cluster_addresses)
        if self.proxy is not None:
            proxy = self.proxy
            self.metrics.register(ProxyCollector(lambda: proxy.stats, lambda: proxy.connections))
        self._loops.append(asyncio.create_task(self.heartbeat.run(), name="heartbeat"))
        self._loops.append(asyncio.create_task(self.cache.run(), name="cache"))
        self._loops.append(asyncio.create_task(self.election.run(), name="election"))
        self._loops.append(asyncio.create_task(self.webhook_ingest.run(), name="webhook-events"))
        self._loops.append(asyncio.create_task(self.webhook_sender.run(), name="webhook-sender"))
        if c.run_tasks:
            self._loops.append(asyncio.create_task(self.executor.run(), name="worker"))
            self._loops.append(asyncio.create_task(self.fence.run(), name="fence"))
        self.started = True
        log.info(
            "node %s ready: http %s, grpc %s, store %s",
            c.name,
            c.advertised(c.http),
            c.advertised(c.grpc),
            redacted(url),
        )

    async def _node_addresses(self) -> list[str]:
        """Every node's advertised HTTP, gRPC and proxy addresses, as their records say: fetch and the proxy
        refuse them."""
        return [addr for r in await self.registry.all() for addr in (r.http, r.grpc, r.proxy) if addr]

    def _task_types(self) -> TaskTypes:
        c = self.config
        self.fetcher = fetch.Fetcher(
            self._http_client,
            timeout_s=c.fetch_timeout,
            max_bytes=c.fetch_max_bytes,
            max_redirects=c.fetch_max_redirects,
            hold_host=self.holds.hold,
        )
        builtins: list[tuple[str, Handler, Validator | None]] = [
            ("echo", echo.echo, echo.validate),
            ("fetch", self.fetcher, fetch.validate),
        ]
        return build(builtins, c.task_modules)

    async def _start_http(self) -> None:
        app = create_app(
            tasks=self.tasks,
            cluster=self.cluster,
            token=self.keeper,
            registry=self.metrics,
            node_name=self.config.name,
            cache=self.cache,
            cache_max_value=self.config.cache_max_value,
            sessions=self.sessions,
            store=StoreService(store=self.store, retention_s=self.config.retention),
            schedules=self.schedules,
            webhooks=self.webhooks,
        )
        host, port = split_addr(self.config.http, "http")
        server_config = uvicorn.Config(
            app,
            host=host,
            port=port,
            log_config=None,
            access_log=False,
            lifespan="off",
            timeout_keep_alive=30,
            limit_concurrency=2000,
            timeout_graceful_shutdown=5,
        )
        self.http = _Server(server_config)
        self._loops.append(asyncio.create_task(self._serve_http(self.http), name="http"))
        deadline = time.monotonic() + 10
        while not self.http.started:
            if self._loops[-1].done() or time.monotonic() > deadline:
                raise OSError(f"cannot serve HTTP on {self.config.http}")
            await asyncio.sleep(0.01)

    async def _serve_http(self, server: uvicorn.Server) -> None:
        """uvicorn exits the process (SystemExit) when it cannot bind; make that an error the node reports."""
        try:
            await server.serve()
        except SystemExit:
            raise OSError(f"cannot serve HTTP on {self.config.http}") from None

    def _metrics(self) -> None:
        running = Gauge("shoal_tasks_running", "Tasks running on this node.", registry=self.metrics)
        running.set_function(lambda: self.executor.busy)
        completed = Gauge("shoal_tasks_completed", "Attempts that succeeded on this node.", registry=self.metrics)
        completed.set_function(lambda: self.executor.completed)
        failed = Gauge("shoal_tasks_failed", "Attempts that failed or timed out on this node.", registry=self.metrics)
        failed.set_function(lambda: self.executor.failed)
        master = Gauge("shoal_is_master", "1 while this node is the master.", registry=self.metrics)
        master.set_function(lambda: int(self.election.is_master))

    def _ready(self) -> tuple[bool, str]:
        if not self.started:
            return False, "starting"
        for loop in self._loops:
            if loop.done():
                return False, f"the {loop.get_name()} loop has stopped"
        if self.election.is_master and (stopped := self.leader.stopped()):
            return False, f"master without its duties: {stopped}"
        return True, "ready"

    # -- master duties ---------------------------------------------------------------------------

    async def _become_master(self, epoch: int) -> None:
        await self.leader.establish(epoch)

    async def _stop_master(self) -> None:
        await self.leader.revoke()

    def _poke_scheduler(self) -> None:
        self.leader.poke()

    async def _drop_work(self) -> None:
        """This node was declared dead: its tasks were given to others, so stop running them here."""
        await self.leader.revoke()
        await self.executor.drop_all()

    def hurry(self) -> None:
        """Cut the grace period short: running tasks are stopped and handed back now."""
        if hasattr(self, "executor"):
            self.executor.hurry()

    # -- life cycle ------------------------------------------------------------------------------

    async def serve(self, stop: asyncio.Event) -> None:
        """Run until ``stop`` is set or a loop dies."""
        stopper = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait([stopper, *self._loops], return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            if task is not stopper and not task.cancelled() and task.exception() is not None:
                stopper.cancel()
                raise task.exception()  # type: ignore[misc]
        stopper.cancel()

    async def stop(self, grace: float | None = None) -> None:
        """Stop taking work, hand over mastership, finish or hand back tasks, then close everything."""
        grace = self.config.shutdown_grace if grace is None else grace
        was_serving, self.started = self.started, False
        if was_serving:
            log.info("node %s stopping (grace %gs)", self.config.name, grace)
        if self.redis is not None and hasattr(self, "election"):
            await self._hand_over(grace)
        await self._close()
        if was_serving:
            log.info("node %s stopped", self.config.name)

    async def _hand_over(self, grace: float) -> None:
        """Leave the cluster: no new work, master role given up, tasks finished or handed back."""
        if self.rpc is not None:
            await self.rpc.set_serving(False)  # balancers and probes drain this node first
        self.heartbeat.draining = True
        with contextlib.suppress(Exception):
            await self.heartbeat.tick()  # no new work for this node, and it stands for nothing
        await asyncio.gather(*(cancel_and_wait(t) for t in self._loops if t.get_name() in ("election", "worker")))
        await self.election.leave()
        if self.config.run_tasks:
            try:
                await self.executor.close(grace)
            except Exception as exc:
                log.warning("could not hand back unfinished tasks: %s", exc)
        # Beats go on (marked draining) until the tasks are done: a silent node would be declared dead and
        # its tasks run a second time elsewhere while they still run here.
        await asyncio.gather(*(cancel_and_wait(t) for t in self._loops if t.get_name() in ("heartbeat", "fence")))
        with contextlib.suppress(Exception):
            await self.registry.forget(self.config.name)
        self.tasks.close()

    async def _close(self) -> None:
        if self.http is not None:
            self.http.should_exit = True
        if self.rpc is not None:
            await self.rpc.stop(1.0)
        if self.proxy is not None:
            await self.proxy.close()
        await asyncio.gather(*(cancel_and_wait(t) for t in self._loops if t.get_name() != "http"))
        await asyncio.gather(*self._loops, return_exceptions=True)
        if hasattr(self, "pool"):
            await self.pool.close()  # after the executor: its attempts have ended or were stopped
        await self._http_client.aclose()
        await self._webhook_client.aclose()
        if hasattr(self, "cache"):
            await self.cache.close()
        if hasattr(self, "peers"):
            await self.peers.close()
        if self.redis is not None:
            await self.redis.aclose()
        if self.embedded is not None:
            await asyncio.to_thread(self.embedded.stop)


async def run_node(config: NodeConfig) -> None:
    """Run a node until SIGTERM or SIGINT; a second signal cuts the grace period short."""
    node = Node(config)
    supervision = Supervision.from_environ()  # systemd's notify socket and watchdog, when run as a service
    stop = asyncio.Event()
    hard = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal() -> None:
        (hard if stop.is_set() else stop).set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)
    try:
        await node.start()
        if supervision is not None:
            supervision.attach(node)
        await node.serve(stop)
    finally:
        if supervision is not None:
            await supervision.stopping(node, config.shutdown_grace)
        hurry = asyncio.create_task(hard.wait())
        hurry.add_done_callback(lambda _: node.hurry())
        try:
            await node.stop()
        finally:
            hurry.cancel()
            if supervision is not None:
                await supervision.close()
