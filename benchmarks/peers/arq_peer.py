"""arq: the worker settings and its driver.

``max_jobs`` 200 (arq's default is 10; 200 matches kubeworkers' concurrency), everything else
arq's defaults: ``poll_delay`` 0.5 s, ``queue_read_limit`` 5 x max_jobs, results kept 1 h.
The worker runs through ``arq.worker.run_worker`` (what the ``arq`` command calls) so that
logging stays at Python's default WARNING, as for every other system here.

    python -m benchmarks.peers.arq_peer worker --url URL
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from arq import create_pool
from arq.connections import RedisSettings
from arq.worker import func, run_worker

from benchmarks.peers import _driver
from benchmarks.probe import PROBE

MAX_JOBS = int(os.environ.get("KW_BENCH_ARQ_MAX_JOBS", "200"))


async def noop(ctx: dict[str, Any]) -> None:
    PROBE.tick()


class WorkerSettings:
    functions = [func(noop, name="noop")]
    max_jobs = MAX_JOBS
    redis_settings = RedisSettings.from_dsn(os.environ.get("KW_BENCH_URL", "redis://127.0.0.1:6379/0"))


async def submit_many(url: str, n: int) -> None:
    pool = await create_pool(RedisSettings.from_dsn(url))
    for start in range(0, n, 500):
        await asyncio.gather(*(pool.enqueue_job("noop") for _ in range(min(500, n - start))))
    await pool.aclose()


async def open_one(url: str) -> Callable[[], Awaitable[Any]]:
    pool = await create_pool(RedisSettings.from_dsn(url))
    return lambda: pool.enqueue_job("noop")


if __name__ == "__main__":
    if sys.argv[1:2] == ["worker"]:
        run_worker(WorkerSettings)  # type: ignore[arg-type]
    else:
        _driver.main_async(submit_many, open_one)
