"""A pytest plugin: at the end of a run, what was skipped for want of a tool and what would enable it.

Without chromium, nginx, podman, systemd-analyze or root, a few dozen tests skip (on CI they must run, and
fail instead). The skip reasons already say which package enables them; this groups them into one short
section so that a local run says plainly what it did not check.
"""

from __future__ import annotations

from collections import Counter

import pytest

#: Set by tests/conftest.py: the server binaries the store, backup and Sentinel tests ran against.
servers_tested: list[str] = []


def skip_reason(report: pytest.TestReport) -> str:
    longrepr = report.longrepr
    reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
    return reason.removeprefix("Skipped: ").strip()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    skipped = [r for r in terminalreporter.stats.get("skipped", []) if isinstance(r, pytest.TestReport)]
    reasons = Counter(skip_reason(r) for r in skipped)
    write = terminalreporter.write_line
    if reasons:
        terminalreporter.section(f"{len(skipped)} skipped: what would run them (.ci/run installs it all)", sep="-")
        for reason, count in reasons.most_common():
            write(f"{count:4d}  {reason}")
    if len(servers_tested) == 1:
        write(f"store, backup and Sentinel tests ran on {servers_tested[0]} only; another server version "
              "on PATH (apt-get install redis-server, or valkey-server) adds a run on it")  # fmt: skip
