"""Example handlers, used by the e2e tests, ``examples/job.yaml`` and the docs.

Run them with ``kubeworkers worker --pool demo --import kubeworkers.examples``.
"""

from __future__ import annotations

import asyncio
import collections
import re

from pydantic import BaseModel, Field

from kubeworkers.context import JobContext, WaitForChildren
from kubeworkers.protocol import ChildrenDone, JobState
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


@handler("fails_first_run", max_attempts=1)
async def fails_first_run(inp: Flaky, ctx: JobContext) -> dict[str, int]:
    """Fail on the job's first run, succeed once it is rerun (``kubeworkers jobs retry``)."""
    if ctx.run == 0:
        raise RuntimeError("run 0 fails; rerun me with kubeworkers jobs retry")
    return {"value": inp.value, "run": ctx.run, "attempt": ctx.attempt}


class Maintenance(BaseModel):
    task: str = Field(description="What to tidy up, such as 'vacuum' or 'rotate-logs' (reported back).")
    seconds: float = Field(default=0.0, ge=0, le=3600, description="How long the work takes.")


@handler("maintenance", max_attempts=1)
async def maintenance(inp: Maintenance, ctx: JobContext) -> dict[str, object]:
    """A nightly housekeeping job (examples/schedule.yaml runs it from a Schedule)."""
    await ctx.progress(0.0, f"starting {inp.task}")
    await asyncio.sleep(inp.seconds)
    return {"task": inp.task, "done": True}


# --------------------------------------------------------------------------- fan-out and joins
# examples/orchestrator.yaml and docs/workflows.md: the persona ingestion of the Celery pipeline
# kubeworkers replaced (profile first, then works and quotes in parallel, completion with counts).


class Persona(BaseModel):
    persona: str
    works: int = 3
    quotes: int = 2
    #: Makes one quotes child fail, to show a child's failure on the parent.
    broken_quote: bool = False


class PersonaPart(BaseModel):
    persona: str
    n: int = 0
    broken: bool = False


@handler("ingest_persona", max_attempts=2)
async def ingest_persona(inp: Persona, ctx: JobContext) -> WaitForChildren:
    """Mark the persona ingesting and start its (fast) profile; continue in persona_profiled."""
    await ctx.progress(0.0, f"ingesting {inp.persona}")
    await ctx.spawn("persona_profile", PersonaPart(persona=inp.persona), key="profile")
    return ctx.wait(then="persona_profiled", input=inp)


@handler("persona_profiled", max_attempts=2)
async def persona_profiled(inp: ChildrenDone, ctx: JobContext) -> WaitForChildren:
    """The profile is done: its works and quotes, in parallel; continue in persona_ingested."""
    persona = Persona.model_validate(inp.input)
    await ctx.map("persona_work", [PersonaPart(persona=persona.persona, n=i) for i in range(persona.works)],
                  keys=[f"work-{i}" for i in range(persona.works)])
    await ctx.map("persona_quote", [PersonaPart(persona=persona.persona, n=i, broken=persona.broken_quote and i == 0)
                                    for i in range(persona.quotes)], keys=[f"quote-{i}" for i in range(persona.quotes)])
    return ctx.wait(then="persona_ingested", input=persona)


@handler("persona_ingested", max_attempts=2)
async def persona_ingested(inp: ChildrenDone) -> dict[str, object]:
    """Completion: how many works and quotes were ingested, and which children failed."""
    done = [c for c in inp.children if c.state is JobState.SUCCEEDED]
    return {
        "persona": inp.input["persona"],
        "works": sum(1 for c in done if ":work-" in c.job_id),
        "quotes": sum(1 for c in done if ":quote-" in c.job_id),
        "failed": [c.job_id for c in inp.failed],
    }


@handler("persona_profile", max_attempts=1)
async def persona_profile(inp: PersonaPart) -> dict[str, str]:
    return {"persona": inp.persona, "profile": f"profile of {inp.persona}"}


@handler("persona_work", max_attempts=1)
async def persona_work(inp: PersonaPart) -> dict[str, object]:
    await asyncio.sleep(0.05)
    return {"persona": inp.persona, "work": inp.n}


@handler("persona_quote", max_attempts=1)
async def persona_quote(inp: PersonaPart) -> dict[str, object]:
    if inp.broken:
        raise ValueError(f"quote {inp.n} of {inp.persona} cannot be parsed")
    return {"persona": inp.persona, "quote": inp.n}


class FanOut(BaseModel):
    n: int
    #: The children's handler: 'square' (instant) or 'slow' (sleeps ``seconds``).
    child: str = "square"
    seconds: float = 0.0


class Number(BaseModel):
    i: int = 0
    seconds: float = 0.0


@handler("fan_out", max_attempts=2)
async def fan_out(inp: FanOut, ctx: JobContext) -> WaitForChildren:
    """``n`` children, then fan_in: the e2e tests' parent of many children."""
    await ctx.map(inp.child, [Number(i=i, seconds=inp.seconds) for i in range(inp.n)])
    return ctx.wait(then="fan_in")


@handler("fan_in", max_attempts=2)
async def fan_in(inp: ChildrenDone) -> dict[str, object]:
    return {"succeeded": inp.counts.succeeded, "failed": inp.counts.failed + inp.counts.cancelled,
            "sum": sum(int(c.output["square"]) for c in inp.children
                       if c.state is JobState.SUCCEEDED and isinstance(c.output, dict) and "square" in c.output)}


@handler("square", max_attempts=1)
async def square(inp: Number) -> dict[str, int]:
    return {"square": inp.i * inp.i}


# --------------------------------------------------------------------------- sequences
# examples/extraction-workflow.yaml and docs/workflows.md, *Sequences*: the three-step workflow of
# the Temporal worker kubeworkers replaced (parse -> LLM extract -> store), each step with its own
# timeout and retry policy in the Job's spec.steps.


class Document(BaseModel):
    document: str = Field(description="The document's name, reported back.")
    text: str = Field(description="The text to extract from.")


class ParsedDocument(BaseModel):
    document: str
    sentences: list[str]


@handler("parse_document", max_attempts=2)
async def parse_document(inp: Document) -> ParsedDocument:
    """Step 1: split the document into sentences."""
    sentences = [s.strip() for s in re.split(r"(?<=[.!?])\s+", inp.text) if s.strip()]
    return ParsedDocument(document=inp.document, sentences=sentences)


class Extraction(BaseModel):
    document: str
    entities: list[str]
    sentences: int
    #: The attempt that produced it: the fake model fails its first attempt, so this shows the retry.
    attempt: int


class TransientModelError(ConnectionError):
    """What a rate-limited or overloaded model endpoint looks like to its caller: worth a retry."""


@handler("llm_extract", max_attempts=3, retry_backoff=0.5)
async def llm_extract(inp: ParsedDocument, ctx: JobContext) -> Extraction:
    """Step 2: a fake, deterministic "LLM": the capitalised words of the sentences, in order of
    appearance. Its first attempt of every job fails as an overloaded endpoint would, to show the
    step's own retry policy."""
    if ctx.attempt < 2:
        raise TransientModelError("the model endpoint is overloaded (429); try again")
    seen: dict[str, None] = {}
    for sentence in inp.sentences:
        for word in re.findall(r"\b[A-Z][a-z]+\b", sentence):
            seen.setdefault(word, None)
    return Extraction(document=inp.document, entities=list(seen), sentences=len(inp.sentences), attempt=ctx.attempt)


@handler("store_extraction", max_attempts=2)
async def store_extraction(inp: Extraction) -> dict[str, object]:
    """Step 3: "store" the extraction (the example keeps nothing) and report what was stored."""
    return {"document": inp.document, "stored": len(inp.entities), "entities": inp.entities,
            "extracted_on_attempt": inp.attempt}
