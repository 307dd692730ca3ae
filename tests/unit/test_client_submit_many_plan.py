"""The plan behind ``submit_many``, read as plain Python (plans do no I/O): one chunk of
:data:`~kubeworkers.queue.ENQUEUE_CHUNK` jobs in flight at a time, the event loop given a turn
(``Pause(0)``) every :data:`~kubeworkers.queue.SUBMIT_BUILD_SLICE` messages of the next chunk's
build so it sends the one in flight meanwhile, and the next chunk started only once the previous
one answered (chunks reach Redis in order)."""

from __future__ import annotations

from typing import Any

import pytest
from kubeworkers import queue
from kubeworkers.client import _Jobs
from kubeworkers.redis_ops import Join, Pause, Start
from kubeworkers.registry import Registry


def test_the_event_loop_gets_turns_while_the_next_chunk_is_built_and_one_chunk_is_in_flight() -> None:
    jobs = 2 * queue.ENQUEUE_CHUNK + 3
    plan = _Jobs("ns", Registry()).submit_many("p", "h", [{"n": i} for i in range(jobs)])
    steps: list[str] = []
    started: list[Any] = []
    reply: Any = None
    with pytest.raises(StopIteration) as end:
        while True:
            step = plan.send(reply)
            steps.append(type(step).__name__)
            reply = None
            if isinstance(step, Start):
                started.append(step.plan)
                reply = len(started) - 1  # the handle
            elif isinstance(step, Pause):
                assert step.seconds == 0
            elif isinstance(step, Join):
                assert step.handle == len(started) - 1  # the last one started: one in flight
                size = queue.ENQUEUE_CHUNK if step.handle < 2 else 3
                reply = [queue.Enqueued(new=True, position=step.handle * queue.ENQUEUE_CHUNK + i) for i in range(size)]
            else:
                raise AssertionError(step)
    turns = ["Pause"] * (queue.ENQUEUE_CHUNK // queue.SUBMIT_BUILD_SLICE)
    # Nothing to send while the first chunk is built; the short last one (3 jobs) gives one turn.
    assert steps == ["Start", *turns, "Join", "Start", "Pause", "Join", "Start", "Join"]
    ids = end.value.value
    assert len(ids) == jobs and [s.position for s in ids] == list(range(jobs))
    for p in started:
        p.close()
