"""Autoscaler benchmark: reaction time to a burst, versus KEDA's Redis Streams scaler + the HPA.

What is measured, against a private ``redis-server``:

* **reaction time**: first job enqueued -> Deployment ``spec.replicas`` raised, p50/p95 over
  repeated bursts, for a pool at zero ("cold") and a pool at one idle pod ("warm");
* **time to target**: first job enqueued -> replicas at the size the burst needs.

Ours is the real :class:`PoolAutoscaler` (real Redis reads, real XREAD wake-up) writing to a
simulated Deployment (the Kubernetes side is the only part replaced: a real apiserver adds the
same PATCH latency to both contenders). The peer is the default KEDA + HPA behaviour, simulated
in the same run over the same bursts: KEDA polls the stream every 30 s (``pollingInterval``) and
activates 0 -> 1; the HPA syncs every 15 s and scales up by at most max(100 %, 4 pods) per sync.
Burst times are uniformly random against their timers; the peer's Redis read latency is the one
measured in this run. Results are reported as ratios (peer / ours).

A timeline run then sends a burst followed by a steady trickle to a simulated fleet (in-process
workers with a pod start delay, speaking the real protocol: consumer group, registry heartbeats,
stats counters) and records replicas, ready pods, queue depth and in-flight jobs every 100 ms;
they are written as CSV and, if matplotlib is installed, plotted as a PNG.

    .venv/bin/python benchmarks/bench_autoscale.py [--bursts 20] [--seed 1]

Results go to ``benchmarks/results/bench_autoscale-<time>.{json,csv,png}``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import json
import math
import random
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from kubeworkers.protocol import WORKER_GROUP, JobMessage, PoolKeys, WorkerHeartbeat  # noqa: E402
from kubeworkers.queue import enqueue_many  # noqa: E402
from kubeworkers_operator.autoscaling import PoolAutoscaler  # noqa: E402
from kubeworkers_operator.autoscaling.pods import WorkerPod  # noqa: E402
from kubeworkers_operator.model.pool_conditions import ConditionValue  # noqa: E402

from benchmarks.measure import percentile  # noqa: E402
from tests.support.redis_server import RedisServer  # noqa: E402

NAMESPACE = "bench"
KEDA_POLL_SECONDS = 30.0
HPA_SYNC_SECONDS = 15.0


# --------------------------------------------------------------------------- simulated fleet


def fleet_client(url: str) -> aioredis.Redis:
    """The simulated pods' shared client: waits for a free connection instead of failing."""
    return aioredis.Redis(connection_pool=aioredis.BlockingConnectionPool.from_url(url, max_connections=64))


@dataclass
class SimPod:
    """One worker pod: starts after a delay, then consumes the pool's streams like a worker."""

    name: str
    keys: PoolKeys
    redis: aioredis.Redis
    concurrency: int
    job_seconds: float
    start_delay: float
    ready: bool = False
    draining: bool = False
    in_flight: int = 0
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    main: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.main = asyncio.create_task(self._run())

    async def _beat(self) -> None:
        hb = WorkerHeartbeat(worker=self.name, in_flight=self.in_flight, concurrency=self.concurrency,
                             draining=self.draining)
        await self.redis.hset(self.keys.workers, self.name, hb.model_dump_json())

    async def _run(self) -> None:
        await asyncio.sleep(self.start_delay)
        for stream in self.keys.streams:
            with contextlib.suppress(ResponseError):
                await self.redis.xgroup_create(stream, WORKER_GROUP, id="0", mkstream=True)
        self.ready = True
        beat_at = 0.0
        while not self.draining:
            if time.monotonic() - beat_at >= 1.0:
                await self._beat()
                beat_at = time.monotonic()
            free = self.concurrency - self.in_flight
            if free <= 0:
                await asyncio.sleep(0.01)
                continue
            got = await self.redis.xreadgroup(
                WORKER_GROUP, self.name, dict.fromkeys(self.keys.streams, ">"), count=free, block=200
            )
            batches = cast(list[tuple[bytes, list[tuple[bytes, Any]]]], got or [])
            for name, entries in batches:
                for entry_id, _ in entries:
                    self.in_flight += 1
                    task = asyncio.create_task(self._work(name, entry_id))
                    self.tasks.add(task)
                    task.add_done_callback(self.tasks.discard)
        # Drain: finish what is running, then leave the registry.
        await self._beat()
        while self.tasks:
            await asyncio.gather(*list(self.tasks))
        await self.redis.hdel(self.keys.workers, self.name)

    async def _work(self, stream: bytes, entry_id: bytes) -> None:
        started = time.monotonic()
        await asyncio.sleep(self.job_seconds)
        pipe = self.redis.pipeline(transaction=False)
        pipe.xack(stream, WORKER_GROUP, entry_id)
        pipe.xdel(stream, entry_id)
        pipe.hincrby(self.keys.stats, "completed", 1)
        pipe.hincrbyfloat(self.keys.stats, "duration_seconds_total", time.monotonic() - started)
        await pipe.execute()
        self.in_flight -= 1

    async def stop(self) -> None:
        self.draining = True
        if self.main is not None:
            await self.main


class SimulatedDeployment:
    """A :class:`KubeScaler` whose replicas are :class:`SimPod` s; removes the lowest deletion cost first."""

    def __init__(
        self, redis: aioredis.Redis, keys: PoolKeys, *, concurrency: int, job_seconds: float, start_delay: float,
        fleet: bool = True,
    ) -> None:
        self.redis, self.keys = redis, keys
        self.concurrency, self.job_seconds, self.start_delay = concurrency, job_seconds, start_delay
        self.fleet = fleet
        self.replicas = 0
        self.changes: list[tuple[float, int]] = []
        self.pods: dict[str, SimPod] = {}
        self.costs: dict[str, int] = {}
        self.leaving: set[asyncio.Task[None]] = set()
        self.events: list[str] = []
        self.changed = asyncio.Event()
        self._n = 0

    async def get_replicas(self) -> int | None:
        return self.replicas

    async def set_replicas(self, replicas: int) -> None:
        self.changes.append((time.monotonic(), replicas))
        self.replicas = replicas
        self.changed.set()
        if not self.fleet:
            return
        while len(self.pods) < replicas:
            self._n += 1
            pod = SimPod(f"{self.keys.pool}-{self._n}", self.keys, self.redis, self.concurrency,
                         self.job_seconds, self.start_delay)
            self.pods[pod.name] = pod
            pod.start()
        while len(self.pods) > replicas:
            # The ReplicaSet's order: pods not ready first, then the lowest deletion cost.
            victim = min(self.pods, key=lambda n: (self.pods[n].ready, self.costs.get(n, 0)))
            pod = self.pods.pop(victim)
            task = asyncio.create_task(pod.stop())
            self.leaving.add(task)
            task.add_done_callback(self.leaving.discard)

    async def list_worker_pods(self) -> list[WorkerPod]:
        return [WorkerPod(name, self.costs.get(name)) for name in self.pods]

    async def set_deletion_cost(self, pod: str, cost: int) -> None:
        self.costs[pod] = cost

    async def patch_status(self, status: dict[str, Any]) -> None:
        pass

    async def post_event(self, reason: str, message: str, *, warning: bool = False) -> None:
        self.events.append(f"{reason}: {message}")

    async def set_condition(self, type_: str, value: ConditionValue) -> bool:
        return True

    async def close(self) -> None:
        await asyncio.gather(*(p.stop() for p in self.pods.values()), *list(self.leaving))


def spec(max_replicas: int, concurrency: int) -> dict[str, Any]:
    return {
        "image": "bench:1", "imports": ["bench"], "concurrency": concurrency,
        "minReplicas": 0, "maxReplicas": max_replicas,
        "autoscaling": {"targetDrainSeconds": 10, "scaleDownStabilizationSeconds": 5,
                        "idleSecondsBeforeZero": 5, "pollSeconds": 2},
    }


def jobs(pool: str, n: int, tag: str) -> list[JobMessage]:
    return [JobMessage(job_id=f"{tag}-{i}", uid=f"{tag}-{i}", namespace=NAMESPACE, pool=pool, handler="bench.nap")
            for i in range(n)]


# --------------------------------------------------------------------------- reaction time


async def our_reaction(url: str, rep: int, *, warm: bool, burst: int, concurrency: int, max_replicas: int,
                       rng: random.Random) -> tuple[float, float]:
    """(first raise, time to target) in seconds for one burst."""
    pool = f"react-{'warm' if warm else 'cold'}-{rep}"
    keys = PoolKeys(NAMESPACE, pool)
    r = aioredis.Redis.from_url(url)
    pods = fleet_client(url)
    deployment = SimulatedDeployment(pods, keys, concurrency=concurrency, job_seconds=0.5, start_delay=0.0,
                                     fleet=warm)
    target = min(max_replicas, math.ceil(burst / concurrency))
    if warm:
        await deployment.set_replicas(1)
        deployment.changes.clear()
    scaler = PoolAutoscaler(NAMESPACE, pool, r, deployment, spec=spec(max_replicas, concurrency))
    task = asyncio.create_task(scaler.run())
    # Let the loop settle into its blocking wait, at a random phase.
    await asyncio.sleep(rng.uniform(0.5, 1.5))
    deployment.changes.clear()
    t0 = time.monotonic()
    await enqueue_many(r, jobs(pool, burst, f"r{rep}"))
    while not any(n >= target for _, n in deployment.changes):
        await deployment.changed.wait()
        deployment.changed.clear()
    first = deployment.changes[0][0] - t0
    full = next(t for t, n in deployment.changes if n >= target) - t0
    await scaler.stop()
    await task
    await deployment.close()
    await r.aclose()
    await pods.aclose()
    return first, full


def keda_hpa_reaction(*, warm: bool, burst: int, concurrency: int, max_replicas: int, redis_read: float,
                      rng: random.Random) -> tuple[float, float]:
    """KEDA + HPA defaults for one burst landing at a random phase of their timers."""
    target = min(max_replicas, math.ceil(burst / concurrency))
    hpa_phase = rng.uniform(0, HPA_SYNC_SECONDS)  # time from the burst to the next HPA sync
    if warm:
        first = hpa_phase  # the HPA raises 1 -> more at its next sync
        sync = hpa_phase
    else:
        first = rng.uniform(0, KEDA_POLL_SECONDS)  # KEDA's own loop activates 0 -> 1 at its next poll
        if target <= 1:
            return first + redis_read, first + redis_read
        sync = hpa_phase
        while sync <= first:  # the HPA acts at its first sync after activation
            sync += HPA_SYNC_SECONDS
    replicas = 1
    while True:
        replicas = min(target, max(replicas * 2, replicas + 4))  # default scale-up policies
        if replicas >= target:
            break
        sync += HPA_SYNC_SECONDS
    return first + redis_read, sync + redis_read


async def measure_redis_read(url: str) -> float:
    """Median time of the read a KEDA poll makes (XINFO GROUPS + XPENDING summary)."""
    r = aioredis.Redis.from_url(url)
    stream = PoolKeys(NAMESPACE, "probe").streams[1]
    await r.xgroup_create(stream, WORKER_GROUP, id="0", mkstream=True)
    samples = []
    for _ in range(50):
        t = time.perf_counter()
        await r.xinfo_groups(stream)
        await r.xpending(stream, WORKER_GROUP)
        samples.append(time.perf_counter() - t)
    await r.aclose()
    return statistics.median(samples)


# --------------------------------------------------------------------------- timeline


async def timeline(url: str) -> list[dict[str, float]]:
    pool = "timeline"
    keys = PoolKeys(NAMESPACE, pool)
    r = aioredis.Redis.from_url(url)
    pods = fleet_client(url)
    deployment = SimulatedDeployment(pods, keys, concurrency=4, job_seconds=0.25, start_delay=1.0)
    scaler = PoolAutoscaler(NAMESPACE, pool, r, deployment, spec=spec(10, 4), heartbeat_timeout=5)
    task = asyncio.create_task(scaler.run())
    rows: list[dict[str, float]] = []
    t0 = time.monotonic()

    async def sample() -> None:
        while True:
            pipe = r.pipeline(transaction=False)
            for s in keys.streams:
                pipe.xlen(s)
            depth = sum(await pipe.execute())
            in_flight = sum(p.in_flight for p in deployment.pods.values())
            rows.append({
                "t": round(time.monotonic() - t0, 2),
                "replicas": deployment.replicas,
                "ready_pods": sum(1 for p in deployment.pods.values() if p.ready),
                "queue_depth": depth - in_flight,
                "in_flight": in_flight,
            })
            await asyncio.sleep(0.1)

    sampler = asyncio.create_task(sample())
    await asyncio.sleep(1.0)
    await enqueue_many(r, jobs(pool, 400, "burst"))
    await asyncio.sleep(9.0)
    for i in range(10):  # a trickle of 8 jobs/s for 10 s
        await enqueue_many(r, jobs(pool, 8, f"trickle{i}"))
        await asyncio.sleep(1.0)
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(90):
            while deployment.replicas > 0:
                await deployment.changed.wait()
                deployment.changed.clear()
    await asyncio.sleep(1.0)
    sampler.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await sampler
    await scaler.stop()
    await task
    await deployment.close()
    await r.aclose()
    await pods.aclose()
    return rows


def plot(rows: list[dict[str, float]], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    t = [row["t"] for row in rows]
    fig, (top, bottom) = plt.subplots(2, 1, sharex=True, figsize=(9, 6))
    top.step(t, [row["replicas"] for row in rows], where="post", label="Deployment spec.replicas")
    top.step(t, [row["ready_pods"] for row in rows], where="post", label="pods ready", linestyle="--")
    top.set_ylabel("pods")
    top.legend()
    bottom.plot(t, [row["queue_depth"] for row in rows], label="waiting (queue depth)")
    bottom.plot(t, [row["in_flight"] for row in rows], label="in flight")
    bottom.set_ylabel("jobs")
    bottom.set_xlabel("seconds (burst of 400 at t=1, then 8 jobs/s for 10 s)")
    bottom.legend()
    fig.suptitle("kubeworkers autoscaler: burst -> scale up -> drain -> scale to zero")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return True


# --------------------------------------------------------------------------- main


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bursts", type=int, default=20)
    parser.add_argument("--burst-size", type=int, default=200)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--no-timeline", action="store_true")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    concurrency, max_replicas = 4, 20

    with RedisServer() as server:
        read = await measure_redis_read(server.url)
        results: dict[str, Any] = {"bursts": args.bursts, "burst_size": args.burst_size,
                                   "concurrency": concurrency, "max_replicas": max_replicas,
                                   "redis_read_seconds": read}
        for warm in (False, True):
            kind = "warm" if warm else "cold"
            ours = [await our_reaction(server.url, i, warm=warm, burst=args.burst_size, concurrency=concurrency,
                                       max_replicas=max_replicas, rng=rng) for i in range(args.bursts)]
            peer = [keda_hpa_reaction(warm=warm, burst=args.burst_size, concurrency=concurrency,
                                      max_replicas=max_replicas, redis_read=read, rng=rng)
                    for _ in range(args.bursts)]
            summary: dict[str, Any] = {}
            for label, idx in (("first_raise", 0), ("time_to_target", 1)):
                o = [x[idx] for x in ours]
                k = [x[idx] for x in peer]
                summary[label] = {
                    "ours_p50_s": percentile(o, 0.5), "ours_p95_s": percentile(o, 0.95),
                    "keda_hpa_p50_s": percentile(k, 0.5), "keda_hpa_p95_s": percentile(k, 0.95),
                    "ratio_p50": percentile(k, 0.5) / percentile(o, 0.5),
                    "ratio_p95": percentile(k, 0.95) / percentile(o, 0.95),
                }
            results[kind] = summary
            for label, s in summary.items():
                print(f"{kind:4} {label:15} ours p50 {s['ours_p50_s'] * 1000:8.1f} ms  p95 "
                      f"{s['ours_p95_s'] * 1000:8.1f} ms | KEDA+HPA p50 {s['keda_hpa_p50_s']:6.1f} s  p95 "
                      f"{s['keda_hpa_p95_s']:6.1f} s | ratio p50 {s['ratio_p50']:7.0f}x  p95 {s['ratio_p95']:7.0f}x")

        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        out = REPO / "benchmarks" / "results"
        out.mkdir(parents=True, exist_ok=True)
        if not args.no_timeline:
            rows = await timeline(server.url)
            csv_path = out / f"bench_autoscale-{stamp}.csv"
            with csv_path.open("w", newline="") as fh:
                writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
                writer.writeheader()
                writer.writerows(rows)
            png_path = out / f"bench_autoscale-{stamp}.png"
            results["timeline_csv"] = str(csv_path.relative_to(REPO))
            results["timeline_png"] = str(png_path.relative_to(REPO)) if plot(rows, png_path) else None
            peak = max(row["replicas"] for row in rows)
            print(f"timeline: {len(rows)} samples, peak replicas {peak}, csv {csv_path.name}, "
                  f"png {results['timeline_png'] or 'not written (matplotlib missing)'}")
        (out / f"bench_autoscale-{stamp}.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
