"""How the user commands print: rich tables for people, ``--json`` for scripts.

Data goes to stdout, progress and errors to stderr, so ``shoal task result ID > page.html`` keeps only the
result. Colours are off when stdout is not a terminal (rich decides), and ``NO_COLOR`` is honoured.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable
from typing import Any

import orjson
from rich import box
from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from shoal.models import Attempt, ClusterView, Task, TaskResult, TaskState

#: Width when stdout is a pipe or file: wide enough that ids and targets are not cut.
PIPE_WIDTH = 200

out = Console(width=None if sys.stdout.isatty() else PIPE_WIDTH)
err = Console(stderr=True)

STATE_STYLES = {
    TaskState.WAITING: "yellow",
    TaskState.INQUEUE: "yellow",
    TaskState.RUNNING: "cyan",
    TaskState.RUNTIME_ERROR: "red",
    TaskState.SUCCEED: "green",
    TaskState.KILLED: "magenta",
}
NODE_STYLES = {"alive": "green", "suspect": "yellow", "dead": "red", "rejected": "red"}


def print_json(data: Any) -> None:
    """JSON on stdout, indented, one document per call."""
    sys.stdout.write(orjson.dumps(data, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS).decode() + "\n")
    sys.stdout.flush()


def print_json_line(data: Any) -> None:
    """One compact JSON document per line (for streams such as ``task watch --json``)."""
    sys.stdout.write(orjson.dumps(data, option=orjson.OPT_NON_STR_KEYS).decode() + "\n")
    sys.stdout.flush()


def write_data(data: bytes) -> None:
    """A result or value on stdout, unchanged when redirected (the file gets exactly the bytes); on a
    terminal, ended with a newline so that the prompt does not run on after it."""
    sys.stdout.flush()  # whatever was printed before goes first
    sys.stdout.buffer.write(data)
    if sys.stdout.isatty() and not data.endswith(b"\n"):
        sys.stdout.buffer.write(b"\n")
    sys.stdout.buffer.flush()


def state_text(state: TaskState) -> Text:
    return Text(state.name, style=STATE_STYLES.get(state, ""))


def ago(at: float | None, now: float | None = None) -> str:
    """``4s ago``, ``3m ago``, ``2h ago``, ``5d ago``; ``-`` for no time."""
    if at is None:
        return "-"
    delta = max(0.0, (now if now is not None else time.time()) - at)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if delta >= size:
            return f"{int(delta // size)}{unit} ago"
    return f"{delta:.0f}s ago" if delta >= 1 else "just now"


def when(at: float | None) -> str:
    if at is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(at)) + f" ({ago(at)})"


def duration(task: Task) -> str:
    if task.started_at is None:
        return "-"
    end = task.finished_at if task.finished_at is not None else time.time()
    return f"{max(0.0, end - task.started_at):.2f}s"


def short(text: str | None, width: int = 60) -> str:
    if not text:
        return ""
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= width else line[: width - 1] + "…"


def size(n: int | float) -> str:
    """``512 B``, ``1.5 KiB``, ``256 MiB``: bytes for people."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(value) < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" or value >= 100 else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def seconds(value: float | None) -> str:
    """``850 ms``, ``1.25 s``, ``4m 05s``, ``2h 03m``: a measured span for people; ``-`` when not measured."""
    if value is None:
        return "-"
    if value < 1:
        return f"{value * 1000:.0f} ms"
    if value < 60:
        return f"{value:.2f} s"
    whole = round(value)
    if whole < 3600:
        return f"{whole // 60}m {whole % 60:02d}s"
    return f"{whole // 3600}h {whole % 3600 // 60:02d}m"


def outcome(attempt: Attempt) -> str:
    """The attempt's outcome, with how its worker process ended when it crashed (``crashed (SIGSEGV)``), and
    how long it held the node's event loop when it did."""
    text = attempt.outcome or "-"
    if attempt.signal:
        text = f"{text} ({attempt.signal})"
    elif attempt.exit_code is not None:
        text = f"{text} (exit code {attempt.exit_code})"
    if attempt.loop_blocked_s:
        text = f"{text}, held the node's loop {attempt.loop_blocked_s:.1f}s"
    return text


def share(part: int, whole: int) -> str:
    """``part`` of ``whole`` as a percentage, ``-`` when there is no whole."""
    return f"{100 * part / whole:.0f}%" if whole > 0 else "-"


def hit_ratio(stats: dict[str, int]) -> str:
    """Hits over lookups of a cache shard, ``-`` before its first lookup."""
    hits, misses = int(stats.get("hits", 0)), int(stats.get("misses", 0))
    return f"{100 * hits / (hits + misses):.1f}%" if hits + misses else "-"


def cache_cell(stats: dict[str, int] | None) -> str:
    """A node's cache in one cell: ``12 items, 1.5 MiB / 256 MiB, 93.0% hits``."""
    if not stats:
        return "-"
    used, capacity = int(stats.get("bytes", 0)), int(stats.get("capacity", 0))
    return f"{stats.get('items', 0)} items, {size(used)} / {size(capacity)}, {hit_ratio(stats)} hits"


def plain_table(title: str | None = None) -> Table:
    """Columns without borders, like ``ps``/``kubectl``: dense, and greppable when piped."""
    return Table(
        title=title, title_justify="left", header_style="bold", box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False
    )


def tasks_table(tasks: Iterable[Task], title: str | None = None) -> Table:
    table = plain_table(title)
    for column in ("ID", "NAME", "TYPE", "STATE", "NODE", "TRIES", "CREATED"):
        table.add_column(column, no_wrap=True, overflow="ellipsis", min_width=36 if column == "ID" else None)
    table.add_column("TARGET / ERROR", no_wrap=True, overflow="ellipsis", min_width=12)
    now = time.time()
    for t in tasks:
        detail = Text(short(t.error), style="red") if t.error else Text(short(t.target))
        table.add_row(
            t.id, t.name, t.type, state_text(t.state), t.node or "-", str(t.attempts), ago(t.created_at, now), detail
        )
    return table


#: How ``shoal task show`` reads a task's memory_mb or cpu_s_limit left unset.
LIMIT_DEFAULT = "default (the type's, else the node's)"


def task_detail(task: Task, result: TaskResult | None = None) -> RenderableType:
    """Every field of one task (with a function task's return value, given its ``result``), then its attempts."""
    fields = Table.grid(padding=(0, 2))
    fields.add_column(style="bold")
    fields.add_column()
    rows: list[tuple[str, str | Text]] = [
        ("id", task.id),
        ("name", task.name),
        ("type", task.type),
        ("target", task.target),
        ("state", state_text(task.state)),
        ("node", task.node or "-"),
        ("attempts", f"{task.attempts} (retries allowed: {task.max_retries})"),
        ("lost", f"{task.lost_attempts} (quarantined at {task.max_lost_attempts})"),
        ("timeout", f"{task.timeout_s:g}s" if task.timeout_s else "type default"),
        ("memory limit", LIMIT_DEFAULT if task.memory_mb is None else f"{task.memory_mb} MiB"),
        ("cpu limit", LIMIT_DEFAULT if task.cpu_s_limit is None else f"{task.cpu_s_limit:g}s"),
        ("kept", "the cluster's retention" if task.result_ttl_s is None else f"{task.result_ttl_s:g}s once ended"),
        ("created", when(task.created_at)),
        *([("due", when(task.run_at))] if task.run_at is not None else []),
        *([("waiting for", task.waiting_for)] if task.waiting_for else []),
        *([("idempotency key", task.idempotency_key)] if task.idempotency_key else []),
        ("priority", str(task.priority)),
        *([("requires", ", ".join(f"{k}={v}" for k, v in task.requires.items()))] if task.requires else []),
        *([("concurrency key", task.concurrency_key)] if task.concurrency_key else []),
        *([("schedule", f"{task.schedule} (tick {when(task.tick)})")] if task.schedule else []),
        *([("workflow", task.workflow)] if task.workflow else []),
        *([("depends on", ", ".join(task.depends_on))] if task.depends_on else []),
        *([("on parent failure", task.on_parent_failure)] if task.depends_on else []),
        *([("children", ", ".join(task.children))] if task.children else []),
        ("started", when(task.started_at)),
        ("finished", when(task.finished_at)),
        ("ran for", duration(task)),
    ]
    if task.params:
        rows.append(("params", orjson.dumps(task.params).decode()))
    if task.args is not None:
        rows.append(("args", Text(orjson.dumps(task.args).decode())))
    if task.kwargs is not None:
        rows.append(("kwargs", Text(orjson.dumps(task.kwargs).decode())))
    if result is not None and result.has_value:
        rows.append(("value", Text(orjson.dumps(result.value, option=orjson.OPT_INDENT_2).decode())))
    if task.error:
        rows.append(("error", Text(task.error, style="red")))
    for key, value in rows:
        fields.add_row(key, value)
    if not task.history:
        return fields
    dropped = f" ({task.attempts_dropped} between the first and the latest not kept)" if task.attempts_dropped else ""
    history = plain_table(f"attempts{dropped}")
    for column in ("#", "NODE", "STARTED", "FINISHED", "OUTCOME", "WALL", "CPU", "PEAK RSS", "ERROR"):
        history.add_column(column, justify="right" if column in ("WALL", "CPU", "PEAK RSS") else "left")
    for a in task.history:
        rss = "-" if a.max_rss_bytes is None else size(a.max_rss_bytes)
        history.add_row(
            str(a.number), a.node, ago(a.started_at), ago(a.finished_at), outcome(a),
            seconds(a.wall_s), seconds(a.cpu_s), rss, short(a.error),
        )  # fmt: skip
    return Group(fields, Text(""), history, *late_results(task))


def late_results(task: Task) -> list[RenderableType]:
    """Reports of superseded attempts that finished after all, each with its result in full."""
    if not task.late_results:
        return []
    table = plain_table("late results (attempts the task had moved on from, finished after all)")
    for column in ("#", "NODE", "FINISHED", "OUTCOME", "ERROR"):
        table.add_column(column)
    codes: list[RenderableType] = []
    for r in task.late_results:
        table.add_row(str(r.attempt), r.node, ago(r.finished_at), r.outcome, short(r.error))
        if r.code is not None:
            head = Text(f"result of attempt {r.attempt} on {r.node}:", style="bold")
            codes += [head, Text(r.code, no_wrap=True, overflow="ignore")]  # whole, as `shoal task result`
    return [Text(""), table, *codes]


def cluster_table(view: ClusterView) -> RenderableType:
    master = view.master or "none (election pending)"
    header = Text.assemble(("master: ", "bold"), master, ("  epoch: ", "bold"), str(view.epoch))
    table = plain_table()
    columns = ("NAME", "STATE", "ROLE", "HTTP", "GRPC", "SLOTS", "RUNNING", "PID", "LAST BEAT", "TYPES", "LABELS")
    for column in (*columns, "CACHE"):
        table.add_column(column, no_wrap=True)
    now = time.time()
    for n in sorted(view.nodes, key=lambda n: n.name):
        table.add_row(
            n.name,
            Text(n.state, style=NODE_STYLES.get(n.state, "")),
            Text(n.role, style="bold" if n.role == "master" else ""),
            n.http,
            n.grpc,
            str(n.slots),
            str(n.running),
            str(n.pid),
            ago(n.last_beat, now),
            ", ".join(n.types) or "-",
            ",".join(f"{k}={v}" for k, v in n.labels.items()) or "-",
            cache_cell(n.cache),
        )
    return Group(header, table)


def ok_table(results: dict[str, bool], verb: str) -> Table:
    table = plain_table()
    table.add_column("ID", no_wrap=True)
    table.add_column(verb.upper())
    for task_id, done in results.items():
        table.add_row(task_id, Text("yes", style="green") if done else Text("no", style="red"))
    return table
