"""The no-op handler the workers of ``benchmarks.bench_cluster`` import (``--import benchmarks.cluster_peer``)."""

from __future__ import annotations

from kubeworkers.registry import handler
from pydantic import BaseModel


class Empty(BaseModel):
    pass


@handler("bench.cluster_noop", max_attempts=1)
async def noop(inp: Empty) -> None:
    """Does nothing: the benchmark measures the runtime and Redis, not the handler."""
