"""Example handlers, used by the e2e tests, ``examples/job.yaml`` and the docs.

Run them with ``kubeworkers worker --pool demo --import kubeworkers.examples``.
"""

from __future__ import annotations

import asyncio
import collections
import re

from pydantic import BaseModel, Field

from kubeworkers.context import JobContext
from kubeworkers.registry import handler


class Text(BaseModel):
    text: str = Field(description="The text to count words in.")


class WordCounts(BaseModel):
    words: int
    counts: dict[str, int]


@handler("word_count", timeout=60)
async def word_count(inp: Text) -> WordCounts:
    """Count the words of a text (case-insensitive)."""
    words = re.findall(r"[\w']+", inp.text.lower())
    return WordCounts(words=len(words), counts=dict(collections.Counter(words)))


class Sleep(BaseModel):
    seconds: float = Field(ge=0, description="How long to run.")
    steps: int = Field(default=10, ge=1, description="How many progress reports to make.")


@handler("slow", max_attempts=1)
async def slow(inp: Sleep, ctx: JobContext) -> dict[str, float]:
    """Sleep for ``seconds``, reporting progress ``steps`` times."""
    for step in range(inp.steps):
        await asyncio.sleep(inp.seconds / inp.steps)
        await ctx.progress((step + 1) / inp.steps, f"step {step + 1} of {inp.steps}")
    return {"slept": inp.seconds}


class Failure(BaseModel):
    message: str = "this handler always fails"


@handler("fail", max_attempts=2, retry_backoff=0.1)
async def fail(inp: Failure) -> None:
    """Always raise (to see retries and the dead-letter stream)."""
    raise RuntimeError(inp.message)


class Flaky(BaseModel):
    value: int = 0


@handler("flaky", max_attempts=3, retry_backoff=0.1)
async def flaky(inp: Flaky, ctx: JobContext) -> dict[str, int]:
    """Fail on the first attempt, succeed on the second."""
    if ctx.attempt < 2:
        raise ConnectionError(f"attempt {ctx.attempt}: a transient failure")
    return {"value": inp.value, "attempt": ctx.attempt}


class Maintenance(BaseModel):
    task: str = Field(description="What to tidy up, such as 'vacuum' or 'rotate-logs' (reported back).")
    seconds: float = Field(default=0.0, ge=0, le=3600, description="How long the work takes.")


@handler("maintenance", max_attempts=1)
async def maintenance(inp: Maintenance, ctx: JobContext) -> dict[str, object]:
    """A nightly housekeeping job (examples/schedule.yaml runs it from a Schedule)."""
    await ctx.progress(0.0, f"starting {inp.task}")
    await asyncio.sleep(inp.seconds)
    return {"task": inp.task, "done": True}
