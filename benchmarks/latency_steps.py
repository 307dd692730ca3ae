"""Where kubeworkers' submit -> handler start time goes, step by step, on an idle worker.

    python -m benchmarks.latency_steps [--jobs 300]

Starts a private redis-server and one worker process (concurrency 200, as the latency suite's
``kubeworkers-c200``) whose redis-py connection and consumer are instrumented with wall-clock
marks, then submits the jobs one at a time through the SDK from this process (10 ms idle between
them, as the latency suite), marking the SDK's steps too, with ``SLOWLOG`` at threshold 0 for the
scripts' own time. Prints the median of each step, as time since the submit call began, and the
medians of the two scripts. The marks cost a few µs each; the latency suite measures without them.

``python -m benchmarks.latency_steps worker <kubeworkers worker arguments>`` is the instrumented
worker itself (it writes its marks, as JSON, to ``$KW_STEPS_OUT`` when it exits).
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import dataclasses
import json
import os
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

Marks = list[tuple[str, float]]


def _mark_calls(owner: Any, name: str, label: str, marks: Marks, *, after: bool = False) -> None:
    """Record the wall time at each call of ``owner.name`` (sync or async), or after it returns."""
    original = getattr(owner, name)
    if asyncio.iscoroutinefunction(original):

        async def marked_async(*args: Any, **kwargs: Any) -> Any:
            if not after:
                marks.append((label, time.time()))
            result = await original(*args, **kwargs)
            if after:
                marks.append((label, time.time()))
            return result

        setattr(owner, name, marked_async)
    else:

        def marked(*args: Any, **kwargs: Any) -> Any:
            if not after:
                marks.append((label, time.time()))
            result = original(*args, **kwargs)
            if after:
                marks.append((label, time.time()))
            return result

        setattr(owner, name, marked)


def worker(argv: list[str]) -> int:
    """The instrumented worker: kubeworkers' own CLI with marks on its wake-up path."""
    from kubeworkers import cli
    from kubeworkers.consumer import Consumer
    from redis.asyncio import connection

    from benchmarks.probe import Probe

    marks: Marks = []
    _mark_calls(connection.AbstractConnection, "read_response", "reply read", marks, after=True)
    _mark_calls(Consumer, "_start", "take decoded", marks)
    _mark_calls(Consumer, "_delivery", "message parsed", marks, after=True)
    _mark_calls(Probe, "tick", "handler runs", marks)
    out = Path(os.environ["KW_STEPS_OUT"])
    atexit.register(lambda: out.write_text(json.dumps(marks)))
    return cli.main(argv)


#: The steps printed, in order: (mark, where, what it is).
STEPS = [
    ("message built", "client", "the SDK's submit until its JobMessage is built"),
    ("arguments built", "client", "the message as JSON, the script's arguments"),
    ("sent", "client", "redis-py's pipeline: a connection from the pool, the commands packed, sent"),
    ("first reply read", "worker", "the blocked XREAD answered (enqueue.lua ran, then the take behind it)"),
    ("last reply read", "worker", "the take's reply read"),
    ("take decoded", "worker", "redis-py's pipeline and kubeworkers' plan done, the take's reply decoded"),
    ("message parsed", "worker", "JobMessage.model_validate_json, the Delivery"),
    ("handler runs", "worker", "the job's task started, the attempt begun, the input validated"),
    ("submit returned", "client", "the SDK's submit returns (its reply waits for the take: same Redis turn)"),
]


def measure(jobs: int) -> dict[str, Any]:
    from kubeworkers import queue, scripts
    from kubeworkers.client import AsyncClient, _Builder
    from redis.asyncio.connection import AbstractConnection

    from benchmarks import systems
    from benchmarks.rig import Rig, free_udp_port

    client_marks: Marks = []
    _mark_calls(_Builder, "message", "message built", client_marks, after=True)
    _mark_calls(queue, "_enqueue_argv", "arguments built", client_marks, after=True)
    _mark_calls(AbstractConnection, "send_packed_command", "sent", client_marks)
    with Rig() as rig, tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "marks.json"
        base = systems.kubeworkers(200)
        system = dataclasses.replace(base, extra_env={**base.extra_env, "KW_STEPS_OUT": str(out)})
        argv = [sys.executable, "-m", "benchmarks.latency_steps", "worker", *system.worker_argv(rig.url)[3:]]
        port = free_udp_port()
        proc = rig.start_worker(system, "latency", port=port, name="steps", argv=argv)
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", port))
        sock.settimeout(60)
        loop = asyncio.new_event_loop()
        client = AsyncClient(rig.url, "default")

        def submit() -> None:
            loop.run_until_complete(client.submit("bench", "bench.noop", {}))

        submit()
        sock.recvfrom(65536)  # the worker is up
        time.sleep(0.3)
        r = rig.r()
        r.config_set("slowlog-log-slower-than", 0)
        r.config_set("slowlog-max-len", 100_000)
        r.slowlog_reset()
        samples: list[tuple[float, float, Marks]] = []
        for _ in range(jobs):
            time.sleep(0.01)
            client_marks.clear()
            t0 = time.time()
            submit()
            returned = time.time()
            sock.recvfrom(65536)
            samples.append((t0, returned, list(client_marks)))
        slowlog = r.slowlog_get(100_000)
        rig.stop(proc)
        loop.close()
        worker_marks: Marks = [(label, t) for label, t in json.loads(out.read_text())]
    shas = {scripts.script(name).sha.encode(): name for name in ("enqueue", "take")}
    script_us: dict[str, list[float]] = {name: [] for name in shas.values()}
    for entry in slowlog:
        words = entry["command"].split(b" ")
        if words[0].upper() == b"EVALSHA" and words[1] in shas:
            script_us[shas[words[1]]].append(float(entry["duration"]))
    steps: dict[str, list[float]] = {label: [] for label, _, _ in STEPS}
    for t0, returned, marks in samples:
        window = [(label, t) for label, t in worker_marks if t0 <= t <= t0 + 0.1]
        ends = [i for i, (label, _) in enumerate(window) if label == "handler runs"]
        if not ends:
            continue
        window = window[: ends[0] + 1]
        reads = [t for label, t in window if label == "reply read"]
        found = {label: t for label, t in reversed([*marks, *window])}  # the first of each
        if reads:
            found["first reply read"], found["last reply read"] = reads[0], reads[-1]
        found["submit returned"] = returned
        for label, at in steps.items():
            if label in found:
                at.append((found[label] - t0) * 1e6)
    return {"jobs": jobs, "steps": {k: statistics.median(v) for k, v in steps.items() if v},
            "scripts_us": {k: statistics.median(v) for k, v in script_us.items() if v}}


def report(data: dict[str, Any]) -> str:
    lines = [f"submit -> handler start, one job at a time, {data['jobs']} jobs, medians (µs since the submit call)",
             f"{'step':<20} {'where':<7} {'at µs':>7} {'step µs':>8}  what"]
    previous = 0.0
    for label, where, what in STEPS:
        at = data["steps"].get(label)
        if at is None:
            continue
        step = "" if label == "submit returned" else f"{at - previous:8.0f}"
        lines.append(f"{label:<20} {where:<7} {at:7.0f} {step:>8}  {what}")
        if label != "submit returned":
            previous = at
    lines += [f"{name}.lua (SLOWLOG, Redis' own time): {us:.0f} µs" for name, us in data["scripts_us"].items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["worker"]:
        return worker(args[1:])
    p = argparse.ArgumentParser(prog="python -m benchmarks.latency_steps")
    p.add_argument("--jobs", type=int, default=300)
    print(report(measure(p.parse_args(args).jobs)))
    return 0

if __name__ == "__main__":
    sys.exit(main())
