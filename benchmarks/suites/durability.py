"""durability: what a durable submit (``Durability(replicas=1)``: the enqueue, a fence write and
``WAIT 1`` in one round trip) costs against a normal submit.

A real master and one replica (``redis-server --replicaof``) on loopback; the SDK's blocking
``Client`` talks to the master. Two ways to submit, each normal and durable, on the same pair:
one job per call (what a web request does; per-call latency p50/p99) and ``submit_many`` in
bulk (one ``WAIT`` per 500-job chunk). Nothing runs the jobs: this measures the submit path only.
The replica is on the same machine, so the wait is replication's own cost (the replica applying
the write and acknowledging it), without a network between them.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import redis
from kubeworkers.client import Client
from kubeworkers.queue import Durability
from kubeworkers.registry import Registry

from benchmarks import report
from benchmarks.measure import fmt, markdown_table, text_table
from hack.polling import wait_for
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


def run(quick: bool) -> report.SuiteResult:
    single, bulk = (200, 5_000) if quick else (5_000, 50_000)
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
    return render({"suite": "durability", "machine": report.machine(), "runs": out})


def render(data: dict[str, Any]) -> report.SuiteResult:
    return report.SuiteResult("durability", data, text(data), markdown(data), [])


HEADERS = ["submit", "mode", "jobs", "jobs/s", "x normal", "p50 ms per call", "p99 ms per call"]


def rows(data: dict[str, Any]) -> list[list[str]]:
    normal = {r["way"]: r["jobs_per_s"] for r in data["runs"] if r["mode"] == "normal"}
    return [[
        r["way"], r["mode"], f"{r['jobs']:,}", fmt(r["jobs_per_s"], 0), fmt(r["jobs_per_s"] / normal[r["way"]], 2),
        fmt(r["p50_ms"], 3) if "p50_ms" in r else "", fmt(r["p99_ms"], 3) if "p99_ms" in r else "",
    ] for r in data["runs"]]


def text(data: dict[str, Any]) -> str:
    return "durability: normal vs durable submit (WAIT 1 replica)\n" + text_table(HEADERS, rows(data))


def markdown(data: dict[str, Any]) -> str:
    return "\n".join([
        "Normal vs durable submit (`Client(url, durable=Durability(replicas=1))`: the enqueue, a fence "
        "write and `WAIT 1` in one round trip) against a master with one replica on loopback; the jobs "
        f"are not run. Machine: {report.machine_line(data['machine'])}.", "",
        markdown_table(HEADERS, rows(data)),
    ])
