"""The one retry policy and the one poll schedule the blocking and asyncio callers share, stepped by hand."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
import redis
from kubeworkers import client, redis_ops, scripts
from kubeworkers.redis_ops import Command, Pause, Plan
from redis.exceptions import NoScriptError


def step(plan: Plan[Any], reply: Any = None, error: Exception | None = None) -> Any:
    """Resume a plan once: its next step, or ('done', value)."""
    try:
        return plan.throw(error) if error is not None else plan.send(reply)
    except StopIteration as end:
        return ("done", end.value)


def test_a_script_unknown_to_redis_is_called_again_with_its_source_on_the_same_step() -> None:
    plan = scripts.call_plan("cancel", ["k"], ["a"])
    first = next(plan)
    assert isinstance(first, Command) and first.method == "evalsha"
    again = step(plan, error=NoScriptError("NOSCRIPT"))
    # One command carrying the source: it cannot land on another node than the one refused.
    assert isinstance(again, Command) and again.method == "eval"
    assert again.args == (scripts.script("cancel").source, *first.args[1:])
    assert step(plan, reply=1) == ("done", 1)


def test_a_pipeline_sends_again_only_the_calls_that_answered_noscript_then_its_tail() -> None:
    calls = [("reap", ["p"], ["x"]), ("renew", ["s"], ["g", "c", "1-0"]), ("reap", ["p"], ["y"])]
    wait = Command("wait", 1, 500)
    plan = scripts.pipeline_plan(calls, then=[wait])
    first = next(plan)
    assert isinstance(first, redis_ops.Pipeline) and first.errors_as_replies
    assert [c.method for c in first.commands] == ["evalsha", "evalsha", "evalsha", "wait"]
    # reap was known and ran; renew was not, so it did not run.
    again = step(plan, reply=["reaped-x", NoScriptError("NOSCRIPT"), "reaped-y", 1])
    assert isinstance(again, redis_ops.Pipeline)
    assert [c.method for c in again.commands] == ["eval", "wait"]
    assert again.commands[0].args[0] == scripts.script("renew").source
    assert step(plan, reply=[["lost"], 1]) == ("done", ["reaped-x", ["lost"], "reaped-y", 1])


@pytest.mark.parametrize("shape", ["call", "pipeline"])
def test_noscript_after_a_failovers_connection_errors_is_still_answered_with_the_source(shape: str) -> None:
    """A failover brings connection errors first, then NOSCRIPT from the new master: the errors
    must not use up the budget of the EVAL that answers it (seen as a NoScriptError in a submit)."""
    plan = (scripts.call_plan("enqueue", [], ["a"], idempotent=True) if shape == "call"
            else scripts.pipeline_plan([("enqueue", [], ["a"])], idempotent=True))
    next(plan)
    for _ in range(redis_ops.RETRY.retries):
        assert isinstance(step(plan, error=redis.ConnectionError("master gone")), Pause)
        step(plan)
    if shape == "call":
        again = step(plan, error=NoScriptError("NOSCRIPT"))
        assert isinstance(again, Command) and again.method == "eval"
    else:
        again = step(plan, reply=[NoScriptError("NOSCRIPT")])
        assert isinstance(again, redis_ops.Pipeline) and again.commands[0].method == "eval"
    assert step(plan, reply=1 if shape == "call" else [1]) == ("done", 1 if shape == "call" else [1])


def test_a_pipeline_raises_the_first_error_reply_that_is_not_noscript() -> None:
    plan = scripts.pipeline_plan([("reap", ["p"], []), ("renew", ["s"], [])])
    next(plan)
    with pytest.raises(redis.ResponseError, match="bad"):
        step(plan, reply=[redis.ResponseError("bad"), 1])


def test_readonly_from_a_demoted_master_is_transient_and_an_idempotent_call_is_repeated() -> None:
    assert issubclass(redis.ReadOnlyError, redis_ops.TRANSIENT_ERRORS)
    plan = scripts.call_plan("enqueue", [], ["a"], idempotent=True)
    next(plan)
    assert isinstance(step(plan, error=redis.ReadOnlyError("READONLY You can't write")), Pause)


def test_an_idempotent_call_is_repeated_after_connection_errors_with_growing_pauses() -> None:
    plan = scripts.call_plan("enqueue", [], ["a"], idempotent=True)
    next(plan)
    pauses = []
    for _ in range(redis_ops.RETRY.retries):
        pause = step(plan, error=redis.ConnectionError("gone"))
        assert isinstance(pause, Pause)
        pauses.append(pause.seconds)
        assert isinstance(step(plan), Command)
    assert pauses == sorted(pauses) and pauses[0] > 0
    with pytest.raises(redis.ConnectionError):
        step(plan, error=redis.ConnectionError("still gone"))


def test_a_call_that_is_not_idempotent_is_never_repeated_after_a_connection_error() -> None:
    plan = scripts.call_plan("cancel", ["k"], [])
    next(plan)
    with pytest.raises(redis.TimeoutError):
        step(plan, error=redis.TimeoutError("no answer"))


def test_wait_polls_fast_at_first_then_backs_off_to_a_ceiling() -> None:
    delays = list(itertools.islice(client.poll_delays(), 12))
    assert delays[0] == client.WAIT_FIRST_POLL
    assert delays == sorted(delays) and delays[-1] == client.WAIT_MAX_POLL


class FakeSync:
    """A blocking connection that answers ``get`` from a dict."""

    def __init__(self, values: dict[str, Any]) -> None:
        self.values = values

    def get(self, key: str) -> Any:
        return self.values.get(key)


def test_the_blocking_driver_runs_started_plans_at_once_and_hands_back_their_errors() -> None:
    def failing() -> Plan[None]:
        yield Command("get", "x")
        raise ValueError("bad chunk")

    def plan() -> Plan[Any]:
        ok = yield redis_ops.Start(iter_value("a"))
        bad = yield redis_ops.Start(failing())
        first = yield redis_ops.Join(ok)
        try:
            yield redis_ops.Join(bad)
        except ValueError as exc:
            return first, str(exc)
        return first, None

    def iter_value(key: str) -> Plan[Any]:
        value = yield Command("get", key)
        return value

    assert redis_ops.run_sync(FakeSync({"a": 1}), plan()) == (1, "bad chunk")  # type: ignore[arg-type]
