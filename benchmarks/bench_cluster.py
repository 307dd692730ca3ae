"""Jobs/s through a Redis Cluster of 1, 2 and 3 masters with the same workers, and the CPU of every process.

    python -m benchmarks.bench_cluster [--jobs 60000] [--pools 6] [--concurrency 50] [--masters 0,1,2,3] [--quick]

Size 0 is one plain ``redis-server`` (no cluster mode, a ``redis://`` URL): the same layout and
workers, to tell what cluster mode itself costs. For each cluster size a private cluster
(tests/support/redis_cluster.py, no replicas) is made,
``--pools`` pools are chosen so that their slots spread evenly over the masters (checked with
``CLUSTER KEYSLOT``), ``--jobs`` no-op jobs are submitted through the SDK (``submit_many`` on a
``redis+cluster://`` URL), then one real worker process per pool (``python -m kubeworkers worker``,
the same processes whatever the cluster size) drains them. Printed, not asserted:

- the drain's jobs/s (from the first completion to the last, read from the pools' ``stats``
  counters every 50 ms);
- Redis CPU per job on the worker path (every master's ``/proc/<pid>/stat`` over the drain,
  summed) and on the submit path (over the bulk submit), in µs;
- each master's CPU share of one core during the drain, and the workers' CPU in all (cores).

CPU time, not rates, is the figure to compare across runs: a machine others share moves rates
far more than the CPU a job costs. ``--quick`` (600 jobs, 3 pools, a plain server and 3 masters) takes
seconds, for a smoke run; its figures are noise.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import redis
from kubeworkers import connection
from kubeworkers.client import AsyncClient
from kubeworkers.protocol import PoolKeys

from benchmarks.measure import fmt, text_table
from benchmarks.probe import cpu_seconds

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from hack import processes  # noqa: E402
from tests.support.redis_cluster import RedisClusterNodes  # noqa: E402
from tests.support.redis_server import RedisServer  # noqa: E402

NAMESPACE, HANDLER = "default", "bench.cluster_noop"
PEER = "benchmarks.cluster_peer"


@dataclass
class Figures:
    masters: int
    jobs: int
    drain_s: float
    jobs_per_s: float
    redis_us_per_job: float
    submit_redis_us_per_job: float
    submit_per_s: float
    master_cores: list[float]
    worker_cores: float


def spread_pools(nodes: RedisClusterNodes, count: int) -> list[str]:
    """``count`` pool names, as evenly over the masters as ``count`` allows (round robin by master)."""
    by_master: dict[int, list[str]] = {s.port: [] for s in nodes.slots()}
    i = 0
    while sum(len(v) for v in by_master.values()) < count:
        name = f"bench-{i}"
        i += 1
        port = nodes.master_of(nodes.key_slot(PoolKeys(NAMESPACE, name).events))
        if len(by_master[port]) < -(-count // len(by_master)):
            by_master[port].append(name)
    return [name for names in by_master.values() for name in names][:count]


def master_pids(nodes: RedisClusterNodes | Plain) -> list[int]:
    return [n.proc.pid for n in nodes.nodes if n.proc is not None]


def completed(r: redis.Redis, pools: list[str]) -> int:
    return sum(int(r.hget(PoolKeys(NAMESPACE, p).stats, "completed") or 0) for p in pools)


#: Another checkout whose ``worker_image`` the workers import instead of this one's (``--worker-tree``).
WORKER_TREE: Path | None = None


def worker(url: str, pool: str, concurrency: int) -> subprocess.Popen[bytes]:
    path = [str(WORKER_TREE / "worker_image")] if WORKER_TREE is not None else []
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([*path, str(REPO)]), "KUBEWORKERS_LOG_LEVEL": "WARNING",
           "PYTHONDONTWRITEBYTECODE": "1"}
    return processes.spawn(
        [sys.executable, "-m", "kubeworkers", "worker", "--redis-url", url, "--namespace", NAMESPACE,
         "--pool", pool, "--import", PEER, "--concurrency", str(concurrency), "--metrics-port", "-1"],
        env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )


async def submit(url: str, pools: list[str], jobs: int) -> None:
    async with AsyncClient(url, NAMESPACE) as client:
        per_pool = jobs // len(pools)
        await asyncio.gather(*(client.submit_many(p, HANDLER, ({} for _ in range(per_pool))) for p in pools))


class Plain:
    """One plain redis-server, dressed as a one-node cluster for :func:`one_size`."""

    def __init__(self) -> None:
        self.server = RedisServer()
        self.nodes = [self.server]

    @property
    def url(self) -> str:
        return self.server.url

    def __enter__(self) -> Plain:
        self.server.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.cleanup()


def one_size(masters: int, jobs: int, pool_count: int, concurrency: int) -> Figures:
    with (RedisClusterNodes(masters=masters) if masters else Plain()) as nodes:
        pools = spread_pools(nodes, pool_count) if isinstance(nodes, RedisClusterNodes) else \
            [f"bench-{i}" for i in range(pool_count)]
        jobs = jobs // len(pools) * len(pools)
        pids = master_pids(nodes)
        before = [cpu_seconds(p) for p in pids]
        t0 = time.perf_counter()
        asyncio.run(submit(nodes.url, pools, jobs))
        submit_s = time.perf_counter() - t0
        after_submit = [cpu_seconds(p) for p in pids]
        r = connection.connect(nodes.url)
        procs = [worker(nodes.url, p, concurrency) for p in pools]
        try:
            deadline = time.monotonic() + 600
            while completed(r, pools) == 0:
                if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                    raise RuntimeError("the workers did not start on the cluster")
                time.sleep(0.01)
            start = time.perf_counter()
            at_start = [cpu_seconds(p) for p in pids]
            workers_at_start = sum(cpu_seconds(p.pid) for p in procs)
            first = completed(r, pools)
            while (done := completed(r, pools)) < jobs:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"only {done} of {jobs} jobs done in 600 s")
                time.sleep(0.05)
            drain_s = time.perf_counter() - start
            at_end = [cpu_seconds(p) for p in pids]
            workers_cpu = sum(cpu_seconds(p.pid) for p in procs) - workers_at_start
        finally:
            for p in procs:
                p.terminate()
            for p in procs:
                try:
                    p.wait(15)
                except subprocess.TimeoutExpired:
                    p.kill()
            connection.close(r)
    drained = jobs - first
    redis_cpu = sum(e - s for s, e in zip(at_start, at_end, strict=True))
    return Figures(
        masters=masters, jobs=jobs, drain_s=drain_s, jobs_per_s=drained / drain_s,
        redis_us_per_job=redis_cpu / max(1, drained) * 1e6,
        submit_redis_us_per_job=sum(a - b for b, a in zip(before, after_submit, strict=True)) / jobs * 1e6,
        submit_per_s=jobs / submit_s,
        master_cores=[(e - s) / drain_s for s, e in zip(at_start, at_end, strict=True)],
        worker_cores=workers_cpu / drain_s,
    )


def table(rows: list[Figures]) -> str:
    return text_table(
        ["masters", "jobs", "jobs/s", "Redis µs/job (worker path)", "Redis µs/job (submit)", "submit jobs/s",
         "each master (cores)", "workers (cores)"],
        [[str(f.masters or "plain"), str(f.jobs), fmt(f.jobs_per_s), fmt(f.redis_us_per_job, 1),
          fmt(f.submit_redis_us_per_job, 1), fmt(f.submit_per_s), " ".join(f"{c:.2f}" for c in f.master_cores),
          f"{f.worker_cores:.2f}"] for f in rows],
    )


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench_cluster", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--jobs", type=int, default=60000)
    p.add_argument("--pools", type=int, default=6, help="pools, one worker process each (default 6)")
    p.add_argument("--concurrency", type=int, default=50)
    p.add_argument("--masters", default="0,1,2,3",
                   help="cluster sizes to run, comma-separated (0: one plain redis-server, no cluster)")
    p.add_argument("--worker-tree", type=Path, metavar="DIR",
                   help="run the workers from another checkout's worker_image (an A/B of the worker path on "
                        "--masters 0: e.g. the layout before per-pool events streams); submits stay this tree's")
    p.add_argument("--quick", action="store_true", help="600 jobs, 3 pools, plain and 3 masters: seconds, noise")
    args = p.parse_args()
    global WORKER_TREE
    WORKER_TREE = args.worker_tree
    if args.quick:
        args.jobs, args.pools, args.masters = 600, 3, "0,3"
    rows = []
    for masters in (int(m) for m in args.masters.split(",")):
        rows.append(one_size(masters, args.jobs, args.pools, args.concurrency))
        print(table(rows[-1:]), flush=True)
    print(f"\n{os.cpu_count()} CPUs; {args.pools} worker processes (concurrency {args.concurrency}), "
          f"one per pool, the same for every cluster size\n")
    print(table(rows))


if __name__ == "__main__":
    main()
