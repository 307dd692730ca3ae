"""``kubeworkers run-local --import M HANDLER --input JSON``: run one attempt of a handler in this
process, without Redis, to debug it.

It is the worker's own attempt runner (:class:`~kubeworkers.runner.AttemptRunner`) with a sink
that prints instead of writing to Redis, so validation, the ``JobContext``, soft and hard
timeouts, process isolation, output caps and every failure reason are exactly a worker's.
Progress reports go to stderr as they come; the output, as JSON, to stdout; a failure is one
line on stderr and exit code 1 (2 for what was given: a bad ``--input``, a module that
cannot be imported). One attempt, never retried. Ctrl-C cancels it, as a cancel would.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
from typing import Any

from kubeworkers import logs, wire
from kubeworkers.attempts import Delivery
from kubeworkers.client import check_policy, new_job_id
from kubeworkers.holdings import Holdings
from kubeworkers.metrics import WorkerMetrics
from kubeworkers.outbox import Write
from kubeworkers.protocol import JobMessage
from kubeworkers.registry import import_modules, registry
from kubeworkers.runner import AttemptRunner
from kubeworkers.settings import add_flags, flag_values, settings_from

#: The worker settings ``run-local`` takes (as the worker's own flags).
SETTINGS = ("imports", "cancel_grace", "max_output_bytes", "log_level", "log_format")
#: Where a local run pretends to be.
POOL, NAMESPACE, WORKER = "local", "default", "run-local"


def add_parser(sub: Any) -> None:
    """The ``run-local`` subcommand, on the ``kubeworkers`` parser's subparsers."""
    p = sub.add_parser("run-local", help="run one handler in this process, without Redis (for debugging)")
    add_flags(p, SETTINGS)
    p.add_argument("handler")
    p.add_argument("--input", default="{}", help="JSON object")
    p.add_argument("--timeout", type=float, help="hard timeout of this attempt, seconds (default: the handler's)")
    p.add_argument("--soft-timeout", type=float, help="soft timeout of this attempt, seconds (default: the handler's)")


class Printer:
    """The runner's write sink: progress to stderr at once, the attempt's one ending kept."""

    def __init__(self) -> None:
        self.ending: wire.Write | None = None
        self.done = asyncio.Event()

    def add(self, write: Write) -> None:
        self.ending = write.body
        self.done.set()

    def progress(self, entry: str, write: Write) -> None:
        body: Any = write.body
        message = f" {body['message']}" if body.get("message") else ""
        print(f"progress {float(body['progress']):.0%}{message}", file=sys.stderr, flush=True)


def command(args: argparse.Namespace) -> int:
    """Run the attempt; 0 and the output on stdout when it succeeded."""
    settings = settings_from(**flag_values(args), pool=POOL, log_level=args.log_level or "WARNING",
                             log_format=args.log_format or "text")
    logs.configure(settings.log_level, settings.log_format)
    if args.log_level is None:
        # The attempt's ending is printed below; the worker's own line about it would say it twice.
        logging.getLogger("kubeworkers.worker").setLevel(logging.CRITICAL)
    try:
        inp = json.loads(args.input)
    except ValueError as exc:
        raise ValueError(f"--input is not JSON: {exc}") from None
    if not isinstance(inp, dict):
        raise ValueError("--input must be a JSON object")
    check_policy(timeout=args.timeout, max_attempts=None)
    check_policy(timeout=args.soft_timeout, max_attempts=None, name="soft timeout")
    try:
        import_modules(settings.imports)
    except ImportError as exc:
        raise ValueError(f"cannot import the handlers: {exc}") from None
    job_id = f"local-{new_job_id()}"
    msg = JobMessage(job_id=job_id, uid=job_id, namespace=NAMESPACE, pool=POOL, handler=args.handler, input=inp,
                     timeout_seconds=args.timeout, soft_timeout_seconds=args.soft_timeout, max_attempts=1)
    job = Delivery(index=1, entry="0-1", stream="local", job_id=job_id, uid=job_id, namespace=NAMESPACE, pool=POOL,
                   handler=args.handler, record=job_id, msg=msg, attempt=1, max_attempts=1)
    printer = Printer()
    runner = AttemptRunner(name=WORKER, settings=settings, registry=registry, metrics=WorkerMetrics(POOL, NAMESPACE),
                           holdings=Holdings(1), outbox=printer)

    async def attempt() -> None:
        asyncio.get_running_loop().add_signal_handler(signal.SIGINT, runner.stop_job, job, "cancelled")
        runner.launch(job)
        await printer.done.wait()

    asyncio.run(attempt())
    code = report(printer.ending)
    if runner.still_running():  # a handler that ignored being stopped must not keep us here
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


def report(ending: wire.Write | None) -> int:
    """Print the attempt's ending: the output on stdout, or one line on stderr; the exit code."""
    body: Any = ending or {}
    if body.get("kind") == "finish" and body["state"] == "Succeeded":
        if body.get("message"):
            print(f"note: {body['message']}", file=sys.stderr)
        print(body["output"] or "null")
        return 0
    if body.get("kind") == "finish" and body["state"] == "Cancelled":
        print("kubeworkers run-local: Cancelled: the attempt was cancelled (Ctrl-C)", file=sys.stderr)
        return 1
    error = json.loads(body["error"]) if body.get("error") else {"type": "Failed", "message": body.get("message", "")}
    message = " ".join(str(error.get("message", "")).split())
    print(f"kubeworkers run-local: {error.get('type')}: {message}", file=sys.stderr)
    return 1

