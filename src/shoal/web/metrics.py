"""Metrics the web layer adds to the node's Prometheus registry, served at ``/metrics``: HTTP requests of
the REST API, the use of this node's cache shard, and its forward proxy."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shoal.types import CacheAPI


class HttpMetrics:
    """ASGI middleware counting requests and timing them by method, route template and status.

    The route label is the template (``/api/v1/tasks/{task_id}``), never the raw path, so ids do not
    blow up the number of series; requests that match no route share the label ``unmatched``.
    """

    def __init__(self, app: ASGIApp, registry: CollectorRegistry) -> None:
        self.app = app
        self.requests = Counter(
            "shoal_http_requests",
            "HTTP requests answered, by method, route template and status.",
            ["method", "route", "status"],
            registry=registry,
        )
        self.latency = Histogram(
            "shoal_http_request_seconds",
            "Time to the first byte of the response, by method and route template.",
            ["method", "route"],
            registry=registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def timing_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                route = _route(scope)
                self.latency.labels(scope["method"], route).observe(time.perf_counter() - start)
            await send(message)

        try:
            await self.app(scope, receive, timing_send)
        finally:
            self.requests.labels(scope["method"], _route(scope), str(status)).inc()


def _route(scope: Scope) -> str:
    route = scope.get("route")
    path = getattr(route, "path_format", None)  # the template without its convertors: {task_id}, not {task_id:task_id}
    return path if isinstance(path, str) else "unmatched"


#: (stats key, metric name, help) of the shard's gauges and counters; counters get ``_total`` appended.
CACHE_GAUGES = (
    ("items", "shoal_cache_items", "Items in this node's cache shard."),
    ("bytes", "shoal_cache_bytes", "Bytes held by this node's cache shard."),
    ("capacity", "shoal_cache_capacity_bytes", "Bytes this node's cache shard may hold before it evicts."),
)
CACHE_COUNTERS = (
    ("hits", "shoal_cache_hits", "Reads this node's shard answered with a fresh value."),
    ("misses", "shoal_cache_misses", "Reads this node's shard could not answer."),
    ("evictions", "shoal_cache_evictions", "Items this node's shard dropped to stay within its capacity."),
    ("expired", "shoal_cache_expired", "Items this node's shard dropped when their time ran out."),
    ("fills", "shoal_cache_fills", "Misses this node filled for the cluster (one per collapsed group)."),
)


class CacheCollector(Collector):
    """Reads the shard's stats at scrape time, so the figures are never older than the scrape."""

    def __init__(self, cache: CacheAPI) -> None:
        self.cache = cache

    def collect(self) -> Iterator[Metric]:
        stats = self.cache.stats()
        for key, name, doc in CACHE_GAUGES:
            if key in stats:
                yield GaugeMetricFamily(name, doc, value=stats[key])
        for key, name, doc in CACHE_COUNTERS:
            if key in stats:
                yield CounterMetricFamily(name, doc, value=stats[key])

    def describe(self) -> Iterator[Metric]:
        """The families without reading the shard (registration must not call into the cache)."""
        for _, name, doc in CACHE_GAUGES:
            yield GaugeMetricFamily(name, doc)
        for _, name, doc in CACHE_COUNTERS:
            yield CounterMetricFamily(name, doc)


def register_cache_metrics(registry: CollectorRegistry, cache: CacheAPI) -> None:
    """Serve this node's shard stats as ``shoal_cache_*`` at ``/metrics``."""
    registry.register(CacheCollector(cache))


class ProxyCollector(Collector):
    """The forward proxy's counters (``ProxyServer.stats``) and open client connections, read at scrape time."""

    OUTCOMES = ("hit", "miss", "revalidated")
    EVENTS = ("tunnels", "unauthorized", "busy", "dropped", "refused", "errors")

    def __init__(self, stats: Callable[[], Mapping[str, int]], connections: Callable[[], int]) -> None:
        self.stats = stats
        self.connections = connections

    def collect(self) -> Iterator[Metric]:
        stats = self.stats()
        served = CounterMetricFamily(
            "shoal_proxy_requests", "Requests the proxy answered, by X-Cache outcome.", labels=["cache"]
        )
        for outcome in self.OUTCOMES:
            served.add_metric([outcome], stats.get(outcome, 0))
        yield served
        refused = CounterMetricFamily(
            "shoal_proxy_events",
            "CONNECT tunnels, refused credentials, clients turned away (busy) or pushed out before they "
            "authenticated (dropped), targets the access policy refused, errors.",
            labels=["event"],
        )  # fmt: skip
        for event in self.EVENTS:
            refused.add_metric([event], stats.get(event, 0))
        yield refused
        yield GaugeMetricFamily("shoal_proxy_connections", "Client connections open now.", value=self.connections())

    def describe(self) -> Iterator[Metric]:
        yield CounterMetricFamily("shoal_proxy_requests", "", labels=["cache"])
        yield CounterMetricFamily("shoal_proxy_events", "", labels=["event"])
        yield GaugeMetricFamily("shoal_proxy_connections", "")
