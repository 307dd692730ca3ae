"""Bulk submit alone: the throughput suite's submit calls for kubeworkers and the bare pipelined XADD,
with the client's and redis-server's CPU per job around exactly that call.

Each run is a fresh driver process (as the suite's ``Rig.submit``) on the same private
``redis-server`` (``benchmarks.rig.Rig``), flushed before each run; the systems alternate.
The driver process times the peer's own ``submit_many(url, n)`` (``benchmarks/peers``) and
reads its own CPU (``time.process_time``) and redis-server's (``/proc/<pid>/stat``, and
``INFO cpu`` for finer figures) just around it.

    python -m benchmarks.bench_submit [--jobs 20000] [--repeats 5] [--json FILE]

To compare two trees, run it with the other tree's interpreter from this tree: the
``kubeworkers`` imported is the one installed in that interpreter's virtualenv (printed).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import inspect
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

PEERS = {"kubeworkers": "benchmarks.peers.kubeworkers_peer", "bare": "benchmarks.peers.bare_peer"}
TICK = os.sysconf("SC_CLK_TCK")


def proc_cpu(pid: int) -> float:
    """utime + stime of a process, seconds (``/proc/<pid>/stat``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def info_cpu(r: Any) -> float:
    info = r.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def child(peer: str, url: str, jobs: int, redis_pid: int) -> dict[str, float]:
    """One timed submit in this process (a fresh one per run)."""
    import redis

    module = importlib.import_module(PEERS[peer])
    r = redis.Redis.from_url(url)
    cpu0, rcpu0, icpu0 = time.process_time(), proc_cpu(redis_pid), info_cpu(r)
    t0 = time.perf_counter()
    if inspect.iscoroutinefunction(module.submit_many):
        asyncio.run(module.submit_many(url, jobs))
    else:
        module.submit_many(url, jobs)
    seconds = time.perf_counter() - t0
    cpu1, rcpu1, icpu1 = time.process_time(), proc_cpu(redis_pid), info_cpu(r)
    return {"seconds": seconds, "jobs_per_s": jobs / seconds,
            "client_cpu_us_per_job": (cpu1 - cpu0) * 1e6 / jobs,
            "redis_cpu_us_per_job": (icpu1 - icpu0) * 1e6 / jobs,
            "redis_cpu_us_per_job_proc": (rcpu1 - rcpu0) * 1e6 / jobs}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--jobs", type=int, default=20_000)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--json", type=Path)
    p.add_argument("--child", choices=sorted(PEERS), help=argparse.SUPPRESS)
    p.add_argument("--url", help=argparse.SUPPRESS)
    p.add_argument("--redis-pid", type=int, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        print(json.dumps(child(a.child, a.url, a.jobs, a.redis_pid)))
        return

    import kubeworkers

    from benchmarks.rig import REPO, Rig

    print(f"kubeworkers from {Path(kubeworkers.__file__).parent}", flush=True)
    runs: dict[str, list[dict[str, float]]] = {k: [] for k in PEERS}
    with Rig() as rig:
        for rep in range(a.repeats):
            for peer in PEERS:
                rig.flush()
                out = subprocess.run(
                    [sys.executable, "-m", "benchmarks.bench_submit", "--child", peer, "--url", rig.url,
                     "--jobs", str(a.jobs), "--redis-pid", str(rig.redis_pid)],
                    cwd=REPO, capture_output=True, text=True, check=False,
                    env={**os.environ, "PYTHONPATH": str(REPO), "PYTHONDONTWRITEBYTECODE": "1"},
                )
                if out.returncode != 0:
                    raise SystemExit(f"{peer} submit failed:\n{out.stderr[-3000:]}")
                fig = json.loads(out.stdout.strip().splitlines()[-1])
                runs[peer].append(fig)
                print(f"[submit] run {rep + 1}/{a.repeats} {peer}: {fig['jobs_per_s']:,.0f} jobs/s, client "
                      f"{fig['client_cpu_us_per_job']:.1f} µs/job, Redis {fig['redis_cpu_us_per_job']:.1f} µs/job",
                      flush=True)
    medians = {peer: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for peer, rs in runs.items()}
    ratio = medians["kubeworkers"]["jobs_per_s"] / medians["bare"]["jobs_per_s"]
    for peer, m in medians.items():
        print(f"median {peer}: {m['jobs_per_s']:,.0f} jobs/s, client {m['client_cpu_us_per_job']:.1f} µs/job, "
              f"Redis {m['redis_cpu_us_per_job']:.1f} µs/job")
    print(f"kubeworkers / bare: {ratio:.2f} (per-run ratios: "
          + ", ".join(f"{k['jobs_per_s'] / b['jobs_per_s']:.2f}" for k, b in zip(runs['kubeworkers'], runs['bare'],
                                                                                  strict=True)) + ")")
    if a.json:
        a.json.write_text(json.dumps({"jobs": a.jobs, "kubeworkers": str(Path(kubeworkers.__file__).parent),
                                      "runs": runs, "medians": medians, "ratio": ratio}, indent=1))


if __name__ == "__main__":
    main()
