"""Handlers of a three-step sequence for the worker-process tests (``--import
tests.integration.sequence_handlers``): every run of a step is appended to the file the input
names, so a test can tell which steps ran again after a worker was killed."""

from __future__ import annotations

import asyncio
from pathlib import Path

from kubeworkers import JobContext, handler
from pydantic import BaseModel


class Doc(BaseModel):
    log: str
    text: str = ""
    words: list[str] = []
    #: Seconds the first run of 'seq.extract' blocks (so a test can kill its worker mid-step).
    hold: float = 0.0


def ran(inp: Doc, step: str, ctx: JobContext) -> list[str]:
    """Record this run; the runs recorded before it."""
    path = Path(inp.log)
    before = path.read_text().splitlines() if path.exists() else []
    with path.open("a") as out:
        out.write(f"{step} {ctx.attempt} {ctx.worker}\n")
    return before


@handler("seq.parse", max_attempts=3)
async def parse(inp: Doc, ctx: JobContext) -> Doc:
    ran(inp, "parse", ctx)
    return inp.model_copy(update={"words": inp.text.split()})


@handler("seq.extract", max_attempts=3)
async def extract(inp: Doc, ctx: JobContext) -> Doc:
    before = ran(inp, "extract", ctx)
    if not any(line.startswith("extract ") for line in before):
        await asyncio.sleep(inp.hold)
    return inp.model_copy(update={"words": [w.upper() for w in inp.words]})


@handler("seq.store", max_attempts=3)
async def store(inp: Doc, ctx: JobContext) -> dict[str, object]:
    ran(inp, "store", ctx)
    return {"stored": inp.words}
