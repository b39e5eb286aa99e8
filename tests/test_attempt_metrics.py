"""What attempts cost, per task type, as /metrics serves it."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from shoal.models import Footprint
from shoal.worker.metrics import AttemptMetrics

MiB = 2**20


def samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the served text, by (name, sorted labels)."""
    text = generate_latest(registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_cpu_seconds_add_up_and_peaks_fall_in_buckets_per_type() -> None:
    registry = CollectorRegistry()
    metrics = AttemptMetrics(registry)
    metrics.record("shout", Footprint(wall_s=2.0, cpu_s=1.5, max_rss_bytes=300 * MiB))
    metrics.record("shout", Footprint(cpu_s=0.25, max_rss_bytes=3 * 1024 * MiB))
    metrics.record("fetch", Footprint(wall_s=0.2))  # inline: nothing honest to count
    metrics.record("fetch", None)

    got = samples(registry)
    assert got[("shoal_attempt_cpu_seconds_total", (("type", "shout"),))] == 1.75
    assert ("shoal_attempt_cpu_seconds_total", (("type", "fetch"),)) not in got
    buckets = {
        float(dict(labels)["le"]): value
        for (name, labels), value in got.items()
        if name == "shoal_attempt_max_rss_bytes_bucket" and ("type", "shout") in labels
    }
    assert [buckets[n * MiB] for n in (256, 512, 2048, 4096)] == [0, 1, 1, 2] and buckets[float("inf")] == 2
    assert got[("shoal_attempt_max_rss_bytes_sum", (("type", "shout"),))] == 300 * MiB + 3 * 1024 * MiB
    assert ("shoal_attempt_max_rss_bytes_count", (("type", "fetch"),)) not in got
    text = generate_latest(registry).decode()
    assert "# TYPE shoal_attempt_cpu_seconds_total counter" in text
    assert "# TYPE shoal_attempt_max_rss_bytes histogram" in text
