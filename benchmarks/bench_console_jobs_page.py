"""The web console's jobs page on a pool of 10⁴ and of 10⁶ finished records (issue 13: "fast on big
pools: the jobs page stays responsive with a million records"): a benchmark, not a timed test.

For each size, a private ``redis-server`` (the tests' ``RedisServer``) is filled as
``benchmarks/bench_jobs_list.py`` fills it (finished records over five handlers and a rare one,
their jobs index entries, 1,000 queued jobs), then ``kubeworkers ui`` runs as a process and is
timed two ways:

* **server**: ``GET`` over HTTP from this process, p50/p95 over ``--calls`` calls, of the jobs page
  (100 rows: live and finished merged), ``state=Failed``, ``handler=rare`` (a filter matching 0.1 %),
  the live part alone (what the page script fetches every 2 s), and the pools page (the pool named
  with ``--pool``, so no keyspace scan);
* **browser**: headless chromium loading the jobs page, navigation start to the load event
  (``performance.timing``), p50/p95 over ``--loads`` loads: HTML, stylesheet, script, layout;

and once, the ``SCAN … TYPE stream`` that finds the namespace's pools when ``kubeworkers ui`` is
given no ``--pool`` (the first page waits for it; later it runs again in the background every 30 s).

    flock /tmp/kw/heavy.lock .venv/bin/python -m benchmarks.bench_console_jobs_page [--sizes 10000,1000000]

Prints a table per size; the figures in docs/console.md come from one run of this.
"""

from __future__ import annotations

import argparse
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import redis

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from kubeworkers import queue  # noqa: E402
from kubeworkers.console import reads  # noqa: E402
from kubeworkers.protocol import JobMessage  # noqa: E402

from benchmarks.bench_jobs_list import KEYS, fill  # noqa: E402
from benchmarks.measure import percentile, text_table  # noqa: E402
from hack.browser import chrome  # noqa: E402
from tests.support.browser import ConsoleProcess  # noqa: E402
from tests.support.redis_server import RedisServer  # noqa: E402

PAGES = [
    ("/jobs?pool=bench (100 rows, all states)", "/jobs?pool=bench", {}),
    ("/jobs?pool=bench&state=Failed", "/jobs?pool=bench&state=Failed", {}),
    ("/jobs?pool=bench&handler=rare", "/jobs?pool=bench&handler=rare", {}),
    ("live part of /jobs (each 2 s refresh)", "/jobs?pool=bench", {"X-Console-Fragment": "1"}),
    ("/ (pools page, --pool bench)", "/", {}),
]


def get_ms(url: str, headers: dict[str, str]) -> float:
    t0 = time.perf_counter()
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=60) as response:
        body = response.read()
        assert response.status == 200, response.status
    took = (time.perf_counter() - t0) * 1000
    assert b"<" in body
    return took


def browser_loads(browser: Any, url: str, loads: int) -> tuple[float, float]:
    took = []
    for _ in range(loads):
        browser.get(url)
        ms = browser.execute_script(
            "const t = performance.timing; return t.loadEventEnd > 0 ? t.loadEventEnd - t.navigationStart : -1;")
        assert ms >= 0, ms
        took.append(float(ms))
    return percentile(took, 0.5), percentile(took, 0.95)


def run_size(records: int, calls: int, loads: int, browser: Any) -> None:
    server = RedisServer(aof=False)
    server.start()
    try:
        r = redis.Redis.from_url(server.url)
        t0 = time.monotonic()
        fill(r, records, time.time())
        for n in range(1000):
            queue.enqueue_sync(r, JobMessage(job_id=f"live-{n}", uid=f"live-{n}", namespace="default", pool="bench",
                                             handler="resize", input={"n": n}))
        filled = time.monotonic() - t0
        keys = int(r.dbsize())
        t1 = time.perf_counter()
        found = reads.Pools("default").scan(r)
        scan_ms = (time.perf_counter() - t1) * 1000
        assert found == [KEYS.pool], found
        console = ConsoleProcess(server.url, "--pool", KEYS.pool)
        try:
            rows = []
            for label, path, headers in PAGES:
                get_ms(console.url + path, headers)  # warm: the connection pool, the first import of a module
                took = [get_ms(console.url + path, headers) for _ in range(calls)]
                rows.append([f"server: GET {label}", f"{percentile(took, 0.5):.1f}", f"{percentile(took, 0.95):.1f}"])
            p50, p95 = browser_loads(browser, console.url + "/jobs?pool=bench", loads)
            rows.append(["browser: /jobs?pool=bench, navigation to load event", f"{p50:.0f}", f"{p95:.0f}"])
            rows.append(["without --pool: the SCAN finding the pools (first page; then in the background)",
                         f"{scan_ms:.0f}", "-"])
        finally:
            console.close()
        print(f"\n{records:,} finished records + 1,000 queued ({keys:,} keys), filled in {filled:.0f} s")
        print(text_table(["what", "p50 ms", "p95 ms"], rows))
        r.close()
    finally:
        server.cleanup()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench_console_jobs_page", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="10000,1000000", help="record counts, comma-separated")
    p.add_argument("--calls", type=int, default=50)
    p.add_argument("--loads", type=int, default=20)
    args = p.parse_args(argv)
    browser = chrome()
    try:
        for size in (int(s) for s in args.sizes.split(",")):
            run_size(size, args.calls, args.loads, browser)
    finally:
        browser.quit()
    return 0


if __name__ == "__main__":
    sys.exit(main())
