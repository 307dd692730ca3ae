"""``kubeworkers jobs list`` on a pool with a million finished records (issue 12: "fast on a pool with
a million finished records"): a benchmark, not a timed test.

A private ``redis-server`` (the tests' ``RedisServer``) is filled by a Lua loop with 1,000,000
finished records (80 % Succeeded, 15 % Failed with an error, 5 % Cancelled, over five handlers plus
one rare one, finished over the last six days) and their jobs index entries as ``lua/jobindex.lua`` writes
them (per state and per handler), plus 1,000 queued jobs enqueued by ``enqueue.lua``. Then it times
the command in-process (``cli.main``, output to /dev/null, so no interpreter start-up), p50/p95 over
``--calls`` calls each, for:

* ``jobs list --state Failed --limit 50``;
* ``jobs list`` (live and finished merged, newest first, 50 rows);
* ``jobs list --handler rare`` (a handler 0.1 % of the jobs ran: it reads that handler's own
  index sets);

and once as a process (``python -m kubeworkers jobs list --state Failed``), interpreter included;
and the p50 of ``cancel.lua`` (a finish that writes the index) with the index at a million.

    .venv/bin/python -m benchmarks.bench_jobs_list [--records 1000000] [--calls 50]

Prints a table; the figures recorded in docs/cli.md come from one run of this.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import subprocess
import sys
import time
from pathlib import Path

import redis

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from kubeworkers import cli, queue  # noqa: E402
from kubeworkers.protocol import JobMessage, PoolKeys  # noqa: E402

from benchmarks.measure import percentile, text_table  # noqa: E402
from tests.support.redis_server import RedisServer  # noqa: E402

KEYS = PoolKeys("default", "bench")

#: One chunk of finished records and their index entries; ARGV: prefix, first, count, now, total.
FILL = """
local prefix, first, count, now = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local total = tonumber(ARGV[5])
local handlers = {'resize', 'report', 'email', 'sync', 'export'}
local err = '{"type": "RuntimeError", "message": "upstream answered 503", "retryable": true}'
for n = first, first + count - 1 do
  local id = 'job-' .. n
  local state, e = 'Succeeded', ''
  if n % 20 == 0 then state = 'Cancelled' elseif n % 20 < 4 then state = 'Failed'; e = err end
  local handler = (n % 1000 == 7) and 'rare' or handlers[n % 5 + 1]
  local finished = now - 518400 + n * (518400 / total)
  redis.call('HSET', prefix .. 'job:' .. id, 'job_id', id, 'uid', id, 'namespace', 'default', 'pool', 'bench',
    'handler', handler, 'priority', 'normal', 'state', state, 'attempts', '1', 'max_attempts', '3',
    'enqueued_at', finished - 2, 'started_at', finished - 1.5, 'finished_at', finished, 'updated_at', finished,
    'worker', 'bench-worker-' .. (n % 8), 'message', '', 'error', e, 'entry', '', 'output', '{"ok": true}')
  redis.call('ZADD', prefix .. 'idx:' .. state, finished, id)
  redis.call('ZADD', prefix .. 'idx:' .. state .. ':h:' .. handler, finished, id)
end
return count
"""


def fill(r: redis.Redis, records: int, now: float, chunk: int = 25_000) -> None:
    sha = r.script_load(FILL)
    for first in range(0, records, chunk):
        r.evalsha(sha, 0, KEYS.prefix, first, min(chunk, records - first), now, records)
    for state in ("Succeeded", "Failed", "Cancelled"):
        r.hset(KEYS.index("ttl"), state, 7 * 86400)


def timed(argv: list[str], calls: int, rows: int = 50) -> tuple[float, float]:
    """p50 and p95 of ``kubeworkers <argv>`` in this process, milliseconds."""
    took = []
    for _ in range(calls):
        sink = io.StringIO()
        t0 = time.perf_counter()
        with contextlib.redirect_stdout(sink):
            code = cli.main(argv)
        took.append((time.perf_counter() - t0) * 1000)
        assert code == 0, f"kubeworkers {' '.join(argv)} exited {code}"
        assert len(sink.getvalue().splitlines()) == rows + 1, sink.getvalue()[:500]  # header + rows
    return percentile(took, 0.5), percentile(took, 0.95)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench_jobs_list", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--records", type=int, default=1_000_000)
    p.add_argument("--calls", type=int, default=50)
    args = p.parse_args(argv)
    server = RedisServer(aof=False)
    server.start()
    try:
        r = redis.Redis.from_url(server.url)
        now = time.time()
        t0 = time.monotonic()
        fill(r, args.records, now)
        for n in range(1000):
            queue.enqueue_sync(r, JobMessage(job_id=f"live-{n}", uid=f"live-{n}", namespace="default", pool="bench",
                                             handler="resize", input={"n": n}))
        filled = time.monotonic() - t0
        sizes = {s: int(r.zcard(KEYS.index(s))) for s in ("live", "Succeeded", "Failed", "Cancelled")}
        index_keys = [KEYS.index(s) for s in sizes] + [
            KEYS.handler_index(s, h) for s in sizes for h in ("resize", "report", "email", "sync", "export", "rare")]
        index_mb = sum(int(r.memory_usage(k) or 0) for k in index_keys) / 2**20
        used_mb = int(r.info("memory")["used_memory"]) / 2**20
        base = ["jobs", "list", "--redis-url", server.url, "--pool", "bench"]
        rows = []
        for label, extra in [("jobs list --state Failed --limit 50", ["--state", "Failed", "--limit", "50"]),
                             ("jobs list", []),
                             ("jobs list --handler rare", ["--handler", "rare"])]:
            p50, p95 = timed(base + extra, args.calls, min(50, args.records // 1000) if "rare" in extra else 50)
            rows.append([label, f"{p50:.1f}", f"{p95:.1f}"])
        env = {**os.environ, "PYTHONPATH": str(REPO / "worker_image")}
        walls = []
        for _ in range(5):
            t1 = time.perf_counter()
            subprocess.run([sys.executable, "-m", "kubeworkers", *base, "--state", "Failed"], check=True,
                           stdout=subprocess.DEVNULL, env=env)
            walls.append((time.perf_counter() - t1) * 1000)
        rows.append(["python -m kubeworkers jobs list --state Failed (process)", f"{percentile(walls, 0.5):.0f}",
                     f"{percentile(walls, 0.95):.0f}"])
        cancels = []
        for n in range(200):
            t1 = time.perf_counter()
            assert queue.cancel_sync(r, "default", "bench", f"live-{n}")
            cancels.append((time.perf_counter() - t1) * 1000)
        rows.append(["cancel.lua (a finish writing the index), per call", f"{percentile(cancels, 0.5):.2f}",
                     f"{percentile(cancels, 0.95):.2f}"])
        print(f"filled {args.records:,} finished records + 1,000 queued in {filled:.0f} s; index sizes "
              f"{sizes}; index memory {index_mb:.0f} MiB of {used_mb:.0f} MiB used")
        print(text_table(["command", "p50 ms", "p95 ms"], rows))
        r.close()
    finally:
        server.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
