"""Process-isolated handlers for the isolation tests (module level: the child process imports them by name)."""

from __future__ import annotations

import asyncio
import os
import signal
import time

from kubeworkers import JobContext, Registry, SoftTimeout
from pydantic import BaseModel

#: The tests' own registry, so these handlers stay out of the process-wide one.
isolated = Registry()


class Inp(BaseModel):
    n: int = 0
    how: str = ""


class Out(BaseModel):
    doubled: int
    pid: int


async def _say_pid(ctx: JobContext) -> None:
    await ctx.progress(0.0, f"pid {os.getpid()}")


@isolated.handler("iso.double", isolation="process", max_attempts=1)
async def double(inp: Inp, ctx: JobContext) -> Out:
    await ctx.progress(0.5, "half way")
    print("a handler's print goes to the log, not into the replies")
    return Out(doubled=2 * inp.n, pid=os.getpid())


@isolated.handler("iso.spin", isolation="process", timeout=2, max_attempts=1)
def spin(inp: Inp, ctx: JobContext) -> None:
    """CPU-bound and deaf to everything: only killing its process ends it."""
    ctx.progress(0.0, f"pid {os.getpid()}")
    while True:
        pass


@isolated.handler("iso.block", isolation="process", max_attempts=1)
def block(inp: Inp, ctx: JobContext) -> None:
    ctx.progress(0.0, f"pid {os.getpid()}")
    time.sleep(3600)


@isolated.handler("iso.crash", isolation="process", max_attempts=1)
def crash(inp: Inp) -> None:
    if inp.how == "segfault":
        os.kill(os.getpid(), signal.SIGSEGV)
    elif inp.how == "exit":
        os._exit(3)
    elif inp.how == "memory":
        raise MemoryError("no more memory")


@isolated.handler("iso.soft", isolation="process", soft_timeout=0.2, timeout=60, max_attempts=1)
async def soft(inp: Inp, ctx: JobContext) -> str:
    await _say_pid(ctx)
    try:
        await asyncio.sleep(60)
    except SoftTimeout:
        return "cleaned up"
    return "never told"

