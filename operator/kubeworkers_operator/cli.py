"""``kubeworkers-operator``: run the operator (kopf, standalone) until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys

import kopf

from kubeworkers_operator.settings import OperatorSettings


def parse_args(argv: list[str] | None = None) -> OperatorSettings:
    """Settings from the command line (and ``KUBEWORKERS_*`` environment variables)."""
    defaults = OperatorSettings()
    p = argparse.ArgumentParser(prog="kubeworkers-operator", description=__doc__)
    p.add_argument("--namespace", "-n", action="append", default=[],
                   help="serve only this namespace (repeatable); default: cluster-wide")
    p.add_argument("--redis-url", default=defaults.redis_url, help="default: $KUBEWORKERS_REDIS_URL")
    p.add_argument("--metrics-port", type=int, default=int(os.environ.get("KUBEWORKERS_METRICS_PORT", "8080")),
                   help="port of /healthz and /metrics (0: any free port)")
    p.add_argument("--resync-interval", type=float, default=defaults.resync_interval_seconds,
                   help="seconds between resyncs of unfinished Jobs from Redis")
    p.add_argument("--progress-interval", type=float, default=defaults.progress_interval_seconds,
                   help="minimum seconds between progress-only status writes of one Job")
    p.add_argument("--orphan-sweep-interval", type=float, default=defaults.orphan_sweep_seconds,
                   help="seconds between sweeps for jobs whose Job was deleted while the operator was down")
    p.add_argument("--pending-retry", type=float, default=defaults.pending_retry_seconds,
                   help="seconds between retries of Jobs waiting for their pool")
    p.add_argument("--output-limit", type=int, default=defaults.output_limit_bytes,
                   help="maximum JSON bytes of status.output")
    p.add_argument("--api-concurrency", type=int, default=defaults.api_concurrency)
    p.add_argument("--default-redis-secret", default=defaults.default_redis_secret,
                   help="Secret (key 'url') worker pods read the Redis URL from when the pool names none")
    p.add_argument("--no-autoscaling", action="store_true", help="do not run the per-pool autoscalers")
    p.add_argument("--log-level", default=os.environ.get("KUBEWORKERS_LOG_LEVEL", "INFO"))
    args = p.parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, str(args.log_level).upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # One INFO line per handled watch event drowns everything else with thousands of Jobs.
    logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    return OperatorSettings(
        redis_url=args.redis_url,
        namespaces=list(args.namespace),
        metrics_port=args.metrics_port,
        resync_interval_seconds=args.resync_interval,
        progress_interval_seconds=args.progress_interval,
        pending_retry_seconds=args.pending_retry,
        orphan_sweep_seconds=args.orphan_sweep_interval,
        output_limit_bytes=args.output_limit,
        api_concurrency=args.api_concurrency,
        default_redis_secret=args.default_redis_secret,
        autoscaling=not args.no_autoscaling,
    )


async def run(settings: OperatorSettings) -> None:
    """Run kopf with the operator's handlers until it is told to stop."""
    from kubeworkers_operator import main as _handlers  # noqa: F401  (registers the kopf handlers)

    memo = kopf.Memo(settings=settings)
    await kopf.operator(
        standalone=True,
        clusterwide=not settings.namespaces,
        namespaces=settings.namespaces,
        memo=memo,
    )


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    settings = parse_args(argv)
    asyncio.run(run(settings))


if __name__ == "__main__":
    main()
