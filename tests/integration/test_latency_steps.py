"""benchmarks.latency_steps: the step-by-step submit -> start figures of docs/benchmarks.md come out whole.

A short run of the tool itself (its own redis-server and instrumented worker process): every step
is marked, in the order the path takes them, and SLOWLOG gives both scripts' time.
"""

from __future__ import annotations

from benchmarks import latency_steps


def test_every_step_of_the_wake_up_path_is_marked_in_order() -> None:
    data = latency_steps.measure(5)
    path = [label for label, _, _ in latency_steps.STEPS if label != "submit returned"]
    assert list(data["steps"]) == [*path, "submit returned"]
    at = [data["steps"][label] for label in path]
    assert at == sorted(at), at
    assert set(data["scripts_us"]) == {"enqueue", "take"}
    assert "handler runs" in latency_steps.report(data)
