"""Dramatiq with its Redis broker: the broker module the worker loads, and its driver.

Dramatiq's defaults: its default middleware (no Results middleware, so results are not
stored), 8 worker threads, prefetch 2 x threads. The broker URL comes from ``KW_BENCH_URL``.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import dramatiq
from dramatiq.brokers.redis import RedisBroker

from benchmarks.peers import _driver
from benchmarks.probe import PROBE

broker = RedisBroker(url=os.environ.get("KW_BENCH_URL", "redis://127.0.0.1:6379/0"))
dramatiq.set_broker(broker)


@dramatiq.actor(actor_name="noop", max_retries=0)
def noop() -> None:
    PROBE.tick()


def submit_many(url: str, n: int) -> None:
    for _ in range(n):
        noop.send()


def submit_one(url: str) -> Callable[[], object]:
    return lambda: noop.send()


if __name__ == "__main__":
    _driver.main(submit_many, submit_one)
