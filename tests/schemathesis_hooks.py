"""Hooks for the schemathesis run of ``test_openapi.py`` (loaded through ``SCHEMATHESIS_HOOKS``).

They keep the fuzzer's traffic on loopback and its run short, without changing what it checks: a case the
document allows stays allowed, and one it refuses stays refused.

- a ``fetch`` task, submitted alone or in a batch, fetches nothing but loopback: a target the document
  allows (a host name) is moved to the test's own origin (``ORIGIN_ENV``, ``host:port`` of a loopback
  server; same scheme and path, still allowed); one the document refuses but the node would still fetch off
  loopback (an IP literal, say) drops the case; any other is left as it is (refused, or on loopback);
- a valid long poll (``?wait=``) waits at most ``MAX_WAIT_S``, and a valid ``echo`` task at most
  ``MAX_DELAY_S``: a minute-long wait or an hour-long task is as valid as a short one, only slower;
- a batch the document allows holds at most ``MAX_BATCH_TASKS`` tasks: a thousand is as valid as a few;
- a ``result_ttl_s`` string the document's pattern allows but out of range (``0s``, ``400d``) becomes ``1s``,
  and so does a ``delay_s`` string past a year;
- a ``run_at`` the document allows but the node refuses (a date-time that does not exist, such as month 73,
  or a time more than a year ahead, which a document cannot say) becomes the present time, as epoch seconds.
- a schedule's ``cron`` or ``timezone`` the document allows but the node refuses (``61 * * * *``, a zone no
  one named: a pattern cannot say) becomes ``@every 1h`` or ``UTC``; its task template is held to the task
  rules above (a template without a name is named as the node names it, after the schedule).
- a task's ``depends_on`` and ``ref`` the document allows are dropped: which tasks exist (a parent must) and
  which refs a batch holds (each once, naming no task twice, in no cycle) a document cannot say;
- an event stream's ``Last-Event-ID`` header that its documented pattern refuses, in a case meant to be valid
  (schemathesis's coverage phase makes such header values), becomes a valid event id;
- a webhook's ``url`` the document allows becomes the test's origin (its POSTs stay on loopback, which the
  fuzzed node allows webhooks); a ``secret`` it allows but the node refuses (``whsec_`` and not base64 of 24
  to 64 bytes) becomes a valid one; a replay's ``since`` it allows but the node refuses (text that is no time,
  a time ahead) becomes 0.

The same rules apply to the cases of the examples phase, which schemathesis builds without the case hooks
(``before_add_examples`` sees them instead).
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import schemathesis

from shoal import cron, validation, workflows
from shoal.errors import InvalidInput
from shoal.event_ids import EVENT_ID_PATTERN
from shoal.web.schemas import FETCH_URL_PATTERN
from shoal.webhooks import signing
from shoal.webhooks.model import since_time
from shoal.worker.handlers import echo, fetch

MAX_WAIT_S = 0.2
MAX_DELAY_S = 0.05
MAX_BATCH_TASKS = 5
BATCH_PATH = "/api/v1/tasks/batch"
SCHEDULES_PATH = "/api/v1/schedules"
WEBHOOKS_PATH = "/api/v1/webhooks"
EVENTS_PATH = "/api/v1/events"
REPLAY_SINCE_PATH = "/api/v1/webhooks/{webhook_id}/replay"
WEBHOOK_SECRET = "whsec_MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="
#: The environment variable that names the loopback origin (``localhost:port``) fetch targets move to.
ORIGIN_ENV = "SHOAL_FUZZ_ORIGIN"

_DOCUMENTED_TARGET = re.compile(FETCH_URL_PATTERN)
_DURATION = re.compile(validation.DURATION_PATTERN)
_REF = re.compile(workflows.REF_PATTERN)


def _loopback(url: Any) -> bool:
    try:
        host = urlsplit(str(url).strip()).hostname or ""
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _specs(case: Any) -> list[dict[str, Any]]:
    """The task objects in a submit's body: the body itself, or each task of a batch."""
    body = case.body
    if not isinstance(body, dict):
        return []
    if case.operation.path == BATCH_PATH:
        tasks = body.get("tasks")
        return [t for t in tasks if isinstance(t, dict)] if isinstance(tasks, list) else []
    if case.operation.path == SCHEDULES_PATH:  # a schedule's task template
        task = body.get("task")
        return [task] if isinstance(task, dict) else []
    return [body]


def _is_fetch(spec: dict[str, Any]) -> bool:
    kind = spec.get("type")
    return isinstance(kind, str) and kind.strip() == "fetch"


def _documented(target: Any) -> bool:
    """Whether the document allows ``target`` as a fetch target (JSON Schema's ``$`` ends the text)."""
    return isinstance(target, str) and "\n" not in target and _DOCUMENTED_TARGET.match(target) is not None


def _node_would_fetch(spec: dict[str, Any]) -> bool:
    """Whether the node would take ``spec`` as a fetch task (and so fetch its target); a schedule's template
    without a name is named after its schedule, so any name stands for it here."""
    try:
        checked = validation.task_spec(spec if "name" in spec else {**spec, "name": "template"})
        fetch.validate(checked.target, checked.params)
    except InvalidInput:
        return False
    return True


def _fetches_off_loopback(spec: dict[str, Any]) -> bool:
    """A fetch that would leave the machine even after ``_keep_on_loopback``."""
    target = spec.get("target")
    return _is_fetch(spec) and not _loopback(target) and not _documented(target) and _node_would_fetch(spec)


def _keep_on_loopback(spec: dict[str, Any], origin: str) -> None:
    """Move a documented fetch target to ``origin`` (on loopback), keeping its scheme and path."""
    target = spec.get("target")
    if _is_fetch(spec) and _documented(target):
        parts = urlsplit(str(target))
        spec["target"] = parts._replace(netloc=origin).geturl()


@schemathesis.hook
def filter_case(context: Any, case: Any) -> bool:
    """No fetch of anything but loopback."""
    return not any(_fetches_off_loopback(spec) for spec in _specs(case))


@schemathesis.hook
def before_add_examples(context: Any, examples: list[Any]) -> None:
    """The examples phase's cases, filtered and mapped as ``filter_case`` and ``map_case`` do the others."""
    examples[:] = [map_case(context, case) for case in examples if filter_case(context, case)]


@schemathesis.hook
def map_case(context: Any, case: Any) -> Any:
    """Fetches on loopback, short waits, short echo tasks and small batches."""
    query, body = case.query, case.body
    if isinstance(query, dict) and _between(query.get("wait"), MAX_WAIT_S, validation.MAX_WAIT_S):
        query["wait"] = MAX_WAIT_S
    if case.operation.path == BATCH_PATH and isinstance(body, dict):
        tasks = body.get("tasks")
        if isinstance(tasks, list) and MAX_BATCH_TASKS < len(tasks) <= validation.MAX_BATCH:
            body["tasks"] = _fewer(tasks)
    if case.operation.path == SCHEDULES_PATH and isinstance(body, dict):
        _allowed_schedule(body)
    origin = os.environ.get(ORIGIN_ENV) or f"localhost:{urlsplit(case.operation.schema.get_base_url()).port}"
    if case.operation.path == WEBHOOKS_PATH and isinstance(body, dict):
        _allowed_webhook(body, origin)
    if case.operation.path == REPLAY_SINCE_PATH and isinstance(body, dict):
        since = body.get("since")
        number = isinstance(since, int | float) and not isinstance(since, bool) and since >= 0  # as documented
        if (isinstance(since, str) or number) and _refused(_since, since):
            body["since"] = 0
    _valid_resume(case)
    for spec in _specs(case):
        _keep_on_loopback(spec, origin)
        _no_parents(spec)
        params = spec.get("params")
        if isinstance(params, dict) and _between(params.get("delay_s"), MAX_DELAY_S, echo.MAX_DELAY_S):
            params["delay_s"] = MAX_DELAY_S
        if _documented_but_refused(spec.get("result_ttl_s"), validation.result_ttl):
            spec["result_ttl_s"] = "1s"
        if _documented_but_refused(spec.get("delay_s"), validation.delay_s):
            spec["delay_s"] = "1s"
        at = spec.get("run_at")
        if (isinstance(at, str) and re.match(validation.RFC3339_PATTERN, at) or _between(at, 0, math.inf)) and (
            _documented_but_refused(at, validation.run_at, duration=False)
        ):
            spec["run_at"] = time.time()
    return case


def _no_parents(spec: dict[str, Any]) -> None:
    """Drop the parents and ref of a task where the document allows them (see the module's doc)."""
    parents = spec.get("depends_on")
    if (
        isinstance(parents, list)
        and len(parents) <= workflows.MAX_PARENTS
        and len(set(map(str, parents))) == len(parents)
    ):
        if all(isinstance(p, str) and _REF.fullmatch(p) for p in parents):
            spec.pop("depends_on")
    if isinstance(spec.get("ref"), str) and _REF.fullmatch(spec["ref"]):
        spec.pop("ref")


def _documented_but_refused(value: Any, check: Callable[[Any], Any], *, duration: bool = True) -> bool:
    """A value the document allows (for a duration, a string its pattern allows) that the node refuses
    (``0s``, ``400d``, month 73): a document cannot say "at most a year", so such a case is made an allowed
    one."""
    if duration and (not isinstance(value, str) or _DURATION.fullmatch(value) is None):
        return False
    try:
        check(value)
    except InvalidInput:
        return True
    return False


def _fewer(tasks: list[Any]) -> list[Any]:
    """At most ``MAX_BATCH_TASKS`` of ``tasks``, the one the node refuses first among them (if any), so that a
    refused batch stays refused."""
    refused = next((i for i, task in enumerate(tasks) if not _node_would_take(task)), None)
    if refused is None or refused < MAX_BATCH_TASKS:
        return tasks[:MAX_BATCH_TASKS]
    return [*tasks[: MAX_BATCH_TASKS - 1], tasks[refused]]


def _node_would_take(task: Any) -> bool:
    """Whether the node's own checks (those it makes before the type's) take ``task``."""
    try:
        validation.task_spec(task)
    except InvalidInput:
        return False
    return True


def _between(value: Any, low: float, high: float) -> bool:
    """Whether ``value`` is a valid number above ``low``: one the fuzzer meant to be accepted (an invalid one
    is left as it is, to be refused)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and low < value <= high


def _allowed_schedule(body: dict[str, Any]) -> None:
    """A ``cron`` and a ``timezone`` the document allows but the node refuses become ones it takes."""
    expr, zone = body.get("cron"), body.get("timezone")
    if isinstance(expr, str) and 0 < len(expr) <= cron.MAX_CRON_CHARS and expr.strip() and _refused(cron.parse, expr):
        body["cron"] = "@every 1h"
    if isinstance(zone, str) and re.fullmatch(r"[A-Za-z0-9_+./-]{0,64}", zone) and _refused(cron.zone, zone):
        body["timezone"] = "UTC"


def _valid_resume(case: Any) -> None:
    """A case meant to be valid whose ``Last-Event-ID`` the documented pattern refuses (the coverage phase
    makes such header values) resumes after a valid event id instead."""
    mode = getattr(getattr(getattr(case, "meta", None), "generation", None), "mode", None)
    resume = case.headers.get("Last-Event-ID") if case.operation.path == EVENTS_PATH and case.headers else None
    if str(getattr(mode, "value", mode)) == "positive" and isinstance(resume, str):
        if not re.fullmatch(EVENT_ID_PATTERN, resume):
            case.headers["Last-Event-ID"] = "0-0/0"


def _allowed_webhook(body: dict[str, Any], origin: str) -> None:
    """A documented ``url`` moves to ``origin``; a documented ``secret`` the node refuses becomes a valid one."""
    url, secret = body.get("url"), body.get("secret")
    if isinstance(url, str) and len(url) <= 2048 and re.match(r"\s*\S", url):
        body["url"] = f"http://{origin}/hook"
    if isinstance(secret, str) and secret.startswith("whsec_") and _refused(signing.check_secret, secret):
        body["secret"] = WEBHOOK_SECRET


def _since(value: Any) -> float:
    return since_time(value, time.time())


def _refused(check: Callable[[Any], Any], value: Any) -> bool:
    try:
        check(value)
    except InvalidInput:
        return True
    return False
