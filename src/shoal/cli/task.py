"""``shoal task ...``: submit, list, show, kill, rm, result, watch and types, over the REST client only."""

from __future__ import annotations

import contextlib
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Any

import click
import orjson
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from shoal import validation
from shoal.cli import _output as o
from shoal.cli._api import BadInput, CommandError, api_options, client, handle_errors, json_option
from shoal.cli._watch import follow_events, wait_with_progress, watch_tasks
from shoal.client import Client
from shoal.errors import InvalidInput, ResultNotFound, ShoalError
from shoal.event_ids import parse_event_id
from shoal.models import Task, TaskState


@click.group("task")
@api_options
def task_group() -> None:
    """Submit and manage tasks."""


def parse_params(pairs: tuple[str, ...]) -> dict[str, Any]:
    """``K=V`` pairs; V is read as JSON when it parses (numbers, true, lists...), else kept as text."""
    params: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise BadInput(f"--param wants KEY=VALUE, got {pair!r}")
        try:
            value: Any = orjson.loads(raw)
        except orjson.JSONDecodeError:
            value = raw
        params[key.strip()] = value
    return params


#: Longest code ``submit --wait`` shows on its line; a longer one (a fetched page) is described instead.
INLINE_CODE_CHARS = 200


def _print_outcome(c: Client, task: Task, as_json: bool) -> None:
    """The final state and, for a SUCCEED task, its result's code (a function task's: its value, as JSON);
    exit 1 if the task did not succeed."""
    result = None
    if task.state == TaskState.SUCCEED:
        try:
            result = c.result(task.id)
        except ResultNotFound:
            result = None
    if as_json:
        o.print_json({"task": task.to_json(), "result": result.to_json() if result else None})
    elif result is not None and result.has_value:
        click.echo(f"{task.state.name}  value: {_code_text(task.id, orjson.dumps(result.value).decode())}")
    else:
        click.echo(outcome_line(task, result.code if result else None))
    if task.state != TaskState.SUCCEED:
        sys.exit(1)


def outcome_line(task: Task, code: str | None) -> str:
    """``SUCCEED  code: hello``, ``RUNTIME_ERROR  error: ...``: how a task ended, on one line."""
    if code is not None:
        return f"{task.state.name}  code: {_code_text(task.id, code)}"
    return f"{task.state.name}  error: {task.error}" if task.error else task.state.name


def _code_text(task_id: str, code: str) -> str:
    """The code itself when it is one short printable line; else its size, and how to get it whole."""
    if not code:
        return "(empty)"
    if len(code) <= INLINE_CODE_CHARS and code.isprintable():
        return code
    lines = len(code.splitlines())
    return f"{o.size(len(code.encode()))} in {lines} line{'s' * (lines != 1)} (shoal task result {task_id} prints it)"


def _json_argument(_ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
    """``--args`` (a JSON array) and ``--kwargs`` (a JSON object), read before anything is sent: malformed
    JSON or the wrong kind of value exits 2 with what is wrong."""
    if value is None:
        return None
    try:
        data = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise click.BadParameter(f"malformed JSON: {exc}") from None
    try:
        if param.name == "call_args":
            validation.call_arguments(data, None)
        else:
            validation.call_arguments(None, data)
    except InvalidInput as exc:
        raise click.BadParameter(exc.message) from None
    return data


def _checked_result_ttl(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    """``--result-ttl`` checked as the server checks ``result_ttl_s``, so a bad one exits 2 before anything is
    sent; the text itself is sent (the server reads ``15m`` as it reads ``900``)."""
    if value is not None:
        try:
            validation.result_ttl(value)
        except InvalidInput as exc:
            raise click.BadParameter(exc.message) from None
    return value


def _checked_delay(ctx: click.Context, param: click.Parameter, value: str | None) -> str | float | None:
    """``--delay`` and ``--at`` checked as the server checks ``delay_s`` and ``run_at`` (a bad one exits 2
    before anything is sent); ``--at`` in epoch seconds is sent as the number it is."""
    if value is None:
        return None
    try:
        if param.name == "run_at":
            number = value.replace(".", "", 1).isdigit()
            validation.run_at(float(value) if number else value)
            return float(value) if number else value
        validation.delay_s(value)
    except InvalidInput as exc:
        raise click.BadParameter(exc.message) from None
    return value


@task_group.command("submit")
@click.argument("task_type", metavar="TYPE", required=False)
@click.argument("target", required=False)
@click.option(
    "--from-file",
    "from_file",
    type=click.File("rb"),
    metavar="FILE",
    help="Submit the tasks of FILE instead, one JSON object per line as POST /api/v1/tasks takes it (blank lines "
    "skipped; - reads stdin), in batches of up to 1000; prints their ids.",
)
@click.option("--name", help="Task name [default: the type].")
@click.option("--param", "params", multiple=True, metavar="K=V", help="A parameter; repeat for more. V may be JSON.")
@click.option("--timeout", "timeout_s", type=float, metavar="S", help="Seconds the task may run in all.")
@click.option("--retries", type=int, default=0, show_default=True, help="Times to retry after a failure.")
@click.option(
    "--max-lost-attempts",
    type=click.IntRange(1, validation.MAX_LOST_ATTEMPTS),
    metavar="N",
    help="Attempts lost with their node or worker process before the task is quarantined [default: the cluster's].",
)
@click.option(
    "--memory-mb",
    type=click.IntRange(validation.MIN_MEMORY_MB, validation.MAX_MEMORY_MB),
    metavar="MIB",
    help="Memory (MiB) each attempt may add in its worker process; held to the type's bound "
    "[default: the type's, else the node's].",
)
@click.option(
    "--cpu-s-limit",
    type=click.FloatRange(0, validation.MAX_CPU_S_LIMIT, min_open=True),
    metavar="S",
    help="CPU seconds each attempt may use; held to the type's bound [default: the type's, else the node's].",
)
@click.option(
    "--result-ttl",
    "result_ttl",
    callback=_checked_result_ttl,
    metavar="DURATION",
    help="Keep the task and its result this long once it has ended, if less than the cluster's retention: "
    "seconds or a duration such as 90s, 15m, 12h or 7d (at most a year) [default: the cluster's retention].",
)
@click.option(
    "--delay",
    callback=_checked_delay,
    metavar="DURATION",
    help="Hold the task back this long (seconds or a duration such as 90s or 15m, at most a year).",
)
@click.option(
    "--at",
    "run_at",
    callback=_checked_delay,
    metavar="TIME",
    help="Hold the task back until TIME: an RFC 3339 date-time with its offset (2026-12-06T10:00:00Z) or "
    "epoch seconds.",
)
@click.option(
    "--idempotency-key",
    metavar="KEY",
    help="Submit at most once: a second submit with KEY within the cluster's idempotency window (a day by "
    "default) stores nothing and shows the first task.",
)
@click.option(
    "--priority",
    type=click.IntRange(0, 9),
    metavar="0-9",
    help="Placed before lower ones: 0 (lowest) to 9 (highest); default 5.",
)
@click.option(
    "--require",
    "requires",
    multiple=True,
    metavar="LABEL=VALUE",
    help="Run only on a node with this label (repeatable), e.g. --require gpu=1.",
)
@click.option(
    "--concurrency-key",
    metavar="KEY",
    help="The key the type's per-key limits count the task under (a customer id, say).",
)
@click.option(
    "--depends-on",
    "depends_on",
    multiple=True,
    metavar="ID",
    help="Run only once task ID has SUCCEEDED (repeatable); a parent that ends otherwise kills this task.",
)
@click.option(
    "--on-parent-failure",
    type=click.Choice(["kill", "run"]),
    help="What a parent ending otherwise than SUCCEED does: kill this task (default) or run it anyway.",
)
@click.option(
    "--args",
    "call_args",
    callback=_json_argument,
    metavar="JSON",
    help="A Python function task's positional arguments, as a JSON array (e.g. '[2, 3]'); TARGET may then be left out.",
)
@click.option(
    "--kwargs",
    "call_kwargs",
    callback=_json_argument,
    metavar="JSON",
    help="A Python function task's keyword arguments, as a JSON object (e.g. '{\"b\": 1}').",
)
@click.option("--wait", is_flag=True, help="Wait until the task ends; print its final state and result.")
@api_options
@json_option
@handle_errors
def submit(
    task_type: str,
    target: str,
    name: str | None,
    params: tuple[str, ...],
    timeout_s: float | None,
    retries: int,
    max_lost_attempts: int | None,
    memory_mb: int | None,
    cpu_s_limit: float | None,
    result_ttl: str | None,
    delay: str | None,
    run_at: str | float | None,
    idempotency_key: str | None,
    priority: int | None,
    requires: tuple[str, ...],
    concurrency_key: str | None,
    depends_on: tuple[str, ...],
    on_parent_failure: str | None,
    call_args: list[Any] | None,
    call_kwargs: dict[str, Any] | None,
    wait: bool,
    as_json: bool,
    from_file: IO[bytes] | None,
) -> None:
    """Submit a task of TYPE (e.g. fetch) on TARGET (e.g. a URL), a call of a Python function task with
    --args/--kwargs, or every task of --from-file."""
    if from_file is not None:
        given = {
            "TYPE": task_type,
            "TARGET": target,
            "--name": name,
            "--param": params,
            "--timeout": timeout_s,
            "--retries": retries,
            "--max-lost-attempts": max_lost_attempts,
            "--memory-mb": memory_mb,
            "--cpu-s-limit": cpu_s_limit,
            "--result-ttl": result_ttl,
            "--delay": delay,
            "--at": run_at,
            "--idempotency-key": idempotency_key,
            "--priority": priority is not None,
            "--require": requires,
            "--concurrency-key": concurrency_key,
            "--depends-on": depends_on,
            "--on-parent-failure": on_parent_failure,
            "--args": call_args is not None,
            "--kwargs": call_kwargs is not None,
            "--wait": wait,
        }
        clash = [flag for flag, value in given.items() if value]
        if clash:
            raise BadInput(f"--from-file takes each task's fields from its line; drop {', '.join(clash)}")
        submit_file(from_file, as_json)
        return
    call = call_args is not None or call_kwargs is not None
    if task_type is None or (target is None and not call):
        raise click.UsageError(f"Missing argument '{'TARGET' if task_type else 'TYPE'}' (or give --from-file)")
    with client() as c:
        task = c.submit(
            task_type,
            target or "",
            name=name,
            params=parse_params(params),
            timeout_s=timeout_s,
            max_retries=retries,
            max_lost_attempts=max_lost_attempts,
            memory_mb=memory_mb,
            cpu_s_limit=cpu_s_limit,
            result_ttl_s=result_ttl,
            run_at=run_at,
            delay_s=delay,
            idempotency_key=idempotency_key,
            priority=priority,
            requires=validation.label_pairs(requires, "--require") if requires else None,
            concurrency_key=concurrency_key,
            depends_on=[validation.task_id(p) for p in depends_on] or None,
            on_parent_failure=on_parent_failure,
            args=call_args,
            kwargs=call_kwargs,
        )
        if not wait:
            if as_json:
                o.print_json(task.to_json())
            else:
                o.out.print(o.task_detail(task))
            return
        if not as_json:
            click.echo(f"submitted {task.id}", err=True)
        final = wait_with_progress(c, task.id, show=not as_json)
        _print_outcome(c, final, as_json)


#: Tasks per request of ``submit --from-file``.
FILE_BATCH = validation.MAX_BATCH
_INDEX = re.compile(r"^tasks\[\d+\]: ")


def read_task_lines(stream: IO[bytes]) -> tuple[list[dict[str, Any]], list[int]]:
    """The task objects of a JSON Lines file and the line number of each; the first bad line is a BadInput
    that names it, raised before anything is sent. ``name`` defaults to the type, as on the command line."""
    specs: list[dict[str, Any]] = []
    lines: list[int] = []
    for number, raw in enumerate(stream, start=1):
        if not raw.strip():
            continue
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise BadInput(f"line {number}: malformed JSON: {exc}") from None
        if not isinstance(data, dict):
            raise BadInput(f"line {number}: a task is a JSON object with type and target (and name, params, ...)")
        if "name" not in data and isinstance(data.get("type"), str):
            data["name"] = data["type"]
        try:
            validation.task_spec(data)
        except InvalidInput as exc:
            raise BadInput(f"line {number}: {exc.message}") from None
        specs.append(data)
        lines.append(number)
    if not specs:
        raise BadInput("the file holds no task (one JSON object per line)")
    return specs, lines


@contextmanager
def _progress(total: int) -> Iterator[Any]:
    """A callback that counts stored tasks, shown as a progress bar when stderr is a terminal."""
    if not o.err.is_terminal:
        yield lambda tasks: None
        return
    columns = (TextColumn("submitting"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=o.err, transient=True) as bar:
        job = bar.add_task("submit", total=total)
        yield lambda tasks: bar.advance(job, len(tasks))


def submit_file(stream: IO[bytes], as_json: bool) -> None:
    """``submit --from-file``: every task of the file, in batches; their ids (or --json) on stdout."""
    specs, lines = read_task_lines(stream)
    stored: list[Task] = []
    with client() as c, _progress(len(specs)) as advance:

        def done(tasks: list[Task]) -> None:
            stored.extend(tasks)
            advance(tasks)

        try:
            c.submit_many(specs, chunk=FILE_BATCH, on_chunk=done)
        except ShoalError as exc:
            index = getattr(exc, "index", None)
            if not isinstance(index, int) or not 0 <= index < len(lines):
                raise
            _print_ids(stored, as_json)
            after = f"; the tasks of the {len(stored)} line(s) before it were submitted" if stored else ""
            detail = getattr(exc, "reason", None) or _INDEX.sub("", exc.message)
            raise BadInput(f"line {lines[index]}: {detail}{after or '; nothing was submitted'}") from None
    _print_ids(stored, as_json)
    if not as_json:
        click.echo(f"submitted {len(stored)} task(s)", err=True)


def _print_ids(tasks: list[Task], as_json: bool) -> None:
    if as_json:
        o.print_json({"tasks": [t.to_json() for t in tasks]})
    elif tasks:
        sys.stdout.write("".join(f"{t.id}\n" for t in tasks))
        sys.stdout.flush()


@task_group.command("list")
@click.option("--state", help=f"Only tasks in this state ({', '.join(s.name for s in TaskState)}).")
@click.option("--limit", type=click.IntRange(1, validation.MAX_PAGE), default=50, show_default=True)
@click.option("--name", "name_prefix", metavar="PREFIX", help="Only tasks whose name starts with PREFIX (any case).")
@click.option("--all", "all_pages", is_flag=True, help="Every matching task, not just the newest page.")
@api_options
@json_option
@handle_errors
def list_tasks(state: str | None, limit: int, name_prefix: str | None, all_pages: bool, as_json: bool) -> None:
    """List tasks, newest first."""
    wanted = validation.state_filter(state)
    with client() as c:
        page = c.list(wanted, limit, name=name_prefix)
        tasks = list(page.tasks)
        cursor = page.next_cursor
        if all_pages and cursor:
            tasks.extend(c.iter_tasks(wanted, page_size=validation.MAX_PAGE, cursor=cursor, name=name_prefix))
            cursor = None
    if as_json:
        o.print_json({"tasks": [t.to_json() for t in tasks], "total": page.total, "next_cursor": cursor})
        return
    filtered = (f" {wanted.name}" if wanted else "") + (f" named {name_prefix}..." if name_prefix else "")
    o.out.print(o.tasks_table(tasks))
    more = f"; next page: --all, or the API's ?cursor={cursor}" if cursor else ""
    click.echo(f"{len(tasks)} of {page.total}{filtered} task(s){more}", err=True)


@task_group.command("show")
@click.argument("task_id", metavar="ID")
@api_options
@json_option
@handle_errors
def show(task_id: str, as_json: bool) -> None:
    """Show one task and its attempts."""
    with client() as c:
        task = c.get(task_id)
        found = None
        if task.state == TaskState.SUCCEED and (task.args is not None or task.kwargs is not None):
            with contextlib.suppress(ResultNotFound):
                found = c.result(task.id)  # a function task's return value is shown with it
    if as_json:
        o.print_json(task.to_json())
    else:
        o.out.print(o.task_detail(task, found), crop=False)  # late results' codes are printed whole


def _one(c: Client, verb: str, task_id: str) -> tuple[str, str]:
    """Kill or delete one task; its canonical id and a line saying what happened."""
    if verb == "kill":
        task = c.kill(task_id)
        return task.id, f"killed {task.id} (now {task.state.name})"
    canonical = validation.task_id(task_id)
    c.delete(canonical)
    return canonical, f"deleted {canonical}"


def _many(verb: str, ids: tuple[str, ...], as_json: bool) -> None:
    """``kill``/``rm`` of one id (precise error) or many (one call, a table; exit 1 if any was refused)."""
    done_word = "killed" if verb == "kill" else "deleted"
    with client() as c:
        if len(ids) == 1:
            task_id, line = _one(c, verb, ids[0])
            results = {task_id: True}
        else:
            results = c.kill_many(list(ids)) if verb == "kill" else c.delete_many(list(ids))
    if as_json:
        o.print_json({"succeed": results})
    elif len(ids) == 1:
        click.echo(line)
    else:
        o.out.print(o.ok_table(results, done_word))
    refused = [i for i, ok in results.items() if not ok]
    if refused:
        raise CommandError(f"{len(refused)} of {len(results)} task(s) were not {done_word}")


@task_group.command("tree")
@click.argument("task_id", metavar="ID")
@api_options
@json_option
@handle_errors
def tree(task_id: str, as_json: bool) -> None:
    """Show the workflow of task ID (or of that workflow id) as a tree, each task with its state."""
    from shoal.cli.workflow import show_workflow  # only this command needs it

    show_workflow(task_id, as_json)


@task_group.command("kill")
@click.argument("task_ids", metavar="ID...", nargs=-1, required=True)
@api_options
@json_option
@handle_errors
def kill(task_ids: tuple[str, ...], as_json: bool) -> None:
    """Kill tasks: at once if not yet running, on their node if running."""
    _many("kill", task_ids, as_json)


@task_group.command("rm")
@click.argument("task_ids", metavar="ID...", nargs=-1, required=True)
@api_options
@json_option
@handle_errors
def rm(task_ids: tuple[str, ...], as_json: bool) -> None:
    """Delete tasks and their results (killing them first if they run)."""
    _many("rm", task_ids, as_json)


@task_group.command("result")
@click.argument("task_id", metavar="ID")
@click.option("--wait", is_flag=True, help="Wait (with a progress display) until the task ends.")
@api_options
@json_option
@handle_errors
def result(task_id: str, wait: bool, as_json: bool) -> None:
    """Print a task's result (its code) on stdout, unchanged (a newline added on a terminal)."""
    with client() as c:
        if wait:
            task = wait_with_progress(c, task_id, show=True)
            if task.state != TaskState.SUCCEED:
                detail = f": {task.error}" if task.error else ""
                raise CommandError(f"task {task.id} ended {task.state.name}{detail}; it has no result")
        res = c.result(task_id)
    if as_json:
        o.print_json(res.to_json())
    else:
        o.write_data(res.code.encode())


@task_group.command("watch")
@click.argument("task_ids", metavar="[ID...]", nargs=-1)
@click.option("--limit", type=click.IntRange(1, 200), default=20, show_default=True, help="Rows without IDs.")
@click.option("--follow", "-f", is_flag=True, help="Print every event as it comes (resumed after a lost connection).")
@click.option("--type", "types", multiple=True, metavar="TYPE", help="With --follow: only tasks of this type.")
@click.option(
    "--state", "states", multiple=True, type=click.Choice([s.name for s in TaskState], case_sensitive=False),
    help="With --follow: only events into this state.",
)  # fmt: skip
@click.option("--since", metavar="EVENT_ID", help="With --follow: start after this event (an event's id).")
@api_options
@json_option
@handle_errors
def watch(
    task_ids: tuple[str, ...],
    limit: int,
    follow: bool,
    types: tuple[str, ...],
    states: tuple[str, ...],
    since: str | None,
    as_json: bool,
) -> None:
    """Follow tasks live until they all end (or, with no IDs, the newest tasks until Ctrl-C).

    With --json, prints one JSON line per state change. With --follow, prints the events themselves (of the
    IDs, or of every task) until those tasks end or Ctrl-C; each line ends with its event id, which --since
    takes to resume after it.
    """
    ids = [validation.task_id(i) for i in task_ids]
    if not follow:
        if types or states or since:
            raise click.UsageError("--type, --state and --since go with --follow")
        watch_tasks(ids, limit=limit, as_json=as_json)
        return
    if since is not None:
        try:
            parse_event_id(since)
        except InvalidInput as exc:
            raise click.BadParameter(exc.message, param_hint="--since") from None
    follow_events(ids, types=list(types), states=[s.upper() for s in states], since=since, as_json=as_json)


@task_group.command("types")
@api_options
@json_option
@handle_errors
def types(as_json: bool) -> None:
    """List the task types that live nodes run."""
    with client() as c:
        names = c.types()
    if as_json:
        o.print_json({"types": names})
    else:
        for name in names:
            click.echo(name)
