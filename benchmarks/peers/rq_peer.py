"""RQ: the job function (``benchmarks.peers.rq_peer.noop``) and its driver.

Bulk submit is ``Queue.enqueue_many`` (one pipeline per 1,000 jobs); results are stored as RQ
does by default (``result_ttl`` 500 s, the finished-job registry).
"""

from __future__ import annotations

from collections.abc import Callable

import redis
from rq import Queue

from benchmarks.peers import _driver
from benchmarks.probe import PROBE


def noop() -> None:
    PROBE.tick()


#: By import path: the driver runs as ``__main__``, the worker imports this module.
NOOP = "benchmarks.peers.rq_peer.noop"


def submit_many(url: str, n: int) -> None:
    q = Queue("default", connection=redis.Redis.from_url(url))
    for start in range(0, n, 1000):
        q.enqueue_many([Queue.prepare_data(NOOP) for _ in range(min(1000, n - start))])


def submit_one(url: str) -> Callable[[], object]:
    q = Queue("default", connection=redis.Redis.from_url(url))
    return lambda: q.enqueue(NOOP)


if __name__ == "__main__":
    _driver.main(submit_many, submit_one)
