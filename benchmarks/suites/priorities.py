"""priorities: what priority aging buys low jobs under a steady high-priority load, and what it costs.

One in-process kubeworkers worker on the rig's Redis drains a steady load of no-op ``high`` jobs
(a producer keeps at least :data:`HIGH_BACKLOG` of them queued for the whole steady window, so
the worker never runs out) while :data:`LOW_JOBS` ``low`` jobs arrive spread over the window's
first half. Then the producer stops and everything drains. The same run is made with aging off
(strict priority order) and on (``priority_aging_seconds``), interleaved (off, on, on, off, ...),
three times each (twice with ``--quick``), and the medians compared:

- the low jobs' wait (record ``started_at - enqueued_at``): with aging off they wait until the
  high load ends; with it on, about three aging periods at most (low -> critical rank);
- the high jobs' throughput during the steady window: what the aged take costs (it reads each
  stream's group and head before reading, a few more commands per take).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from kubeworkers.client import AsyncClient
from kubeworkers.protocol import PoolKeys
from kubeworkers.registry import Registry
from kubeworkers.settings import WorkerSettings
from kubeworkers.worker import Worker
from pydantic import BaseModel

from benchmarks import report
from benchmarks.measure import fmt, markdown_table, median, percentile, text_table
from benchmarks.rig import Rig
from hack.polling import wait_for_async

POOL = "bench-prio"
#: High jobs kept queued during the steady window (the producer tops up below it).
HIGH_BACKLOG = 2_000
#: Low jobs submitted during the first half of the steady window.
LOW_JOBS = 20
#: Worker concurrency (jobs in flight).
CONCURRENCY = 50


class Nothing(BaseModel):
    pass


async def _run(url: str, aging_seconds: float, steady_seconds: float) -> dict[str, Any]:
    reg = Registry()
    finished: list[float] = []

    @reg.handler("noop")
    async def noop(inp: Nothing) -> None:
        finished.append(time.monotonic())

    settings = WorkerSettings(redis_url=url, pool=POOL, metrics_port=-1, concurrency=CONCURRENCY,
                              block_ms=100, log_level="WARNING", priority_aging_seconds=aging_seconds)
    worker = Worker(settings, reg)
    task = asyncio.create_task(worker.run())
    await wait_for_async(worker.ready, 60, "the benchmark's worker to be ready")
    high_stream = PoolKeys("default", POOL).stream("high")
    async with AsyncClient(url, registry=Registry()) as client:
        start = time.monotonic()
        end = start + steady_seconds
        low_ids: list[str] = []
        lows_due = [start + (steady_seconds / 2) * i / LOW_JOBS for i in range(LOW_JOBS)]
        while (now := time.monotonic()) < end:
            while lows_due and lows_due[0] <= now:
                lows_due.pop(0)
                low_ids.append(await client.submit(POOL, "noop", {}, priority="low"))
            # XLEN counts the jobs being run too: a floor on the queue, not its exact length.
            if int(await client.redis.xlen(high_stream)) < HIGH_BACKLOG + CONCURRENCY:
                await client.submit_many(POOL, "noop", [{}] * 500, priority="high")
            await asyncio.sleep(0.01)
        steady = sum(1 for t in finished if start <= t <= end)
        waits = []
        for job_id in low_ids:
            done = await client.wait(job_id, 600, pool=POOL)
            assert done.started_at is not None and done.enqueued_at is not None
            waits.append(done.started_at - done.enqueued_at)
        started_in_window = sum(1 for w, due in zip(waits, [start + (steady_seconds / 2) * i / LOW_JOBS
                                                           for i in range(LOW_JOBS)], strict=True)
                                if due + w <= end)
    worker.stop()
    await task
    return {"aging_seconds": aging_seconds, "low_wait_p50_s": percentile(waits, 0.5),
            "low_wait_max_s": max(waits), "low_started_in_window": started_in_window,
            "high_jobs_per_s": steady / steady_seconds}


def run(quick: bool) -> report.SuiteResult:
    steady, aging, repeats = (2.5, 0.4, 2) if quick else (10.0, 1.0, 3)
    runs: list[dict[str, Any]] = []
    with Rig() as rig:
        for i in range(repeats):
            # Off, on, then on, off, ...: neither mode always runs first (a cold first run is slower).
            for seconds in ((0.0, aging) if i % 2 == 0 else (aging, 0.0)):
                rig.flush()
                result = asyncio.run(_run(rig.url, seconds, steady))
                runs.append(result)
                print(f"[priorities] aging {seconds:g}s: low wait p50 {result['low_wait_p50_s']:.2f}s, "
                      f"high {result['high_jobs_per_s']:.0f} jobs/s", flush=True)
    return render({"suite": "priorities", "machine": report.machine(), "steady_seconds": steady,
                   "aging_seconds": aging, "low_jobs": LOW_JOBS, "high_backlog": HIGH_BACKLOG,
                   "concurrency": CONCURRENCY, "runs": runs})


def render(data: dict[str, Any]) -> report.SuiteResult:
    return report.SuiteResult("priorities", data, text(data), markdown(data), [])


HEADERS = ["aging", "runs", "low wait p50 s", "low wait max s", "low jobs started in the window",
           "high jobs/s", "low wait p50: x aging on", "high jobs/s: x aging off"]


def _medians(data: dict[str, Any], on: bool) -> dict[str, float]:
    chosen = [r for r in data["runs"] if (r["aging_seconds"] > 0) == on]
    keys = ("low_wait_p50_s", "low_wait_max_s", "low_started_in_window", "high_jobs_per_s")
    return {k: median(r[k] for r in chosen) or 0.0 for k in keys} | {"runs": float(len(chosen))}


def rows(data: dict[str, Any]) -> list[list[str]]:
    off, on = _medians(data, False), _medians(data, True)
    out = []
    for label, m in (("off (strict)", off), (f"on, {data['aging_seconds']:g} s per level", on)):
        out.append([
            label, f"{m['runs']:.0f}", fmt(m["low_wait_p50_s"], 2), fmt(m["low_wait_max_s"], 2),
            f"{m['low_started_in_window']:.0f} of {data['low_jobs']}", fmt(m["high_jobs_per_s"], 0),
            fmt(m["low_wait_p50_s"] / max(on["low_wait_p50_s"], 1e-9), 2),
            fmt(m["high_jobs_per_s"] / max(off["high_jobs_per_s"], 1e-9), 2),
        ])
    return out


def text(data: dict[str, Any]) -> str:
    return "priorities: low jobs under a steady high load, priority aging off vs on\n" + text_table(HEADERS, rows(data))


def markdown(data: dict[str, Any]) -> str:
    return "\n".join([
        f"A steady load of no-op `high` jobs (at least {data['high_backlog']:,} queued for "
        f"{data['steady_seconds']:g} s) and {data['low_jobs']} `low` jobs arriving over its first half, "
        f"one in-process worker of concurrency {data['concurrency']}; aging off and on interleaved, "
        f"medians. Machine: {report.machine_line(data['machine'])}.", "",
        markdown_table(HEADERS, rows(data)),
    ])
