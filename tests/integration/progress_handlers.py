"""Handlers for the ``kubeworkers submit --wait`` progress tests: each step reports its progress, then
waits for the test to let it go on (a file ``<gate>/<step>``), so the test decides when the job moves."""

from __future__ import annotations

import asyncio
from pathlib import Path

from kubeworkers import JobContext, handler
from pydantic import BaseModel


class Gated(BaseModel):
    gate: str
    steps: int = 3
    #: The step that raises once it is let go (None: none does).
    fail_at: int | None = None


@handler("progress.gated", max_attempts=1)
async def gated(inp: Gated, ctx: JobContext) -> dict[str, int]:
    for step in range(1, inp.steps + 1):
        await ctx.progress(step / inp.steps, f"step {step} of {inp.steps}")
        while not (Path(inp.gate) / str(step)).exists():  # noqa: ASYNC110 (a file another process creates)
            await asyncio.sleep(0.02)
        if step == inp.fail_at:
            raise ValueError(f"step {step} broke")
    return {"steps": inp.steps}
