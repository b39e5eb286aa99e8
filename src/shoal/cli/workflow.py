"""``shoal workflow ...``: show a workflow as a tree of its tasks with their states, and kill it."""

from __future__ import annotations

import click
from rich.text import Text
from rich.tree import Tree

from shoal import validation
from shoal.cli import _output as o
from shoal.cli._api import CommandError, api_options, client, handle_errors, json_option
from shoal.client import Client
from shoal.errors import NotFound
from shoal.models import Task
from shoal.workflows import WorkflowGraph

#: Tasks a tree shows under one task at most before it says how many it left out.
MAX_BRANCH = 200


@click.group("workflow")
@api_options
def workflow_group() -> None:
    """Workflows: tasks that depend on tasks (submitted with depends_on)."""


def find_workflow(c: Client, given: str) -> WorkflowGraph:
    """The workflow of that id, or else the one task ``given`` belongs to."""
    wid = validation.task_id(given)
    try:
        return c.workflow(wid)
    except NotFound:
        task = c.get(wid)  # TaskNotFound when it is neither
        if task.workflow is None:
            raise CommandError(
                f"task {wid} belongs to no workflow (it names no parent, and no task names it)"
            ) from None
        return c.workflow(task.workflow)


def workflow_tree(graph: WorkflowGraph) -> Tree:
    """The tasks from its roots down; a task with several parents appears under each, its children once."""
    by_id = {t.id: t for t in graph.tasks}
    counts: dict[str, int] = {}
    for t in graph.tasks:
        counts[t.state.name] = counts.get(t.state.name, 0) + 1
    summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    root = Tree(Text.assemble(("workflow ", "bold"), graph.id, f"  ({len(graph.tasks)} tasks: {summary})"))
    shown: set[str] = set()
    todo: list[tuple[Tree, Task]] = [(root, t) for t in reversed(graph.roots())]
    while todo:
        parent, task = todo.pop()
        again = task.id in shown
        branch = parent.add(_label(task, again))
        if again:
            continue
        shown.add(task.id)
        kids = [by_id[c] for c in graph.children(task.id) if c in by_id]
        if len(kids) > MAX_BRANCH:
            branch.add(Text(f"... and {len(kids) - MAX_BRANCH} more", style="dim"))
            kids = kids[:MAX_BRANCH]
        todo.extend((branch, k) for k in reversed(kids))
    return root


def _label(task: Task, again: bool) -> Text:
    text = Text.assemble(o.state_text(task.state), " ", (task.name, "bold"), "  ", (task.id, "dim"))
    if again:
        text.append("  (shown above)", style="dim")
    elif task.waiting_for:
        text.append(f"  {task.waiting_for}", style="yellow")
    elif task.error:
        text.append(f"  {o.short(task.error)}", style="red")
    return text


def show_workflow(given: str, as_json: bool) -> None:
    with client() as c:
        graph = find_workflow(c, given)
    if as_json:
        o.print_json(
            {
                "id": graph.id,
                "tasks": [t.to_json() for t in graph.tasks],
                "edges": [{"parent": p, "child": c} for p, c in graph.edges],
            }
        )
    else:
        o.out.print(workflow_tree(graph))


@workflow_group.command("show")
@click.argument("workflow_id", metavar="ID")
@api_options
@json_option
@handle_errors
def show(workflow_id: str, as_json: bool) -> None:
    """Show workflow ID (or the workflow of task ID) as a tree, each task with its state."""
    show_workflow(workflow_id, as_json)


@workflow_group.command("kill")
@click.argument("workflow_id", metavar="ID")
@api_options
@json_option
@handle_errors
def kill(workflow_id: str, as_json: bool) -> None:
    """Kill every unfinished task of workflow ID (or of the workflow of task ID)."""
    with client() as c:
        graph = find_workflow(c, workflow_id)
        killed = c.kill_workflow(graph.id)
    if as_json:
        o.print_json({"id": graph.id, "killed": killed})
        return
    for task_id, was in killed.items():
        click.echo(f"killed {task_id} (was {was})")
    click.echo(f"{len(killed)} task(s) of workflow {graph.id} killed", err=True)
