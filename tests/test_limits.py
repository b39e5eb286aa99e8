"""Limits, labels and priorities as config and submits read them, and the placing order with aging."""

from __future__ import annotations

import pytest

from shoal import config, validation
from shoal.cluster.scheduler import PRIORITY_AGING_S, _Pending, _rank
from shoal.errors import InvalidInput
from shoal.limits import Limit, Limits, TypeLimits, host_of


def test_limits_come_from_the_config_as_json_or_a_table() -> None:
    c = config.load(
        env={
            "SHOAL_LIMITS": '{"fetch": {"concurrency": 4, "rate_per_s": 10}, "report": {"key_concurrency": 1}}',
            "SHOAL_FETCH_HOSTS": '{"Example.org": {"rate_per_s": 20}}',
            "SHOAL_LABELS": "gpu=1, zone=eu-west-1a",
            "SHOAL_TYPE_REQUIRES": '{"render": {"gpu": "1"}}',
        }
    )
    limits = c.placement_limits()
    assert limits.types["fetch"] == TypeLimits(type=Limit(4, 10.0))
    assert limits.applying("report", "customer-7", None) == [("report#customer-7", Limit(1, 0.0))]
    assert limits.applying("report", None, None) == []
    assert limits.applying("fetch", None, "example.org") == [
        ("fetch", Limit(4, 10.0)),
        ("fetch:example.org", Limit(0, 20.0)),
    ]
    assert limits.applying("fetch", None, "other.org") == [
        ("fetch", Limit(4, 10.0)),
        ("fetch:other.org", Limit(2, 4.0)),
    ]
    assert c.node_labels == {"gpu": "1", "zone": "eu-west-1a"}
    assert c.type_requirements() == {"render": {"gpu": "1"}}


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"SHOAL_LIMITS": '{"fetch": {"concurrency": -1}}'}, "limits.fetch: concurrency must be a whole number"),
        ({"SHOAL_LIMITS": '{"fetch": {"rate": 1}}'}, "unknown key(s) rate"),
        ({"SHOAL_LIMITS": "[1, 2]"}, "not a JSON object or a TOML table"),
        ({"SHOAL_FETCH_HOSTS": '{"a.org": {"rate_per_s": "fast"}}'}, "fetch_hosts.a.org: rate_per_s must be a number"),
        ({"SHOAL_FETCH_HOST_CONCURRENCY": "-2"}, "fetch_host_concurrency"),
        ({"SHOAL_LABELS": "gpu"}, "'gpu' is not NAME=VALUE"),
        ({"SHOAL_LABELS": "gpu=a b"}, "the value of gpu must be"),
        ({"SHOAL_TYPE_REQUIRES": '{"render": {"gpu": 1}}'}, "type_requires.render: the value of gpu"),
    ],
)
def test_bad_limits_and_labels_are_refused_naming_the_option(env: dict[str, str], message: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        config.load(env=env)
    assert message in refused.value.message


def test_a_node_without_limits_still_holds_fetches_to_two_per_host() -> None:
    limits = config.load(env={}).placement_limits()
    assert limits.limited_types() == {"fetch"}
    assert config.load(env={"SHOAL_FETCH_HOST_CONCURRENCY": "0", "SHOAL_FETCH_HOST_RATE_PER_S": "0"}).placement_limits(
    ).limited_types() == set()  # fmt: skip
    assert Limits().applying("echo", "k", None) == []


@pytest.mark.parametrize(
    ("url", "host"),
    [
        ("http://Example.ORG/a", "example.org"),
        ("https://example.org:443/a", "example.org"),
        ("HTTP://example.org:80/", "example.org"),
        ("http://127.0.0.1:8081/x", "127.0.0.1:8081"),
        ("http://[::1]:8080/", "[::1]:8080"),
        ("not a url", None),
    ],
)
def test_a_fetch_host_is_keyed_without_the_schemes_own_port(url: str, host: str | None) -> None:
    assert host_of(url) == host


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("priority", 12, "priority must be a whole number from 0 (lowest) to 9 (highest)"),
        ("priority", 4.5, "priority must be a whole number"),
        ("priority", True, "priority must be a whole number"),
        ("requires", ["gpu"], "requires must be an object of label to value"),
        ("requires", {"gpu": 1}, "the value of gpu must be a string"),
        ("requires", {"-x": "1"}, "is not a label name"),
        ("concurrency_key", "", "concurrency_key must be a non-empty string"),
        ("concurrency_key", "a\nb", "control characters"),
        ("concurrency_key", "k" * 201, "the limit is 200"),
    ],
)
def test_bad_placement_fields_are_refused(field: str, value: object, message: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        validation.task_spec({"name": "t", "type": "echo", "target": "x", field: value})
    assert message in refused.value.message


def _queued(priority: int, seconds_ago: float, now_ms: int = 1_800_000_000_000) -> _Pending:
    return _Pending("id", "echo", f"{now_ms - int(seconds_ago * 1000)}-0", priority=priority)


def test_priority_places_higher_first_then_older_and_ages_so_none_starves() -> None:
    fresh_high, fresh_low, older_low = _queued(9, 0), _queued(1, 0), _queued(1, 5)
    assert sorted([fresh_low, older_low, fresh_high], key=_rank) == [fresh_high, older_low, fresh_low]
    # A priority 0 task that has waited 9 levels' worth goes before a priority 9 task queued now.
    starved = _queued(0, 9 * PRIORITY_AGING_S + 1)
    assert sorted([fresh_high, starved], key=_rank) == [starved, fresh_high]
