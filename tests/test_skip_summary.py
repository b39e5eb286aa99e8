"""A local run ends by saying what it skipped for want of a tool, and what would enable it."""

from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

pytest_plugins = ["pytester"]


def test_a_run_ends_with_what_was_skipped_and_what_would_run_it(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makepyfile(
        """
        import pytest

        def test_page(): pytest.skip("no chromium binary (apt-get install chromium)")
        def test_form(): pytest.skip("no chromium binary (apt-get install chromium)")
        def test_proxy(): pytest.skip("nginx is not installed (apt-get install nginx)")
        def test_runs(): pass
        """
    )
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).parent))
    result = pytester.runpytest_subprocess("-p", "skip_summary", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, skipped=3)
    result.stdout.re_match_lines([r"-+ 3 skipped: what would run them \(\.ci/run installs it all\) -+"])
    result.stdout.fnmatch_lines(
        ["   2  no chromium binary (apt-get install chromium)", "   1  nginx is not installed (apt-get install nginx)"]
    )
