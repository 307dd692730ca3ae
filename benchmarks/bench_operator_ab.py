"""The operator path before and after: Job CRs run by another checkout's operator and workers, then this one's.

    python -m benchmarks.bench_operator_ab --before-tree DIR [--pairs 2] [--jobs 1000] [--quick] [--after-first]
        [--operator-args ARGS]

Each run is one ``benchmarks/bench_jobs_e2e.py`` run with the settings of the ``k8s-path`` suite
(maxReplicas 4, concurrency 16 per pod, 8 ``kubectl apply`` processes) on the local control plane
and a fresh private ``redis-server``: first with ``--operator-tree DIR`` ("before": that checkout's
operator and workers, on this virtualenv), then with this tree's ("after"), ``--pairs`` times,
alternately, so the machine's other tenants weigh on both alike
(``--after-first`` swaps the order in each pair). Per run: redis-server's CPU per
Job and the commands Redis executed per Job by command (``INFO commandstats``), the operator's CPU
per Job, jobs/s, the cores Redis and the operator used (CPU seconds over wall seconds) and the
1-minute load average, all over the window from the first apply to the
last ``Succeeded``. The results go to ``benchmarks/results/bench_operator_ab-<time>.json``; the
tables are printed as markdown (docs/scaling-out.md, *Measured figures*). ``--operator-args``: more
operator flags for both sides, after the e2e fixture's short chore intervals (bench_jobs_e2e). ``--quick``: one pair of
100 Jobs, a smoke run.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks import bench_jobs_e2e
from benchmarks.measure import fmt, markdown_table

REPO = Path(__file__).resolve().parent.parent
LABELS = ("before", "after")


def label_of(run: dict[str, Any]) -> str:
    return "before" if run.get("operator_tree") else "after"


def table(runs: Sequence[dict[str, Any]]) -> str:
    """One row per label: each run's figures in the order run, separated by `` · ``."""

    def each(label: str, key: str, digits: int) -> str:
        return " · ".join(fmt(r[key], digits) for r in runs if label_of(r) == label)

    def cores(label: str) -> str:
        return " · ".join(f"{r['redis_core_share']:.3f}, {r['operator_core_share']:.2f}"
                          for r in runs if label_of(r) == label)

    def loads(label: str) -> str:
        return " · ".join(f"{r['load_average_1m'][0]:.1f} to {r['load_average_1m'][1]:.1f}"
                          for r in runs if label_of(r) == label)

    headers = ["operator and workers", "Redis CPU µs/Job", "Redis commands/Job", "operator CPU ms/Job",
               "Jobs/s", "Redis, operator (cores)", "load average (1 min, start to end)"]
    rows = [[label, each(label, "redis_cpu_us_per_job", 0), each(label, "redis_commands_per_job", 1),
             each(label, "operator_cpu_ms_per_job", 2), each(label, "jobs_per_second", 1), cores(label), loads(label)]
            for label in LABELS if any(label_of(r) == label for r in runs)]
    return markdown_table(headers, rows)


def mean_calls(runs: Sequence[dict[str, Any]], label: str) -> dict[str, float]:
    """Calls per Job of each command, the mean over ``label``'s runs (0 in a run that had none)."""
    mine = [r["redis_commands_by_command"] for r in runs if label_of(r) == label]
    names = {name for by in mine for name in by}
    return {name: statistics.fmean(by.get(name, {}).get("calls_per_job", 0.0) for by in mine) for name in names}


def command_table(runs: Sequence[dict[str, Any]], least: float = 0.01) -> str:
    """Commands per Job by command, before and after (means over the runs), every command that
    either side runs at least ``least`` times per Job, busiest (after) first."""
    before, after = mean_calls(runs, "before"), mean_calls(runs, "after")
    names = [n for n in {*before, *after} if max(before.get(n, 0.0), after.get(n, 0.0)) >= least]
    names.sort(key=lambda n: (-after.get(n, 0.0), -before.get(n, 0.0), n))
    rows = [[f"`{n}`", fmt(before.get(n, 0.0), 2), fmt(after.get(n, 0.0), 2)] for n in names]
    rows.append(["all", fmt(sum(before.values()), 2), fmt(sum(after.values()), 2)])
    return markdown_table(["command", "before, calls/Job", "after, calls/Job"], rows)


def split_cpu(runs: Sequence[dict[str, Any]], key: str = "redis_cpu_seconds") -> tuple[float, float] | None:
    """(cores, µs per Job): the least-squares fit ``cpu = cores * wall seconds + per_job * jobs`` of one
    process's CPU over ``runs`` (any trees), which splits what runs by the second (chores, blocking
    reads, polls) from what each Job adds. None when the runs cannot tell the two apart (fewer than
    two, or wall times proportional to the Jobs)."""
    points = [(float(r["seconds_to_all_succeeded"]), float(r["jobs"]), float(r[key])) for r in runs]
    sww = sum(w * w for w, _, _ in points)
    sjj = sum(j * j for _, j, _ in points)
    swj = sum(w * j for w, j, _ in points)
    swc = sum(w * c for w, _, c in points)
    sjc = sum(j * c for _, j, c in points)
    det = sww * sjj - swj * swj
    if len(points) < 2 or abs(det) <= 1e-9 * sww * sjj:
        return None
    cores = (swc * sjj - sjc * swj) / det
    per_job = (sjc * sww - swc * swj) / det
    return cores, per_job * 1e6


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--before-tree", type=Path, required=True, metavar="DIR",
                   help="the checkout whose operator and workers run the 'before' runs")
    p.add_argument("--pairs", type=int, default=2)
    p.add_argument("--jobs", type=int, default=1000)
    p.add_argument("--quick", action="store_true", help="one pair of 100 Jobs")
    p.add_argument("--operator-args", default="", metavar="ARGS", help="more operator flags, both sides")
    p.add_argument("--after-first", action="store_true",
                   help="each pair runs this tree first (a session that mixes both orders evens out a drift)")
    args = p.parse_args(argv)
    pairs, jobs = (1, 100) if args.quick else (args.pairs, args.jobs)
    runs: list[dict[str, Any]] = []
    for pair in range(pairs):
        for label in reversed(LABELS) if args.after_first else LABELS:
            tree = args.before_tree if label == "before" else None
            result = bench_jobs_e2e.run(jobs, max_replicas=4, concurrency=16, parallel=8, operator_tree=tree,
                                        operator_args=shlex.split(args.operator_args))
            runs.append(result)
            print(f"[operator-ab] pair {pair + 1} {label}: {result['jobs_per_second']} Jobs/s, Redis "
                  f"{result['redis_cpu_us_per_job']} µs and {result['redis_commands_per_job']} commands/Job, "
                  f"operator {result['operator_cpu_ms_per_job']} ms/Job, load {result['load_average_1m']}",
                  flush=True)
    out = REPO / "benchmarks" / "results" / f"bench_operator_ab-{time.strftime('%Y%m%dT%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"jobs": jobs, "before_tree": str(args.before_tree), "operator_args": args.operator_args,
                               "runs": runs}, indent=2) + "\n")
    print(table(runs) + "\n\n" + command_table(runs))
    split = split_cpu(runs)
    if split is not None:
        print(f"\nredis-server, fitted over these {len(runs)} runs: {split[0]:.4f} cores by the second "
              f"+ {split[1]:.0f} µs per Job")
    print(f"written to {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
