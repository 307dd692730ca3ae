"""``kubeworkers ui``: serve the console (:mod:`kubeworkers.console.server`) until Ctrl-C or SIGTERM.

The parser is here so that ``kubeworkers`` starts without importing aiohttp; the server is
imported when the command runs.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from typing import Any

from kubeworkers import logs, redis_url
from kubeworkers.settings import add_flags, flag_values, settings_from

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8089


def add_parser(sub: Any) -> None:
    """The ``ui`` subcommand, on the ``kubeworkers`` parser's subparsers."""
    p = sub.add_parser("ui", help="serve the web console: pools, jobs, dead letters, handlers (docs/console.md)")
    add_flags(p, ("redis_url", "namespace", "log_level", "log_format"))
    p.add_argument("--host", default=DEFAULT_HOST,
                   help=f"address to listen on (default {DEFAULT_HOST}: this machine only)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT,
                   help=f"port to listen on (default {DEFAULT_PORT}; 0: any free)")
    p.add_argument("--pool", dest="pools", action="append", metavar="POOL",
                   help="show this pool (repeatable; default: every pool of the namespace with a job stream)")
    p.add_argument("--enable-actions", action="store_true",
                   help="allow retry, cancel and replay from the pages (POST with a CSRF token); off by default")


def command(args: argparse.Namespace) -> int:
    from kubeworkers.console import csrf, forms, server

    settings = settings_from(**flag_values(args))
    logs.configure(settings.log_level, settings.log_format)
    if not 0 <= args.port <= 65535:
        return _fail(f"--port must be from 0 to 65535, not {args.port}")
    try:
        c = server.console(settings.redis_url, settings.namespace, actions=args.enable_actions,
                           pools=args.pools, result_ttl=settings.result_ttl)
    except redis_url.RedisUrlError as exc:
        return _fail(f"invalid Redis URL: {exc}")
    except forms.BadInput as exc:
        return _fail(str(exc))
    except ValueError as exc:
        return _fail(f"invalid Redis URL: {redis_url.redacted(settings.redis_url)}: {exc}")

    def started(port: int) -> None:
        mode = "actions enabled" if args.enable_actions else "read-only"
        host = f"[{args.host}]" if ":" in args.host else args.host
        where = redis_url.where(settings.redis_url)
        print(f"kubeworkers ui: serving namespace {settings.namespace} of Redis at {where} "
              f"on http://{host}:{port}/ ({mode})", file=sys.stderr, flush=True)
        if not csrf.loopback(args.host):
            print(f"kubeworkers ui: warning: {args.host} is reachable beyond this machine and the console has no "
                  "login; put a proxy that authenticates in front of it (docs/console.md)", file=sys.stderr, flush=True)

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await server.serve(c, args.host, args.port, started=started, stop=stop)

    try:
        asyncio.run(run())
    except OSError as exc:
        return _fail(f"cannot listen on {args.host}:{args.port}: {exc}")
    return 0


def _fail(message: str) -> int:
    print(f"kubeworkers ui: {message}", file=sys.stderr)
    return 2
