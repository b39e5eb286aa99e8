"""What attempts cost, per task type, at the node's ``/metrics``: to find the type that eats a node.

``shoal_attempt_cpu_seconds_total{type}`` is a counter, so ``rate()`` gives the cores each type keeps busy.
``shoal_attempt_max_rss_bytes{type}`` is a histogram of each attempt's peak RSS rather than a gauge: a gauge
holds one value per scrape, so the attempt that peaked between two scrapes would be lost, and a per-node
maximum never comes down and cannot be added up across nodes. The histogram keeps every attempt, sums across
nodes, and answers both "how big is this type's p99" (``histogram_quantile``) and "how many attempts of which
type went past 1 GiB" (the buckets), with ``_sum / _count`` for the mean.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

from shoal.models import Footprint

#: Peak RSS buckets: 16 MiB to 16 GiB, doubling; past that +Inf.
RSS_BUCKETS = tuple(float(16 * 2**20 * 2**k) for k in range(11))


class AttemptMetrics:
    """Registers the families once per registry; ``record`` after each attempt (unmeasured parts are skipped)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.cpu = Counter(
            "shoal_attempt_cpu_seconds",
            "CPU seconds (user + system) used by the attempts of each task type on this node, where measured.",
            ["type"],
            registry=registry,
        )
        self.rss = Histogram(
            "shoal_attempt_max_rss_bytes",
            "Peak resident memory of each attempt, by task type, where measured.",
            ["type"],
            registry=registry,
            buckets=RSS_BUCKETS,
        )

    def record(self, task_type: str, footprint: Footprint | None) -> None:
        """Count what one attempt of ``task_type`` cost; None (nothing measured) records nothing."""
        if footprint is None:
            return
        if footprint.cpu_s is not None:
            self.cpu.labels(task_type).inc(max(0.0, footprint.cpu_s))
        if footprint.max_rss_bytes is not None:
            self.rss.labels(task_type).observe(footprint.max_rss_bytes)
