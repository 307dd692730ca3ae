"""End-to-end autoscaling timeline: a burst of Jobs on a pool at zero, up to maxReplicas and back to zero.

Everything is real, set up as in ``bench_jobs_e2e.py``: the local control plane
(``hack/local-cluster.sh``, or ``KUBEWORKERS_KUBECONFIG``), a private ``redis-server``, the
``kubeworkers-operator`` subprocess, and one local ``kubeworkers worker`` process per Running
worker pod (``PodRunner``, the kubelet stand-in). The pool starts at zero (minReplicas 0,
maxReplicas 5, concurrency 4, the e2e test's fast autoscaling knobs: idleSecondsBeforeZero 5 s);
then 500 Jobs of handler ``slow`` (0.2 s each) are applied with parallel ``kubectl apply``\\ s.

Every ~0.25 s a sampler records: the Deployment's ``spec.replicas``, the pool's ready pods
(Ready and not terminating), the worker processes running, backlog and in-flight as the
operator reads them from Redis (``RedisSignalReader`` + ``measure_load``), handler runs finished
(the pool's Redis stats), and Jobs created / ``Succeeded`` (a watch on the Job CRs). It runs
until every Job has Succeeded and the Deployment is back at zero replicas.

    .venv/bin/python benchmarks/bench_autoscale_e2e.py [--jobs 500] [--parallel 8]

Writes ``benchmarks/results/bench_autoscale_e2e-<time>.csv`` and ``.json``, and plots the
timeline to ``docs/autoscaling-e2e-timeline.png`` (``--png`` to put it elsewhere).
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from kubernetes import client, watch
from kubeworkers.protocol import PoolKeys
from kubeworkers_operator.autoscaling.load import measure_load
from kubeworkers_operator.autoscaling.signals import RedisSignalReader

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.bench_jobs_e2e import apply_concurrently, cpu_seconds  # noqa: E402
from tests.e2e.operator_fixtures import (  # noqa: E402
    LOG_ROOT,
    OperatorProcess,
    install_crds,
    job_list_yaml,
    pool_manifest,
    wait_for,
)
from tests.e2e.test_autoscaling_operator import FAST  # noqa: E402
from tests.support.cluster import Cluster  # noqa: E402
from tests.support.pod_runner import PodRunner  # noqa: E402
from tests.support.redis_server import RedisServer  # noqa: E402

POOL = "burst"
MAX_REPLICAS = 5
CONCURRENCY = 4
JOB_SECONDS = 0.2
SAMPLE_EVERY = 0.25
FIELDS = ["t", "replicas", "ready_pods", "worker_processes", "backlog", "in_flight",
          "runs_finished", "jobs_created", "jobs_succeeded"]


class JobPhases:
    """Phase of every Job CR in a namespace, kept current by a list + watch in a thread."""

    def __init__(self, cluster: Cluster, namespace: str) -> None:
        self.api = client.CustomObjectsApi(cluster.api_client())
        self.namespace = namespace
        self.phases: dict[str, str | None] = {}
        self.lock = threading.Lock()
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="job-phases", daemon=True)

    def start(self) -> JobPhases:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stopped.set()

    def counts(self) -> tuple[int, int]:
        """(Jobs that exist, Jobs Succeeded)."""
        with self.lock:
            return len(self.phases), sum(1 for p in self.phases.values() if p == "Succeeded")

    def _loop(self) -> None:
        args = ("workers.io", "v1alpha1", self.namespace, "jobs")
        while not self.stopped.is_set():
            try:
                listed = self.api.list_namespaced_custom_object(*args)
                with self.lock:
                    self.phases = {i["metadata"]["name"]: (i.get("status") or {}).get("phase")
                                   for i in listed["items"]}
                w = watch.Watch()
                for ev in w.stream(self.api.list_namespaced_custom_object, *args,
                                   resource_version=listed["metadata"]["resourceVersion"],
                                   timeout_seconds=30, _request_timeout=35):
                    if self.stopped.is_set():
                        w.stop()
                        break
                    obj = ev["object"]
                    if ev["type"] == "ERROR":  # e.g. 410 Gone: list again
                        break
                    name = obj["metadata"]["name"]
                    with self.lock:
                        if ev["type"] == "DELETED":
                            self.phases.pop(name, None)
                        else:
                            self.phases[name] = (obj.get("status") or {}).get("phase")
            except Exception as exc:  # the apiserver may be busy; keep trying
                if not self.stopped.is_set():
                    print(f"[job-phases] {exc!r}", file=sys.stderr)
                    time.sleep(0.5)


class Sampler:
    """One row every ``SAMPLE_EVERY`` s, in its own thread (an asyncio loop for the Redis reader)."""

    def __init__(self, cluster: Cluster, namespace: str, redis_url: str, runner: PodRunner, jobs: JobPhases) -> None:
        self.cluster = cluster
        self.namespace = namespace
        self.redis_url = redis_url
        self.runner = runner
        self.jobs = jobs
        self.apps = client.AppsV1Api(cluster.api_client())
        self.core = client.CoreV1Api(cluster.api_client())
        self.rows: list[dict[str, float]] = []
        self.t0 = time.monotonic()
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=lambda: asyncio.run(self._run()), name="sampler", daemon=True)

    def start(self) -> Sampler:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stopped.set()
        self.thread.join(10)

    def last(self) -> dict[str, float]:
        return self.rows[-1] if self.rows else {}

    def _replicas(self) -> int:
        dep = self.apps.read_namespaced_deployment(f"{POOL}-workers", self.namespace)
        return int(dep.spec.replicas or 0)

    def _ready_pods(self) -> int:
        pods = self.core.list_namespaced_pod(self.namespace, label_selector=f"workers.io/pool={POOL}")
        return sum(
            1 for p in pods.items
            if p.metadata.deletion_timestamp is None
            and any(c.type == "Ready" and c.status == "True" for c in (p.status.conditions or []))
        )

    async def _run(self) -> None:
        r = aioredis.Redis.from_url(self.redis_url)
        reader = RedisSignalReader(r, PoolKeys(self.namespace, POOL))
        try:
            while not self.stopped.is_set():
                tick = time.monotonic()
                snapshot, replicas, ready = await asyncio.gather(
                    reader.read(), asyncio.to_thread(self._replicas), asyncio.to_thread(self._ready_pods))
                load = measure_load(snapshot)
                created, succeeded = self.jobs.counts()
                self.rows.append({
                    "t": round(tick - self.t0, 3),
                    "replicas": replicas,
                    "ready_pods": ready,
                    "worker_processes": len(self.runner.processes()),
                    "backlog": load.backlog,
                    "in_flight": load.in_flight,
                    "runs_finished": snapshot.completed,
                    "jobs_created": created,
                    "jobs_succeeded": succeeded,
                })
                await asyncio.sleep(max(0.0, SAMPLE_EVERY - (time.monotonic() - tick)))
        finally:
            await r.aclose()


def apply_in_parallel(cluster: Cluster, namespace: str, names: list[str], parallel: int) -> None:
    """The Jobs in ``parallel`` interleaved chunks, each through its own ``kubectl apply`` (as bench_jobs_e2e)."""
    chunks = [names[i::parallel] for i in range(parallel)]
    manifests = [job_list_yaml(chunk, POOL, "slow", {"seconds": JOB_SECONDS, "steps": 1}) for chunk in chunks if chunk]
    apply_concurrently(cluster, namespace, manifests)


def first(rows: list[dict[str, float]], cond: Any, after: float = 0.0) -> float | None:
    """``t`` of the first row at or after ``after`` for which ``cond(row)`` holds."""
    return next((row["t"] for row in rows if row["t"] >= after and cond(row)), None)


def summarize(rows: list[dict[str, float]], jobs: int, applied_at: float) -> dict[str, Any]:
    """Times in seconds from the start of the apply (t = 0)."""
    raised = first(rows, lambda r: r["replicas"] > 0)
    peak = max(row["replicas"] for row in rows)
    at_peak = first(rows, lambda r: r["replicas"] == peak)
    first_ready = first(rows, lambda r: r["ready_pods"] > 0)
    drained = first(rows, lambda r: r["jobs_succeeded"] == jobs)
    redis_drained = first(rows, lambda r: r["runs_finished"] >= jobs and r["backlog"] == 0 and r["in_flight"] == 0)
    zero = first(rows, lambda r: r["replicas"] == 0, after=drained or 0.0)
    no_process = first(rows, lambda r: r["worker_processes"] == 0, after=zero or 0.0)
    first_created = first(rows, lambda r: r["jobs_created"] > 0)
    return {
        "jobs": jobs,
        "max_replicas": MAX_REPLICAS,
        "concurrency_per_pod": CONCURRENCY,
        "job_seconds": JOB_SECONDS,
        "autoscaling": FAST,
        "samples": len(rows),
        "seconds_to_all_applied": round(applied_at, 2),
        "seconds_to_first_job_seen": first_created,
        "seconds_to_replicas_raised": raised,
        "seconds_to_first_ready_pod": first_ready,
        "peak_replicas": peak,
        "seconds_to_peak_replicas": at_peak,
        "seconds_to_redis_drained": redis_drained,
        "seconds_to_all_succeeded": drained,
        "seconds_to_zero_replicas": zero,
        "seconds_zero_after_drain": round(zero - drained, 2) if zero is not None and drained is not None else None,
        "seconds_to_no_worker_process": no_process,
        "peak_backlog": max(row["backlog"] for row in rows),
        "peak_in_flight": max(row["in_flight"] for row in rows),
    }


def plot(rows: list[dict[str, float]], summary: dict[str, Any], path: Path) -> bool:
    """Draw the timeline to ``path``; False (nothing drawn) without matplotlib (the ``bench`` extra)."""
    from benchmarks import report

    plt = report.pyplot()
    if plt is None:
        return False
    t = [row["t"] for row in rows]
    fig, (top, bottom) = plt.subplots(2, 1, sharex=True, figsize=(10, 7))
    top.step(t, [row["replicas"] for row in rows], where="post", label="Deployment spec.replicas", linewidth=2)
    top.step(t, [row["ready_pods"] for row in rows], where="post", label="pods ready", linestyle="--")
    top.step(t, [row["worker_processes"] for row in rows], where="post", label="worker processes",
             linestyle=":")
    top.set_ylabel("pods")
    top.set_ylim(-0.2, MAX_REPLICAS + 0.8)
    top.legend(loc="upper right")
    top.grid(alpha=0.3)
    bottom.plot(t, [row["backlog"] for row in rows], label="backlog (Redis, undelivered)")
    bottom.plot(t, [row["in_flight"] for row in rows], label="in flight (Redis)")
    bottom.plot(t, [row["jobs_created"] for row in rows], label="Jobs created", linestyle=":", color="grey")
    bottom.plot(t, [row["jobs_succeeded"] for row in rows], label="Jobs Succeeded (status)", linewidth=2)
    bottom.plot(t, [row["runs_finished"] for row in rows], label="handler runs finished (Redis)",
                linestyle="--")
    bottom.set_ylabel("jobs")
    bottom.set_xlabel("seconds since the first kubectl apply")
    bottom.legend(loc="center right", fontsize="small")
    bottom.grid(alpha=0.3)
    for ax in (top, bottom):
        ax.axvline(0, color="black", linewidth=0.8)
        for key, color in (("seconds_to_all_succeeded", "green"), ("seconds_to_zero_replicas", "red")):
            if summary.get(key) is not None:
                ax.axvline(summary[key], color=color, linewidth=0.8, linestyle="--")
    fig.suptitle(f"kubeworkers on a real control plane: {summary['jobs']} Jobs ({JOB_SECONDS} s each) on a pool "
                 f"at zero\nmaxReplicas {MAX_REPLICAS}, concurrency {CONCURRENCY}; all Succeeded at "
                 f"{summary['seconds_to_all_succeeded']} s (green), back to 0 replicas at "
                 f"{summary['seconds_to_zero_replicas']} s (red)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def run(jobs: int, parallel: int) -> tuple[list[dict[str, float]], dict[str, Any]]:
    cluster = Cluster.from_environment()
    redis = RedisServer(aof=False).start()
    namespace = f"bench-as-{uuid.uuid4().hex[:8]}"
    log_dir = LOG_ROOT / namespace
    operator = OperatorProcess(cluster, redis.url, [namespace], log_dir)
    phases: JobPhases | None = None
    sampler: Sampler | None = None
    try:
        install_crds(cluster)
        cluster.kubectl("create", "namespace", namespace)
        cluster.kubectl("create", "secret", "generic", "kubeworkers-redis", "-n", namespace,
                        f"--from-literal=url={redis.url}")
        operator.start()
        runner = PodRunner(cluster, namespace, "workers.io/pool", extra_env={"KUBEWORKERS_METRICS_PORT": "0"},
                           log_dir=log_dir / "pods")
        with runner:
            cluster.apply(pool_manifest(POOL, concurrency=CONCURRENCY, minReplicas=0, maxReplicas=MAX_REPLICAS,
                                        autoscaling=FAST), namespace)

            def at_zero() -> bool:
                out = cluster.kubectl("get", "deployment", f"{POOL}-workers", "-n", namespace,
                                      "-o", "jsonpath={.spec.replicas}", check=False)
                return out.returncode == 0 and out.stdout.strip() == "0"

            wait_for(at_zero, timeout=60, what="the pool's Deployment at zero")
            phases = JobPhases(cluster, namespace).start()
            sampler = Sampler(cluster, namespace, redis.url, runner, phases)
            sampler.start()
            time.sleep(2.0)  # a short baseline at zero

            names = [f"b-{i:04d}" for i in range(jobs)]
            assert operator.proc is not None
            cpu0 = cpu_seconds(operator.proc.pid)
            t0 = time.monotonic()
            apply_in_parallel(cluster, namespace, names, parallel)
            applied_at = time.monotonic() - t0
            print(f"{jobs} Jobs applied in {applied_at:.1f} s", file=sys.stderr)

            def finished_and_at_zero() -> bool:
                row = sampler.last() if sampler else {}
                return bool(row) and row["jobs_succeeded"] == jobs and row["replicas"] == 0

            wait_for(finished_and_at_zero, timeout=600, every=0.25, what="all Jobs Succeeded and zero replicas")
            time.sleep(3.0)  # the tail: pods gone, processes stopped
            operator_cpu = cpu_seconds(operator.proc.pid) - cpu0
            sampler.stop()
            shift = t0 - sampler.t0
            rows = [{**row, "t": round(row["t"] - shift, 3)} for row in sampler.rows]
            summary = summarize(rows, jobs, applied_at)
            summary["operator_cpu_seconds"] = round(operator_cpu, 1)
            summary["worker_pods_started"] = len(list((log_dir / "pods").glob("*.log")))
            return rows, summary
    finally:
        if sampler is not None:
            sampler.stop()
        if phases is not None:
            phases.stop()
        operator.stop()
        cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)
        redis.cleanup()
        cluster.close()  # stops the local control plane only if this run started it


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--jobs", type=int, default=500)
    p.add_argument("--parallel", type=int, default=8, help="kubectl apply processes at once")
    p.add_argument("--png", type=Path, default=REPO / "docs" / "autoscaling-e2e-timeline.png")
    args = p.parse_args()
    rows, summary = run(args.jobs, args.parallel)

    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    out = REPO / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    csv_path = out / f"bench_autoscale_e2e-{stamp}.csv"
    with csv_path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    drawn = plot(rows, summary, args.png)
    summary["timeline_csv"] = str(csv_path.relative_to(REPO))
    summary["timeline_png"] = None if not drawn else (
        str(args.png.resolve().relative_to(REPO)) if args.png.resolve().is_relative_to(REPO) else str(args.png))
    (out / f"bench_autoscale_e2e-{stamp}.json").write_text(json.dumps(summary, indent=2) + "\n")

    print(json.dumps(summary, indent=2))
    lines = dict([
        ("first kubectl apply -> replicas raised", summary["seconds_to_replicas_raised"]),
        (f"first kubectl apply -> {summary['peak_replicas']} replicas (peak)", summary["seconds_to_peak_replicas"]),
        (f"first kubectl apply -> all {args.jobs} Jobs Succeeded (drained)", summary["seconds_to_all_succeeded"]),
        ("first kubectl apply -> back to 0 replicas", summary["seconds_to_zero_replicas"]),
    ])
    print(f"\nsummary ({args.jobs} Jobs applied in {summary['seconds_to_all_applied']} s, "
          f"peak replicas {summary['peak_replicas']}):")
    for label, value in lines.items():
        print(f"  {label:55} {value} s")


if __name__ == "__main__":
    main()
