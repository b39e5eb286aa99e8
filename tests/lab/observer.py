"""The test's eyes inside the lab, and the test's end of the pipe to them.

The test process stays in the root namespace, which cannot reach the lab (its subnet is blackholed
there). So it starts this file as a script on a host of its own in the lab (``Observer``) and sends it
one JSON request per line on stdin; each gets one JSON reply line on stdout (``ObserverClient``).
From there the observer reaches Redis and every node, like an operator's machine that the partition
does not cut off. Besides plain HTTP and Redis calls it keeps three records running in the background:

- the Redis ``MONITOR`` feed, reduced to what the fencing story needs: every script call (named by its
  SHA, with the client's address), the lease writes and epoch increments made inside the scripts, and
  every task state and placement write (``HSET task:<id> node <n> epoch <e>``), each with Redis's time;
- a steady stream of echo tasks submitted through given nodes, with what was accepted and what failed;
- a node's own view of its role: ``shoal_is_master`` from its ``/metrics``, sampled every 50 ms.

All times are Unix seconds of the one machine clock the namespaces share (Redis's TIME included).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import queue
import re
import subprocess
import sys
import threading
import time
from importlib import resources
from typing import Any

# -- the observer (runs inside the lab) ----------------------------------------------------------------

_LINE_RE = re.compile(r"^(\d+\.\d+) \[(\d+) (.*?)\] (.*)$", re.S)
_ARG_RE = re.compile(r'"((?:[^"\\]|\\.)*)"')


def script_names() -> dict[str, str]:
    """SHA1 -> name of shoal's Lua scripts, as the store registers them (_lib.lua in front of each)."""
    folder = resources.files("shoal.store") / "scripts"
    lib = (folder / "_lib.lua").read_text()
    names = {}
    for entry in folder.iterdir():
        if entry.name.endswith(".lua") and entry.name != "_lib.lua":
            text = lib + "\n" + entry.read_text()
            names[hashlib.sha1(text.encode()).hexdigest()] = entry.name.removesuffix(".lua")
    return names


class Observer:
    """Runs in the lab's observer namespace; each ``op_*`` method is one request kind."""

    def __init__(self, redis_url: str, prefix: str, token: str) -> None:
        import httpx
        import redis.asyncio as aioredis

        self.redis_url = redis_url
        self.redis = aioredis.Redis.from_url(redis_url, decode_responses=True, socket_timeout=10)
        self.http = httpx.AsyncClient(trust_env=False, timeout=5.0, headers={"Authorization": f"Bearer {token}"})
        self.prefix = prefix
        self.scripts = script_names()
        self.records: list[list[Any]] = []
        self.submitted: list[list[Any]] = []
        self.failures: list[list[Any]] = []
        self.samples: dict[str, list[list[Any]]] = {}
        self._jobs: dict[str, asyncio.Task[None]] = {}

    async def op_http(self, method: str, url: str, body: Any = None, timeout: float = 5.0) -> dict[str, Any]:
        response = await self.http.request(method, url, json=body, timeout=timeout)
        try:
            data: Any = response.json()
        except ValueError:
            data = response.text
        return {"status": response.status_code, "body": data}

    async def op_redis(self, commands: list[list[Any]]) -> list[Any]:
        async with self.redis.pipeline(transaction=False) as pipe:
            for command in commands:
                pipe.execute_command(*command)
            replies: list[Any] = await pipe.execute()
        return replies

    # MONITOR ----------------------------------------------------------------------------------------

    async def op_monitor(self) -> bool:
        ready = asyncio.get_running_loop().create_future()
        self._jobs["monitor"] = asyncio.create_task(self._monitor(ready))
        await asyncio.wait_for(ready, 10)
        return True

    async def _monitor(self, ready: asyncio.Future[None]) -> None:
        import redis.asyncio as aioredis

        client = aioredis.Redis.from_url(self.redis_url, decode_responses=True)  # no timeout: quiet is fine
        async with client.monitor() as monitor:
            ready.set_result(None)
            assert monitor.connection is not None
            while True:
                line = await monitor.connection.read_response()
                kept = self._keep(line if isinstance(line, str) else line.decode(errors="replace"))
                if kept is not None:
                    self.records.append(kept)

    def _keep(self, line: str) -> list[Any] | None:
        m = _LINE_RE.match(line)
        if m is None:
            return None
        at, client = float(m.group(1)), m.group(3)
        args = [a.replace('\\"', '"') for a in _ARG_RE.findall(m.group(4))]
        if not args:
            return None
        cmd, p = args[0].upper(), self.prefix
        if cmd == "EVALSHA" and len(args) > 3:
            return [at, client, "script", self.scripts.get(args[1].lower(), args[1][:8]), args[4:10]]
        if client != "lua" or len(args) < 2:
            return None
        key = args[1]
        if key == p + "lease" and cmd in ("SET", "PEXPIRE", "DEL"):
            return [at, client, cmd.lower(), key, args[2:3]]
        if key == p + "epoch" and cmd == "INCR":
            return [at, client, "incr", key, []]
        if key.startswith(p + "task:") and cmd == "HSET" and {"state", "node"} & set(args[2::2]):
            return [at, client, "hset", key.removeprefix(p + "task:"), args[2:]]
        return None

    async def op_records(self, since: int = 0) -> list[list[Any]]:
        return self.records[since:]

    # the task stream ----------------------------------------------------------------------------------

    async def op_stream_start(self, urls: list[str], every: float, delay_s: float) -> bool:
        self._jobs["stream"] = asyncio.create_task(self._stream(urls, every, delay_s))
        return True

    async def _stream(self, urls: list[str], every: float, delay_s: float) -> None:
        i = 0
        next_at = time.monotonic()
        while True:
            url = urls[i % len(urls)]
            body = {"name": f"lab-{i}", "type": "echo", "target": f"lab-{i}", "params": {"delay_s": delay_s}}
            at = time.time()
            try:
                response = await self.http.post(f"{url}/api/v1/tasks", json=body)
                if response.status_code == 201:
                    self.submitted.append([response.json()["id"], at, url])
                else:
                    self.failures.append([at, url, f"{response.status_code} {response.text[:200]}"])
            except Exception as exc:  # recorded: a failed submission must be accounted for, not lost
                self.failures.append([at, url, repr(exc)])
            i += 1
            next_at += every
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))

    async def op_stream_stop(self) -> dict[str, Any]:
        await self._stop("stream")
        return {"submitted": self.submitted, "failures": self.failures}

    async def op_stream_count(self) -> int:
        return len(self.submitted)

    # a node's own view of its role ------------------------------------------------------------------

    async def op_watch(self, url: str, every: float = 0.05) -> bool:
        self.samples[url] = []
        self._jobs[f"watch {url}"] = asyncio.create_task(self._watch(url, every))
        return True

    async def _watch(self, url: str, every: float) -> None:
        """Record each change of ``shoal_is_master`` (or of the error in reading it) with its time."""
        samples, last = self.samples[url], None
        while True:
            at = time.time()
            try:
                response = await self.http.get(f"{url}/metrics", timeout=0.5)
                m = re.search(r"^shoal_is_master (\S+)$", response.text, re.M)
                value: Any = int(float(m.group(1))) if m else f"no gauge ({response.status_code})"
            except Exception as exc:
                value = f"error: {type(exc).__name__}"
            if value != last:
                samples.append([at, value])
                last = value
            await asyncio.sleep(every)

    async def op_watched(self, url: str) -> list[list[Any]]:
        return self.samples.get(url, [])

    async def _stop(self, name: str) -> None:
        job = self._jobs.pop(name, None)
        if job is not None:
            job.cancel()
            with contextlib.suppress(BaseException):
                await job


async def serve(observer: Observer) -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 24)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    out = sys.stdout
    out.write(json.dumps({"ok": True, "value": "ready"}) + "\n")
    out.flush()
    while line := await reader.readline():
        request = json.loads(line)
        op = request.pop("op")
        try:
            reply = {"ok": True, "value": await getattr(observer, f"op_{op}")(**request)}
        except Exception as exc:
            reply = {"ok": False, "error": f"{op}: {exc!r}"}
        out.write(json.dumps(reply) + "\n")
        out.flush()


def main() -> None:
    parser = argparse.ArgumentParser(description="shoal lab observer (talks JSON lines on stdin/stdout)")
    parser.add_argument("--redis", required=True)
    parser.add_argument("--prefix", default="shoal:shoal:")
    args = parser.parse_args()
    observer = Observer(args.redis, args.prefix, os.environ["SHOAL_LAB_TOKEN"])
    asyncio.run(serve(observer))


# -- the test's end of the pipe ------------------------------------------------------------------------


class ObserverClient:
    """Talks to an observer process over its stdin/stdout; every call has a deadline."""

    def __init__(self, proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
        self.proc = proc
        self.timeout = timeout
        self._lines: queue.Queue[bytes] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True, name="observer stdout").start()
        hello = self._read(timeout)
        if hello.get("value") != "ready":
            raise RuntimeError(f"observer did not start: {hello}")

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line)
        self._lines.put(b"")

    def _read(self, timeout: float) -> dict[str, Any]:
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(f"the observer did not answer within {timeout:g}s") from None
        if not line:
            raise RuntimeError(f"the observer exited ({self.proc.poll()})")
        reply: dict[str, Any] = json.loads(line)
        return reply

    def call(self, op: str, timeout: float | None = None, **args: Any) -> Any:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"op": op, **args}).encode() + b"\n")
        self.proc.stdin.flush()
        reply = self._read(timeout or self.timeout)
        if not reply["ok"]:
            raise RuntimeError(reply["error"])
        return reply["value"]

    def get(self, url: str, timeout: float = 5.0) -> dict[str, Any]:
        reply: dict[str, Any] = self.call("http", method="GET", url=url, timeout=timeout)
        return reply


if __name__ == "__main__":
    main()
