"""The plan behind ``wait_many`` / ``as_completed``, read as plain Python (plans do no I/O): each
poll round reads every pending record in one pipeline, and pauses follow the given delays."""

from __future__ import annotations

from typing import Any

import pytest
from kubeworkers import AmbiguousJobIdError, JobNotFoundError
from kubeworkers.protocol import PoolKeys, job_pool_key
from kubeworkers.redis_ops import Pause, Pipeline, Plan
from kubeworkers.results import Completions


def completions(ids: list[str], delays: list[float]) -> Completions:
    return Completions("ns", ids, timeout=None, pool=None, delays=iter(delays),
                       not_found=JobNotFoundError, ambiguous=AmbiguousJobIdError)


def record(job_id: str, state: str, finished_at: float | None = None) -> dict[bytes, bytes]:
    fields = {"job_id": job_id, "uid": job_id, "namespace": "ns", "pool": "p", "handler": "h", "state": state}
    if finished_at is not None:
        fields["finished_at"] = repr(finished_at)
    return {k.encode(): v.encode() for k, v in fields.items()}


def commands(step: Any) -> list[tuple[str, tuple[Any, ...]]]:
    assert isinstance(step, Pipeline), step
    return [(c.method, c.args) for c in step.commands]


def hgetalls(*ids: str) -> list[tuple[str, tuple[Any, ...]]]:
    return [("hgetall", (PoolKeys("ns", "p").record(j),)) for j in ids]


def finish(plan: Plan[Any], reply: Any) -> Any:
    with pytest.raises(StopIteration) as end:
        plan.send(reply)
    return end.value.value


def test_each_poll_round_reads_every_pending_record_in_one_pipeline() -> None:
    state = completions(["a", "b", "c"], delays=[0.01, 0.02, 0.04])
    plan = state.next_round()
    # The pools of all the ids, found once: one pipeline of SMEMBERS, one of EXISTS.
    assert commands(next(plan)) == [("smembers", (job_pool_key("ns", j),)) for j in "abc"]
    assert [m for m, _ in commands(plan.send([{b"p"}] * 3))] == ["exists"] * 3
    assert commands(plan.send([1, 1, 1])) == hgetalls("a", "b", "c")
    assert plan.send([record(j, "Running") for j in "abc"]) == Pause(0.01)
    assert commands(plan.send(None)) == hgetalls("a", "b", "c")
    assert plan.send([record(j, "Running") for j in "abc"]) == Pause(0.02)
    assert commands(plan.send(None)) == hgetalls("a", "b", "c")
    # Two finished in this round: both returned, the first finished first.
    done = finish(plan, [record("a", "Running"), record("b", "Succeeded", 20.0), record("c", "Failed", 10.0)])
    assert [r.job_id for r in done] == ["c", "b"]
    assert state.pending == ["a"]
    # The next round reads only what is still pending, with no new pool look-up.
    plan = state.next_round()
    assert commands(next(plan)) == hgetalls("a")
    assert [r.job_id for r in finish(plan, [record("a", "Cancelled", 30.0)])] == ["a"]
    assert state.pending == []


def test_an_id_on_two_pools_is_ambiguous_and_an_id_on_none_is_not_found() -> None:
    plan = completions(["a"], delays=[]).next_round()
    next(plan)
    plan.send([{b"p", b"q"}])
    with pytest.raises(AmbiguousJobIdError, match="pools p, q"):
        plan.send([1, 1])
    plan = completions(["a"], delays=[]).next_round()
    next(plan)
    with pytest.raises(JobNotFoundError):
        plan.send([set()])
