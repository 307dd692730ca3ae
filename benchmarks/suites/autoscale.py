"""autoscale: reaction time over repeated bursts on a pool at zero, and one burst on the real control plane.

1. Reaction (``benchmarks/bench_autoscale.py``): the real :class:`PoolAutoscaler` on the real
   Redis, its Deployment simulated (the apiserver's PATCH is the only part left out); a burst
   of 200 jobs lands at a random phase on a pool at zero; first job enqueued -> replicas raised,
   p50/p95 over 20 bursts (5 with --quick), next to KEDA + HPA defaults simulated on the same bursts.
2. Timeline (``benchmarks/bench_autoscale_e2e.py``): Jobs applied with kubectl to a pool at zero
   on the local control plane, through the operator to real worker processes: replicas raised,
   drained, back to zero after the idle window; the replica/backlog plot.
"""

from __future__ import annotations

import asyncio
import random
from pathlib import Path
from typing import Any

from benchmarks import bench_autoscale, bench_autoscale_e2e, report
from benchmarks.measure import fmt, markdown_table, percentile, text_table, verdict
from benchmarks.rig import REPO  # noqa: F401  (puts the repo on sys.path for tests.support)
from tests.support.redis_server import RedisServer

BURST, CONCURRENCY, MAX_REPLICAS = 200, 4, 20
TIMELINE_PNG = report.REPO / "docs" / "autoscaling-e2e-timeline.png"


async def reactions(bursts: int, seed: int = 1) -> dict[str, Any]:
    rng = random.Random(seed)
    with RedisServer() as server:
        read = await bench_autoscale.measure_redis_read(server.url)
        ours = [await bench_autoscale.our_reaction(server.url, i, warm=False, burst=BURST, concurrency=CONCURRENCY,
                                                   max_replicas=MAX_REPLICAS, rng=rng) for i in range(bursts)]
    peer = [bench_autoscale.keda_hpa_reaction(warm=False, burst=BURST, concurrency=CONCURRENCY,
                                              max_replicas=MAX_REPLICAS, redis_read=read, rng=rng)
            for _ in range(bursts)]
    first = [o[0] for o in ours]
    full = [o[1] for o in ours]
    return {
        "bursts": bursts, "burst_size": BURST,
        "reaction_p50_s": percentile(first, 0.5), "reaction_p95_s": percentile(first, 0.95),
        "to_target_p50_s": percentile(full, 0.5), "to_target_p95_s": percentile(full, 0.95),
        "keda_hpa_reaction_p50_s": percentile([p[0] for p in peer], 0.5),
        "keda_hpa_reaction_p95_s": percentile([p[0] for p in peer], 0.95),
        "reaction_s": first,
    }


def run(quick: bool) -> report.SuiteResult:
    reaction = asyncio.run(reactions(5 if quick else 20))
    print(f"[autoscale] reaction p50 {reaction['reaction_p50_s'] * 1000:.0f} ms, "
          f"p95 {reaction['reaction_p95_s'] * 1000:.0f} ms", flush=True)
    jobs = 100 if quick else 500
    # On a docs run the timeline goes where docs/autoscaling.md shows it.
    png = TIMELINE_PNG if report.plots_in_docs() else report.plot_path("autoscale-timeline.png")
    rows_, summary = bench_autoscale_e2e.run(jobs, parallel=8)
    drawn = bench_autoscale_e2e.plot(rows_, summary, png)
    data = {"suite": "autoscale", "machine": report.machine(), "reaction": reaction, "timeline": summary,
            "timeline_png": str(png) if drawn else None}
    return render(data)


def render(data: dict[str, Any]) -> report.SuiteResult:
    """Table and doc block of measured ``data`` (the timeline plot is drawn when measured)."""
    png = Path(data["timeline_png"]) if data.get("timeline_png") else None
    return report.SuiteResult("autoscale", data, text(data), markdown(data, png), [png] if png else [])


def rows(data: dict[str, Any]) -> list[list[str]]:
    r, t = data["reaction"], data["timeline"]
    seen = t.get("seconds_to_first_job_seen")
    raised = t.get("seconds_to_replicas_raised")
    return [
        ["first job -> replicas raised (real autoscaler + Redis, simulated Deployment)",
         f"{r['reaction_p50_s'] * 1000:.0f} ms", f"{r['reaction_p95_s'] * 1000:.0f} ms", str(r["bursts"])],
        ["the same, KEDA + HPA defaults (simulated on the same bursts)",
         f"{r['keda_hpa_reaction_p50_s']:.1f} s", f"{r['keda_hpa_reaction_p95_s']:.1f} s", str(r["bursts"])],
        ["first Job seen -> replicas raised (control plane, sampled every 0.25 s)",
         fmt(raised - seen if raised is not None and seen is not None else None, 2) + " s", "", "1"],
        ["last Job Succeeded -> back to 0 replicas (control plane)", fmt(t.get("seconds_zero_after_drain"), 1) + " s",
         "", "1"],
    ]


HEADERS = ["measure", "p50", "p95", "runs"]


def text(data: dict[str, Any]) -> str:
    return "autoscale\n" + text_table(HEADERS, rows(data))


def markdown(data: dict[str, Any], png: Any) -> str:
    t = data["timeline"]
    parts = [f"Machine: {report.machine_line(data['machine'])}.", "", markdown_table(HEADERS, rows(data), "lrrr"), "",
             f"Control-plane run: {t['jobs']} Jobs of {t['job_seconds']} s on a pool at zero (maxReplicas "
             f"{t['max_replicas']}, concurrency {t['concurrency_per_pod']}, idleSecondsBeforeZero "
             f"{t['autoscaling'].get('idleSecondsBeforeZero')}): all applied at {t['seconds_to_all_applied']} s, "
             f"replicas raised at {t['seconds_to_replicas_raised']} s, peak {t['peak_replicas']} at "
             f"{t['seconds_to_peak_replicas']} s, all Succeeded at {t['seconds_to_all_succeeded']} s, "
             f"back to 0 at {t['seconds_to_zero_replicas']} s (times from the first `kubectl apply`).", "",
             f"![autoscale timeline]({report.relative_to_doc(png)})" if png is not None
             else "(timeline not drawn: matplotlib, the `bench` extra, is not installed)"]
    r = data["reaction"]
    goals = [[f"reaction {q} < {limit:g} s", f"{r[f'reaction_{q}_s'] * 1000:.0f} ms",
              verdict(r[f"reaction_{q}_s"], limit, at_least=False)] for q, limit in (("p50", 1.0), ("p95", 2.0))]
    parts[3:3] = ["", markdown_table(["target", "measured", ""], goals, "lrl")]
    return "\n".join(parts)
