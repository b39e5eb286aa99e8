"""What membership costs: ``.venv/bin/python bench/members.py [--nodes 5,10,25,50] [--idle-s 30] [--failovers 5]``.

For each cluster size N, on a fresh redis-server and N unsupervised nodes with one slot each
(``bench.nodes.NodeSet``, ``--slots 1``), once all N are alive members with one master:

- idle: for ``--idle-s`` seconds, with nothing submitted, the CPU of each node process (``/proc/PID/stat``
  utime + stime, its children included) and of the redis-server, in % of one core; and the messages of
  membership, counted where they arrive, not estimated:
  - Redis commands/s: ``total_commands_processed`` over the window (the meter's own INFO calls left out;
    on Redis 7 and Valkey the commands a Lua script runs count too), and by command (INFO commandstats);
  - pub/sub publishes/s and deliveries/s: every message published on any channel is seen by one pattern
    subscription of this script (``PSUBSCRIBE *``); each publish on a channel is delivered to each of the
    channel's subscribers (``PUBSUB NUMSUB``, read before and after the window; the larger is used), so
    deliveries = sum over channels of publishes x subscribers. The script's own subscription is not counted
    as a receiver; pattern subscriptions of the nodes (``PUBSUB NUMPAT`` less this one) are reported, and
    ``subscriptions_by_channel`` lists every channel subscribed to at the end, published on or not;
  - gRPC calls/s: received by the nodes' servers, by method, from each node's ``shoal_grpc_calls_total``
    on ``/metrics``; every call has one server, so the sum over the nodes is every call made. The calls
    of the whole run (admissions, the probes after each kill) are recorded too;
  - messages/s = Redis commands/s + pub/sub deliveries/s + gRPC calls/s, and that over N: flat means
    linear growth, rising with N means worse than linear.
- failover: ``--failovers`` times each, alternately, kill -9 of the master (``bench.failover.master_failover``:
  seconds to the first task placed by the new master) and of a worker (``bench.failover.worker_loss`` with
  N-1 delayed echo tasks, one per node but one, so the victim's task has a free slot to go to: seconds until
  it runs elsewhere). After each kill the tasks left are killed and a fresh node takes the dead one's place,
  so every measurement sees N nodes.

Prints a table across N and the growth ratios, and writes ``--json`` (``bench/results/members.json``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import re
import statistics
import sys
import time
import traceback
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make ``bench`` importable from the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.failover import master_failover, worker_loss
from bench.machine import OtherLoad, SystemCpu, cpu_ticks, machine_info, usable_cores
from bench.nodes import NodeSet
from bench.redis_server import CommandMeter
from bench.report import write_json
from bench.run import run_bench
from bench.source import shoal_source

DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "members.json"
#: The issue's goals.
TARGETS = {"node_cpu_pct": 2.0, "master_failover_median_s": 3.0}
#: Seconds a node may take to start, per node per core: nodes started together share the cores.
START_S_PER_NODE_PER_CORE = 6.0
ACTIVE = ("WAITING", "INQUEUE", "RUNNING")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bench/members.py", description=__doc__.splitlines()[0])
    p.add_argument("--nodes", default="5,10,25,50", help="cluster sizes, comma-separated (default 5,10,25,50)")
    p.add_argument("--idle-s", type=float, default=30.0, help="seconds of the idle measurement")
    p.add_argument("--settle", type=float, default=5.0, help="seconds a formed cluster runs before it is measured")
    p.add_argument("--failovers", type=int, default=5, help="master kills, and as many worker kills, per size")
    p.add_argument("--delay", type=float, default=10.0, help="delay_s of the tasks running at a worker kill")
    p.add_argument("--node-arg", action="append", default=[], help="extra flag for every node (repeatable)")
    p.add_argument("--seed", type=int, default=None, help="seed of the random kill phase")
    p.add_argument("--json", type=Path, default=DEFAULT_JSON, help=f"figures written here (default {DEFAULT_JSON})")
    p.add_argument("--workdir", type=Path, default=None, help="keep data dirs and node logs here")
    p.add_argument("--shoal-ref", default=None, help="measure this git commit (e.g. HEAD), not the working tree")
    args = p.parse_args(argv)
    try:
        args.sizes = [int(n) for n in args.nodes.split(",") if n.strip()]
    except ValueError:
        p.error(f"--nodes: comma-separated whole numbers, not {args.nodes!r}")
    if not args.sizes or min(args.sizes) < 3:
        p.error("--nodes: each size must be at least 3 (a master, a victim and a survivor)")
    if args.idle_s <= 0 or args.failovers < 0:
        p.error("--idle-s must be above 0 and --failovers at least 0")
    return args


def start_timeout(n: int) -> float:
    return max(60.0, START_S_PER_NODE_PER_CORE * n / usable_cores())


def node_path(src: Path, workdir: Path) -> Path:
    """A PYTHONPATH directory holding the measured ``shoal``."""
    path = workdir / "pythonpath"
    path.mkdir(parents=True, exist_ok=True)
    for name, target in (("shoal", src / "shoal"),):
        link = path / name
        if not link.is_symlink():
            link.symlink_to(target, target_is_directory=True)
    return path


# -- counting -------------------------------------------------------------------------------------------------


class ChannelTap:
    """Every message published on any channel of the store, counted per channel (``PSUBSCRIBE *``)."""

    def __init__(self, nodes: NodeSet) -> None:
        self.nodes = nodes
        self.counts: dict[str, int] = {}
        self._task: asyncio.Task[None] | None = None
        self._pubsub: Any = None

    async def start(self) -> None:
        self._pubsub = self.nodes.store.pubsub(ignore_subscribe_messages=True)
        await self._pubsub.psubscribe("*")
        self._task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        while True:
            message = await self._pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
            if message is not None and message["type"] == "pmessage":
                channel = str(message["channel"])
                self.counts[channel] = self.counts.get(channel, 0) + 1

    def snapshot(self) -> dict[str, int]:
        return dict(self.counts)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._pubsub is not None:
            with contextlib.suppress(Exception):
                await self._pubsub.aclose()


async def subscribers(nodes: NodeSet, channels: list[str]) -> dict[str, int]:
    if not channels:
        return {}
    pairs: Any = await nodes.store.execute_command("PUBSUB", "NUMSUB", *channels)
    return {str(pairs[i]): int(pairs[i + 1]) for i in range(0, len(pairs), 2)}


#: A line of a node's /metrics that counts the gRPC calls its server received (shoal.rpc.census).
_CALLS = re.compile(r'^shoal_grpc_calls_total\{method="([^"]*)"\} ([0-9.e+]+)$')


async def rpc_calls(nodes: NodeSet) -> dict[str, dict[str, int]]:
    """Each live node's gRPC calls received so far, by method, from its ``shoal_grpc_calls_total``."""
    counts: dict[str, dict[str, int]] = {}
    for node in nodes.live():
        text = (await nodes.client.get(f"{node.http_url}/metrics")).text
        found = (_CALLS.match(line) for line in text.splitlines())
        counts[node.name] = {m.group(1): int(float(m.group(2))) for m in found if m}
    return counts


def _calls_since(after: dict[str, dict[str, int]], before: dict[str, dict[str, int]]) -> dict[str, int]:
    by_method: dict[str, int] = {}
    for node, calls in after.items():
        for method, n in calls.items():
            by_method[method] = by_method.get(method, 0) + n - before.get(node, {}).get(method, 0)
    return {m: n for m, n in sorted(by_method.items(), key=lambda kv: -kv[1]) if n}


async def idle_cost(nodes: NodeSet, seconds: float) -> dict[str, Any]:
    """CPU and messages of a cluster with nothing to do, over ``seconds``."""
    address = nodes.redis_server.address
    assert address is not None and nodes.redis_server.proc is not None
    redis_pid = nodes.redis_server.proc.pid
    tap = ChannelTap(nodes)
    await tap.start()
    await asyncio.sleep(0.5)  # the subscription is in place before the window opens
    meter = CommandMeter(address)
    live = nodes.live()
    numpat: Any = await nodes.store.execute_command("PUBSUB", "NUMPAT")
    subs_before = await subscribers(nodes, sorted(tap.counts))
    rpc_before = await rpc_calls(nodes)
    cpu = SystemCpu({n.name: n.proc.pid for n in live})
    other = OtherLoad()
    redis_before = cpu_ticks(redis_pid)
    other.start()
    cpu.start()
    published_before = tap.snapshot()
    commands_before = meter.read()
    t0 = time.monotonic()
    await asyncio.sleep(seconds)
    commands = meter.read().since(commands_before)
    published_after = tap.snapshot()
    elapsed = time.monotonic() - t0
    used = cpu.stop()
    redis_after = cpu_ticks(redis_pid)
    other_pct = other.stop()
    rpc_after = await rpc_calls(nodes)
    await tap.stop()
    meter.close()
    published = {ch: n - published_before.get(ch, 0) for ch, n in published_after.items()}
    published = {ch: n for ch, n in sorted(published.items()) if n}
    subs_after = await subscribers(nodes, sorted(published))
    subs = {ch: max(subs_before.get(ch, 0), subs_after.get(ch, 0)) for ch in published}
    held: Any = await nodes.store.execute_command("PUBSUB", "CHANNELS")
    subscriptions = await subscribers(nodes, sorted(str(ch) for ch in held))
    deliveries = sum(n * subs[ch] for ch, n in published.items())
    calls = _calls_since(rpc_after, rpc_before)
    node_pct = {name: round(100.0 * s / elapsed, 2) for name, s in used.items() if name != "client"}
    redis_s = ((redis_after[1] - redis_before[1]) / os.sysconf("SC_CLK_TCK")) if redis_before and redis_after else 0
    per_s = {
        "redis_commands": round(commands.processed / elapsed, 1),
        "publishes": round(sum(published.values()) / elapsed, 1),
        "deliveries": round(deliveries / elapsed, 1),
        "grpc_calls": round(sum(calls.values()) / elapsed, 2),
    }
    per_s["messages"] = round(per_s["redis_commands"] + per_s["deliveries"] + per_s["grpc_calls"], 1)
    return {
        "seconds": round(elapsed, 2),
        "node_cpu_pct": {
            "mean": round(statistics.mean(node_pct.values()), 2),
            "max": max(node_pct.values()),
            "each": node_pct,
        },
        "redis_cpu_pct": round(100.0 * redis_s / elapsed, 2),
        "per_s": per_s,
        "messages_per_s_per_node": round(per_s["messages"] / len(live), 2),
        "redis_commands_per_s_by_name": {
            k: round(v / elapsed, 2) for k, v in sorted(commands.calls.items(), key=lambda kv: -kv[1])
        },  # fmt: skip
        "publishes_per_s_by_channel": {ch: round(n / elapsed, 2) for ch, n in published.items()},
        "subscribers_by_channel": subs,
        "subscriptions_by_channel": subscriptions,
        "node_pattern_subscriptions": max(0, int(numpat) - 1),
        "grpc_calls_per_s_by_method": {m: round(n / elapsed, 3) for m, n in calls.items()},
        "other_cpu_pct": round(other_pct, 1),
    }


# -- failovers ------------------------------------------------------------------------------------------------


async def kill_active_tasks(nodes: NodeSet, timeout: float = 30.0) -> None:
    """Kill every task not yet ended (the delayed echoes of a worker kill), so the next run finds free slots."""
    via = nodes.live()[0]
    deadline = time.monotonic() + timeout
    while True:
        ids: list[str] = []
        for state in ACTIVE:
            response = await nodes.client.get(f"{via.http_url}/api/v1/tasks", params={"state": state, "limit": 500})
            response.raise_for_status()
            ids += [t["id"] for t in response.json()["tasks"]]
        if not ids:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(ids)} tasks still not ended {timeout:.0f} s after they were killed")
        (await nodes.client.post(f"{via.http_url}/api/v1/tasks/kill", json={"ids": ids})).raise_for_status()
        await asyncio.sleep(0.2)


class Replacements:
    """Starts a fresh node for each one killed, so that every measurement sees the same number of nodes."""

    def __init__(self, nodes: NodeSet, size: int) -> None:
        self.nodes, self.size, self.started = nodes, size, 0

    async def refill(self) -> None:
        while len(self.nodes.live()) < self.size:
            self.started += 1
            self.nodes._spawn(f"spare-{self.started:02d}")  # NodeSet's own start of one node, on fresh ports
        await self.nodes.wait_ready(start_timeout(1))
        await self.nodes.wait_agreed(start_timeout(self.size))


async def failovers(nodes: NodeSet, size: int, count: int, delay: float, rng: random.Random) -> dict[str, Any]:
    runs: dict[str, list[dict[str, Any]]] = {"master": [], "worker": []}
    spares = Replacements(nodes, size)
    for i in range(count):
        for kind in ("master", "worker"):
            try:
                await nodes.wait_agreed(start_timeout(size))
                if kind == "master":
                    run = await master_failover(nodes, rng, interval=1.0)
                else:
                    run = await worker_loss(nodes, rng, interval=1.0, tasks=size - 1, delay_s=delay)
            except Exception as exc:  # one failed run must not hide the others
                traceback.print_exc()
                run = {"error": f"{type(exc).__name__}: {exc}"}
            runs[kind].append(run)
            print(f"  [{size} nodes, {kind} kill {i + 1}/{count}] "
                  + (run["error"] if "error" in run else f"{run['seconds']:.2f} s"), flush=True)  # fmt: skip
            await kill_active_tasks(nodes)
            await spares.refill()
    return {kind: {"summary": _summary(each), "each": each} for kind, each in runs.items()}


def _summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    values = [r["seconds"] for r in runs if "error" not in r]
    out: dict[str, Any] = {"runs": len(runs), "failed": len(runs) - len(values)}
    if values:
        out.update(median=round(statistics.median(values), 3), max=round(max(values), 3))
    return out


# -- one size, all sizes ---------------------------------------------------------------------------------------


async def measure(size: int, args: argparse.Namespace, path: Path, workdir: Path, rng: random.Random) -> dict[str, Any]:
    node_args = ["--slots", "1", *args.node_arg]
    nodes = NodeSet(workdir, path, node_args)
    result: dict[str, Any] = {"nodes": size}
    try:
        t0 = time.monotonic()
        await nodes.start([f"node-{i:02d}" for i in range(1, size + 1)], timeout=start_timeout(size))
        result["ready_s"] = round(time.monotonic() - t0, 1)
        await nodes.wait_agreed(start_timeout(size))
        result["agreed_s"] = round(time.monotonic() - t0, 1)
        print(f"{size} nodes: all ready after {result['ready_s']} s, one master agreed after {result['agreed_s']} s",
              flush=True)  # fmt: skip
        await asyncio.sleep(args.settle)
        result["idle"] = await idle_cost(nodes, args.idle_s)
        idle = result["idle"]
        print(
            f"  idle {idle['seconds']} s: node CPU {idle['node_cpu_pct']['mean']}% mean, "
            f"{idle['node_cpu_pct']['max']}% max; redis {idle['redis_cpu_pct']}%; {idle['per_s']}",
            flush=True,
        )
        if args.failovers:
            result["failover"] = await failovers(nodes, size, args.failovers, args.delay, rng)
        # Admissions and the probes of the kills; the calls a node received die with it, so these are the
        # calls received by the nodes alive at the end.
        result["grpc_calls_whole_run"] = _calls_since(await rpc_calls(nodes), {})
        print(f"  gRPC calls over the whole run, received by the nodes alive at the end: "
              f"{result['grpc_calls_whole_run']}", flush=True)  # fmt: skip
    except Exception as exc:
        traceback.print_exc()
        result["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        result["logs"] = str(workdir)
        await nodes.stop()
    return result


def _cell(value: Any, unit: str = "") -> str:
    return "-" if value is None else f"{value:g}{unit}" if isinstance(value, int | float) else str(value)


def report(results: list[dict[str, Any]]) -> str:
    head = ("nodes | ready s | node CPU % mean / max | redis CPU % | Redis cmds/s | publishes/s | deliveries/s "
            "| gRPC calls/s | messages/s | messages/s per node | master failover s median / max "
            "| worker loss s median / max | other CPU %")  # fmt: skip
    lines = ["", head, " | ".join("---" for _ in head.split(" | "))]
    for r in results:
        if "idle" not in r:
            lines.append(f"{r['nodes']} | FAILED: {r.get('error')} (logs in {r['logs']})")
            continue
        idle, s = r["idle"], r["idle"]["per_s"]
        fo = r.get("failover", {})
        m, w = fo.get("master", {}).get("summary", {}), fo.get("worker", {}).get("summary", {})

        def mm(x: dict[str, Any]) -> str:
            bad = f" ({x['failed']} of {x['runs']} failed)" if x.get("failed") else ""
            return f"{_cell(x.get('median'))} / {_cell(x.get('max'))}{bad}" if x else "-"

        lines.append(" | ".join([
            str(r["nodes"]), _cell(r.get("ready_s")),
            f"{idle['node_cpu_pct']['mean']} / {idle['node_cpu_pct']['max']}", _cell(idle["redis_cpu_pct"]),
            _cell(s["redis_commands"]), _cell(s["publishes"]), _cell(s["deliveries"]), _cell(s["grpc_calls"]),
            _cell(s["messages"]), _cell(idle["messages_per_s_per_node"]), mm(m), mm(w), _cell(idle["other_cpu_pct"]),
        ]))  # fmt: skip
    lines += [
        f"{r['nodes']} nodes: {r['error']} (logs in {r['logs']})" for r in results if "idle" in r and "error" in r
    ]
    lines += ["", *growth_lines(results)]
    return "\n".join(lines)


def growth(results: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per figure and size: (figure at N / figure at the smallest N) / (N / smallest N). 1.0 is linear growth,
    N / smallest N would be quadratic."""
    done = [r for r in results if "idle" in r]
    if len(done) < 2:
        return {}
    base = done[0]
    out: dict[str, dict[str, float]] = {}
    for key in ("redis_commands", "deliveries", "grpc_calls", "messages"):
        b = base["idle"]["per_s"][key]
        if b <= 0:
            continue
        out[key] = {str(r["nodes"]): round(r["idle"]["per_s"][key] / b / (r["nodes"] / base["nodes"]), 2)
                    for r in done}  # fmt: skip
    return out


def growth_lines(results: list[dict[str, Any]]) -> list[str]:
    done = [r for r in results if "idle" in r]
    lines = ["messages/s over N: " + ", ".join(f"{r['nodes']} nodes {r['idle']['messages_per_s_per_node']}"
                                               for r in done)]  # fmt: skip
    ratios = growth(results)
    if ratios:
        lines.append(f"growth against linear from {done[0]['nodes']} nodes (1.0 = linear, N/{done[0]['nodes']} = "
                     "quadratic):")  # fmt: skip
        lines += [f"  {key}: " + ", ".join(f"{n} nodes {v}" for n, v in by.items()) for key, by in ratios.items()]
    return lines


async def main_async(args: argparse.Namespace, workdir: Path) -> int:
    src, source = shoal_source(args.shoal_ref, workdir)
    path = node_path(src, workdir)
    rng = random.Random(args.seed)
    machine_before = machine_info()
    started = time.monotonic()
    results = [await measure(n, args, path, workdir / f"n{n}", rng) for n in args.sizes]
    print(report(results))
    payload = {
        "generated_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {**machine_info(), "loadavg_before": machine_before["loadavg"]},
        "shoal": source,
        "settings": "node defaults (heartbeat_interval 1 s, dead_after 5) with --slots 1"
        + (f", plus {' '.join(args.node_arg)}" if args.node_arg else ""),
        "targets": TARGETS,
        "parameters": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "wall_seconds": round(time.monotonic() - started, 1),
        "results": results,
        "growth_against_linear": growth(results),
    }
    write_json(args.json, payload)
    print(f"\nfigures written to {args.json}")
    failed = any("error" in r for r in results) or any(
        f["summary"]["failed"] for r in results for f in r.get("failover", {}).values()
    )
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    return run_bench(main_async, parse_args(argv), "shoal-members-bench-")


if __name__ == "__main__":
    sys.exit(main())
