"""``python -m benchmarks <suite> [--quick] [--json FILE] [--docs | --no-docs]``.

Suites: throughput, latency, scaling, k8s-path, autoscale, isolation, durability, priorities, or ``all``
(in that order).
Each prints a table, writes its JSON (``--json FILE``, else ``benchmarks/results/<suite>-<time>.json``)
and, on a full run (or with ``--docs``), rewrites its block of docs/benchmarks.md and its plots.
``--quick`` runs small counts once, for CI: every suite in under 3 minutes in total.
``--systems KEYS`` runs only the named systems of throughput and latency (e.g.
``kubeworkers-c200,bare``), leaving the docs alone.
``--render FILE`` redraws a suite's table, doc block and plots from a results JSON, measuring nothing.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from pathlib import Path

from benchmarks import report, systems

SUITES = {
    "throughput": "benchmarks.suites.throughput",
    "latency": "benchmarks.suites.latency",
    "scaling": "benchmarks.suites.scaling",
    "k8s-path": "benchmarks.suites.k8s_path",
    "autoscale": "benchmarks.suites.autoscale",
    "isolation": "benchmarks.suites.isolation",
    "durability": "benchmarks.suites.durability",
    "priorities": "benchmarks.suites.priorities",
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("suite", choices=[*SUITES, "all"])
    p.add_argument("--quick", action="store_true", help="small counts, one repeat (CI)")
    p.add_argument("--json", type=Path, help="where to write the results (one suite only)")
    p.add_argument("--render", type=Path, metavar="FILE",
                   help="measure nothing: redraw the table, doc block and plots from a results JSON")
    p.add_argument("--systems", metavar="KEYS",
                   help="comma-separated system keys (throughput, latency), e.g. kubeworkers-c200,bare: run only "
                        "these, for iterating on one system; the docs are left alone unless --docs is given")
    docs = p.add_mutually_exclusive_group()
    docs.add_argument("--docs", dest="docs", action="store_true", default=None,
                      help="update docs/benchmarks.md and its plots (default: on full runs only)")
    docs.add_argument("--no-docs", dest="docs", action="store_false")
    args = p.parse_args(argv)
    names = list(SUITES) if args.suite == "all" else [args.suite]
    if args.json is not None and len(names) > 1:
        p.error("--json takes one suite")
    if args.systems:
        try:
            systems.only(args.systems.split(","))
        except KeyError as exc:
            p.error(f"no system {exc} (known: {', '.join(systems.BY_KEY)})")
    update_docs = (not args.quick and not args.systems) if args.docs is None else args.docs
    report.plots_to_docs(update_docs if args.render is None else args.docs is not False)
    if args.render is not None:
        if len(names) > 1:
            p.error("--render takes one suite")
        result = importlib.import_module(SUITES[names[0]]).render(json.loads(args.render.read_text()))
        print(result.text)
        if args.docs is not False:
            report.update_doc(result)
            print(f"{names[0]}: docs/benchmarks.md updated from {args.render}")
        return 0
    for name in names:
        t0 = time.monotonic()
        result = importlib.import_module(SUITES[name]).run(args.quick)
        path = report.write_json(result, args.json)
        print(f"\n{result.text}\n\n{name}: {time.monotonic() - t0:.0f} s; results in {path}", flush=True)
        if update_docs:
            report.update_doc(result)
            print(f"{name}: docs/benchmarks.md updated", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
