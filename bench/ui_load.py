"""Web task center figures: first screen with many tasks in the store, and how fast a change reaches a page.

A script, not a test (figures depend on the machine; nothing asserts on them):

    .venv/bin/python bench/ui_load.py                  # 10,000 tasks, 3 nodes, 10 loads, 20 changes
    .venv/bin/python bench/ui_load.py --tasks 2000 --loads 5 --changes 10 --json out.json

It starts a redis-server and three ``python -m shoal node`` processes on free loopback ports, fills the
store with ``--tasks`` echo tasks through the REST API and lets them finish, then drives Debian's headless
Chromium (Python Playwright, ``--chromium``):

- first screen: a fresh page load of ``/`` (signed in) until the first 50 rows and the counts are on
  screen, measured in the browser from the start of navigation (``performance.now()``), and from the
  script as the time ``page.goto`` plus the wait took; also for a state filter and a search;
- live update: with the tasks page open, a task changes state (a RUNNING task is killed; a new task
  succeeds) and the page's row shows the new state. The delay is the browser's wall clock when the row
  changed minus the change's time in the store (``finished_at``, the Redis clock; one machine, one clock).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from shoal.store.embedded import EmbeddedRedis
from shoal.testing import TestNode, wait_for

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic", "--disable-dev-shm-usage"]  # fmt: skip

#: Records, per task id and state, the browser's wall-clock time (ms) when a row first showed that state.
RECORDER = """() => {
  window.__seen = {};
  const note = () => {
    for (const tr of document.querySelectorAll('#task-rows tr')) {
      const state = tr.querySelector('.state');
      const key = tr.dataset.id + ':' + (state ? state.textContent : '');
      if (!(key in window.__seen)) window.__seen[key] = Date.now();
    }
  };
  note();
  new MutationObserver(note).observe(document.getElementById('task-rows'),
    {subtree: true, childList: true, characterData: true});
}"""

#: True (the page's clock, ms since navigation began) once the first screen is drawn.
FIRST_SCREEN = """() => document.querySelectorAll('#task-rows tr').length >= ROWS
  && document.querySelector('[data-count=total]').textContent !== '–' && performance.now()"""


async def fill(url: str, token: str, n: int, lanes: int = 32) -> float:
    """Submit ``n`` echo tasks over REST, ``lanes`` at a time; the seconds it took."""
    started = time.perf_counter()
    headers = {"Authorization": f"Bearer {token}"}
    counter = iter(range(n))

    async def lane() -> None:
        async with httpx.AsyncClient(base_url=url, headers=headers, timeout=60, trust_env=False) as client:
            for i in counter:
                body = {"name": f"bulk {i:05d}", "type": "echo", "target": f"item-{i}"}
                response = await client.post("/api/v1/tasks", json=body)
                response.raise_for_status()

    await asyncio.gather(*(lane() for _ in range(lanes)))
    return time.perf_counter() - started


def summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, max(0, round(0.95 * len(ordered)) - 1))]
    return {"n": len(values), "median": statistics.median(values), "p95": p95, "min": ordered[0],
            "max": ordered[-1]}  # fmt: skip


def first_screen(new_context: Any, url: str, loads: int) -> dict[str, dict[str, float]]:
    """Loads of each page variant; the first variant in a fresh context each time (nothing cached)."""
    figures: dict[str, dict[str, float]] = {}
    warm = new_context()
    variants = [("all, cold cache", "/"), ("all", "/"), ("state=SUCCEED", "/?state=SUCCEED"),
                ("search q=item-99", "/?q=item-99")]  # fmt: skip
    for label, path in variants:
        in_page, wall = [], []
        check = FIRST_SCREEN.replace("ROWS", "1" if path.startswith("/?q=") else "50")
        for _ in range(loads):
            context = new_context() if "cold" in label else warm
            page = context.new_page()
            started = time.perf_counter()
            page.goto(url + path, wait_until="commit")
            drawn = page.wait_for_function(check, polling="raf", timeout=30_000)
            wall.append((time.perf_counter() - started) * 1000)
            in_page.append(float(drawn.json_value()))
            page.close()
            if context is not warm:
                context.close()
        figures[label] = {"in_page_ms": summary(in_page), "wall_ms": summary(wall)}  # type: ignore[dict-item]
    return figures


def live_delays(context: Any, url: str, api: httpx.Client, changes: int) -> dict[str, dict[str, float]]:
    page = context.new_page()
    page.goto(url + "/")
    page.wait_for_function("document.getElementById('live').textContent === 'live'", timeout=30_000)
    page.evaluate(RECORDER)

    def seen(task_id: str, state: str) -> float | None:
        value = page.evaluate(f"window.__seen['{task_id}:{state}'] || null")
        return float(value) if value is not None else None

    killed, succeeded = [], []
    for i in range(changes):
        task = api.post("/api/v1/tasks", json={"name": f"live kill {i}", "type": "echo", "target": "k",
                                               "params": {"delay_s": 60}}).json()  # fmt: skip
        wait_for(lambda t=task: seen(t["id"], "RUNNING"), 30, "the running row")  # type: ignore[misc]
        api.post(f"/api/v1/tasks/{task['id']}/kill").raise_for_status()
        at = api.get(f"/api/v1/tasks/{task['id']}").json()["finished_at"]
        shown = wait_for(lambda t=task: seen(t["id"], "KILLED"), 30, "the killed row")  # type: ignore[misc]
        killed.append(shown - at * 1000)

        task = api.post("/api/v1/tasks", json={"name": f"live ok {i}", "type": "echo", "target": "s"}).json()
        shown = wait_for(lambda t=task: seen(t["id"], "SUCCEED"), 30, "the succeeded row")  # type: ignore[misc]
        at = api.get(f"/api/v1/tasks/{task['id']}").json()["finished_at"]
        succeeded.append(shown - at * 1000)
    page.close()
    return {"RUNNING -> KILLED (kill over REST)": summary(killed), "new task -> SUCCEED": summary(succeeded)}


def run(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright

    redis = EmbeddedRedis(root / "redis")
    redis.start()
    nodes = [TestNode(root / "data", redis.url, name=f"node-{k}", args=["--shutdown-grace", "2"]) for k in "abc"]
    try:
        for node in nodes:
            node.start(ready=False)
        for node in nodes:
            node.wait_ready(60)
        node = nodes[0]
        fill_s = asyncio.run(fill(node.http_url, node.token, args.tasks))
        with httpx.Client(base_url=node.http_url, headers=node.headers(), timeout=60, trust_env=False) as api:
            drained = time.perf_counter()
            wait_for(lambda: api.get("/api/v1/tasks/counts").json()["SUCCEED"] >= args.tasks, 600, "the tasks to end",
                     interval=0.5)  # fmt: skip
            drain_s = time.perf_counter() - drained
            # a session, as the sign-in page opens one: its cookie (named for the port) is what a browser holds
            signin = api.post("/signin", data={"token": node.token, "next": "/"}, headers={"Origin": node.http_url})
            if signin.status_code != 303 or not signin.cookies:
                raise RuntimeError(f"sign-in refused: {signin.status_code} {signin.text[:200]}")
            cookie, session_id = next(iter(signin.cookies.items()))
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=args.chromium, headless=True, args=CHROMIUM_ARGS)
                host = node.http_url.split("//", 1)[1].split(":")[0]

                def new_context() -> Any:
                    # bypass_csp: Playwright's wait_for_function evaluates a string, which the pages' CSP forbids
                    context = browser.new_context(viewport={"width": 1280, "height": 900}, bypass_csp=True)
                    context.add_cookies([{"name": cookie, "value": session_id, "domain": host, "path": "/",
                                          "httpOnly": True, "sameSite": "Strict"}])  # fmt: skip
                    return context

                screens = first_screen(new_context, node.http_url, args.loads)
                live = live_delays(new_context(), node.http_url, api, args.changes)
                browser.close()
    finally:
        for node in nodes:
            if node.proc.alive():
                node.stop(timeout=20)
        redis.stop()
    return {"tasks": args.tasks, "fill_s": round(fill_s, 2), "drain_s": round(drain_s, 2),
            "first_screen": screens, "live_update_ms": live}  # fmt: skip


def report(result: dict[str, Any]) -> None:
    print(
        f"store: {result['tasks']:,} tasks (submitted in {result['fill_s']} s, all ended {result['drain_s']} s later)"
    )
    print("\nfirst screen (50 rows + counts on screen), ms      median      p95      max")
    for label, figures in result["first_screen"].items():
        for kind in ("in_page_ms", "wall_ms"):
            f = figures[kind]
            print(f"  {label:<18} {kind[:-3]:<8} {f['median']:24.1f} {f['p95']:8.1f} {f['max']:8.1f}")
    print("\nlive update (store change -> row on screen), ms    median      p95      max")
    for label, f in result["live_update_ms"].items():
        print(f"  {label:<44} {f['median']:8.1f} {f['p95']:8.1f} {f['max']:8.1f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--loads", type=int, default=10, help="page loads per first-screen figure")
    parser.add_argument("--changes", type=int, default=20, help="state changes per live-update figure")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="shoal-ui-bench-") as tmp:
        result = run(args, Path(tmp))
    report(result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
