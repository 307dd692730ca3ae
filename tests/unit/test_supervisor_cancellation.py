"""A supervised loop stops when cancelled even if its body swallowed the cancellation (a Redis
client's timeout racing the cancel, a ``suppress`` around an await): a worker's drain cancels
its heartbeat and awaits it, and waited for ever on one that went on (a CI run's hang)."""

from __future__ import annotations

import asyncio

import pytest
from kubeworkers.supervisor import Supervisor


async def _swallowing(started: asyncio.Event) -> None:
    started.set()
    try:
        await asyncio.sleep(10)
    except asyncio.CancelledError:
        pass  # what misbehaving code under the loop does


def _fatal(name: str, exc: BaseException) -> None:
    raise AssertionError(f"{name} was fatal: {exc!r}")


@pytest.mark.parametrize("kind", ["every", "forever"])
async def test_a_supervised_loop_whose_body_swallows_its_cancel_still_stops(kind: str) -> None:
    supervisor = Supervisor(_fatal)
    started = asyncio.Event()
    if kind == "every":
        supervisor.every("t", lambda: 0.0, lambda: _swallowing(started))
    else:
        supervisor.forever("t", lambda: _swallowing(started), done=lambda: False)
    task = supervisor.tasks["t"]
    await asyncio.wait_for(started.wait(), 5)
    task.cancel()
    done, _ = await asyncio.wait([task], timeout=5)
    assert done, "the loop went on after its cancel"
    assert task.cancelled()
