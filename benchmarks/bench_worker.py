"""Worker runtime benchmark: drain rate, bulk submit rate, submit->start latency.

Runs against a private ``redis-server`` and one real worker process
(``python -m kubeworkers worker``), with a no-op handler. In the same run, a
bare batched redis-py consumer-group loop (XREADGROUP COUNT 100 + pipelined
XACK) and bare pipelined XADDs are measured as the peer, and kubeworkers is
reported as a ratio of them.

    .venv/bin/python benchmarks/bench_worker.py [--jobs 20000] [--concurrency 200]

Targets: >= 5,000 jobs/s drained per worker process, >= 20,000 jobs/s bulk
submit, p50 submit->start < 5 ms on an idle worker. Results go to
``benchmarks/results/bench_worker-<time>.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from kubeworkers.registry import handler
from pydantic import BaseModel

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

POOL = "bench"
NAMESPACE = "default"


class Empty(BaseModel):
    pass


@handler("bench.noop", max_attempts=1)
async def noop(inp: Empty) -> None:
    """Does nothing: the benchmark measures the runtime, not the handler."""


# --------------------------------------------------------------------------- helpers


def start_worker(url: str, concurrency: int, log_level: str) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "PYTHONPATH": f"{REPO / 'benchmarks'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
        "KUBEWORKERS_LOG_LEVEL": log_level,
    }
    return subprocess.Popen(
        [sys.executable, "-m", "kubeworkers", "worker", "--redis-url", url, "--namespace", NAMESPACE,
         "--pool", POOL, "--import", "bench_worker", "--concurrency", str(concurrency), "--metrics-port", "-1",
         "--name", f"bench-{os.getpid()}"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


async def wait_completed(r: Any, keys: Any, n: int, within: float = 300) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        done = int(await r.hget(keys.stats, "completed") or 0)
        if done >= n:
            return
        await asyncio.sleep(0.05)
    raise TimeoutError(f"only {done} of {n} jobs completed in {within}s")


async def record_times(r: Any, keys: Any, job_ids: list[str]) -> tuple[float, float]:
    """(first started_at, last finished_at) over the jobs' records."""
    pipe = r.pipeline(transaction=False)
    for job_id in job_ids:
        pipe.hmget(keys.record(job_id), "started_at", "finished_at")
    rows = await pipe.execute()
    return min(float(s) for s, _ in rows), max(float(f) for _, f in rows)


# --------------------------------------------------------------------------- kubeworkers


async def bench_submit(url: str, jobs: int) -> tuple[float, list[str]]:
    from kubeworkers.client import AsyncClient

    async with AsyncClient(url, NAMESPACE) as client:
        t0 = time.perf_counter()
        ids = await client.submit_many(POOL, "bench.noop", ({} for _ in range(jobs)))
        elapsed = time.perf_counter() - t0
    return jobs / elapsed, ids


def proc_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def redis_cpu_seconds(r: Any) -> float:
    info = await r.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


async def bench_drain(url: str, jobs: int, concurrency: int, log_level: str) -> dict[str, float]:
    """Submit ``jobs`` first, then let one worker process drain them.

    Returns jobs/s from the first start to the last end, and the CPU time the worker
    process and Redis spent per job (what the machine's other tenants cannot distort).
    """
    import redis.asyncio as aioredis
    from kubeworkers.protocol import PoolKeys

    r = aioredis.Redis.from_url(url)
    await r.flushall()
    keys = PoolKeys(NAMESPACE, POOL)
    _, ids = await bench_submit(url, jobs)
    proc = start_worker(url, concurrency, log_level)
    try:
        while not await r.hget(keys.stats, "completed"):  # noqa: ASYNC110 - polling Redis, not a local flag
            await asyncio.sleep(0.001)
        worker_cpu, redis_cpu = proc_cpu_seconds(proc.pid), await redis_cpu_seconds(r)
        await wait_completed(r, keys, jobs)
        worker_cpu = proc_cpu_seconds(proc.pid) - worker_cpu
        redis_cpu = await redis_cpu_seconds(r) - redis_cpu
        first, last = await record_times(r, keys, ids)
    finally:
        stop(proc)
        await r.aclose()
    return {
        "rate": jobs / (last - first),
        "worker_cpu_us_per_job": worker_cpu / jobs * 1e6,
        "redis_cpu_us_per_job": redis_cpu / jobs * 1e6,
    }


async def bench_latency(url: str, samples: int) -> list[float]:
    """Submit one job at a time to an idle worker; submit->start in milliseconds."""
    import redis.asyncio as aioredis
    from kubeworkers.client import AsyncClient
    from kubeworkers.protocol import JobState, PoolKeys

    r = aioredis.Redis.from_url(url)
    await r.flushall()
    keys = PoolKeys(NAMESPACE, POOL)
    proc = start_worker(url, 10, "WARNING")
    out: list[float] = []
    try:
        async with AsyncClient(url, NAMESPACE) as client:
            warm = await client.submit(POOL, "bench.noop", {})
            await client.wait(warm, 60)
            for _ in range(samples):
                t0 = time.time()
                job_id = await client.submit(POOL, "bench.noop", {})
                record = await client.wait(job_id, 30)
                assert record.state is JobState.SUCCEEDED and record.started_at is not None
                out.append((record.started_at - t0) * 1000)
                await asyncio.sleep(0.01)  # idle worker: back in its blocking read
        del keys
    finally:
        stop(proc)
        await r.aclose()
    return out


# --------------------------------------------------------------------------- peer: bare redis-py


PEER_CONSUMER = r"""
import sys, time, redis
url, stream, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
r = redis.Redis.from_url(url)
done, first = 0, None
while done < n:
    reply = r.xreadgroup("g", "c", {stream: ">"}, count=100, block=1000)
    if not reply:
        continue
    if first is None:
        first = time.time()
    ids = [i for i, _ in reply[0][1]]
    pipe = r.pipeline(transaction=False)
    pipe.xack(stream, "g", *ids)
    pipe.xdel(stream, *ids)
    pipe.execute()
    done += len(ids)
print(n / (time.time() - first))
"""


async def peer_submit(url: str, jobs: int) -> float:
    import redis.asyncio as aioredis

    r = aioredis.Redis.from_url(url)
    await r.flushall()
    payload = json.dumps({"job_id": "x" * 32, "handler": "bench.noop", "input": {}})
    t0 = time.perf_counter()
    for start in range(0, jobs, 1000):
        pipe = r.pipeline(transaction=False)
        for _ in range(min(1000, jobs - start)):
            pipe.xadd("peer:jobs", {"v": "1", "m": payload})
        await pipe.execute()
    elapsed = time.perf_counter() - t0
    await r.aclose()
    return jobs / elapsed


async def peer_drain(url: str, jobs: int) -> float:
    import redis.asyncio as aioredis

    r = aioredis.Redis.from_url(url)
    await r.flushall()
    await r.xgroup_create("peer:jobs", "g", id="0", mkstream=True)
    await r.aclose()
    await peer_submit_keep(url, jobs)
    out = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-c", PEER_CONSUMER, url, "peer:jobs", str(jobs)],
        capture_output=True, text=True, check=True,
    )
    return float(out.stdout.strip())


async def peer_submit_keep(url: str, jobs: int) -> None:
    import redis.asyncio as aioredis

    r = aioredis.Redis.from_url(url)
    payload = json.dumps({"job_id": "x" * 32, "handler": "bench.noop", "input": {}})
    for start in range(0, jobs, 1000):
        pipe = r.pipeline(transaction=False)
        for _ in range(min(1000, jobs - start)):
            pipe.xadd("peer:jobs", {"v": "1", "m": payload})
        await pipe.execute()
    await r.aclose()


async def peer_latency(url: str, samples: int) -> list[float]:
    """A bare blocking XREADGROUP consumer; submit (XADD) -> received, in milliseconds."""
    import redis.asyncio as aioredis

    r = aioredis.Redis.from_url(url)
    await r.flushall()
    await r.xgroup_create("peer:lat", "g", id="0", mkstream=True)
    consumer = aioredis.Redis.from_url(url)
    out: list[float] = []
    for _ in range(samples):
        reader = asyncio.create_task(consumer.xreadgroup("g", "c", {"peer:lat": ">"}, count=1, block=5000))
        await asyncio.sleep(0.01)
        t0 = time.perf_counter()
        await r.xadd("peer:lat", {"m": "x"})
        await reader
        out.append((time.perf_counter() - t0) * 1000)
    await r.aclose()
    await consumer.aclose()
    return out


# --------------------------------------------------------------------------- main


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=20000)
    parser.add_argument("--concurrency", type=int, default=200)
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--log-level", default="INFO", help="worker log level during the drain run")
    args = parser.parse_args()

    from tests.support.redis_server import RedisServer

    with RedisServer() as server:
        url = server.url
        submit_rate = statistics.median([(await bench_submit_fresh(url, args.jobs)) for _ in range(3)])
        peer_submit_rate = statistics.median([await peer_submit(url, args.jobs) for _ in range(3)])
        drains = [await bench_drain(url, args.jobs, args.concurrency, args.log_level) for _ in range(3)]
        drain = sorted(drains, key=lambda d: d["rate"])[1]  # the median run
        drain_rate = drain["rate"]
        drain_quiet = (await bench_drain(url, args.jobs, args.concurrency, "WARNING"))["rate"]
        peer_drain_rate = await peer_drain(url, args.jobs)
        latency = await bench_latency(url, args.samples)
        peer_lat = await peer_latency(url, args.samples)

    results = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "jobs": args.jobs,
        "concurrency": args.concurrency,
        "cpus": os.cpu_count(),
        "bulk_submit_jobs_per_s": round(submit_rate),
        "peer_bulk_xadd_per_s": round(peer_submit_rate),
        "drained_jobs_per_s_per_process": round(drain_rate),
        "drained_jobs_per_s_runs": [round(d["rate"]) for d in drains],
        "worker_cpu_us_per_job": round(drain["worker_cpu_us_per_job"], 1),
        "redis_cpu_us_per_job": round(drain["redis_cpu_us_per_job"], 1),
        "load_average_1m": os.getloadavg()[0],
        "drained_jobs_per_s_per_process_logs_warning": round(drain_quiet),
        "peer_drained_per_s": round(peer_drain_rate),
        "submit_to_start_ms_p50": round(pct(latency, 0.5), 3),
        "submit_to_start_ms_p99": round(pct(latency, 0.99), 3),
        "peer_xadd_to_read_ms_p50": round(pct(peer_lat, 0.5), 3),
    }
    rows = [
        (f"drained jobs/s per worker process ({args.log_level} logs, median of 3)", drain_rate, peer_drain_rate,
         ">= 5000"),
        ("drained jobs/s per worker process (WARNING logs)", drain_quiet, peer_drain_rate, ">= 5000"),
        ("bulk submit jobs/s", submit_rate, peer_submit_rate, ">= 20000"),
        ("submit->start p50 ms (idle worker)", pct(latency, 0.5), pct(peer_lat, 0.5), "< 5"),
        ("submit->start p99 ms (idle worker)", pct(latency, 0.99), pct(peer_lat, 0.99), ""),
    ]
    print(f"\n{'metric':<60} {'kubeworkers':>12} {'bare redis-py':>14} {'ratio':>7}  target")
    for name, ours, peer, target in rows:
        print(f"{name:<60} {ours:>12.1f} {peer:>14.1f} {ours / peer:>7.2f}  {target}")
    out_dir = REPO / "benchmarks" / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"bench_worker-{time.strftime('%Y%m%dT%H%M%S')}.json"
    path.write_text(json.dumps(results, indent=2))
    print(
        f"\ndrain runs (jobs/s): {results['drained_jobs_per_s_runs']}; per job: worker process "
        f"{results['worker_cpu_us_per_job']} us CPU, Redis {results['redis_cpu_us_per_job']} us CPU; "
        f"load average {results['load_average_1m']:.1f} on {os.cpu_count()} CPUs"
    )
    print(f"written to {path.relative_to(REPO)}")
    return 0


async def bench_submit_fresh(url: str, jobs: int) -> float:
    import redis.asyncio as aioredis

    r = aioredis.Redis.from_url(url)
    await r.flushall()
    await r.aclose()
    rate, _ = await bench_submit(url, jobs)
    return rate


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
