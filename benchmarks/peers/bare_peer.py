"""The ceiling: a bare batched consumer-group loop in redis-py (hiredis), no records, no events, no leases.

Worker: ``XREADGROUP COUNT 100 BLOCK`` then, per batch, one pipelined ``XACK`` + ``XDEL``; the
"handler" is the probe's tick. Submit: pipelined bare ``XADD`` of a message the size of a
kubeworkers job message, 1,000 per round trip.

    python -m benchmarks.peers.bare_peer worker --url URL [--consumer NAME]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any, cast

import redis

from benchmarks.peers import _driver
from benchmarks.probe import PROBE

STREAM = "bare:jobs"
GROUP = "workers"
BATCH = 100
PAYLOAD = json.dumps({"job_id": "x" * 32, "uid": "x" * 32, "namespace": "default", "pool": "bench",
                      "handler": "bench.noop", "input": {}, "priority": "normal", "enqueued_at": 1.0e9})


def ensure_group(r: redis.Redis) -> None:
    try:
        r.xgroup_create(STREAM, GROUP, id="0", mkstream=True)
    except redis.ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


def submit_many(url: str, n: int) -> None:
    r = redis.Redis.from_url(url)
    ensure_group(r)
    for start in range(0, n, 1000):
        pipe = r.pipeline(transaction=False)
        for _ in range(min(1000, n - start)):
            pipe.xadd(STREAM, {"m": PAYLOAD})
        pipe.execute()


def submit_one(url: str) -> Callable[[], object]:
    r = redis.Redis.from_url(url)
    ensure_group(r)
    return lambda: r.xadd(STREAM, {"m": PAYLOAD})


def work(url: str, consumer: str) -> None:
    r = redis.Redis.from_url(url)
    ensure_group(r)
    r.xgroup_createconsumer(STREAM, GROUP, consumer)  # so a benchmark can see this process is up
    tick = PROBE.tick
    while True:
        reply = cast(list[Any], r.xreadgroup(GROUP, consumer, {STREAM: ">"}, count=BATCH, block=1000))
        if not reply:
            continue
        ids: list[bytes] = []
        for entry_id, _fields in reply[0][1]:
            tick()
            ids.append(entry_id)
        pipe = r.pipeline(transaction=False)
        pipe.xack(STREAM, GROUP, *ids)
        pipe.xdel(STREAM, *ids)
        pipe.execute()


if __name__ == "__main__":
    if sys.argv[1:2] == ["worker"]:
        p = argparse.ArgumentParser()
        p.add_argument("--url", required=True)
        p.add_argument("--consumer", default="c1")
        a = p.parse_args(sys.argv[2:])
        work(a.url, a.consumer)
    else:
        _driver.main(submit_many, submit_one)
