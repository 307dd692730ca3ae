"""throughput: one worker process per system drains N pre-submitted no-op jobs from the same private Redis.

The systems run interleaved (every system once, then again) and each figure is the median
of the repeats. CPU per job of the worker process and of redis-server, read by the probe in
the handler (``/proc/<pid>/stat``) at the first and the last run, is the primary figure:
the machine's other tenants distort it far less than the rates.
"""

from __future__ import annotations

from typing import Any

from benchmarks import report, systems
from benchmarks.measure import fmt, markdown_table, median_figures, ratio, text_table, verdict
from benchmarks.rig import Rig
from benchmarks.systems import System

OURS = "kubeworkers-c200"


def chosen(quick: bool) -> list[System]:
    info = systems.kubeworkers(200, "INFO")
    extra = [] if quick or (systems.ONLY is not None and info.key not in systems.ONLY) else [info]
    at = next((i + 1 for i, s in enumerate(systems.ALL) if s.key == OURS), 0)
    return [*systems.ALL[:at], *extra, *systems.ALL[at:]]


def run(quick: bool) -> report.SuiteResult:
    jobs, repeats = (2_000, 1) if quick else (20_000, 3)
    chosen_systems = chosen(quick)
    runs: dict[str, list[dict[str, Any]]] = {s.key: [] for s in chosen_systems}
    with Rig() as rig:
        for s in chosen_systems:
            rig.ensure(s)
        for rep in range(repeats):
            for s in chosen_systems:
                figures = rig.drain(s, jobs)
                runs[s.key].append(figures)
                print(f"[throughput] run {rep + 1}/{repeats} {s.key}: {figures['drain_per_s']:,.0f} jobs/s, "
                      f"worker {figures['worker_cpu_us_per_job']:.0f} µs/job, "
                      f"Redis {figures['redis_cpu_us_per_job']:.0f} µs/job", flush=True)
    summary = summarize(runs)
    data = {"suite": "throughput", "jobs": jobs, "repeats": repeats, "machine": report.machine(),
            "systems": {s.key: {"label": s.label, "version": s.version, **summary[s.key],
                                "runs": runs[s.key]} for s in chosen_systems}}
    return render(data)


def render(data: dict[str, Any]) -> report.SuiteResult:
    """Table, doc block and plot of measured ``data`` (also from a saved JSON: ``--render``)."""
    plots = [p for p in [plot(data)] if p is not None]
    return report.SuiteResult("throughput", data, text(data), markdown(data, plots), plots)


def summarize(runs: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Median figures per system, the Redis commands of its median run, and kubeworkers' ratios to it."""
    out: dict[str, dict[str, Any]] = {}
    for key, rs in runs.items():
        med = median_figures(rs)
        by_rate = sorted(rs, key=lambda r: r["drain_per_s"])
        out[key] = {"median": med, "commands": by_rate[len(by_rate) // 2]["commands"],
                    "drain_runs": [round(r["drain_per_s"]) for r in rs]}
    ours = out[OURS]["median"] if OURS in out else None
    for entry in out.values():
        theirs = entry["median"]
        entry["ratios"] = {} if ours is None else ratios(ours, theirs)
    return out


def total_cpu(figures: dict[str, float]) -> float:
    return figures["worker_cpu_us_per_job"] + figures["redis_cpu_us_per_job"]


def ratios(ours: dict[str, float], theirs: dict[str, float]) -> dict[str, float | None]:
    """kubeworkers relative to a system: rates ours/theirs, CPU theirs/ours (both: > 1 means we lead)."""
    return {
        "drain": ratio(ours["drain_per_s"], theirs["drain_per_s"]),
        "drain_with_startup": ratio(ours["drain_with_startup_per_s"], theirs["drain_with_startup_per_s"]),
        "submit": ratio(ours["submit_per_s"], theirs["submit_per_s"]),
        "worker_cpu": ratio(theirs["worker_cpu_us_per_job"], ours["worker_cpu_us_per_job"]),
        "redis_cpu": ratio(theirs["redis_cpu_us_per_job"], ours["redis_cpu_us_per_job"]),
        "total_cpu": ratio(total_cpu(theirs), total_cpu(ours)),
    }


HEADERS = ["system", "drain jobs/s", "with start-up", "submit jobs/s", "worker CPU µs/job", "Redis CPU µs/job",
           "kw c200: drain x", "kw c200: CPU x"]


def rows(data: dict[str, Any]) -> list[list[str]]:
    out = []
    for entry in data["systems"].values():
        m, r = entry["median"], entry["ratios"]
        out.append([entry["label"], fmt(m["drain_per_s"]), fmt(m["drain_with_startup_per_s"]),
                    fmt(m["submit_per_s"]), fmt(m["worker_cpu_us_per_job"]), fmt(m["redis_cpu_us_per_job"], 1),
                    fmt(r.get("drain"), 2), fmt(r.get("total_cpu"), 2)])
    return out


def text(data: dict[str, Any]) -> str:
    h = headline(data)
    targets = ", ".join(f"{k} {v:.2f}" for k, v in h.items() if v is not None)
    return (f"throughput: {data['jobs']:,} no-op jobs, one worker process, median of {data['repeats']}\n"
            + text_table(HEADERS, rows(data)) + f"\nagainst the targets: {targets}")


def commands_table(entry: dict[str, Any], top: int = 12) -> str:
    items = list(entry["commands"].items())[:top]
    return markdown_table(["command", "calls/job", "Redis µs/job", "µs/call"],
                          [[name, fmt(c["calls_per_job"], 3), fmt(c["usec_per_job"], 2), fmt(c["usec_per_call"], 2)]
                           for name, c in items])


def markdown(data: dict[str, Any], plots: list[Any]) -> str:
    m = data["machine"]
    parts = [
        f"{data['jobs']:,} no-op jobs per run, one worker process, {data['repeats']} interleaved runs per system "
        f"(median of each figure). Machine: {report.machine_line(m)}.",
        "",
        markdown_table(HEADERS, rows(data)),
        "",
        "`kw c200: drain x` is kubeworkers (concurrency 200) drain rate ÷ the system's; `CPU x` is the system's "
        "worker + Redis CPU per job ÷ kubeworkers'. Drain runs (jobs/s) per system: "
        + "; ".join(f"{e['label']} {e['drain_runs']}" for e in data["systems"].values()) + ".",
    ]
    if OURS in data["systems"]:
        parts += ["", "Against the issue's targets (kubeworkers, concurrency 200, WARNING logs):", "",
                  markdown_table(["target", "measured", ""], targets(data), "lrl")]
        parts += ["", "Redis commands per job, kubeworkers concurrency 200 (`INFO commandstats`, median run):",
                  "", commands_table(data["systems"][OURS])]
    parts += report.image_lines("throughput", plots)
    return "\n".join(parts)


def plot(data: dict[str, Any]) -> Any:
    plt = report.pyplot()
    if plt is None:
        return None
    entries = list(data["systems"].values())
    labels = [e["label"].replace(", ", "\n", 1) for e in entries]
    worker = [e["median"]["worker_cpu_us_per_job"] for e in entries]
    redis_cpu = [e["median"]["redis_cpu_us_per_job"] for e in entries]
    drain = [e["median"]["drain_per_s"] for e in entries]
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5.5))
    ys = list(range(len(entries)))
    left.barh([y - 0.2 for y in ys], worker, height=0.4, label="worker process")
    left.barh([y + 0.2 for y in ys], redis_cpu, height=0.4, label="redis-server")
    left.set_yticks(ys, labels, fontsize=8)
    left.invert_yaxis()
    left.set_xscale("log")
    left.set_xlabel("CPU µs per job (log)")
    left.legend()
    left.grid(axis="x", alpha=0.3)
    right.barh(ys, drain, color="tab:green")
    right.set_yticks(ys, [""] * len(entries))
    right.invert_yaxis()
    right.set_xscale("log")
    right.set_xlabel("drained jobs/s, one worker process (log)")
    right.grid(axis="x", alpha=0.3)
    fig.suptitle(f"{data['jobs']:,} no-op jobs, one worker process each, one private redis-server "
                 f"(median of {data['repeats']})")
    return report.save_plot(plt, fig, "throughput.png")


def targets(data: dict[str, Any]) -> list[list[str]]:
    h = headline(data)

    def row(name: str, key: str, limit: float, at_least: bool, shown: str) -> list[str]:
        value = h.get(key)
        return [name, "-" if value is None else shown.format(value), verdict(value, limit, at_least=at_least)]

    return [
        row("drain >= 20x Celery solo", "drain_vs_celery_solo", 20, True, "{:.1f}x"),
        row("drain >= 35 % of the bare loop", "drain_vs_bare", 0.35, True, "{:.0%}"),
        row("Redis CPU <= 20 µs/job", "redis_cpu_us_per_job", 20, False, "{:.1f} µs"),
        row("worker CPU <= 45 µs/job", "worker_cpu_us_per_job", 45, False, "{:.1f} µs"),
        row("bulk submit >= 0.6 of bare pipelined XADD", "submit_vs_bare", 0.6, True, "{:.2f}"),
    ]


def headline(data: dict[str, Any]) -> dict[str, float | None]:
    """kubeworkers' figures against the issue's targets (used by docs and the report)."""
    s = data["systems"]
    ours = s.get(OURS, {}).get("median")
    if ours is None:
        return {}
    celery = s.get("celery-solo", {}).get("median")
    bare = s.get("bare", {}).get("median")
    return {
        "drain_vs_celery_solo": ratio(ours["drain_per_s"], celery["drain_per_s"]) if celery else None,
        "drain_vs_bare": ratio(ours["drain_per_s"], bare["drain_per_s"]) if bare else None,
        "submit_vs_bare": ratio(ours["submit_per_s"], bare["submit_per_s"]) if bare else None,
        "worker_cpu_us_per_job": ours["worker_cpu_us_per_job"],
        "redis_cpu_us_per_job": ours["redis_cpu_us_per_job"],
    }
