"""The ``kubeworkers`` command: ``worker``, ``handlers``, ``dlq list|replay``, ``jobs list|describe|retry|cancel``,
``submit``, ``get``, ``children``, ``run-local``, ``stats``, ``ui`` (the web console)."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import sys
import threading
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import redis

from kubeworkers import connection, dlq, inspection, logs, progress_view, queue, redis_url, reruns, run_local, stats
from kubeworkers.console import command as console_command
from kubeworkers.protocol import PRIORITY_ORDER, JobRecord, JobState, PoolKeys
from kubeworkers.registry import import_modules, registry
from kubeworkers.settings import WorkerSettings, add_flags, flag_values, settings_from

if TYPE_CHECKING:
    from kubeworkers.client import Client, Submitted

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
    s.add_argument("handler", nargs="?", help="the handler to run (or give --step instead)")
    s.add_argument("--step", action="append", metavar="NAME=HANDLER", dest="steps",
                   help="a sequence: one step per --step, run in order, each on the previous one's output")
    s.add_argument("--input", default="{}", help="JSON object")
    s.add_argument("--job-id")
    s.add_argument("--priority", default="normal", choices=[p.value for p in PRIORITY_ORDER])
    when = s.add_mutually_exclusive_group()
    when.add_argument("--delay", type=float, metavar="SECONDS", help="start no earlier than this many seconds from now")
    when.add_argument("--at", metavar="RFC3339", help="start no earlier than this time, e.g. 2026-12-02T12:00:00Z")
    s.add_argument("--wait", type=float, metavar="SECONDS",
                   help="wait up to this many seconds, showing the job's progress on stderr (a live bar on a "
                        "terminal, else a line per change), then print its record; Ctrl-C stops waiting "
                        "(exit 130) and leaves the job running")
    s.add_argument("--durable", type=int, metavar="REPLICAS",
                   help="return only once this many replicas acknowledged the job (Redis WAIT); else exit 1")
    s.add_argument("--durable-timeout", type=float, default=1.0, metavar="SECONDS",
                   help="how long --durable waits for the replicas (default 1)")

    g = sub.add_parser("get", help="print a job's record as JSON")
    _connection_args(g)
    g.add_argument("job_id")

    c = sub.add_parser("children", help="list a job's children (ctx.spawn): id, pool, state, one a line")
    _connection_args(c)
    c.add_argument("job_id", help="the parent's job id (<namespace>/<name> for a Job object)")
    c.add_argument("--json", action="store_true", help="print the children's records as JSON lines")

    _jobs_parser(sub)
    run_local.add_parser(sub)
    st = sub.add_parser("stats", help="per-handler statistics of a pool over a window (the metrics' numbers)")
    _connection_args(st)
    st.add_argument("--window", default="1h", help="how far back: whole minutes up to 24h, e.g. 15m, 1h (default 1h)")
    st.add_argument("--json", action="store_true", help="machine-readable output")
    console_command.add_parser(sub)
    return parser


def _jobs_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``kubeworkers jobs list|describe|retry|cancel``: find jobs and act on them by id (SDK and Job CR
    jobs alike); ``list`` and ``describe`` live in :mod:`kubeworkers.inspection`."""
    j = sub.add_parser("jobs", help="find jobs (list, describe) and act on them by id: retry (rerun), cancel")
    jsub = j.add_subparsers(dest="jobs_command", required=True)
    inspection.add_parsers(jsub, _connection_args)
    jr = jsub.add_parser("retry", help="run failed jobs again (a new run; a Job CR goes back to Queued)")
    _connection_args(jr)
    jr.add_argument("job_ids", nargs="*", metavar="ID", help="job id (<namespace>/<name> for a Job object)")
    jr.add_argument("--state", choices=["failed"],
                    help="instead of ids: every failed (dead-lettered) job of --pool")
    jr.add_argument("--uid", help="rerun only if the job's uid is this one (with one ID)")
    jr.add_argument("--json", action="store_true", help="one JSON object per job")
    jc = jsub.add_parser("cancel", help="cancel queued or running jobs")
    _connection_args(jc)
    jc.add_argument("job_ids", nargs="+", metavar="ID", help="job id (<namespace>/<name> for a Job object)")
    jc.add_argument("--json", action="store_true", help="one JSON object per job")


def _settings(args: argparse.Namespace) -> WorkerSettings:
    return settings_from(**flag_values(args))


class UsageError(Exception):
    """The command was given something it cannot use (exit code 2)."""


def _run_worker(settings: WorkerSettings) -> int:
    """Run a worker until SIGTERM; its exit code. Handlers that ignored being stopped do not keep
    the process alive: it exits anyway (they run on daemon threads or as abandoned tasks)."""
    from kubeworkers.worker import Worker, tune_gc

    worker = Worker(settings)
    tune_gc()
    loop = asyncio.new_event_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, worker.stop)
    try:
        loop.run_until_complete(worker.run())
    finally:
        left = asyncio.all_tasks(loop)
        for task in left:
            task.cancel()
        if left:
            loop.run_until_complete(asyncio.wait(left, timeout=2))
        if any(not task.done() for task in left):
            logs.flush()
            sys.stderr.flush()
            os._exit(worker.exit_code)
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
    return worker.exit_code


def _import(modules: list[str]) -> None:
    try:
        import_modules(modules)
    except ImportError as exc:
        raise UsageError(f"cannot import the handlers: {exc}") from None


def cmd_worker(args: argparse.Namespace) -> int:
    settings = _settings(args)
    logs.configure(settings.log_level, settings.log_format)
    try:
        settings.validate()
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    _import(settings.imports)
    return _run_worker(settings)


def cmd_handlers(args: argparse.Namespace) -> int:
    _import(_imports(args.imports))
    described = [spec.describe() for spec in registry]
    if args.json:
        print(json.dumps(described, indent=2))
        return 0
    for d in described:
        policy = f"timeout={d['timeout']} max_attempts={d['max_attempts']} retry_backoff={d['retry_backoff']}"
        extras = {k: d[k] for k in ("soft_timeout", "concurrency") if d[k] is not None}
        if d["isolation"] != "none":
            extras["isolation"] = d["isolation"]
        policy += "".join(f" {k}={v}" for k, v in extras.items())
        print(f"{d['name']}  ({d['function']}, {'async' if d['async'] else 'sync'}, {policy})")
        if d["description"]:
            print(f"  {d['description'].splitlines()[0]}")
        print("  input schema: " + json.dumps(d["input_schema"], indent=2).replace("\n", "\n  "))
    if not described:
        print("no handlers registered", file=sys.stderr)
        return 1
    return 0


def _redis(args: argparse.Namespace, *, pool_required: bool = False) -> tuple[redis.Redis, WorkerSettings]:
    settings = _settings(args)
    if pool_required and not settings.pool:
        raise UsageError("a pool is required (--pool or KUBEWORKERS_POOL)")
    try:
        return connection.connect(settings.redis_url), settings
    except redis_url.RedisUrlError as exc:
        raise UsageError(f"invalid Redis URL: {exc}") from None
    except ValueError as exc:
        raise UsageError(f"invalid Redis URL: {redis_url.redacted(settings.redis_url)}: {exc}") from None


#: A stream entry id: milliseconds, optionally a dash and a sequence number.
ENTRY_ID = re.compile(r"\d+(-\d+)?")


def cmd_dlq(args: argparse.Namespace) -> int:
    r, settings = _redis(args, pool_required=True)
    keys = PoolKeys(settings.namespace, settings.pool)
    if args.dlq_command == "list":
        dead = dlq.list_dead(r, keys, args.count)
        if args.json:
            print(json.dumps([d.model_dump(mode="json") for d in dead], indent=2))
        else:
            for d in dead:
                if isinstance(d, dlq.Unreadable):
                    print(f"{d.id}  unreadable: {d.problem}")
                    continue
                when = datetime.fromtimestamp(d.at, UTC).isoformat(timespec="seconds")
                print(f"{d.id}  {d.job_id}  {d.handler}  attempts={d.attempts}  {when}  {d.reason}")
            print(f"{len(dead)} dead-lettered job(s)", file=sys.stderr)
        return 0
    for entry_id in args.ids or []:
        if not ENTRY_ID.fullmatch(entry_id):
            raise UsageError(f"not a dead-letter entry id: {entry_id!r} (they look like 1700000000000-0)")
    replayed = dlq.replay(r, keys, None if args.all else args.ids)
    for job_id in replayed.job_ids:
        print(job_id)
    for refused in replayed.refused:
        print(f"kubeworkers dlq replay: {refused} (its entry is left in place)", file=sys.stderr)
    if replayed.refused and not replayed.unreadable:
        return 1
    if replayed.unreadable:
        ids = ", ".join(u.id for u in replayed.unreadable)
        print(f"kubeworkers dlq replay: replayed {len(replayed.job_ids)} job(s); left {len(replayed.unreadable)} "
              f"unreadable entry(ies) in place: {ids}", file=sys.stderr)
        return 1
    print(f"replayed {len(replayed.job_ids)} job(s)", file=sys.stderr)
    return 0


def _pool_of(r: redis.Redis, settings: WorkerSettings, job_id: str) -> str:
    """The pool of ``job_id``: ``--pool``, else the one pool its id was enqueued to."""
    if settings.pool:
        return settings.pool
    pools = queue.find_pools_sync(r, settings.namespace, job_id)
    if not pools:
        raise reruns.RerunRefusedError(job_id, "unknown", "not found")
    if len(pools) > 1:
        raise reruns.RerunRefusedError(job_id, "ambiguous", f"is on pools {', '.join(pools)}: pass --pool")
    return pools[0]


def _report(args: argparse.Namespace, results: list[dict[str, object]]) -> int:
    """Print what ``jobs retry|cancel`` did, a line (or JSON object) per job; 1 if any was refused."""
    refused = [x for x in results if not x["ok"]]
    for x in results:
        if args.json:
            print(json.dumps({k: v for k, v in x.items() if k != "text"}))
        elif x["ok"]:
            print(x["text"])
    for x in refused:
        print(f"kubeworkers jobs {args.jobs_command}: {x['error']}", file=sys.stderr)
    return 1 if refused else 0


def cmd_jobs(args: argparse.Namespace) -> int:
    if args.jobs_command == "list":
        try:
            query = inspection.query_of(args)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        r, settings = _redis(args, pool_required=True)
        return inspection.run_list(r, PoolKeys(settings.namespace, settings.pool), query, as_json=args.json)
    r, settings = _redis(args)
    if args.jobs_command == "describe":
        return inspection.run_describe(r, settings.namespace, settings.pool or None, args.job_id, as_json=args.json)
    if args.jobs_command == "cancel":
        return _report(args, [_cancel_one(r, settings, job_id) for job_id in args.job_ids])
    if args.state is not None:
        if args.job_ids or args.uid:
            raise UsageError("give job ids or --state, not both")
        if not settings.pool:
            raise UsageError("--state failed needs a pool (--pool or KUBEWORKERS_POOL)")
        replayed = dlq.replay(r, PoolKeys(settings.namespace, settings.pool), by="kubeworkers jobs retry")
        results: list[dict[str, object]] = [_rerun_result(done) for done in replayed.reruns]
        results += [{"ok": False, "job_id": exc.job_id, "reason": exc.reason, "error": str(exc)}
                    for exc in replayed.refused]
        results += [{"ok": False, "entry": u.id, "reason": "unreadable",
                     "error": f"dead-letter entry {u.id} cannot be read: {u.problem}"} for u in replayed.unreadable]
        return _report(args, results)
    if not args.job_ids:
        raise UsageError("give job ids, or --state failed --pool P")
    if args.uid and len(args.job_ids) != 1:
        raise UsageError("--uid goes with exactly one job id")
    return _report(args, [_retry_one(r, settings, job_id, args.uid) for job_id in args.job_ids])


def _retry_one(r: redis.Redis, settings: WorkerSettings, job_id: str, uid: str | None) -> dict[str, object]:
    try:
        pool = _pool_of(r, settings, job_id)
        done = reruns.rerun_job(r, PoolKeys(settings.namespace, pool), job_id, uid=uid)
    except reruns.RerunRefusedError as exc:
        return {"ok": False, "job_id": job_id, "reason": exc.reason, "error": str(exc)}
    return _rerun_result(done)


def _rerun_result(done: reruns.Rerun) -> dict[str, object]:
    return {"ok": True, "job_id": done.job_id, "pool": done.pool, "run": done.run,
            "text": f"{done.job_id}\trerun {done.run} queued on pool {done.pool}"}


def _cancel_one(r: redis.Redis, settings: WorkerSettings, job_id: str) -> dict[str, object]:
    try:
        pool = _pool_of(r, settings, job_id)
    except reruns.RerunRefusedError as exc:
        return {"ok": False, "job_id": job_id, "reason": exc.reason, "error": str(exc)}
    if queue.cancel_sync(r, settings.namespace, pool, job_id, result_ttl=settings.result_ttl):
        return {"ok": True, "job_id": job_id, "pool": pool, "text": f"{job_id}\tcancel requested on pool {pool}"}
    record = queue.get_record_sync(r, settings.namespace, pool, job_id)
    if record is None:
        return {"ok": False, "job_id": job_id, "reason": "unknown", "error": f"job {job_id}: not found"}
    return {"ok": False, "job_id": job_id, "reason": "state", "state": record.state.value,
            "error": f"job {job_id}: not cancelled: it has finished ({record.state.value})"}


def _input(text: str) -> dict[str, object]:
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise UsageError(f"--input is not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise UsageError(f"--input must be a JSON object, not {type(value).__name__}")
    return value


def _start_time(text: str | None) -> datetime | None:
    """``submit --at``: an RFC 3339 time with its offset (``Z`` or ``+01:00``)."""
    if text is None:
        return None
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(f"--at must be an RFC 3339 time such as 2026-12-02T12:00:00Z, not {text!r}") from None
    if at.tzinfo is None:
        raise UsageError(f"--at needs a timezone offset (Z or +hh:mm): {text!r}")
    return at


def _submitted_line(job: Submitted, pool: str) -> str:
    """What ``submit`` tells a person about the job it submitted (stderr)."""
    what = "queued" if job.new else "already submitted (nothing enqueued again)"
    if job.position is None:
        where = "not waiting on the queue (delayed, running or finished)"
    else:
        where = f"position {job.position} in pool {pool}'s queue ({job.position} job(s) ahead of it)"
    return f"{job}: {what}; {where}"


def cmd_submit(args: argparse.Namespace) -> int:
    from kubeworkers.client import Client, InvalidInputError
    from kubeworkers.protocol import Step
    from kubeworkers.queue import Durability, NotReplicatedError

    inp = _input(args.input)
    try:
        durable = None if args.durable is None else Durability(args.durable, args.durable_timeout)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    at = _start_time(args.at)
    r, settings = _redis(args, pool_required=True)
    client = Client(connection=r, namespace=settings.namespace, durable=durable)
    if (args.handler is None) == (args.steps is None):
        raise UsageError("give a handler or --step NAME=HANDLER (a sequence), not both")
    try:
        if args.steps is not None:
            steps = [Step(name=name, handler=handler) for name, _, handler in (s.partition("=") for s in args.steps)]
            job_id = client.submit_sequence(settings.pool, steps, inp, job_id=args.job_id, priority=args.priority,
                                            delay=args.delay, at=at)
        else:
            job_id = client.submit(settings.pool, args.handler, inp, job_id=args.job_id, priority=args.priority,
                                   delay=args.delay, at=at)
    except (InvalidInputError, ValueError) as exc:
        raise UsageError(str(exc)) from None
    except NotReplicatedError as exc:
        return _fail("submit", str(exc), 1)
    print(job_id, flush=True)
    # The id alone on stdout (scripts read it); what the submit found out on stderr.
    print(_submitted_line(job_id, settings.pool), file=sys.stderr, flush=True)
    if args.wait is None:
        return 0
    return _wait(client, job_id, settings.pool, args.wait)


def _wait(client: Client, job_id: str, pool: str, timeout: float) -> int:
    """``submit --wait``: the job's progress on stderr while it runs (:mod:`kubeworkers.progress_view`),
    then its record on stdout; 1 if it did not succeed, 130 on Ctrl-C (the job goes on)."""
    from kubeworkers.client import JobNotFoundError, poll_delays

    def read() -> JobRecord:
        record = client.get(job_id, pool=pool)
        if record is None:
            raise JobNotFoundError(job_id)
        return record

    # Ctrl-C is noted and acted on between two polls (a second one acts at once): a KeyboardInterrupt
    # raised in the middle of drawing could leave half a frame on the terminal.
    stop = threading.Event()

    def on_ctrl_c(signum: int, frame: object) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()

    # Only the main thread may set a signal handler (``main`` run in a thread keeps Python's own).
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, on_ctrl_c) if main_thread else None
    try:
        record = progress_view.watch(
            read, sys.stderr, job_id=job_id, timeout=timeout, delays=poll_delays(most=progress_view.POLL_MAX_S),
            bar=progress_view.use_bar(sys.stderr.isatty(), os.environ.get("TERM")),
            width=lambda: progress_view.terminal_width(sys.stderr), sleep=stop.wait, interrupted=stop.is_set)
    except KeyboardInterrupt:
        return _fail("submit", f"stopped waiting; job {job_id} goes on (kubeworkers jobs cancel {job_id} stops it)",
                     130)
    finally:
        if main_thread:
            signal.signal(signal.SIGINT, previous)
    print(record.model_dump_json(indent=2))
    return 0 if record.state is JobState.SUCCEEDED else 1


def cmd_get(args: argparse.Namespace) -> int:
    from kubeworkers.client import AmbiguousJobIdError, Client

    r, settings = _redis(args)
    try:
        record = Client(connection=r, namespace=settings.namespace).get(args.job_id, pool=settings.pool or None)
    except AmbiguousJobIdError as exc:
        return _fail("get", f"job {exc.job_id} is on pools {', '.join(exc.pools)}: pass --pool", 1)
    if record is None:
        print(f"job {args.job_id} not found", file=sys.stderr)
        return 1
    print(record.model_dump_json(indent=2))
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    from kubeworkers.client import Client

    try:
        window_s = stats.parse_window(args.window)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    r, settings = _redis(args, pool_required=True)
    found = Client(connection=r, namespace=settings.namespace).stats(settings.pool, window=window_s)
    print(found.model_dump_json(indent=2) if args.json else stats.table(found))
    return 0


def cmd_children(args: argparse.Namespace) -> int:
    from kubeworkers.client import AmbiguousJobIdError, Client

    r, settings = _redis(args)
    try:
        records = Client(connection=r, namespace=settings.namespace).children(
            args.job_id, pool=settings.pool or None)
    except AmbiguousJobIdError as exc:
        return _fail("children", f"job {exc.job_id} is on pools {', '.join(exc.pools)}: pass --pool", 1)
    for record in records:
        if args.json:
            print(record.model_dump_json())
        else:
            error = f"\t{record.error.type}: {record.error.message}" if record.error else ""
            print(f"{record.job_id}\t{record.pool}\t{record.state.value}{error}")
    return 0


def _where(args: argparse.Namespace) -> str:
    """Where Redis is, for messages: host and port, never the password."""
    return redis_url.where(_settings(args).redis_url)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; every error it can meet is one line on stderr and a non-zero exit code."""
    args = build_parser().parse_args(argv)
    commands = {
        "worker": cmd_worker, "handlers": cmd_handlers, "dlq": cmd_dlq, "submit": cmd_submit, "get": cmd_get,
        "children": cmd_children, "jobs": cmd_jobs, "run-local": run_local.command,
        "stats": cmd_stats, "ui": console_command.command,
    }
    command = " ".join(c for c in (args.command, getattr(args, "dlq_command", None),
                                   getattr(args, "jobs_command", None)) if c)
    try:
        return commands[args.command](args)
    except UsageError as exc:
        return _fail(command, str(exc), 2)
    except redis.AuthenticationError as exc:
        return _fail(command, f"Redis refused the connection: {exc}", 1)
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        return _fail(command, f"cannot reach Redis at {_where(args)}: {exc}", 1)
    except redis.ResponseError as exc:
        return _fail(command, f"Redis answered with an error: {exc}", 1)
    except TimeoutError as exc:
        return _fail(command, str(exc), 1)
    except (OSError, LookupError) as exc:
        return _fail(command, f"{type(exc).__name__}: {exc}", 1)
    except ValueError as exc:
        return _fail(command, str(exc).splitlines()[0] if str(exc) else type(exc).__name__, 2)


def _fail(command: str, message: str, code: int) -> int:
    print(f"kubeworkers {command}: {' '.join(message.split())}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
