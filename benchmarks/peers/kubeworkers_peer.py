"""kubeworkers: the handler the worker imports (``--import benchmarks.peers.kubeworkers_peer``), and its driver.

Submits go through the SDK (``AsyncClient.submit_many`` / ``submit``): the idempotent enqueue
script, input checked against the handler's model, pipelined in chunks.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from kubeworkers.client import AsyncClient
from kubeworkers.registry import handler
from pydantic import BaseModel

from benchmarks.peers import _driver
from benchmarks.probe import PROBE

POOL = "bench"
NAMESPACE = "default"


class Empty(BaseModel):
    pass


@handler("bench.noop", max_attempts=1)
async def noop(inp: Empty) -> None:
    """Does nothing but count: the benchmark measures the runtime, not the handler."""
    PROBE.tick()


async def submit_many(url: str, n: int) -> None:
    async with AsyncClient(url, NAMESPACE) as client:
        await client.submit_many(POOL, "bench.noop", ({} for _ in range(n)))


async def open_one(url: str) -> Callable[[], Awaitable[str]]:
    client = AsyncClient(url, NAMESPACE)

    async def one() -> str:
        return await client.submit(POOL, "bench.noop", {})

    return one


if __name__ == "__main__":
    _driver.main_async(submit_many, open_one)
