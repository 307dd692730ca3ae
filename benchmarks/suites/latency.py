"""latency: submit -> handler start on an idle worker, one job at a time, for every system.

The driver (in the system's virtualenv) takes the wall time just before its normal submit
call; the handler's probe sends the wall time it started at; after each sample the driver
waits 10 ms so the worker is back in its idle wait. Each system gets a time budget, so one
that polls (arq: every 0.5 s by default) reports fewer samples instead of holding up the run.
"""

from __future__ import annotations

from typing import Any

from benchmarks import report, systems
from benchmarks.measure import fmt, markdown_table, percentile, text_table, verdict
from benchmarks.rig import Rig


def run(quick: bool) -> report.SuiteResult:
    samples, budget = (50, 4.0) if quick else (2_000, 60.0)
    out: dict[str, Any] = {}
    with Rig() as rig:
        for s in systems.ALL:
            ms = rig.latency(s, samples, budget)
            out[s.key] = {"label": s.label, "samples": len(ms), "p50_ms": percentile(ms, 0.5),
                          "p95_ms": percentile(ms, 0.95), "p99_ms": percentile(ms, 0.99), "max_ms": max(ms)}
            print(f"[latency] {s.key}: p50 {out[s.key]['p50_ms']:.2f} ms over {len(ms)}", flush=True)
    data = {"suite": "latency", "samples_asked": samples, "budget_s": budget, "machine": report.machine(),
            "systems": out}
    return render(data)


def render(data: dict[str, Any]) -> report.SuiteResult:
    """Table, doc block and plot of measured ``data`` (also from a saved JSON: ``--render``)."""
    plots = [p for p in [plot(data)] if p is not None]
    return report.SuiteResult("latency", data, text(data), markdown(data, plots), plots)


HEADERS = ["system", "p50 ms", "p95 ms", "p99 ms", "max ms", "samples"]


def rows(data: dict[str, Any]) -> list[list[str]]:
    return [[e["label"], fmt(e["p50_ms"], 2), fmt(e["p95_ms"], 2), fmt(e["p99_ms"], 2), fmt(e["max_ms"], 1),
             str(e["samples"])] for e in data["systems"].values()]


def text(data: dict[str, Any]) -> str:
    return "latency: submit -> handler start, idle worker\n" + text_table(HEADERS, rows(data))


def markdown(data: dict[str, Any], plots: list[Any]) -> str:
    parts = [f"Up to {data['samples_asked']:,} samples per system (at most {data['budget_s']:.0f} s each), one job "
             f"at a time, 10 ms idle between jobs. Machine: {report.machine_line(data['machine'])}.", "",
             markdown_table(HEADERS, rows(data))]
    ours = data["systems"].get("kubeworkers-c200")
    if ours is not None:
        parts += ["", markdown_table(["target (kubeworkers, concurrency 200)", "measured", ""], [
            ["submit -> start p50 < 1 ms", f"{ours['p50_ms']:.2f} ms", verdict(ours["p50_ms"], 1.0, at_least=False)],
            ["submit -> start p99 < 3 ms", f"{ours['p99_ms']:.2f} ms", verdict(ours["p99_ms"], 3.0, at_least=False)],
        ], "lrl")]
    parts += report.image_lines("latency", plots)
    return "\n".join(parts)


def plot(data: dict[str, Any]) -> Any:
    plt = report.pyplot()
    if plt is None:
        return None
    entries = list(data["systems"].values())
    fig, ax = plt.subplots(figsize=(10, 5))
    ys = list(range(len(entries)))
    for offset, (key, label) in enumerate((("p50_ms", "p50"), ("p95_ms", "p95"), ("p99_ms", "p99"))):
        ax.barh([y + (offset - 1) * 0.27 for y in ys], [e[key] for e in entries], height=0.27, label=label)
    ax.set_yticks(ys, [e["label"] for e in entries], fontsize=8)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel("submit -> handler start, ms (log)")
    ax.legend()
    ax.grid(axis="x", alpha=0.3)
    fig.suptitle("Latency on an idle worker, one job at a time")
    return report.save_plot(plt, fig, "latency.png")
