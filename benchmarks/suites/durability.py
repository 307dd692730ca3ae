"""durability: what a durable submit (``Durability(replicas=1)``: the enqueue, a fence write and
``WAIT 1`` in one round trip) costs against a normal submit, and what a durable worker
(``durable_replicas=1``: ``WAIT 1`` after each take) costs against a normal one.

A real master and one replica (``redis-server --replicaof``) on loopback; the SDK's blocking
``Client`` talks to the master. Two ways to submit, each normal and durable, on the same pair:
one job per call (what a web request does; per-call latency p50/p99) and ``submit_many`` in
bulk (one ``WAIT`` per 500-job chunk); then one in-process worker (concurrency 16) drains N
no-op jobs, normal and durable.
The replica is on the same machine, so the wait is replication's own cost (the replica applying
the write and acknowledging it), without a network between them.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from typing import Any

import redis
from kubeworkers.client import AsyncClient, Client
from kubeworkers.queue import Durability
from kubeworkers.registry import Registry
from kubeworkers.settings import WorkerSettings
from kubeworkers.worker import Worker
from pydantic import BaseModel

from benchmarks import report
from benchmarks.measure import fmt, markdown_table, text_table
from hack.polling import wait_for, wait_for_async
from tests.support.redis_server import RedisServer

POOL = "bench-durable"


def _replica_linked(replica: RedisServer) -> bool:
    with redis.Redis(port=replica.port, decode_responses=True) as r:
        return bool(r.info("replication").get("master_link_status") == "up")


def _one_by_one(client: Client, jobs: int) -> tuple[float, list[float]]:
    calls: list[float] = []
    start = time.perf_counter()
    for _ in range(jobs):
        t0 = time.perf_counter()
        client.submit(POOL, "noop", {})
        calls.append(time.perf_counter() - t0)
    return time.perf_counter() - start, calls


def _bulk(client: Client, jobs: int) -> float:
    start = time.perf_counter()
    client.submit_many(POOL, "noop", [{}] * jobs)
    return time.perf_counter() - start


class Nothing(BaseModel):
    pass


async def noop(inp: Nothing) -> None:
    return None


async def _drain(url: str, jobs: int, durable_replicas: int) -> float:
    reg = Registry()
    reg.handler("noop")(noop)
    settings = WorkerSettings(redis_url=url, pool=POOL, metrics_port=-1, concurrency=16, block_ms=100,
                              log_level="WARNING", durable_replicas=durable_replicas)
    with Client(url, registry=Registry()) as client:
        ids = client.submit_many(POOL, "noop", [{}] * jobs)
    worker = Worker(settings, reg)
    task = asyncio.create_task(worker.run())
    await wait_for_async(worker.ready, 60, "the benchmark's worker to be ready")
    # Timed by the records' own finish times, so the polling that checks them costs nothing.
    start = time.time()
    async with AsyncClient(url, registry=Registry()) as client:
        finished = [(await client.wait(job_id, 600, pool=POOL)).finished_at or 0.0 for job_id in ids]
    elapsed = max(finished) - start
    worker.stop()
    await task
    return elapsed


def run(quick: bool) -> report.SuiteResult:
    single, bulk, drain = (200, 5_000, 1_000) if quick else (5_000, 50_000, 20_000)
    out: list[dict[str, Any]] = []
    with RedisServer() as master, RedisServer(extra_args=("--replicaof", "127.0.0.1", str(master.port))) as replica:
        wait_for(lambda: _replica_linked(replica), 30, "the replica to link to the master", every=0.05)
        for mode, durable in (("normal", None), ("durable", Durability(replicas=1, timeout_s=5.0))):
            with Client(master.url, registry=Registry(), durable=durable) as client:
                elapsed, calls = _one_by_one(client, single)
                calls_ms = sorted(1000 * c for c in calls)
                out.append({"mode": mode, "way": "one job per call", "jobs": single, "jobs_per_s": single / elapsed,
                            "p50_ms": statistics.median(calls_ms), "p99_ms": calls_ms[int(0.99 * (len(calls_ms) - 1))]})
                elapsed = _bulk(client, bulk)
                out.append({"mode": mode, "way": "submit_many", "jobs": bulk, "jobs_per_s": bulk / elapsed})
            print(f"[durability] {mode}: {out[-2]['jobs_per_s']:.0f} jobs/s one by one, "
                  f"{out[-1]['jobs_per_s']:.0f} jobs/s in bulk", flush=True)
        for mode, replicas in (("normal", 0), ("durable", 1)):
            with redis.Redis(port=master.port) as r:
                r.flushall()
            elapsed = asyncio.run(_drain(master.url, drain, replicas))
            out.append({"mode": mode, "way": "worker drain", "jobs": drain, "jobs_per_s": drain / elapsed})
            print(f"[durability] {mode} worker: {drain / elapsed:.0f} jobs/s drained", flush=True)
    return render({"suite": "durability", "machine": report.machine(), "runs": out})


def render(data: dict[str, Any]) -> report.SuiteResult:
    return report.SuiteResult("durability", data, text(data), markdown(data), [])


HEADERS = ["path", "mode", "jobs", "jobs/s", "x normal", "p50 ms per call", "p99 ms per call"]


def rows(data: dict[str, Any]) -> list[list[str]]:
    normal = {r["way"]: r["jobs_per_s"] for r in data["runs"] if r["mode"] == "normal"}
    return [[
        r["way"], r["mode"], f"{r['jobs']:,}", fmt(r["jobs_per_s"], 0), fmt(r["jobs_per_s"] / normal[r["way"]], 2),
        fmt(r["p50_ms"], 3) if "p50_ms" in r else "", fmt(r["p99_ms"], 3) if "p99_ms" in r else "",
    ] for r in data["runs"]]


def text(data: dict[str, Any]) -> str:
    return "durability: normal vs durable submit and worker (WAIT 1 replica)\n" + text_table(HEADERS, rows(data))


def markdown(data: dict[str, Any]) -> str:
    return "\n".join([
        "Normal vs durable submit (`Client(url, durable=Durability(replicas=1))`: the enqueue, a fence "
        "write and `WAIT 1` in one round trip) and normal vs durable worker (`--durable-replicas 1`: "
        "`WAIT 1` after each take and each settle batch, one in-process worker of concurrency 16 draining "
        "no-op jobs), against a "
        f"master with one replica on loopback. Machine: {report.machine_line(data['machine'])}.", "",
        markdown_table(HEADERS, rows(data)),
    ])
