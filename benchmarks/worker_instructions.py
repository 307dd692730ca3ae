"""The worker process's instructions per job over a drain, counted by valgrind: an A/B that noise cannot move.

    python -m benchmarks.worker_instructions [--jobs 1000 6000] [--concurrency 200]

CPU time per job on a shared machine moves by ±30 % from run to run (docs/benchmarks.md); the
instructions a worker executes move by about 1 % (how many jobs one take or settle batches
follows the timing). This drains each number of no-op jobs with one worker
process (as the throughput suite does) run under ``valgrind --tool=callgrind``, and reports the
difference of the totals per job between the drains, so the start-up (the imports, about 1.4 billion
instructions) cancels out. About 20 s per 1,000 jobs. For an A/B of another tree, run it with that
tree first on ``PYTHONPATH`` (``PYTHONPATH=<tree>/worker_image:<tree>/operator:<tree>``): the
worker subprocess imports kubeworkers from there.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

from benchmarks import systems
from benchmarks.rig import Rig


def instructions(jobs: int, concurrency: int) -> int:
    """Instructions the worker process executed (start-up included) to drain ``jobs`` no-op jobs."""
    system = systems.kubeworkers(concurrency)
    with Rig() as rig, tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "callgrind.out"
        argv = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", *system.worker_argv(rig.url)]
        rig.drain(system, jobs, timeout=1800, argv=argv, stop_grace=120)
        for line in out.read_text().splitlines():
            if line.startswith(("summary:", "totals:")):
                return int(line.split()[1])
    raise RuntimeError("callgrind wrote no totals")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.worker_instructions")
    p.add_argument("--jobs", type=int, nargs=2, default=[1000, 6000], metavar=("FEW", "MANY"))
    p.add_argument("--concurrency", type=int, default=200)
    args = p.parse_args(argv)
    if shutil.which("valgrind") is None:
        print("valgrind is not installed (apt install valgrind)", file=sys.stderr)
        return 2
    few, many = sorted(args.jobs)
    counts = {n: instructions(n, args.concurrency) for n in (few, many)}
    for n, total in counts.items():
        print(f"{n:>7,} jobs: {total:,} instructions (start-up included)")
    per_job = (counts[many] - counts[few]) / (many - few)
    print(f"per job: {per_job:,.0f} instructions (the difference of the two drains)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
