"""A target is text: tabs and newlines are the user's business (``echo`` keeps them); NUL and lone
surrogates are refused for every type; a type's own validator decides the rest (``fetch`` wants a URL)."""

from __future__ import annotations

import pytest

from shoal.errors import InvalidInput
from shoal.validation import task_spec
from shoal.worker.handlers import fetch


@pytest.mark.parametrize("target", ["line one\nline two", "a\tb", "naïve ☃", "line\u2028separator"])
def test_a_text_target_keeps_every_character(target: str) -> None:
    assert task_spec({"name": "n", "type": "echo", "target": target}).target == target


@pytest.mark.parametrize(("target", "says"), [("a\x00b", "NUL"), ("a\ud800b", "UTF-8")])
def test_nul_and_lone_surrogates_are_refused_for_every_type(target: str, says: str) -> None:
    with pytest.raises(InvalidInput, match=says):
        task_spec({"name": "n", "type": "echo", "target": target})


@pytest.mark.parametrize("target", ["http://a/\nb", "http://a/\tb"])
def test_fetch_refuses_what_is_not_a_url(target: str) -> None:
    spec = task_spec({"name": "n", "type": "fetch", "target": target})  # text: accepted in general
    with pytest.raises(InvalidInput, match="not a valid URL"):
        fetch.validate(spec.target, spec.params)


@pytest.mark.parametrize(
    ("run_at", "seconds"),
    [
        ("2026-12-06T10:00:00Z", 1796551200.0),
        ("2026-12-06t11:00:00.250+01:00", 1796551200.25),
        ("2026-12-06 10:00:00z", 1796551200.0),
        (1796551200, 1796551200.0),
        (0.5, 0.5),
    ],
)
def test_run_at_reads_epoch_seconds_or_an_rfc_3339_date_time(run_at: object, seconds: float) -> None:
    spec = task_spec({"name": "n", "type": "echo", "target": "t", "run_at": run_at})
    assert spec.run_at == seconds and spec.delay_s is None


@pytest.mark.parametrize(
    ("fields", "says"),
    [
        ({"run_at": "2026-12-06T10:00:00"}, "offset"),
        ({"run_at": "2026-12-06"}, "RFC 3339"),
        ({"run_at": "Sun, 06 Dec 2026 10:00:00 GMT"}, "RFC 3339"),
        ({"run_at": "2026-13-01T10:00:00Z"}, "not a date-time"),
        ({"run_at": -1}, "after 1970"),
        ({"run_at": float("nan")}, "after 1970"),
        ({"run_at": 1796551200000}, "milliseconds"),
        ({"run_at": [1]}, "run_at must be"),
        ({"delay_s": "2y"}, "delay_s"),
        ({"delay_s": 366 * 86400}, "a year"),
    ],
)
def test_bad_run_at_and_delay_s_are_refused(fields: dict[str, object], says: str) -> None:
    with pytest.raises(InvalidInput, match=says):
        task_spec({"name": "n", "type": "echo", "target": "t", **fields})


def test_delay_s_takes_seconds_or_a_duration() -> None:
    assert task_spec({"name": "n", "type": "echo", "target": "t", "delay_s": "15m"}).delay_s == 900.0
    assert task_spec({"name": "n", "type": "echo", "target": "t", "delay_s": 0}).delay_s == 0.0


def test_an_idempotency_key_is_taken_exactly_as_given() -> None:
    spec = task_spec({"name": "n", "type": "echo", "target": "t", "idempotency_key": " k é "})
    assert spec.idempotency_key == " k é "
    for key in ("", "k" * 201, "a\x7fb", ["k"]):
        with pytest.raises(InvalidInput, match="idempotency_key"):
            task_spec({"name": "n", "type": "echo", "target": "t", "idempotency_key": key})
