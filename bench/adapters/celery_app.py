"""The Celery application both the benchmark client and the Celery worker subprocess import.

Broker and result backend are the same Redis, given by ``BENCH_REDIS_URL`` (the worker reads it at
import; the client calls ``configure``). Settings are Celery's defaults except where noted: JSON, the
Redis result backend, no gossip/mingle/heartbeat chatter between workers (there is one worker).
"""

from __future__ import annotations

import os
import time

from celery import Celery

app = Celery("bench")


def configure(url: str) -> None:
    app.conf.update(
        broker_url=url,
        result_backend=url,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        task_send_sent_event=False,
        worker_prefetch_multiplier=int(os.environ.get("BENCH_CELERY_PREFETCH", "4")),
    )


configure(os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0"))


@app.task(name="bench.echo")  # type: ignore[untyped-decorator]
def echo(target: str, delay_s: float = 0.0) -> str:
    """The same work as shoal's ``echo`` type: wait ``delay_s`` (default none), return the target."""
    if delay_s:
        time.sleep(delay_s)
    return target
