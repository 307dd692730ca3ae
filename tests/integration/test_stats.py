"""``kubeworkers stats`` and ``Client.stats``: the per-handler numbers of a pool over a window, the
same as the worker's ``/metrics`` for the same run."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import urllib.request
from typing import Any

import pytest
from kubeworkers import Registry, cli, stats
from kubeworkers.client import AsyncClient
from kubeworkers.errors import PermanentError
from kubeworkers.protocol import DURATION_BUCKETS_S, JobState
from prometheus_client.parser import text_string_to_metric_families
from pydantic import BaseModel

from tests.support.workers import start_worker


class Work(BaseModel):
    seconds: float = 0.0
    fail: bool = False
    permanent: bool = False


def mixed_registry() -> Registry:
    reg = Registry()

    @reg.handler("alpha", max_attempts=2, retry_backoff=0.01)
    async def alpha(inp: Work) -> dict[str, bool]:
        await asyncio.sleep(inp.seconds)
        if inp.fail:  # retried once, then the job fails
            raise RuntimeError("alpha failed")
        return {"ok": True}

    @reg.handler("beta", max_attempts=1)
    async def beta(inp: Work) -> dict[str, bool]:
        await asyncio.sleep(inp.seconds)
        if inp.permanent:
            raise PermanentError("beta refused")
        return {"ok": True}

    return reg


def scrape(port: int) -> dict[str, dict[str, Any]]:
    """Per handler, from the worker's /metrics: outcome counts, dead letters, retries, and the
    duration histogram's count, sum and per-bucket (not cumulative) counts."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        body = resp.read().decode()
    seen: dict[str, dict[str, Any]] = {}
    cumulative: dict[str, dict[float, float]] = {}
    for family in text_string_to_metric_families(body):
        for s in family.samples:
            handler = s.labels.get("handler")
            if handler is None:
                continue
            mine = seen.setdefault(handler, {"outcomes": {}, "dead_lettered": 0, "retries": 0, "count": 0, "sum": 0.0})
            if s.name == "kubeworkers_jobs_total":
                mine["outcomes"][s.labels["outcome"]] = int(s.value)
            elif s.name == "kubeworkers_dead_lettered_total":
                mine["dead_lettered"] = int(s.value)
            elif s.name == "kubeworkers_retries_total":
                mine["retries"] = int(s.value)
            elif s.name == "kubeworkers_job_duration_seconds_count":
                mine["count"] = int(s.value)
            elif s.name == "kubeworkers_job_duration_seconds_sum":
                mine["sum"] = s.value
            elif s.name == "kubeworkers_job_duration_seconds_bucket":
                cumulative.setdefault(handler, {})[float(s.labels["le"])] = s.value
    for handler, by_bound in cumulative.items():
        ordered = [by_bound[b] for b in sorted(by_bound)]
        seen[handler]["buckets"] = [int(c - p) for c, p in zip(ordered, [0.0, *ordered[:-1]], strict=True)]
    return seen


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


async def test_stats_and_metrics_give_the_same_counts_for_the_same_run(
    redis_url: str, client: AsyncClient, capsys: pytest.CaptureFixture[str]
) -> None:
    alpha = [Work(seconds=0.002 * i, fail=i % 4 == 0) for i in range(12)]
    beta = [Work(seconds=0.03 + 0.01 * i, permanent=i % 3 == 0) for i in range(7)]
    async with start_worker(redis_url, mixed_registry(), metrics_port=0, concurrency=8) as worker:
        ids = [await client.submit("p", "alpha", w.model_dump()) for w in alpha]
        ids += [await client.submit("p", "beta", w.model_dump()) for w in beta]
        done = [await client.wait(job_id, 60) for job_id in ids]
        assert worker.metrics_port is not None
        metrics = await asyncio.to_thread(scrape, worker.metrics_port)  # the server runs on this loop
    assert sorted(d.state for d in done).count(JobState.FAILED) == 3 + 3

    code, out, err = await asyncio.to_thread(run_cli, capsys, "stats", "--redis-url", redis_url, "--pool", "p",
                                             "--json")
    assert (code, err) == (0, "")
    shown = {h["handler"]: h for h in json.loads(out)["handlers"]}
    assert set(shown) == set(metrics) == {"alpha", "beta"}
    for handler, m in metrics.items():
        s = shown[handler]
        assert s["succeeded"] == m["outcomes"].get("succeeded", 0)
        assert s["failed"] == m["dead_lettered"] == m["outcomes"].get("failed", 0)
        assert s["retried"] == m["retries"] == m["outcomes"].get("retried", 0)
        assert s["jobs"] == s["succeeded"] + s["failed"]
        assert s["failure_rate"] == pytest.approx(s["failed"] / s["jobs"])
        assert s["duration_count"] == m["count"]
        assert s["duration_sum_s"] == pytest.approx(m["sum"], abs=1e-4)
        assert s["mean_duration_s"] == pytest.approx(m["sum"] / m["count"], abs=1e-5)
        for q, key in ((0.5, "p50_duration_s"), (0.95, "p95_duration_s")):
            assert s[key] == pytest.approx(stats.histogram_quantile(q, DURATION_BUCKETS_S, m["buckets"]))
    # The run itself, so the comparison above is not of two empty sets.
    assert (shown["alpha"]["succeeded"], shown["alpha"]["failed"], shown["alpha"]["retried"]) == (9, 3, 3)
    assert (shown["beta"]["succeeded"], shown["beta"]["failed"], shown["beta"]["retried"]) == (4, 3, 0)
    assert shown["beta"]["p50_duration_s"] > shown["alpha"]["p50_duration_s"]


async def test_stats_count_only_the_minutes_inside_the_window(redis_url: str, client: AsyncClient) -> None:
    async with start_worker(redis_url, mixed_registry()):
        for job_id in [await client.submit("p", "beta", {}) for _ in range(3)]:
            await client.wait(job_id, 30)
    now = time.time()
    current = await client.stats("p", window="1m")
    later = await asyncio.to_thread(
        lambda: _stats_at(redis_url, now + 2 * 3600, "1h"),
    )
    wider = await asyncio.to_thread(lambda: _stats_at(redis_url, now + 2 * 3600, "3h"))
    assert [(h.handler, h.succeeded) for h in current.handlers] == [("beta", 3)]
    assert later.handlers == []
    assert [(h.handler, h.succeeded) for h in wider.handlers] == [("beta", 3)]


def _stats_at(redis_url: str, now: float, window: str) -> stats.PoolStats:
    from kubeworkers import connection, redis_ops

    r = connection.connect(redis_url)
    try:
        return redis_ops.run_sync(r, stats.stats_plan("default", "p", stats.parse_window(window), now=now))
    finally:
        connection.close(r)


async def test_stats_show_each_handlers_jobs_in_flight_and_queued(redis_url: str, client: AsyncClient) -> None:
    release = threading.Event()
    reg = Registry()

    @reg.handler("slow")
    def slow(inp: Work) -> None:
        release.wait(30)

    async with start_worker(redis_url, reg, concurrency=1):
        ids = [await client.submit("p", "slow", {}) for _ in range(3)]
        deadline = time.monotonic() + 20
        found = await client.stats("p")
        while (not found.handlers or found.handlers[0].in_flight != 1) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            found = await client.stats("p")
        release.set()
        for job_id in ids:
            await client.wait(job_id, 30)
    [slow_stats] = found.handlers
    assert (slow_stats.handler, slow_stats.in_flight, slow_stats.queued, slow_stats.jobs) == ("slow", 1, 2, 0)
    after = await client.stats("p")
    assert [(h.in_flight, h.queued, h.succeeded) for h in after.handlers] == [(0, 0, 3)]


def test_stats_of_an_empty_pool_say_no_jobs(redis_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(capsys, "stats", "--redis-url", redis_url, "--pool", "nothing-here")
    assert (code, out, err) == (0, "pool default/nothing-here, last 1h: no jobs\n", "")
    code, out, _ = run_cli(capsys, "stats", "--redis-url", redis_url, "--pool", "nothing-here", "--json")
    assert code == 0
    assert json.loads(out)["handlers"] == []


@pytest.mark.parametrize("window", ["90x", "0m", "25h", "30s", "-1h"])
def test_stats_with_a_bad_window_is_a_one_line_error_with_exit_code_2(
    redis_url: str, capsys: pytest.CaptureFixture[str], window: str
) -> None:
    code, out, err = run_cli(capsys, "stats", "--redis-url", redis_url, "--pool", "p", f"--window={window}")
    assert (code, out) == (2, "")
    assert err.startswith("kubeworkers stats: invalid window") and err.count("\n") == 1
