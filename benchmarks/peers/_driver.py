"""The command line every peer driver shares: ``submit`` (bulk, timed) and ``latency`` (one at a time).

A driver module defines ``submit_many(url, n)`` and ``submit_one(url) -> callable`` (sync or
async variants) and calls :func:`main`. Results are one JSON line on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any

#: Idle time after each latency sample, so the next job finds the worker back in its wait.
IDLE_SECONDS = 0.01


def _args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    p.add_argument("command", choices=["submit", "latency"])
    p.add_argument("--url", required=True)
    p.add_argument("--jobs", type=int, default=0)
    p.add_argument("--port", type=int, default=0, help="latency: UDP port the handlers report to")
    p.add_argument("--budget", type=float, default=60.0, help="latency: stop after this many seconds")
    p.add_argument("--warmup-timeout", type=float, default=60.0)
    return p.parse_args(argv)


def _listen(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", port))
    return sock


def _started(sock: socket.socket, timeout: float) -> float:
    sock.settimeout(timeout)
    data, _ = sock.recvfrom(65536)
    return float(json.loads(data)["t"])


def _latency_loop(args: argparse.Namespace, submit: Callable[[], Any]) -> dict[str, Any]:
    sock = _listen(args.port)
    submit()  # warm-up: the worker may still be starting
    _started(sock, args.warmup_timeout)
    time.sleep(0.2)
    samples: list[float] = []
    deadline = time.monotonic() + args.budget
    while len(samples) < args.jobs and time.monotonic() < deadline:
        t0 = time.time()
        submit()
        samples.append((_started(sock, 30.0) - t0) * 1000)
        time.sleep(IDLE_SECONDS)
    return {"ms": samples}


def main(
    submit_many: Callable[[str, int], None],
    submit_one: Callable[[str], Callable[[], Any]],
    argv: list[str] | None = None,
) -> None:
    """Blocking drivers: ``submit_one(url)`` returns a function that submits one job."""
    args = _args(argv)
    if args.command == "submit":
        t0 = time.perf_counter()
        submit_many(args.url, args.jobs)
        print(json.dumps({"seconds": time.perf_counter() - t0}))
    else:
        print(json.dumps(_latency_loop(args, submit_one(args.url))))


def main_async(
    submit_many: Callable[[str, int], Awaitable[None]],
    open_one: Callable[[str], Awaitable[Callable[[], Awaitable[Any]]]],
    argv: list[str] | None = None,
) -> None:
    """asyncio drivers: ``open_one(url)`` returns a coroutine function that submits one job.

    The latency loop then runs the submits on one event loop in this thread (the UDP wait
    blocks the loop between samples, which is what an idle client does anyway).
    """
    args = _args(argv)
    if args.command == "submit":

        async def bulk() -> float:
            t0 = time.perf_counter()
            await submit_many(args.url, args.jobs)
            return time.perf_counter() - t0

        print(json.dumps({"seconds": asyncio.run(bulk())}))
        return
    loop = asyncio.new_event_loop()
    try:
        one = loop.run_until_complete(open_one(args.url))
        print(json.dumps(_latency_loop(args, lambda: loop.run_until_complete(one()))))
    finally:
        loop.close()
