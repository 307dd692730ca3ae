"""isolation: what ``@handler(isolation="process")`` costs per job, against the same no-op handler
run in the worker.

One in-process kubeworkers worker on the rig's Redis, concurrency 1 and 2 (this machine's
cores), drains N jobs of a no-op async handler, then N of the same handler process-isolated
(a fresh child interpreter per attempt). Per-job time is drain wall time / N; the overhead is
the difference. The child's cost is interpreter start-up plus importing kubeworkers and the
handler's module, which a bigger handler module makes larger.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from kubeworkers.client import AsyncClient
from kubeworkers.registry import Registry
from kubeworkers.settings import WorkerSettings
from kubeworkers.worker import Worker
from pydantic import BaseModel

from benchmarks import report
from benchmarks.measure import fmt, markdown_table, text_table
from benchmarks.rig import Rig
from hack.polling import wait_for_async


class Nothing(BaseModel):
    pass


async def noop(inp: Nothing) -> None:
    return None


async def _drain(url: str, isolation: str, jobs: int, concurrency: int) -> float:
    reg = Registry()
    reg.handler("noop", isolation=isolation)(noop)  # type: ignore[arg-type]
    settings = WorkerSettings(redis_url=url, pool="bench-iso", metrics_port=-1, concurrency=concurrency,
                              imports=["benchmarks.suites.isolation"], block_ms=100, log_level="WARNING")
    worker = Worker(settings, reg)
    task = asyncio.create_task(worker.run())
    await wait_for_async(worker.ready, 60, "the benchmark's worker to be ready")
    async with AsyncClient(url, registry=Registry()) as client:
        start = time.perf_counter()
        ids = await client.submit_many("bench-iso", "noop", [{}] * jobs)
        for job_id in ids:
            await client.wait(job_id, 600, pool="bench-iso")
        elapsed = time.perf_counter() - start
    worker.stop()
    await task
    return elapsed


def run(quick: bool) -> report.SuiteResult:
    jobs = {"none": 2_000, "process": 100} if not quick else {"none": 50, "process": 10}
    out: list[dict[str, Any]] = []
    with Rig() as rig:
        for concurrency in (1, 2):
            for isolation in ("none", "process"):
                rig.flush()
                elapsed = asyncio.run(_drain(rig.url, isolation, jobs[isolation], concurrency))
                per_job_ms = 1000 * elapsed / jobs[isolation]
                out.append({"isolation": isolation, "concurrency": concurrency, "jobs": jobs[isolation],
                            "per_job_ms": per_job_ms, "jobs_per_s": jobs[isolation] / elapsed})
                print(f"[isolation] {isolation} c{concurrency}: {per_job_ms:.2f} ms/job", flush=True)
    return render({"suite": "isolation", "machine": report.machine(), "runs": out})


def render(data: dict[str, Any]) -> report.SuiteResult:
    return report.SuiteResult("isolation", data, text(data), markdown(data), [])


HEADERS = ["handler runs", "concurrency", "jobs", "ms per job", "jobs/s", "overhead ms per job"]


def rows(data: dict[str, Any]) -> list[list[str]]:
    inline = {r["concurrency"]: r["per_job_ms"] for r in data["runs"] if r["isolation"] == "none"}
    return [[
        "in a child process" if r["isolation"] == "process" else "in the worker", str(r["concurrency"]),
        f"{r['jobs']:,}", fmt(r["per_job_ms"], 2), fmt(r["jobs_per_s"], 0),
        fmt(r["per_job_ms"] - inline[r["concurrency"]], 1) if r["isolation"] == "process" else "",
    ] for r in data["runs"]]


def text(data: dict[str, Any]) -> str:
    return "isolation: a no-op handler in the worker vs in a child process\n" + text_table(HEADERS, rows(data))


def markdown(data: dict[str, Any]) -> str:
    return "\n".join([
        "A no-op async handler drained by one in-process worker, in the worker and with "
        f'`isolation="process"`. Machine: {report.machine_line(data["machine"])}.', "",
        markdown_table(HEADERS, rows(data)),
    ])
