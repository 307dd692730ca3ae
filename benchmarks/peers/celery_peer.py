"""Celery with its Redis broker: the app the worker loads (``-A benchmarks.peers.celery_peer``), and its driver.

Configuration for a no-op task, from Celery's own guidance for many short tasks: a larger
prefetch multiplier (``worker_prefetch_multiplier`` 64: fewer broker round trips), early acks
(the default), no result backend (the default: results are not stored), no task events
(the default), and the worker started without gossip, mingle and heartbeat.
The broker URL comes from ``KW_BENCH_URL`` (the worker imports this module).
"""

from __future__ import annotations

import os
from collections.abc import Callable

from celery import Celery

from benchmarks.peers import _driver
from benchmarks.probe import PROBE

app = Celery("bench", broker=os.environ.get("KW_BENCH_URL", "redis://127.0.0.1:6379/0"))
app.conf.update(
    worker_prefetch_multiplier=64,
    task_acks_late=False,
    worker_send_task_events=False,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)


@app.task(name="bench.noop")
def noop() -> None:
    PROBE.tick()


def submit_many(url: str, n: int) -> None:
    app.conf.broker_url = url
    with app.producer_or_acquire() as producer:
        for _ in range(n):
            noop.apply_async(producer=producer)


def submit_one(url: str) -> Callable[[], object]:
    app.conf.broker_url = url
    return lambda: noop.apply_async()


if __name__ == "__main__":
    _driver.main(submit_many, submit_one)
