"""Sequences on a real Redis (docs/workflows.md, *Sequences*): "A, then B with A's output, then C"
as one job, each step under its own timeout and retry policy, restartable from the failed step."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import redis.asyncio as aioredis
from kubeworkers import JobContext, Registry, RetryPolicy, Step
from kubeworkers.client import AsyncClient
from kubeworkers.dlq import replay
from kubeworkers.protocol import JobState, PoolKeys
from pydantic import BaseModel

from tests.support.workers import REPO, WorkerProcess, events, record, start_worker, until

#: These tests read the events stream, which the worker path writes only for a Job object's jobs
#: (docs/protocol.md, *Events*): their SDK clients submit as the operator enqueues those.
pytestmark = pytest.mark.usefixtures("submits_as_job_objects")


class Numbers(BaseModel):
    values: list[int] = []
    total: int = 0
    note: str = ""


class Csv(BaseModel):
    text: str


def sequence_registry(runs: list[str], *, slow_first: float = 0.0, broken: set[str] | None = None) -> Registry:
    """parse -> sum -> report; every run appended to ``runs``. ``slow_first``: the first run of 'sum'
    sleeps that long; ``broken``: the steps that fail (not retryable) while named in it."""
    reg = Registry()
    broken = broken if broken is not None else set()

    @reg.handler("parse", max_attempts=1)
    async def parse(inp: Csv) -> Numbers:
        runs.append("parse")
        return Numbers(values=[int(v) for v in inp.text.split(",")])

    @reg.handler("sum", max_attempts=1)
    async def total(inp: Numbers, ctx: JobContext) -> Numbers:
        runs.append(f"sum {ctx.attempt}")
        if "sum" in broken:
            raise ValueError("the numbers cannot be summed today")
        if slow_first and ctx.attempt == 1:
            await asyncio.sleep(slow_first)
        return inp.model_copy(update={"total": sum(inp.values)})

    @reg.handler("report", max_attempts=1)
    async def report(inp: Numbers) -> dict[str, object]:
        runs.append("report")
        return {"report": f"{len(inp.values)} numbers, total {inp.total}"}

    return reg


STEPS = [Step(name="parse", handler="parse"), Step(name="sum", handler="sum"), Step(name="report", handler="report")]


async def test_three_steps_each_get_the_previous_output_and_the_last_output_is_the_jobs(
    redis_url: str, r: aioredis.Redis, client: AsyncClient
) -> None:
    runs: list[str] = []
    async with start_worker(redis_url, sequence_registry(runs)):
        job_id = await client.submit_sequence("p", STEPS, {"text": "1,2,3,4"})
        done = await client.wait(job_id, 30)
    assert done.state is JobState.SUCCEEDED, done
    assert done.output == {"report": "4 numbers, total 10"}
    assert runs == ["parse", "sum 1", "report"]
    # One job: one record, its steps' outputs kept, the step it ended on named.
    assert done.step_outputs == [{"values": [1, 2, 3, 4], "total": 0, "note": ""},
                                 {"values": [1, 2, 3, 4], "total": 10, "note": ""}]
    assert done.step is not None and (done.step.index, done.step.names) == (2, ["parse", "sum", "report"])
    seen = await events(r, job_id)
    assert [(e.step.index if e.step else None, e.state.value) for e in seen] == [
        (0, "Running"), (1, "Queued"), (1, "Running"), (2, "Queued"), (2, "Running"), (2, "Succeeded")]
    assert await r.xlen(PoolKeys("default", "p").stream("normal")) == 0


async def test_a_step_that_times_out_is_retried_under_its_own_policy_not_the_jobs(
    redis_url: str, r: aioredis.Redis, client: AsyncClient
) -> None:
    # The job allows one attempt of 60 s; the 'sum' step has 0.5 s and two attempts, quick retries.
    runs: list[str] = []
    steps = [STEPS[0], Step(name="sum", handler="sum", timeout_seconds=0.5, max_attempts=2,
                            retry=RetryPolicy(initial_interval_seconds=0.05)), STEPS[2]]
    async with start_worker(redis_url, sequence_registry(runs, slow_first=30)):
        job_id = await client.submit_sequence("p", steps, {"text": "5,6"}, timeout=60, max_attempts=1)
        done = await client.wait(job_id, 30)
    assert done.state is JobState.SUCCEEDED, done
    assert runs == ["parse", "sum 1", "sum 2", "report"]
    retried = [e for e in await events(r, job_id) if e.state is JobState.QUEUED and e.error is not None]
    assert len(retried) == 1 and retried[0].error is not None and retried[0].error.type == "Timeout"
    assert retried[0].step is not None and retried[0].step.name == "sum"


async def test_a_step_that_fails_for_good_fails_the_job_naming_the_step_and_keeps_earlier_outputs(
    redis_url: str, client: AsyncClient
) -> None:
    runs: list[str] = []
    async with start_worker(redis_url, sequence_registry(runs, broken={"sum"})):
        job_id = await client.submit_sequence("p", STEPS, {"text": "7,8"})
        done = await client.wait(job_id, 30)
    assert done.state is JobState.FAILED, done
    assert done.error is not None and done.error.type == "ValueError"
    assert done.error.message.startswith("step 2/3 sum failed: the numbers cannot be summed today")
    assert done.step is not None and done.step.index == 1
    assert done.step_outputs == [{"values": [7, 8], "total": 0, "note": ""}]
    assert runs == ["parse", "sum 1"]


async def test_a_failed_sequence_run_again_restarts_from_the_failed_step_not_the_first(
    redis_url: str, redis_sync: redis.Redis, client: AsyncClient
) -> None:
    runs: list[str] = []
    broken = {"sum"}
    async with start_worker(redis_url, sequence_registry(runs, broken=broken)):
        job_id = await client.submit_sequence("p", STEPS, {"text": "1,2"})
        failed = await client.wait(job_id, 30)
        assert failed.state is JobState.FAILED, failed
        broken.clear()  # the cause is fixed; run the job again from where it failed
        replayed = await asyncio.to_thread(replay, redis_sync, PoolKeys("default", "p"))
        assert replayed.job_ids == [job_id]
        await until(lambda: "report" in runs, 30, "the replayed job to reach its last step")
        done = await client.wait(job_id, 30)
    assert done.state is JobState.SUCCEEDED, done
    assert done.output == {"report": "2 numbers, total 3"}
    assert runs == ["parse", "sum 1", "sum 1", "report"]  # parse ran once: its output was kept


@pytest.fixture
def worker_procs() -> Iterator[list[WorkerProcess]]:
    started: list[WorkerProcess] = []
    yield started
    for proc in started:
        proc.close()


async def test_a_worker_killed_mid_step_reruns_only_that_step_on_another_worker(
    redis_url: str, r: aioredis.Redis, client: AsyncClient, tmp_path: Path, worker_procs: list[WorkerProcess]
) -> None:
    log = tmp_path / "runs.log"
    imports = "tests.integration.sequence_handlers"
    doomed = WorkerProcess(redis_url, "doomed", imports=imports)
    worker_procs.append(doomed)
    doomed.wait_started()
    steps = [Step(name="parse", handler="seq.parse"), Step(name="extract", handler="seq.extract"),
             Step(name="store", handler="seq.store")]
    job_id = await client.submit_sequence("p", steps, {"log": str(log), "text": "a b", "hold": 300})

    def lines() -> list[str]:
        return log.read_text().splitlines() if log.exists() else []

    await until(lambda: any(line.startswith("extract ") for line in lines()), 30, "the extract step to start")
    doomed.kill()  # SIGKILL mid-step: no hand-back, the lease must expire
    survivor = WorkerProcess(redis_url, "survivor", imports=imports)
    worker_procs.append(survivor)
    survivor.wait_started()
    done = await client.wait(job_id, 60)
    assert done.state is JobState.SUCCEEDED, done
    assert done.output == {"stored": ["A", "B"]}
    assert [line.split()[0] for line in lines()] == ["parse", "extract", "extract", "store"]
    assert lines()[0].endswith(" doomed") and lines()[2:] == ["extract 2 survivor", "store 1 survivor"]
    rec = await record(r, job_id)
    assert rec.step is not None and rec.step.index == 2 and rec.attempts == 1


async def test_the_extraction_workflow_submitted_from_the_cli_retries_the_fake_llm_once_and_stores(
    redis_url: str, worker_procs: list[WorkerProcess]
) -> None:
    # The example handlers of examples/extraction-workflow.yaml, as `kubeworkers submit --step`.
    worker = WorkerProcess(redis_url, "examples")
    worker_procs.append(worker)
    worker.wait_started()
    env = {k: v for k, v in os.environ.items() if not k.startswith("KUBEWORKERS_")}
    done = await asyncio.to_thread(subprocess.run, [
        sys.executable, "-m", "kubeworkers", "submit", "--redis-url", redis_url, "--pool", "p",
        "--step", "parse=parse_document", "--step", "extract=llm_extract", "--step", "store=store_extraction",
        "--input", json.dumps({"document": "memo", "text": "Ada met Charles. Then Ada left."}), "--wait", "60",
    ], capture_output=True, text=True, cwd=REPO, env=env, timeout=120, check=False)
    assert done.returncode == 0, done
    job_id, _, rest = done.stdout.partition("\n")
    finished = json.loads(rest)
    assert finished["state"] == "Succeeded" and finished["job_id"] == job_id
    assert finished["output"] == {"document": "memo", "stored": 3, "entities": ["Ada", "Charles", "Then"],
                                  "extracted_on_attempt": 2}
    assert finished["step_outputs"][0] == {"document": "memo", "sentences": ["Ada met Charles.", "Then Ada left."]}
