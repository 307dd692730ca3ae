"""Handlers for the ``kubeworkers run-local`` tests, in the process-wide registry (the command imports them)."""

from __future__ import annotations

import os

from kubeworkers import JobContext, handler
from pydantic import BaseModel


class Inp(BaseModel):
    n: int = 0


@handler("local.steps", max_attempts=3)
async def steps(inp: Inp, ctx: JobContext) -> dict[str, int]:
    for i in range(inp.n):
        await ctx.progress((i + 1) / inp.n, f"step {i + 1}")
    return {"steps": inp.n}


@handler("local.soft", soft_timeout=0.2, timeout=30)
def soft_sync(inp: Inp, ctx: JobContext) -> str:
    return "told" if ctx.wait_soft_timeout(30) else "never told"


@handler("local.fails")
async def fails(inp: Inp) -> None:
    raise ValueError("this input is\nno good")


@handler("local.double", isolation="process")
async def double(inp: Inp) -> dict[str, int]:
    return {"doubled": 2 * inp.n, "pid": os.getpid()}


@handler("local.spin", isolation="process", timeout=0.5)
def spin(inp: Inp) -> None:
    """CPU-bound and deaf to everything: only killing its process ends it."""
    while True:
        pass
