"""scaling: 1, 2 and 4 worker processes on one Redis: kubeworkers (concurrency 200) and the bare loop.

The processes share the jobs (see :func:`drain` for how they start together); the drain ends when Redis
says every job is done
(kubeworkers: the pool's ``completed`` counter; the bare loop: its stream is empty, as it
deletes what it acknowledges). CPU shares say what bounds the curve: a process or Redis near
1.0 core is saturated, and a total near the machine's core count means the cores are.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable
from typing import Any

import redis
from kubeworkers.protocol import PoolKeys

from benchmarks import report, systems
from benchmarks.measure import fmt, markdown_table, text_table
from benchmarks.peers import bare_peer
from benchmarks.probe import cpu_seconds
from benchmarks.rig import Rig
from benchmarks.systems import System

PROCESSES = (1, 2, 4)
KEYS = PoolKeys("default", "bench")


def completed(rig: Rig, system: System, jobs: int) -> int:
    if system.ceiling:
        return jobs - int(rig.r().xlen(bare_peer.STREAM))
    return int(rig.r().hget(KEYS.stats, "completed") or 0)


def ready(rig: Rig, system: System) -> int:
    """Worker processes ready and waiting: registry entries (kubeworkers), consumers (bare loop)."""
    if system.ceiling:
        try:
            return len(rig.r().xinfo_consumers(bare_peer.STREAM, bare_peer.GROUP))
        except redis.ResponseError:
            return 0
    return int(rig.r().hlen(KEYS.workers))


def wait(what: str, cond: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: not within {timeout} s")
        time.sleep(0.01)


def drain(rig: Rig, system: System, jobs: int, processes: int, timeout: float = 600) -> dict[str, float]:
    """Start the processes on an empty queue, stop them (SIGSTOP), submit, let them all go at once (SIGCONT).

    So start-up is excluded and no process gets a head start; the drain runs from SIGCONT
    until Redis counts every job done.
    """
    rig.flush()
    procs = []
    for i in range(processes):
        argv = system.worker_argv(rig.url) + (["--consumer", f"c{i}"] if system.ceiling else [])
        procs.append(rig.start_worker(system, "", jobs, name=f"scale{i}", argv=argv))
    try:
        wait(f"{system.key} x{processes} ready", lambda: ready(rig, system) >= processes, 60)
        time.sleep(0.3)  # into their blocking reads
        for p in procs:
            os.killpg(p.pid, signal.SIGSTOP)
        rig.submit(system, jobs)
        cpu0 = [cpu_seconds(p.pid) for p in procs]
        redis0 = cpu_seconds(rig.redis_pid)
        t0 = time.time()
        for p in procs:
            os.killpg(p.pid, signal.SIGCONT)
        wait(f"{system.key} x{processes} drained", lambda: completed(rig, system, jobs) >= jobs, timeout)
        t1 = time.time()
        cpu1 = [cpu_seconds(p.pid) for p in procs]
        redis1 = cpu_seconds(rig.redis_pid)
    finally:
        for p in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGCONT)
            rig.stop(p)
    wall = max(1e-9, t1 - t0)
    worker_cpu = sum(cpu1) - sum(cpu0)
    return {
        "drain_per_s": jobs / wall,
        "worker_cpu_us_per_job": worker_cpu / jobs * 1e6,
        "redis_cpu_us_per_job": (redis1 - redis0) / jobs * 1e6,
        "worker_core_share_each": worker_cpu / wall / processes,
        "redis_core_share": (redis1 - redis0) / wall,
        "total_core_share": (worker_cpu + redis1 - redis0) / wall,
    }


def run(quick: bool) -> report.SuiteResult:
    jobs = 4_000 if quick else 20_000
    chosen = [systems.BY_KEY["kubeworkers-c200"], systems.BARE]
    out: dict[str, dict[str, Any]] = {s.key: {"label": s.label, "by_processes": {}} for s in chosen}
    with Rig() as rig:
        for n in PROCESSES:
            for s in chosen:
                f = drain(rig, s, jobs, n)
                out[s.key]["by_processes"][str(n)] = f
                print(f"[scaling] {s.key} x{n}: {f['drain_per_s']:,.0f} jobs/s, Redis {f['redis_core_share']:.2f} "
                      f"core, total {f['total_core_share']:.2f} cores", flush=True)
    data = {"suite": "scaling", "jobs": jobs, "cpus": os.cpu_count(), "machine": report.machine(), "systems": out}
    return render(data)


def render(data: dict[str, Any]) -> report.SuiteResult:
    """Table, doc block and plot of measured ``data`` (also from a saved JSON: ``--render``)."""
    plots = [p for p in [plot(data)] if p is not None]
    return report.SuiteResult("scaling", data, text(data), markdown(data, plots), plots)


HEADERS = ["system", "processes", "drain jobs/s", "x of 1 process", "worker CPU µs/job", "Redis CPU µs/job",
           "CPU share per worker", "Redis CPU share", "total cores busy"]


def rows(data: dict[str, Any]) -> list[list[str]]:
    out = []
    for e in data["systems"].values():
        one = e["by_processes"]["1"]["drain_per_s"]
        for n, f in e["by_processes"].items():
            out.append([e["label"], n, fmt(f["drain_per_s"]), fmt(f["drain_per_s"] / one, 2),
                        fmt(f["worker_cpu_us_per_job"]), fmt(f["redis_cpu_us_per_job"], 1),
                        fmt(f["worker_core_share_each"], 2), fmt(f["redis_core_share"], 2),
                        fmt(f["total_core_share"], 2)])
    return out


def text(data: dict[str, Any]) -> str:
    return f"scaling: {data['jobs']:,} jobs shared by N worker processes, {data['cpus']} CPUs\n" + text_table(
        HEADERS, rows(data))


def markdown(data: dict[str, Any], plots: list[Any]) -> str:
    parts = [f"{data['jobs']:,} pre-submitted no-op jobs shared by N worker processes, one redis-server. "
             f"Machine: {report.machine_line(data['machine'])}.", "", markdown_table(HEADERS, rows(data))]
    parts += report.image_lines("scaling", plots)
    return "\n".join(parts)


def plot(data: dict[str, Any]) -> Any:
    plt = report.pyplot()
    if plt is None:
        return None
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5))
    for e in data["systems"].values():
        ns = [int(n) for n in e["by_processes"]]
        left.plot(ns, [f["drain_per_s"] for f in e["by_processes"].values()], marker="o", label=e["label"])
        right.plot(ns, [f["redis_core_share"] for f in e["by_processes"].values()], marker="o", label=e["label"])
    left.set_xlabel("worker processes")
    left.set_ylabel("drained jobs/s (all processes)")
    left.set_yscale("log")
    right.set_xlabel("worker processes")
    right.set_ylabel("redis-server CPU (cores)")
    for ax in (left, right):
        ax.set_xticks(list(PROCESSES))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"Scaling on one Redis ({data['cpus']} CPUs shared by workers and Redis)")
    return report.save_plot(plt, fig, "scaling.png")
