"""Where a kubeworkers worker spends its time: one drain under py-spy, plus Redis commands per job.

    python -m benchmarks.where_time_goes [--jobs 20000] [--concurrency 200] [--top 25]

Starts a private redis-server, submits the jobs, starts one worker process and samples it with
``py-spy record --format raw`` (py-spy from PyPI: ``pip install py-spy``) from the first
handler run to the last; prints the functions with the most samples on top of the stack
(self time) and grouped by kubeworkers module, and ``INFO commandstats`` per job.
"""

from __future__ import annotations

import argparse
import collections
import shutil
import subprocess
import tempfile
from pathlib import Path

from benchmarks import systems
from benchmarks.measure import Snapshot, commandstats_delta, fmt, text_table
from benchmarks.rig import Rig


def self_time(raw: Path) -> tuple[collections.Counter[str], collections.Counter[str], int]:
    """(samples per top frame, samples per kubeworkers module anywhere below the top, total samples)."""
    frames: collections.Counter[str] = collections.Counter()
    modules: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        total += n
        parts = stack.split(";")
        frames[parts[-1]] += n
        # The innermost kubeworkers frame: which of our modules the sample is spent under.
        ours = next((p for p in reversed(parts) if "kubeworkers/" in p), None)
        if ours is not None:
            modules[ours.split("(")[-1].split(":")[0].rsplit("/", 1)[-1]] += n
    return frames, modules, total


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--jobs", type=int, default=20_000)
    p.add_argument("--concurrency", type=int, default=200)
    p.add_argument("--top", type=int, default=25)
    args = p.parse_args()
    spy = shutil.which("py-spy")
    if spy is None:
        raise SystemExit("py-spy not found: pip install py-spy")
    system = systems.kubeworkers(args.concurrency)
    raw = Path(tempfile.mkdtemp(prefix="kw-spy-")) / "raw.txt"
    with Rig() as rig:
        rig.flush()
        rig.submit(system, args.jobs)
        proc = rig.start_worker(system, "drain", args.jobs)
        first = Snapshot.of(rig.receive(60))
        stats0 = rig.commandstats()
        recorder = subprocess.Popen([spy, "record", "--pid", str(proc.pid), "--rate", "1000", "--format", "raw",
                                     "--output", str(raw), "--nonblocking"],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        last = Snapshot.of(rig.receive(600))
        stats1 = rig.commandstats()
        recorder.send_signal(2)  # SIGINT: py-spy writes what it has
        recorder.wait(30)
        rig.stop(proc)
    ran = last.n - first.n
    print(f"{ran:,} jobs in {last.t - first.t:.2f} s: worker {(last.cpu - first.cpu) / ran * 1e6:.1f} µs/job, "
          f"Redis {(last.redis_cpu - first.redis_cpu) / ran * 1e6:.1f} µs/job (py-spy slows the worker a little)")
    frames, modules, total = self_time(raw)
    print(f"\nself time, top {args.top} frames of {total:,} samples")
    print(text_table(["frame", "share"], [[f[:110], f"{n / total:.1%}"] for f, n in frames.most_common(args.top)]))
    print("\nsamples under each kubeworkers module (innermost kubeworkers frame)")
    print(text_table(["module", "share"], [[m, f"{n / total:.1%}"] for m, n in modules.most_common()]))
    cmds = commandstats_delta(stats0, stats1, ran)
    print("\nRedis commands per job")
    print(text_table(["command", "calls/job", "µs/job", "µs/call"],
                     [[k, fmt(v["calls_per_job"], 3), fmt(v["usec_per_job"], 2), fmt(v["usec_per_call"], 2)]
                      for k, v in cmds.items()]))


if __name__ == "__main__":
    main()
