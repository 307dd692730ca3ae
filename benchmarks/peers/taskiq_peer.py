"""taskiq with taskiq-redis' stream broker (``RedisStreamBroker``): the broker the worker loads, and its driver.

taskiq's defaults (no result backend, so results are not stored; ack when the result is
"saved"; up to 100 tasks at once; ``xread_count`` 100) except ``consumer_id="0"``: the
consumer group then starts at the stream's beginning, so jobs submitted before the worker
starts are delivered (the default ``$`` skips them). The URL comes from ``KW_BENCH_URL``.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from typing import Any

from taskiq_redis import RedisStreamBroker

from benchmarks.peers import _driver
from benchmarks.probe import PROBE

broker = RedisStreamBroker(os.environ.get("KW_BENCH_URL", "redis://127.0.0.1:6379/0"), consumer_id="0")


@broker.task(task_name="noop")
async def noop() -> None:
    PROBE.tick()


async def submit_many(url: str, n: int) -> None:
    await broker.startup()
    for start in range(0, n, 500):
        await asyncio.gather(*(noop.kiq() for _ in range(min(500, n - start))))
    await broker.shutdown()


async def open_one(url: str) -> Callable[[], Awaitable[Any]]:
    await broker.startup()
    return lambda: noop.kiq()


if __name__ == "__main__":
    _driver.main_async(submit_many, open_one)
