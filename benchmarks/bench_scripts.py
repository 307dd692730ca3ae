"""Redis' side of the worker path, script by script: what ``take.lua`` and ``settle.lua`` cost per job.

    python -m benchmarks.bench_scripts [--jobs 20000] [--batch 64] [--repeats 3] [--callgrind] [--lua-dir DIR]

``INFO commandstats`` reports every ``EVALSHA`` on one line, so a drain alone cannot say which
script the Redis CPU goes to. This drives the worker's own calls straight from one process,
phase by phase, against a private redis-server: the jobs are submitted (``submit_many``), then
taken with ``take.lua`` in mode 'read' (``--batch`` per call, as the consumer's take batch), then
settled with ``settle.lua`` (one Succeeded finish per job, ``--batch`` writes per call, built by
``kubeworkers.attempts`` exactly as the runner builds them). For each phase it prints
redis-server's CPU per job (``/proc/<pid>/stat``) and the commands the scripts issued per job.
No handler runs and no worker process is involved, so the figures are the scripts' own; the
drain in the throughput suite adds the blocking reads, heartbeats and the promoter.

CPU time moves by +-30 % on a machine others share. ``--callgrind`` runs redis-server under
valgrind's callgrind instead (``apt-get install valgrind``; about 30x slower, so use
``--jobs 2000``) and counts the instructions it executes per job in each phase: the same from
run to run to within 1 %, which is what an A/B of two script versions (``--lua-dir``) needs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
import redis.exceptions
from kubeworkers import attempts, outbox, protocol, scripts, wire
from kubeworkers.client import AsyncClient
from kubeworkers.leases import ensure_groups
from kubeworkers.protocol import WORKER_GROUP, JobMessage, JobState, PoolKeys

from benchmarks.measure import commandstats_delta, fmt, median, text_table
from benchmarks.probe import cpu_seconds
from benchmarks.rig import Rig
from hack.net import free_port

NAMESPACE, POOL, HANDLER = "default", "bench", "bench.noop"
WORKER = "bench-worker"
RESULT_TTL = 7 * 24 * 3600
#: The commandstats lines of script calls (their time includes the commands they issue).
SCRIPT_CALLS = ("evalsha", "eval")


class Callgrind:
    """A private redis-server under callgrind: the instructions it executes between two points."""

    def __init__(self) -> None:
        if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
            raise SystemExit("valgrind not found: apt-get install valgrind")
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="kw-callgrind-"))
        self.proc = subprocess.Popen(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={self.dir}/cg.out", "redis-server",
             "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def ready(self) -> None:
        r = aioredis.Redis.from_url(self.url)
        try:
            for _ in range(600):
                try:
                    await r.ping()
                    return
                except (OSError, redis.exceptions.ConnectionError):
                    await asyncio.sleep(0.1)
            raise RuntimeError("redis-server under valgrind did not start")
        finally:
            await r.aclose()

    def zero(self) -> None:
        subprocess.run(["callgrind_control", "-z", str(self.proc.pid)], capture_output=True, check=True)

    def instructions(self) -> int:
        """Instructions since the last :meth:`zero` (callgrind dumps them to a file of their own)."""
        before = set(self.dir.glob("cg.out*"))
        subprocess.run(["callgrind_control", "-d", str(self.proc.pid)], capture_output=True, check=True)
        for _ in range(100):
            new = set(self.dir.glob("cg.out*")) - before
            for path in new:
                for line in path.read_text(errors="replace").splitlines():
                    if line.startswith(("summary:", "totals:")):
                        return int(line.split()[1])
            time.sleep(0.1)
        raise RuntimeError("callgrind wrote no dump")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)
        shutil.rmtree(self.dir, ignore_errors=True)


def _stats(info: dict[str, Any]) -> dict[str, dict[str, float]]:
    return {k: {"calls": float(v["calls"]), "usec": float(v["usec"])} for k, v in info.items()}


async def _phase(
    r: aioredis.Redis, server: Rig | Callgrind, work: Any
) -> tuple[float, dict[str, dict[str, float]], Any]:
    """(redis-server's CPU seconds or, under callgrind, instructions; commands; the work's result)."""
    stats0 = _stats(await r.info("commandstats"))
    if isinstance(server, Callgrind):
        server.zero()
        result = await work
        used = float(server.instructions())
    else:
        cpu0 = cpu_seconds(server.redis_pid)
        result = await work
        used = cpu_seconds(server.redis_pid) - cpu0
    stats1 = _stats(await r.info("commandstats"))
    return used, commandstats_delta(stats0, stats1, 1), result


async def _take_all(r: aioredis.Redis, keys: PoolKeys, jobs: int, batch: int) -> list[wire.Taken]:
    taken: list[wire.Taken] = []
    handler_max = json.dumps({HANDLER: 1})
    while len(taken) < jobs:
        args = wire.take_args(
            mode="read", group=WORKER_GROUP, consumer=WORKER, count=batch, now=repr(time.time()), prefix=keys.prefix,
            events=keys.events, result_ttl=RESULT_TTL,
            default_max_attempts=3, handler_max_attempts=handler_max, dead_letter_maxlen=10_000,
        )
        got = wire.parse_take(await scripts.call(r, "take", keys.streams, args))
        if not got:
            break
        taken.extend(got)
    return taken


def _write(keys: PoolKeys, t: wire.Taken) -> wire.FinishWrite:
    job = attempts.Delivery(
        index=t.stream, entry=t.entry, stream=keys.streams[t.stream - 1], job_id=t.job_id, uid=t.uid,
        namespace=NAMESPACE, pool=POOL, handler=t.handler, record=keys.record(t.job_id),
        msg=JobMessage.model_validate_json(t.message), attempt=t.attempt, max_attempts=t.max_attempts,
    )
    return attempts.finish_write(job, JobState.SUCCEEDED, WORKER, 0.0001, out_json="null")


async def _settle_all(r: aioredis.Redis, keys: PoolKeys, writes: list[wire.FinishWrite], batch: int) -> list[Any]:
    results: list[Any] = []
    for i in range(0, len(writes), batch):
        results.extend(await outbox.settle(r, keys, WORKER, RESULT_TTL, list(writes[i:i + batch]),
                                           dead_letter_maxlen=10_000))
    return results


def _per_job(cmds: dict[str, dict[str, float]], jobs: int) -> dict[str, dict[str, float]]:
    return {k: {"calls": v["calls_per_job"] / jobs, "us": v["usec_per_job"] / jobs} for k, v in cmds.items()}


async def one_run(server: Rig | Callgrind, jobs: int, batch: int) -> dict[str, Any]:
    keys = protocol.PoolKeys(NAMESPACE, POOL)
    r = aioredis.Redis.from_url(server.url)
    try:
        await r.flushall()
        await r.script_flush()
        await ensure_groups(r, keys)
        async with AsyncClient(server.url, NAMESPACE) as client:
            submit = client.submit_many(POOL, HANDLER, ({} for _ in range(jobs)))
            t0 = time.perf_counter()
            submit_cpu, submit_cmds, _ = await _phase(r, server, submit)
            submit_s = time.perf_counter() - t0
        take_cpu, take_cmds, taken = await _phase(r, server, _take_all(r, keys, jobs, batch))
        runnable = [t for t in taken if t.verdict is wire.Verdict.RUN]
        if len(runnable) != jobs:
            raise RuntimeError(f"took {len(runnable)} runnable of {jobs} jobs")
        writes = [_write(keys, t) for t in runnable]
        settle_cpu, settle_cmds, results = await _phase(r, server, _settle_all(r, keys, writes, batch))
        if results.count(1) != jobs:
            raise RuntimeError(f"settled {results.count(1)} of {jobs}: {set(map(repr, results))}")
        left = await r.xlen(keys.streams[2])
        if left:
            raise RuntimeError(f"{left} entries left on the stream")
    finally:
        await r.aclose()
    # CPU seconds -> µs per job; instructions -> instructions per job
    scale = 1.0 if isinstance(server, Callgrind) else 1e6
    return {
        "submit": {"redis_per_job": submit_cpu / jobs * scale, "jobs_per_s": jobs / submit_s,
                   "commands": _per_job(submit_cmds, jobs)},
        "take": {"redis_per_job": take_cpu / jobs * scale, "commands": _per_job(take_cmds, jobs)},
        "settle": {"redis_per_job": settle_cpu / jobs * scale, "commands": _per_job(settle_cmds, jobs)},
    }


async def _runs(args: argparse.Namespace) -> list[dict[str, Any]]:
    if not args.callgrind:
        with Rig() as rig:
            return [await one_run(rig, args.jobs, args.batch) for _ in range(args.repeats)]
    server = Callgrind()
    try:
        await server.ready()
        return [await one_run(server, args.jobs, args.batch) for _ in range(args.repeats)]
    finally:
        server.stop()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--jobs", type=int, default=20_000)
    p.add_argument("--batch", type=int, default=64, help="jobs per take call and writes per settle call")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--json", action="store_true", help="print the runs as JSON too")
    p.add_argument("--callgrind", action="store_true",
                   help="count redis-server's instructions under valgrind instead of its CPU time (see above)")
    p.add_argument("--lua-dir", type=Path, help="run the scripts of this folder instead (an A/B of two versions "
                   "whose arguments agree)")
    args = p.parse_args()
    if args.lua_dir is not None:
        scripts.LUA_DIR = args.lua_dir.resolve()
        scripts._SCRIPTS.clear()
    runs = asyncio.run(_runs(args))
    unit = "instructions" if args.callgrind else "CPU µs"
    print(f"{args.jobs:,} jobs, {args.batch} per call, median of {args.repeats}: Redis {unit} per job by phase")
    rows = []
    for phase in ("submit", "take", "settle"):
        used = median(run[phase]["redis_per_job"] for run in runs)
        cmds = runs[-1][phase]["commands"]
        inner = sum(c["calls"] for k, c in cmds.items() if k not in SCRIPT_CALLS)
        rows.append([phase, fmt(used, 0 if args.callgrind else 1), fmt(inner, 2)])
        detail = [[k, fmt(c["calls"], 3), fmt(c["us"], 2), fmt(c["us"] / c["calls"] if c["calls"] else None, 2)]
                  for k, c in sorted(cmds.items(), key=lambda kv: -kv[1]["us"]) if c["calls"] >= 0.001]
        print(f"\n{phase}: commands per job (the script's own line holds the whole script's time)")
        print(text_table(["command", "calls/job", "µs/job", "µs/call"], detail))
    print()
    print(text_table(["phase", f"Redis {unit}/job", "commands/job inside the scripts"], rows))
    worker_path = sum(median(run[ph]["redis_per_job"] for run in runs) or 0 for ph in ("take", "settle"))
    print(f"worker path (take + settle): {worker_path:,.1f} {unit}/job; submit "
          f"{median(run['submit']['jobs_per_s'] for run in runs):,.0f} jobs/s")
    if args.json:
        print(json.dumps(runs))


if __name__ == "__main__":
    main()
