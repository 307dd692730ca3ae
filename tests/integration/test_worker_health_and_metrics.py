"""A worker that can no longer serve exits; what it counts, it counts once and truly; its metrics lint clean."""

from __future__ import annotations

import asyncio
import re
import urllib.request
from typing import Any

import pytest
import redis.asyncio as aioredis
from kubeworkers import Registry
from kubeworkers.client import AsyncClient
from kubeworkers.consumer import Consumer
from kubeworkers.protocol import JobState, PoolKeys
from kubeworkers.worker import Worker
from prometheus_client.parser import text_string_to_metric_families
from pydantic import BaseModel

from tests.support.workers import WorkerProcess, fast_settings, start_worker, until

KEYS = PoolKeys("default", "p")


class Nap(BaseModel):
    seconds: float = 0.0


async def test_a_worker_whose_reader_runs_out_of_memory_drains_and_exits_with_an_error(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def out_of_memory(self: Consumer, count: int) -> Any:
        raise MemoryError

    monkeypatch.setattr(Consumer, "_take", out_of_memory)
    worker = Worker(fast_settings(redis_url), Registry())
    task = asyncio.create_task(worker.run())
    await until(task.done, 30, "the worker to give up and stop")
    assert worker.exit_code != 0
    assert await aioredis.Redis.from_url(redis_url).hget(KEYS.workers, worker.name) is None


def lint(exposition: str) -> list[str]:
    """The checks of ``promtool check metrics`` (its promlint rules) that apply to a client library's output."""
    problems = []
    helps = dict(re.findall(r"^# HELP (\S+) (.*)$", exposition, re.M))
    types = dict(re.findall(r"^# TYPE (\S+) (\S+)$", exposition, re.M))
    for family in text_string_to_metric_families(exposition):
        name = family.name if family.type != "counter" else f"{family.name}_total"
        if not re.fullmatch(r"[a-z_:][a-z0-9_:]*", name):
            problems.append(f"{name}: not snake_case")
        if not helps.get(name):
            problems.append(f"{name}: no HELP")
        if types.get(name) != family.type:
            problems.append(f"{name}: TYPE {types.get(name)} is not {family.type}")
        if family.type == "counter" and not name.endswith("_total"):
            problems.append(f"{name}: counter without _total")
        if family.type != "counter" and name.endswith("_total"):
            problems.append(f"{name}: non-counter ends in _total")
        for unit in ("milliseconds", "microseconds", "nanoseconds", "minutes", "hours", "days", "kilobytes",
                     "megabytes", "gigabytes"):
            if f"_{unit}" in name:
                problems.append(f"{name}: not a base unit")
    return problems


def test_metrics_show_process_memory_and_pass_the_metrics_lint(redis_url: str) -> None:
    worker = WorkerProcess(redis_url, "metered")
    try:
        worker.wait_started()
        with urllib.request.urlopen(f"http://127.0.0.1:{worker.metrics_port()}/metrics", timeout=10) as resp:
            body = resp.read().decode()
    finally:
        worker.close()
    families = {f.name: f for f in text_string_to_metric_families(body)}
    assert families["process_resident_memory_bytes"].type == "gauge"
    assert families["process_resident_memory_bytes"].samples[0].value > 0
    assert "process_cpu_seconds" in families
    assert lint(body) == []


async def test_a_timed_out_attempt_is_counted_once(redis_url: str, client: AsyncClient) -> None:
    reg = Registry()

    @reg.handler("nap", timeout=0.2, max_attempts=1)
    async def nap(inp: Nap) -> None:
        await asyncio.sleep(inp.seconds)

    async with start_worker(redis_url, reg) as worker:
        done = await client.wait(await client.submit("p", "nap", {"seconds": 30}), 30)
        samples = {s.labels["outcome"]: s.value for m in worker.metrics.jobs.collect() for s in m.samples
                   if s.name == "kubeworkers_jobs_total"}
    assert done.error is not None and done.error.type == "Timeout"
    assert samples == {"timed_out": 1.0}


async def test_failures_before_any_handler_ran_do_not_lower_the_duration_estimate(
    redis_url: str, client: AsyncClient
) -> None:
    reg = Registry()

    @reg.handler("nap", max_attempts=1)
    async def nap(inp: Nap) -> None:
        await asyncio.sleep(inp.seconds)

    async with start_worker(redis_url, reg):
        ran = await client.wait(await client.submit("p", "nap", {"seconds": 0.3}), 30)
        invalid = await client.wait(await client.submit("p", "nap", {"seconds": "long"}), 30)
        unknown = await client.wait(await client.submit("p", "nobody", {}), 30)
    assert [ran.state, invalid.state, unknown.state] == [JobState.SUCCEEDED, JobState.FAILED, JobState.FAILED]
    r = aioredis.Redis.from_url(redis_url)
    stats = {k.decode(): v.decode() for k, v in (await r.hgetall(KEYS.stats)).items()}
    await r.aclose()
    # What the autoscaler divides: handler runs that ended, and their summed durations.
    runs = int(stats.get("completed", 0)) + int(stats.get("failed", 0))
    assert runs == 1
    assert float(stats["duration_seconds_total"]) / runs >= 0.3
