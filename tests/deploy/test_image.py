"""The image built and run for real with podman, through deploy/podman-image.sh (base, build, check, cluster).

It takes about two minutes from nothing (a minute of it is debootstrap, once per machine) and needs root,
podman, runc and debootstrap, so it runs only when asked: ``SHOAL_TEST_IMAGE=1``. Asked for and unable to
run, it fails rather than skips.
"""

from __future__ import annotations

import os
import subprocess

import pytest

from .conftest import DEPLOY, find

pytestmark = pytest.mark.e2e


@pytest.mark.timeout(900)
def test_image_builds_runs_and_stops_cleanly_with_podman() -> None:
    if os.environ.get("SHOAL_TEST_IMAGE") != "1":
        pytest.skip("the podman image test runs only with SHOAL_TEST_IMAGE=1 (about 2 minutes; root, podman, runc)")
    if os.geteuid() != 0:
        pytest.fail("SHOAL_TEST_IMAGE=1, but building the image needs root")
    absent = [name for name in ("podman", "runc", "debootstrap") if find(name) is None]
    if absent:
        pytest.fail(f"SHOAL_TEST_IMAGE=1, but {', '.join(absent)} missing: apt-get install podman runc debootstrap")
    out = subprocess.run([str(DEPLOY / "podman-image.sh"), "all"], capture_output=True, text=True, timeout=840)
    report = out.stdout + out.stderr
    assert out.returncode == 0, report[-4000:]
    for seen in (
        "check: HEALTHCHECK passes",
        'check: /readyz from inside: 200 {"status":"ready"',
        "stopped with SIGTERM, exit code 0",
        "cluster: all three pass their HEALTHCHECK",
        "cluster: a task submitted through node-2 ended SUCCEED",
    ):
        assert seen in report, f"{seen!r} missing from:\n{report[-4000:]}"
    assert "check: user 0:" not in report
