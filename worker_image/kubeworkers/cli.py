"""The ``kubeworkers`` command: ``worker``, ``handlers``, ``dlq list|replay``, ``submit``, ``get``."""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from collections.abc import Sequence
from datetime import UTC, datetime

import redis

from kubeworkers import dlq, logs
from kubeworkers.protocol import PoolKeys
from kubeworkers.registry import import_modules, registry
from kubeworkers.settings import WorkerSettings, add_flags, flag_values, settings_from

#: The settings the commands other than ``worker`` take.
CONNECTION = ("redis_url", "namespace", "pool")


def _imports(values: list[str] | None) -> list[str]:
    return [m.strip() for v in values or [] for m in v.split(",") if m.strip()]


def _connection_args(p: argparse.ArgumentParser) -> None:
    add_flags(p, CONNECTION)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kubeworkers", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    w = sub.add_parser("worker", help="run a worker for a pool (flags override environment variables)")
    add_flags(w)

    h = sub.add_parser("handlers", help="list registered handlers with their input JSON Schema")
    h.add_argument("--import", dest="imports", action="append", required=True)
    h.add_argument("--json", action="store_true", help="machine-readable output")

    d = sub.add_parser("dlq", help="the dead-letter stream of a pool")
    dsub = d.add_subparsers(dest="dlq_command", required=True)
    dl = dsub.add_parser("list", help="list dead-lettered jobs")
    _connection_args(dl)
    dl.add_argument("--count", type=int, default=100)
    dl.add_argument("--json", action="store_true")
    dr = dsub.add_parser("replay", help="queue dead-lettered jobs again")
    _connection_args(dr)
    group = dr.add_mutually_exclusive_group(required=True)
    group.add_argument("--id", dest="ids", action="append", help="dead-letter entry id (repeatable)")
    group.add_argument("--all", action="store_true")

    s = sub.add_parser("submit", help="submit one job and print its id")
    _connection_args(s)
    s.add_argument("handler")
    s.add_argument("--input", default="{}", help="JSON object")
    s.add_argument("--job-id")
    s.add_argument("--priority", default="normal", choices=["high", "normal", "low"])
    s.add_argument("--wait", type=float, help="wait up to this many seconds and print the record")

    g = sub.add_parser("get", help="print a job's record as JSON")
    _connection_args(g)
    g.add_argument("job_id")
    return parser


def _settings(args: argparse.Namespace) -> WorkerSettings:
    return settings_from(**flag_values(args))


async def _serve(settings: WorkerSettings) -> None:
    from kubeworkers.worker import Worker

    worker = Worker(settings)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, worker.stop)
    await worker.run()


def cmd_worker(args: argparse.Namespace) -> int:
    settings = _settings(args)
    logs.configure(settings.log_level, settings.log_format)
    try:
        settings.validate()
    except ValueError as exc:
        print(f"kubeworkers worker: {exc}", file=sys.stderr)
        return 2
    import_modules(settings.imports)
    asyncio.run(_serve(settings))
    return 0


def cmd_handlers(args: argparse.Namespace) -> int:
    import_modules(_imports(args.imports))
    described = [spec.describe() for spec in registry]
    if args.json:
        print(json.dumps(described, indent=2))
        return 0
    for d in described:
        policy = f"timeout={d['timeout']} max_attempts={d['max_attempts']} retry_backoff={d['retry_backoff']}"
        print(f"{d['name']}  ({d['function']}, {'async' if d['async'] else 'sync'}, {policy})")
        if d["description"]:
            print(f"  {d['description'].splitlines()[0]}")
        print("  input schema: " + json.dumps(d["input_schema"], indent=2).replace("\n", "\n  "))
    if not described:
        print("no handlers registered", file=sys.stderr)
        return 1
    return 0


def _redis(args: argparse.Namespace) -> tuple[redis.Redis, WorkerSettings]:
    settings = _settings(args)
    return redis.Redis.from_url(settings.redis_url), settings


def cmd_dlq(args: argparse.Namespace) -> int:
    r, settings = _redis(args)
    if not settings.pool:
        print("kubeworkers dlq: a pool is required (--pool or KUBEWORKERS_POOL)", file=sys.stderr)
        return 2
    keys = PoolKeys(settings.namespace, settings.pool)
    if args.dlq_command == "list":
        dead = dlq.list_dead(r, keys, args.count)
        if args.json:
            print(json.dumps([d.model_dump(mode="json") for d in dead], indent=2))
        else:
            for d in dead:
                when = datetime.fromtimestamp(d.at, UTC).isoformat(timespec="seconds")
                print(f"{d.id}  {d.job_id}  {d.handler}  attempts={d.attempts}  {when}  {d.reason}")
            print(f"{len(dead)} dead-lettered job(s)", file=sys.stderr)
        return 0
    replayed = dlq.replay(r, keys, None if args.all else args.ids)
    for job_id in replayed:
        print(job_id)
    print(f"replayed {len(replayed)} job(s)", file=sys.stderr)
    return 0


def cmd_submit(args: argparse.Namespace) -> int:
    from kubeworkers.client import Client

    r, settings = _redis(args)
    client = Client(connection=r, namespace=settings.namespace)
    job_id = client.submit(
        settings.pool, args.handler, json.loads(args.input), job_id=args.job_id, priority=args.priority
    )
    print(job_id)
    if args.wait is not None:
        print(client.wait(job_id, args.wait, pool=settings.pool).model_dump_json(indent=2))
    return 0


def cmd_get(args: argparse.Namespace) -> int:
    from kubeworkers.client import Client

    r, settings = _redis(args)
    record = Client(connection=r, namespace=settings.namespace).get(args.job_id, pool=settings.pool or None)
    if record is None:
        print(f"job {args.job_id} not found", file=sys.stderr)
        return 1
    print(record.model_dump_json(indent=2))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    commands = {
        "worker": cmd_worker, "handlers": cmd_handlers, "dlq": cmd_dlq, "submit": cmd_submit, "get": cmd_get,
    }
    return commands[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
