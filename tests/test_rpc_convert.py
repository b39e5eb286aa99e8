"""protobuf <-> models, and gRPC input refused exactly as REST refuses it (no node needed)."""

from __future__ import annotations

import dataclasses
import uuid
from typing import Any

import pytest

from shoal import validation
from shoal.errors import InvalidInput
from shoal.models import DEFAULT_MAX_LOST_ATTEMPTS, Attempt, Task, TaskEvent, TaskPage, TaskResult, TaskSpec, TaskState
from shoal.rpc import convert
from shoal.rpc.convert import pb

TASK = Task(
    id=str(uuid.uuid4()),
    name="page",
    type="fetch",
    target="http://127.0.0.1:9/hello",
    params={"n": 3, "ratio": 0.5, "tags": ["a"], "deep": {"x": None}},
    state=TaskState.RUNNING,
    node="node-1",
    attempts=2,
    max_retries=3,
    timeout_s=12.5,
    created_at=1700000000.25,
    started_at=1700000001.5,
    finished_at=None,
    error=None,
    history=(
        Attempt(1, "node-2", 1700000000.5, 1700000001.0, "node lost", "node-2 stopped beating"),
        Attempt(
            2, "node-3", 1700000001.0, 1700000001.25, "crashed", "crashed: worker process killed by SIGSEGV",
            wall_s=0.25, cpu_s=0.125, max_rss_bytes=6 * 2**30, signal="SIGSEGV",
        ),
        Attempt(3, "node-3", 1700000001.3, 1700000001.4, "crashed", "crashed: exit code 0", exit_code=0, cpu_s=0.0),
        Attempt(4, "node-1", 1700000001.5),
    ),
    max_lost_attempts=4,
    lost_attempts=3,
    attempts_dropped=2,
    memory_mb=512,
    cpu_s_limit=2.5,
)  # fmt: skip


def test_task_round_trips_with_unset_fields_kept_unset() -> None:
    msg = convert.task_to_proto(TASK)
    assert msg.state == pb.Task.RUNNING
    assert not msg.HasField("finished_at") and not msg.HasField("error")
    assert not msg.history[-1].HasField("outcome")
    assert not any(msg.history[-1].HasField(f) for f in ("wall_s", "cpu_s", "max_rss_bytes", "exit_code", "signal"))
    assert msg.history[2].HasField("exit_code") and msg.history[2].HasField("cpu_s")  # zero is a figure, not unset
    assert (msg.max_lost_attempts, msg.lost_attempts, msg.attempts_dropped) == (4, 3, 2)
    assert (msg.memory_mb, msg.cpu_s_limit) == (512, 2.5)
    wire = pb.Task.FromString(msg.SerializeToString())
    assert convert.task_from_proto(wire) == TASK


def test_fresh_task_has_no_node_or_times() -> None:
    fresh = Task(
        id=TASK.id, name="n", type="fetch", target="t", params={}, state=TaskState.WAITING, node=None,
        attempts=0, max_retries=0, timeout_s=None, created_at=1.0, started_at=None, finished_at=None, error=None,
    )  # fmt: skip
    msg = convert.task_to_proto(fresh)
    assert msg.params_json == "{}"
    assert not any(msg.HasField(f) for f in ("node", "timeout_s", "started_at", "finished_at", "error"))
    assert not msg.HasField("memory_mb") and not msg.HasField("cpu_s_limit")  # unset: the type's, or the node's
    assert convert.task_from_proto(msg) == fresh
    msg.ClearField("max_lost_attempts")  # as an older server sends it
    assert convert.task_from_proto(msg).max_lost_attempts == DEFAULT_MAX_LOST_ATTEMPTS


def test_result_event_and_page_round_trip() -> None:
    result = TaskResult(TASK.id, "<html>é</html>", "node-1", 2, 1700000002.0, {"status": 200}, duplicates=1)
    wire = convert.result_to_proto(result).SerializeToString()
    assert convert.result_from_proto(pb.TaskResult.FromString(wire)) == result
    event = TaskEvent(TASK.id, TaskState.KILLED, None, 5.0)
    assert convert.event_from_proto(convert.event_to_proto(event)) == event
    page = TaskPage([TASK], total=7, next_cursor="42")
    assert convert.page_from_proto(convert.page_to_proto(page)) == page
    last = TaskPage([], total=0, next_cursor=None)
    assert convert.page_from_proto(convert.page_to_proto(last)) == last


def test_undecodable_text_is_sent_as_valid_utf8() -> None:
    source = b"ok \xff\xfe end".decode("utf-8", "surrogateescape")
    result = TaskResult(TASK.id, source, "node-1", 1, 1.0)
    wire = convert.result_to_proto(result).SerializeToString()
    assert pb.TaskResult.FromString(wire).code == "ok ?? end"


def test_spec_round_trips() -> None:
    spec = TaskSpec(name="page", type="fetch", target="http://127.0.0.1:9/", params={"n": 1}, timeout_s=5.0)
    assert convert.spec_from_proto(convert.spec_to_proto(spec)) == spec
    quarantined_soon = TaskSpec(name="page", type="fetch", target="t", max_lost_attempts=1)
    assert convert.spec_from_proto(convert.spec_to_proto(quarantined_soon)) == quarantined_soon
    bounded = TaskSpec(name="page", type="fetch", target="t", memory_mb=64, cpu_s_limit=0.5)
    assert convert.spec_from_proto(convert.spec_to_proto(bounded)) == bounded
    whole = convert.spec_from_proto(pb.TaskSpec(name="n", type="f", target="t", memory_mb=1024, cpu_s_limit=30))
    assert (whole.memory_mb, whole.cpu_s_limit) == (1024, 30.0) and isinstance(whole.cpu_s_limit, float)
    bare = pb.TaskSpec(name=" page ", type="fetch", target="http://127.0.0.1:9/")
    assert convert.spec_from_proto(bare) == TaskSpec(name="page", type="fetch", target="http://127.0.0.1:9/")


#: Task limits out of range, refused alike by REST and gRPC.
BAD_LIMITS = [
    ("memory_mb", 63), ("memory_mb", 2**20 + 1), ("memory_mb", -1),
    ("cpu_s_limit", 0), ("cpu_s_limit", -1.0), ("cpu_s_limit", 86_400.5), ("cpu_s_limit", float("nan")),
    ("cpu_s_limit", float("inf")),
]  # fmt: skip


@pytest.mark.parametrize(
    ("msg", "body"),
    [
        (pb.TaskSpec(type="fetch", target="t"), {"type": "fetch", "target": "t"}),
        (pb.TaskSpec(name="n", type="fetch"), {"name": "n", "type": "fetch"}),
        (pb.TaskSpec(name="n", target="t"), {"name": "n", "target": "t"}),
        (pb.TaskSpec(name="n", type="bad type!", target="t"), {"name": "n", "type": "bad type!", "target": "t"}),
        (pb.TaskSpec(name="n" * 201, type="f", target="t"), {"name": "n" * 201, "type": "f", "target": "t"}),
        (
            pb.TaskSpec(name="n", type="f", target="t", timeout_s=0),
            {"name": "n", "type": "f", "target": "t", "timeout_s": 0},
        ),
        (
            pb.TaskSpec(name="n", type="f", target="t", max_retries=-1),
            {"name": "n", "type": "f", "target": "t", "max_retries": -1},
        ),
        (
            pb.TaskSpec(name="n", type="f", target="t", max_lost_attempts=0),
            {"name": "n", "type": "f", "target": "t", "max_lost_attempts": 0},
        ),
        *(
            (pb.TaskSpec(name="n", type="f", target="t", **{k: v}), {"name": "n", "type": "f", "target": "t", k: v})
            for k, v in BAD_LIMITS
        ),
    ],
)
def test_spec_refusals_match_rest(msg: Any, body: dict[str, Any]) -> None:
    with pytest.raises(InvalidInput) as rest:
        validation.task_spec(body)
    with pytest.raises(InvalidInput) as rpc:
        convert.spec_from_proto(msg)
    assert rpc.value.message == rest.value.message


@pytest.mark.parametrize(
    ("params_json", "says"),
    [("[1]", "params_json must be a JSON object"), ("{", "params_json is not valid JSON"), ('"x"', "JSON object")],
)
def test_params_must_be_a_json_object(params_json: str, says: str) -> None:
    with pytest.raises(InvalidInput, match=says):
        convert.spec_from_proto(pb.TaskSpec(name="n", type="fetch", target="t", params_json=params_json))


def test_params_over_the_limit_are_refused() -> None:
    big = '{"x": "' + "a" * (validation.MAX_PARAMS_BYTES + 1) + '"}'
    with pytest.raises(InvalidInput, match="the limit is"):
        convert.spec_from_proto(pb.TaskSpec(name="n", type="fetch", target="t", params_json=big))


def test_ids_and_waits() -> None:
    tid = str(uuid.uuid4())
    assert convert.one_id(pb.ID(id=[tid.upper()])) == tid
    for bad, says in ((pb.ID(), "exactly one"), (pb.ID(id=[tid, tid]), "exactly one"), (pb.ID(id=["x"]), "malformed")):
        with pytest.raises(InvalidInput, match=says):
            convert.one_id(bad)
    assert convert.wait_from_proto(pb.ID(id=[tid])) is None
    assert convert.wait_from_proto(pb.ID(id=[tid], wait_s=60)) == 60
    for wait in (0.0, -1.0, 60.5, float("nan"), float("inf")):
        with pytest.raises(InvalidInput, match="wait_s"):
            convert.wait_from_proto(pb.ID(id=[tid], wait_s=wait))
    assert convert.watch_ids(pb.WatchRequest()) == frozenset()
    with pytest.raises(InvalidInput, match="malformed"):
        convert.watch_ids(pb.WatchRequest(id=["nope"]))


def test_query() -> None:
    assert convert.query_from_proto(pb.Query()) == (None, 50, None)
    query = pb.Query(state=[pb.Task.WAITING], limit=5, cursor="17")
    assert convert.query_from_proto(query) == (TaskState.WAITING, 5, "17")
    for query, says in (
        (pb.Query(state=[1, 2]), "one state at a time"),
        (pb.Query(state=[6]), "unknown state 6"),
        (pb.Query(limit=0), "limit must be between"),
        (pb.Query(limit=1001), "limit must be between"),
        (pb.Query(cursor="-1"), "malformed cursor"),
    ):
        with pytest.raises(InvalidInput, match=says):
            convert.query_from_proto(query)


def test_state_enum_matches_the_models() -> None:
    assert {s.name: s.value for s in TaskState} == dict(pb.Task.State.items())


# -- result_ttl_s: text in TaskSpec (seconds or a duration), seconds in Task ---------------------------


def test_result_ttl_reads_seconds_or_a_duration_and_the_task_shows_seconds() -> None:
    for text, seconds in (("900", 900.0), ("15m", 900.0), ("0.5", 0.5), ("1s", 1.0), ("12h", 43_200.0),
                          ("365d", validation.MAX_RESULT_TTL_S)):  # fmt: skip
        spec = convert.spec_from_proto(pb.TaskSpec(name="n", type="f", target="t", result_ttl_s=text))
        assert spec.result_ttl_s == seconds, text
    unset = convert.spec_from_proto(pb.TaskSpec(name="n", type="f", target="t"))
    assert unset.result_ttl_s is None

    kept = dataclasses.replace(TASK, result_ttl_s=900.0)
    msg = convert.task_to_proto(kept)
    assert msg.HasField("result_ttl_s") and msg.result_ttl_s == 900.0
    assert convert.task_from_proto(pb.Task.FromString(msg.SerializeToString())) == kept
    assert not convert.task_to_proto(TASK).HasField("result_ttl_s")
    assert convert.task_from_proto(convert.task_to_proto(TASK)).result_ttl_s is None


@pytest.mark.parametrize("seconds", [900.0, 0.5, 1 / 3, 1e-05, validation.MAX_RESULT_TTL_S])
def test_a_spec_with_result_ttl_round_trips(seconds: float) -> None:
    spec = TaskSpec(name="n", type="fetch", target="t", result_ttl_s=seconds)
    msg = convert.spec_to_proto(spec)
    assert "e" not in msg.result_ttl_s  # plain digits, which a duration takes, even for tiny values
    assert convert.spec_from_proto(pb.TaskSpec.FromString(msg.SerializeToString())) == spec


@pytest.mark.parametrize("text", ["soon", "0", "0s", "-5", "-1", "400d", "NaN", "inf", "", "15 minutes", "1e3"])
def test_result_ttl_refusals_match_rest(text: str) -> None:
    with pytest.raises(InvalidInput) as rest:
        validation.task_spec({"name": "n", "type": "f", "target": "t", "result_ttl_s": text})
    with pytest.raises(InvalidInput) as rpc:
        convert.spec_from_proto(pb.TaskSpec(name="n", type="f", target="t", result_ttl_s=text))
    assert rpc.value.message == rest.value.message and "result_ttl_s" in rpc.value.message


def test_run_at_and_delay_s_travel_as_text_and_read_as_rest_reads_them() -> None:
    for text, seconds in (("1796551200", 1796551200.0), ("1796551200.25", 1796551200.25),
                          ("2026-12-06T10:00:00Z", 1796551200.0)):  # fmt: skip
        spec = convert.spec_from_proto(pb.TaskSpec(name="n", type="f", target="t", run_at=text))
        assert spec.run_at == seconds, text
    delayed = convert.spec_from_proto(pb.TaskSpec(name="n", type="f", target="t", delay_s="90s"))
    assert delayed.delay_s == 90.0 and delayed.run_at is None
    assert convert.spec_from_proto(convert.spec_to_proto(delayed)) == delayed
    at = convert.spec_from_proto(pb.TaskSpec(name="n", type="f", target="t", run_at="1796551200.25"))
    assert convert.spec_from_proto(convert.spec_to_proto(at)) == at
    with pytest.raises(InvalidInput, match="RFC 3339"):
        convert.spec_from_proto(pb.TaskSpec(name="n", type="f", target="t", run_at="-5"))
