"""k8s-path: Job CRs applied at once on the local control plane, all the way to Succeeded with status copied back.

Everything real (``benchmarks/bench_jobs_e2e.py`` does the work: control plane, private Redis,
the operator process, one worker process per Running worker pod). Reported: wall time, jobs/s,
apiserver writes per Job from the audit log (the local control plane audits ``workers.io``
only), the operator's CPU and peak RSS, redis-server's CPU per Job and the commands Redis executed
per Job (``INFO commandstats`` before and after), all over the window from the first apply to the
last ``Succeeded``. The second, larger run shows whether the operator's
memory stays bounded: its growth per 1,000 Jobs.
"""

from __future__ import annotations

from typing import Any

from benchmarks import bench_jobs_e2e, report
from benchmarks.measure import fmt, markdown_table, text_table, verdict


def run(quick: bool) -> report.SuiteResult:
    sizes = (100,) if quick else (1_000, 10_000)
    runs: list[dict[str, Any]] = []
    for jobs in sizes:
        result = bench_jobs_e2e.run(jobs, max_replicas=4, concurrency=16, parallel=16 if jobs > 1000 else 8)
        growth = result["operator_peak_rss_mib"] - result["operator_rss_before_mib"]
        result["operator_rss_growth_per_1000_jobs_mib"] = round(growth / jobs * 1000, 2)
        result["operator_cpu_ms_per_job"] = round(result["operator_cpu_seconds"] / jobs * 1000, 2)
        runs.append(result)
        print(f"[k8s-path] {jobs} Jobs: {result['seconds_to_all_succeeded']} s, "
              f"{result['audit_writes_per_job']} writes/Job, peak RSS {result['operator_peak_rss_mib']} MiB, "
              f"Redis {result['redis_cpu_us_per_job']} µs and {result['redis_commands_per_job']} commands/Job",
              flush=True)
    data = {"suite": "k8s-path", "machine": report.machine(), "runs": runs}
    return render(data)


def render(data: dict[str, Any]) -> report.SuiteResult:
    """Table and doc block of measured ``data`` (also from a saved JSON: ``--render``)."""
    return report.SuiteResult("k8s-path", data, text(data), markdown(data))


HEADERS = ["Jobs", "applied s", "all Succeeded s", "Jobs/s", "apiserver writes/Job", "status writes/Job",
           "conflicts", "operator CPU ms/Job", "Redis CPU µs/Job", "Redis commands/Job",
           "operator RSS before / peak MiB", "(peak - before) per 1,000 Jobs MiB"]


def rows(data: dict[str, Any]) -> list[list[str]]:
    return [[fmt(r["jobs"]), fmt(r["seconds_to_applied"], 1), fmt(r["seconds_to_all_succeeded"], 1),
             fmt(r["jobs_per_second"], 1), fmt(r["audit_writes_per_job"], 2), fmt(r["audit_status_writes_per_job"], 2),
             fmt(r["status_conflicts"]), fmt(r["operator_cpu_ms_per_job"], 1),
             fmt(r.get("redis_cpu_us_per_job")), fmt(r.get("redis_commands_per_job"), 1),
             f"{r['operator_rss_before_mib']} / {r['operator_peak_rss_mib']}",
             fmt(r["operator_rss_growth_per_1000_jobs_mib"], 1)] for r in data["runs"]]


def text(data: dict[str, Any]) -> str:
    return "k8s-path: Job CRs applied at once -> all Succeeded\n" + text_table(HEADERS, rows(data))


def commands_line(by_command: dict[str, dict[str, float]], least: float = 0.01) -> str:
    """``name`` calls per Job for every command run at least ``least`` times per Job, busiest first."""
    shown = [(k, v["calls_per_job"]) for k, v in by_command.items() if v["calls_per_job"] >= least]
    return ", ".join(f"`{k}` {n:.2f}" for k, n in sorted(shown, key=lambda kv: (-kv[1], kv[0])))


def marginal_rss_per_1000(runs: list[dict[str, Any]]) -> float | None:
    """Peak RSS added per 1,000 Jobs between the smallest and the largest run (fresh operators both):
    what grows with the number of Jobs, without the operator's one-time start-up growth."""
    if len(runs) < 2:
        return None
    small, large = min(runs, key=lambda r: r["jobs"]), max(runs, key=lambda r: r["jobs"])
    grown = float(large["operator_peak_rss_mib"]) - float(small["operator_peak_rss_mib"])
    return grown / int(large["jobs"] - small["jobs"]) * 1000


def targets(data: dict[str, Any]) -> list[list[str]]:
    one = next((r for r in data["runs"] if r["jobs"] == 1000), None)
    if one is None:
        return []
    return [
        ["1,000 Jobs all Succeeded in < 60 s", f"{one['seconds_to_all_succeeded']:.1f} s",
         verdict(one["seconds_to_all_succeeded"], 60, at_least=False)],
        ["<= 3 status writes per Job (audit log)", f"{one['audit_status_writes_per_job']:.2f}",
         verdict(one["audit_status_writes_per_job"], 3, at_least=False)],
    ]


def markdown(data: dict[str, Any]) -> str:
    first = data["runs"][0]
    parts = [f"Machine: {report.machine_line(data['machine'])}. Pool: maxReplicas {first['max_replicas']}, "
             f"concurrency {first['concurrency_per_pod']} per pod; Jobs applied by parallel `kubectl apply` "
             "processes (8, or 16 for the large run).", "", markdown_table(HEADERS, rows(data)), "",
             "Writes per Job by kind (audit log), first run: "
             + ", ".join(f"`{k}` {v / first['jobs']:.2f}" for k, v in sorted(first["audit_writes"].items())) + "."]
    if first.get("redis_commands_by_command"):
        parts += ["", "Commands Redis executed per Job, first run (`INFO commandstats`; a script's own "
                  "commands count on their lines too): " + commands_line(first["redis_commands_by_command"]) + "."]
    marginal = marginal_rss_per_1000(data["runs"])
    if marginal is not None:
        parts += ["", f"Operator memory: the peak RSS grows by {marginal:.1f} MiB per 1,000 Jobs between the "
                  f"{min(r['jobs'] for r in data['runs']):,}- and the {max(r['jobs'] for r in data['runs']):,}-Job "
                  "run (each with a fresh operator; the last column above includes its start-up)."]
    if targets(data):
        parts += ["", markdown_table(["target", "measured", ""], targets(data), "lrl")]
    return "\n".join(parts)
