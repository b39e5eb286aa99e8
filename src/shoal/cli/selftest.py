"""``shoal selftest``: run a fresh local cluster under faults and check shoal's promises on its history.

The report goes to stdout and ends with ``selftest: PASS`` or ``selftest: FAIL (N violations)``; with
``--json`` (no path, or ``-``) the JSON document alone goes to stdout and the text report to stderr;
``--json PATH`` writes the document there. Exit 0 on PASS, 1 on violations (or a run that could not be
carried out), 2 on bad usage.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

import click

from shoal import validation
from shoal.cli._api import BadInput, CommandError
from shoal.errors import InvalidInput

#: Largest cluster a selftest starts on this machine.
MAX_NODES = 9


@click.command("selftest")
@click.option("--duration", default="60s", show_default=True, metavar="DURATION",
              help="how long the workload runs under faults: seconds or 90s, 15m, 1h")  # fmt: skip
@click.option("--nodes", default="3", show_default=True, metavar="N", help=f"node processes (2 to {MAX_NODES})")
@click.option("--seed", default=None, metavar="N", help="seed of the fault schedule and workload [default: random]")
@click.option("--faults", "fault_list", default=None, metavar="LIST",
              help="comma list of kill, stop, store-restart, partition (root only) [default: all that can run "
                   "here]")  # fmt: skip
@click.option("--json", "json_path", is_flag=False, flag_value="-", default=None, metavar="[PATH]",
              help="the report as JSON to PATH; no PATH (or '-'): JSON alone on stdout, text on stderr")  # fmt: skip
def selftest_command(
    duration: str, nodes: str, seed: str | None, fault_list: str | None, json_path: str | None
) -> None:
    """Check shoal's promises: tasks with known outcomes through a fresh local cluster while nodes are
    SIGKILLed, SIGSTOPped and the store is crashed and restarted; then every acknowledged task must be
    final, none lost, none SUCCEED twice, nothing started after its kill, no stale epoch placing work.

    \b
    shoal selftest                                  60 s, 3 nodes, a random seed
    shoal selftest --duration 1h --seed 7           the soak before an upgrade
    shoal selftest --json report.json --seed 1      the whole history and verdict as JSON too
    """
    from shoal.selftest import faults as faults_module
    from shoal.selftest import report
    from shoal.selftest.runner import Options, SelftestError, run

    options = Options(_duration(duration), _nodes(nodes), _seed(seed), _faults(fault_list, faults_module))
    json_to_stdout = json_path in ("-", "")
    text_stream = sys.stderr if json_to_stdout else sys.stdout

    def say(line: str) -> None:
        click.echo(line, err=True)

    try:
        outcome = run(options, say)
    except SelftestError as exc:
        raise CommandError(str(exc)) from None
    if json_path is not None and not json_to_stdout:
        try:
            Path(json_path).write_bytes(report.dumps(outcome))
        except OSError as exc:
            raise CommandError(f"cannot write the JSON report to {json_path}: {exc.strerror or exc}") from None
    if json_to_stdout:
        sys.stdout.buffer.write(report.dumps(outcome))
        sys.stdout.flush()
    text_stream.write(report.text(outcome))
    text_stream.flush()
    if not outcome.verdict.passed:
        sys.exit(1)


def _duration(text: str) -> float:
    try:
        seconds = validation.duration(text, "--duration")
    except InvalidInput as exc:
        raise BadInput(exc.message) from None
    if seconds < 5:
        raise BadInput(f"--duration must be at least 5s, got {text!r}")
    return seconds


def _nodes(text: str) -> int:
    if not text.isdigit() or not 2 <= int(text) <= MAX_NODES:
        raise BadInput(f"--nodes must be a whole number from 2 to {MAX_NODES}, got {text!r}")
    return int(text)


def _seed(text: str | None) -> int:
    if text is None:
        return random.SystemRandom().randrange(1, 2**31)
    if not text.isdigit():
        raise BadInput(f"--seed must be a whole number of 0 or more, got {text!r}")
    return int(text)


def _faults(text: str | None, faults_module: object) -> tuple[str, ...]:
    from shoal.selftest.faults import FaultRefused, available_kinds, parse_kinds

    if text is None:
        return available_kinds()
    try:
        return parse_kinds(text)
    except FaultRefused as exc:
        raise BadInput(str(exc)) from None
