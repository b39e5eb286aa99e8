"""Named schedules on a real node, through every door: REST, the Python clients, gRPC and the CLI. A schedule
is added, listed, shown, paused, resumed and removed the same way through each; its master fires it (each
run a task carrying the schedule and its tick); and bad input (an invalid cron expression, a time zone that
does not exist, a bad catch_up, a task a submit would refuse, a duplicate name, an unknown name) is refused
with what is wrong and changes nothing. (tests/test_schedules.py has the tick math and the store's scripts;
tests/cluster/test_schedules.py kills masters while a schedule fires.)"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import httpx
import orjson
import pytest

from shoal.client import AsyncClient, Client
from shoal.errors import InvalidInput, ScheduleExists, ScheduleNotFound, UnknownTaskType
from shoal.rpc.client import open_channel
from shoal.rpc.convert import sched_grpc, sched_pb
from shoal.testing import TestNode, multiplier, wait_for

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[1]
ECHO = {"type": "echo", "target": "tick"}


@pytest.fixture
def api(shoal_node: TestNode) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=shoal_node.http_url, headers=shoal_node.headers(), timeout=30.0) as client:
        yield client


def add(api: httpx.Client, **fields: Any) -> dict[str, Any]:
    response = api.post("/api/v1/schedules", json={"name": "every", "cron": "@every 1s", "task": ECHO, **fields})
    assert response.status_code == 201, response.text
    added: dict[str, Any] = response.json()
    return added


def shown(api: httpx.Client, name: str) -> dict[str, Any]:
    response = api.get(f"/api/v1/schedules/{name}")
    assert response.status_code == 200, response.text
    found: dict[str, Any] = response.json()
    return found


def test_a_schedule_fires_pauses_resumes_and_is_removed_over_rest(api: httpx.Client) -> None:
    added = add(api, timezone="Europe/Paris", overlap="skip")
    assert added["timezone"] == "Europe/Paris" and added["catch_up"] == "skip" and added["overlap"] == "skip"
    assert added["task"] == {**ECHO, "name": "every"} and added["paused"] is False and added["runs"] == []
    assert len(added["next_fire_times"]) == 3 and added["next_fire_at"] == added["next_fire_times"][0]
    assert [s["name"] for s in api.get("/api/v1/schedules").json()["schedules"]] == ["every"]

    fired = wait_for(lambda: len((s := shown(api, "every"))["runs"]) >= 2 and s, 15 * multiplier(), "two runs")
    runs = [r for r in fired["runs"] if "task_id" in r]
    assert runs, fired["runs"]  # echo ends at once: overlap "skip" skips few ticks, if any
    for run in runs:
        task = api.get(f"/api/v1/tasks/{run['task_id']}").json()
        assert (task["name"], task["schedule"], task["tick"]) == ("every", "every", run["tick"])
        assert run["fired_at"] - run["tick"] < 1.0 + multiplier()
    ticks = [r["tick"] for r in fired["runs"]]
    assert ticks == sorted(ticks, reverse=True) and len(set(ticks)) == len(ticks)
    assert fired["last_tick"] == ticks[0]

    paused = api.post("/api/v1/schedules/every/pause").json()
    assert paused["paused"] is True and paused["next_fire_at"] is None and paused["next_fire_times"] == []
    settled = shown(api, "every")["last_tick"]  # a tick being fired as the pause came may still land
    time.sleep(0.3)
    still = shown(api, "every")["last_tick"]
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline:  # no tick fires while paused
        assert shown(api, "every")["last_tick"] == still, (settled, still)
        time.sleep(0.2)
    resumed = api.post("/api/v1/schedules/every/resume").json()
    assert resumed["paused"] is False and resumed["next_fire_at"] > time.time() - 1
    wait_for(lambda: shown(api, "every")["last_tick"] > still, 15 * multiplier(), "a tick after resume")

    assert api.delete("/api/v1/schedules/every").status_code == 204
    assert api.get("/api/v1/schedules/every").status_code == 404
    assert api.get(f"/api/v1/tasks/{runs[0]['task_id']}").status_code == 200  # its tasks stay
    assert api.get("/api/v1/schedules").json() == {"schedules": []}


#: Bad schedules: each with the status and the words of its refusal.
BAD = [
    ({"cron": "61 * * * *"}, 400, "invalid cron expression '61 * * * *'"),
    ({"cron": "* * *"}, 400, "5 fields"),
    ({"cron": "@every 0s"}, 400, "at least 1s"),
    ({"timezone": "Mars/Olympus_Mons"}, 400, "no time zone is named 'Mars/Olympus_Mons'"),
    ({"catch_up": "all"}, 400, "catch_up must be one of skip, run_once"),
    ({"overlap": "never"}, 400, "overlap must be one of allow, skip"),
    ({"name": "no spaces"}, 400, "is not valid"),
    ({"task": {"type": "echo"}}, 400, "target is required"),
    ({"task": {"type": "teleport", "target": "x"}}, 400, "unknown task type 'teleport'"),
    ({"task": {"type": "fetch", "target": "http://169.254.169.254/"}}, 400, "link-local"),
    ({"task": {**ECHO, "run_at": 1}}, 400, "task.run_at is not allowed"),
    ({"every": "1s"}, 400, "unknown field(s): every"),
]


def test_bad_input_is_refused_with_what_is_wrong_and_stores_nothing(api: httpx.Client) -> None:
    for body, status, words in BAD:  # one node for all: a node start costs more than every case together
        response = api.post("/api/v1/schedules", json={"name": "bad", "cron": "@daily", "task": ECHO, **body})
        assert response.status_code == status, (body, response.text)
        assert words in response.json()["message"], (body, response.text)
    assert api.get("/api/v1/schedules").json() == {"schedules": []}


def test_a_taken_name_is_a_conflict_and_an_unknown_one_is_not_found(api: httpx.Client) -> None:
    add(api, cron="@daily")
    again = api.post("/api/v1/schedules", json={"name": "every", "cron": "@hourly", "task": ECHO})
    assert again.status_code == 409 and again.json()["error"] == "schedule_exists", again.text
    assert shown(api, "every")["cron"] == "@daily"
    for method, path in [("GET", ""), ("DELETE", ""), ("POST", "/pause"), ("POST", "/resume")]:
        missing = api.request(method, f"/api/v1/schedules/nope{path}")
        assert missing.status_code == 404 and missing.json()["error"] == "schedule_not_found", missing.text


async def test_the_clients_add_list_show_pause_resume_and_remove(shoal_node: TestNode) -> None:
    with Client(shoal_node.http_url, shoal_node.token) as c:
        added = c.add_schedule("sync", "*/5 * * * *", {"type": "echo", "target": "x"}, timezone="Asia/Tokyo",
                               catch_up="run_once")  # fmt: skip
        assert (added.spec.timezone, added.spec.catch_up, added.spec.overlap) == ("Asia/Tokyo", "run_once", "allow")
        assert added.next_fire_at is not None and int(added.next_fire_at) % 300 == 0
        assert [s.name for s in c.schedules()] == ["sync"]
        assert c.pause_schedule("sync").paused and c.schedule("sync").next_fire_at is None
        assert not c.resume_schedule("sync").paused
        with pytest.raises(ScheduleExists):
            c.add_schedule("sync", "@daily", {"type": "echo", "target": "x"})
        with pytest.raises(InvalidInput, match="no time zone"):
            c.add_schedule("other", "@daily", {"type": "echo", "target": "x"}, timezone="Nowhere/At_All")
        with pytest.raises(UnknownTaskType):
            c.add_schedule("other", "@daily", {"type": "teleport", "target": "x"})
        c.delete_schedule("sync")
        with pytest.raises(ScheduleNotFound):
            c.schedule("sync")
    async with AsyncClient(shoal_node.http_url, shoal_node.token) as ac:
        added = await ac.add_schedule("aio", "@every 1h30m", {"type": "echo", "target": "x"}, overlap="skip")
        assert added.spec.overlap == "skip" and added.next_fire_at is not None and int(added.next_fire_at) % 5400 == 0
        assert [s.name for s in await ac.schedules()] == ["aio"]
        assert (await ac.pause_schedule("aio")).paused
        assert not (await ac.resume_schedule("aio")).paused
        assert (await ac.schedule("aio")).spec.cron == "@every 1h30m"
        with pytest.raises(InvalidInput, match="invalid cron"):
            await ac.add_schedule("bad", "1 2 3 4 5 6 7", {"type": "echo", "target": "x"})
        await ac.delete_schedule("aio")
        with pytest.raises(ScheduleNotFound):
            await ac.delete_schedule("aio")
        with pytest.raises(InvalidInput):  # refused before it is sent
            await ac.schedule("../tasks")


async def test_grpc_serves_the_same_calls_with_the_same_checks(shoal_node: TestNode) -> None:
    channel = open_channel(shoal_node.grpc_addr, shoal_node.token)
    stub = sched_grpc.SchedulesStub(channel)
    try:
        spec = sched_pb.ScheduleSpec(name="g", cron="@every 1s", timezone="Europe/Paris",
                                     task_json=orjson.dumps(ECHO).decode(), overlap="skip")  # fmt: skip
        added = await stub.AddSchedule(spec)
        assert (added.name, added.timezone, added.catch_up, added.overlap) == ("g", "Europe/Paris", "skip", "skip")
        assert orjson.loads(added.task_json) == {**ECHO, "name": "g"} and len(added.next_fire_times) == 3
        listed = await stub.ListSchedules(sched_pb.ListSchedulesRequest())
        assert [s.name for s in listed.schedules] == ["g"]
        deadline = time.monotonic() + 15 * multiplier()
        while not (await stub.GetSchedule(sched_pb.ScheduleName(name="g"))).runs:
            assert time.monotonic() < deadline, "a run"
            await asyncio.sleep(0.1)
        got = await stub.GetSchedule(sched_pb.ScheduleName(name="g"))
        assert got.HasField("last_tick") and got.runs[0].tick == got.last_tick
        paused = await stub.PauseSchedule(sched_pb.ScheduleName(name="g"))
        assert paused.paused and not paused.HasField("next_fire_at") and not paused.next_fire_times
        assert not (await stub.ResumeSchedule(sched_pb.ScheduleName(name="g"))).paused

        task = orjson.dumps(ECHO).decode()
        refusals = [
            (sched_pb.ScheduleSpec(name="h", cron="61 * * * *", task_json=task),
             grpc.StatusCode.INVALID_ARGUMENT, "invalid cron expression"),
            (sched_pb.ScheduleSpec(name="h", cron="@daily", timezone="Mars/Base", task_json=task),
             grpc.StatusCode.INVALID_ARGUMENT, "no time zone"),
            (sched_pb.ScheduleSpec(name="h", cron="@daily", catch_up="every", task_json=task),
             grpc.StatusCode.INVALID_ARGUMENT, "catch_up"),
            (sched_pb.ScheduleSpec(name="h", cron="@daily", task_json="{not json"),
             grpc.StatusCode.INVALID_ARGUMENT, "task_json is not JSON"),
            (sched_pb.ScheduleSpec(name="g", cron="@daily", task_json=task),
             grpc.StatusCode.ALREADY_EXISTS, "exists already"),
        ]  # fmt: skip
        for bad, code, words in refusals:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.AddSchedule(bad)
            assert refused.value.code() == code and words in (refused.value.details() or ""), refused.value
        for call in (stub.GetSchedule, stub.PauseSchedule, stub.ResumeSchedule, stub.DeleteSchedule):
            with pytest.raises(grpc.aio.AioRpcError) as missing:
                await call(sched_pb.ScheduleName(name="nope"))
            assert missing.value.code() == grpc.StatusCode.NOT_FOUND, missing.value
        await stub.DeleteSchedule(sched_pb.ScheduleName(name="g"))
        assert not (await stub.ListSchedules(sched_pb.ListSchedulesRequest())).schedules
    finally:
        await channel.close()
    anonymous = open_channel(shoal_node.grpc_addr, None)
    try:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await sched_grpc.SchedulesStub(anonymous).ListSchedules(sched_pb.ListSchedulesRequest())
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    finally:
        await anonymous.close()


def test_the_cli_adds_lists_shows_pauses_resumes_and_removes(shoal_node: TestNode, tmp_path: Path) -> None:
    def shoal(*args: str) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SHOAL_")}
        env |= {"PYTHONPATH": str(ROOT / "src"), "NO_COLOR": "1", "COLUMNS": "200"}
        env |= {"SHOAL_API": shoal_node.http_url, "SHOAL_TOKEN": shoal_node.token}
        done = subprocess.run([sys.executable, "-m", "shoal", *args], cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=60 * multiplier())  # fmt: skip
        assert "Traceback" not in done.stderr, done.stderr
        return done

    added = shoal("schedule", "add", "report", "--cron", "*/5 * * * *", "--type", "echo", "--target", "hello",
                  "--tz", "Europe/Paris", "--catch-up", "run_once", "--overlap", "skip", "--params", '{"delay_s": 0}',
                  "--json")  # fmt: skip
    assert added.returncode == 0, added.stderr
    body = orjson.loads(added.stdout)
    assert (body["cron"], body["timezone"], body["catch_up"], body["overlap"]) == (
        "*/5 * * * *", "Europe/Paris", "run_once", "skip")  # fmt: skip
    assert body["task"] == {"type": "echo", "target": "hello", "params": {"delay_s": 0}, "name": "report"}
    listed = shoal("schedule", "list")
    assert listed.returncode == 0 and "report" in listed.stdout and "Europe/Paris" in listed.stdout, listed.stdout
    detail = shoal("schedule", "show", "report")
    assert detail.returncode == 0 and "next ticks" in detail.stdout and "run_once" in detail.stdout, detail.stdout
    paused = shoal("schedule", "pause", "report", "--json")
    assert paused.returncode == 0 and orjson.loads(paused.stdout)["paused"] is True
    resumed = shoal("schedule", "resume", "report")
    assert resumed.returncode == 0 and "active" in resumed.stdout
    for args, words in [
        (["--cron", "61 * * * *"], "invalid cron expression"),
        (["--cron", "@daily", "--tz", "Mars/Base"], "no time zone"),
        (["--cron", "@daily", "--params", "[1]"], "--params must be a JSON object"),
    ]:
        refused = shoal("schedule", "add", "other", "--type", "echo", "--target", "x", *args)
        assert refused.returncode == 2 and words in refused.stderr, (args, refused.stderr)
    bad_choice = shoal("schedule", "add", "other", "--cron", "@daily", "--type", "echo", "--target", "x",
                       "--catch-up", "always")  # fmt: skip
    assert bad_choice.returncode == 2 and "--catch-up" in bad_choice.stderr
    taken = shoal("schedule", "add", "report", "--cron", "@daily", "--type", "echo", "--target", "x")
    assert taken.returncode == 1 and "exists already" in taken.stderr, taken.stderr
    assert shoal("schedule", "rm", "report").returncode == 0
    gone = shoal("schedule", "show", "report")
    assert gone.returncode == 1 and "no schedule named 'report'" in gone.stderr, gone.stderr
