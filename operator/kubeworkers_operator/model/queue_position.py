"""A queued Job's place in its pool's queue: its ``status.position`` and ``estimatedStartTime``.

Pure: the positions come from Redis (``kubeworkers.queue.positions``, docs/protocol.md *Queue
positions*), the rates from two readings of the pool's take counter; this module decides what
the status says and, as important, **when it is worth a write**. A position moves with every
job taken ahead of it, so writing each change would multiply the status writes a Job costs
(the k8s-path benchmark counts them): a Job gets its first position only once it has waited
:data:`FIRST_AFTER_SECONDS` (a job that starts quickly never gets one), and later ones at most
every :data:`MIN_INTERVAL_SECONDS`, and only when the position or the estimate moved by a
meaningful amount. So a Queued Job costs at most one status write per interval, and none while
its queue is short.
"""

from __future__ import annotations

import datetime
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kubeworkers.protocol import JobState

from kubeworkers_operator.model.conditions import rfc3339

#: Seconds a Job waits in Queued before its first position is written.
FIRST_AFTER_SECONDS = 5.0
#: Fewest seconds between two position writes of one Job.
MIN_INTERVAL_SECONDS = 30.0
#: A position that moved by less than this share of the old one (and less than one job) is not rewritten.
POSITION_CHANGE = 0.1
#: An estimate that moved by less than this many seconds (or this share of the wait left) is not rewritten.
ESTIMATE_CHANGE_SECONDS = 10.0
ESTIMATE_CHANGE = 0.2
#: Duration of one job assumed when the pool has never finished one (seconds).
DEFAULT_DURATION_SECONDS = 1.0

POSITION_FIELDS = ("position", "estimatedStartTime")


@dataclass(frozen=True)
class PoolRate:
    """How fast a pool starts jobs, for estimated start times."""

    measured: float
    """Jobs/s taken by the pool's workers over the last readings (0: none taken, or unknown)."""
    capacity: float
    """Jobs/s the pool could take at its largest size (concurrency x max pods / mean duration);
    0 when it cannot run at all (paused: maxReplicas 0)."""

    @property
    def jobs_per_second(self) -> float:
        """The measured take rate while workers take; the capacity while nothing is taken (a
        pool at zero, starting, or stuck); 0 when it cannot run."""
        if self.capacity <= 0:
            return 0.0
        return self.measured if self.measured > 0 else self.capacity


def capacity(*, concurrency: int, max_pods: int, mean_duration: float | None) -> float:
    """Jobs/s a pool of ``max_pods`` pods running ``concurrency`` jobs each of ``mean_duration`` s starts."""
    if max_pods <= 0:
        return 0.0
    duration = mean_duration if mean_duration and mean_duration > 0 else DEFAULT_DURATION_SECONDS
    return concurrency * max_pods / duration


def estimated_start(position: int, rate: PoolRate, now: float) -> float | None:
    """When a job with ``position`` jobs ahead should start: now + position / rate (None: unknown)."""
    per_second = rate.jobs_per_second
    if per_second <= 0:
        return None
    return now + position / per_second


def _time(value: object) -> float | None:
    try:
        return datetime.datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _moved(old: int | None, new: int) -> bool:
    if old is None:
        return True
    return abs(new - old) >= max(1.0, POSITION_CHANGE * old)


def _estimate_moved(old: float | None, new: float | None, now: float) -> bool:
    if old is None or new is None:
        return old != new
    left = max(0.0, old - now)
    return abs(new - old) >= max(ESTIMATE_CHANGE_SECONDS, ESTIMATE_CHANGE * left)


def position_status(
    status: Mapping[str, Any], position: int | None, start: float | None, *, now: float, last_written: float | None
) -> dict[str, Any] | None:
    """The status with its position and estimate, or None when it is not worth a write.

    ``last_written``: when this operator last wrote this Job's position (None: not since it
    started). Only a Queued Job gets one; a position Redis no longer knows (the job was taken,
    or waits out a delay) is left for the status sync, which clears it with the phase change.
    """
    if status.get("phase") != JobState.QUEUED.value or position is None:
        return None
    queued_at = _time(status.get("queuedAt")) if status.get("queuedAt") else None
    if queued_at is not None and now - queued_at < FIRST_AFTER_SECONDS:
        return None
    if last_written is not None and now - last_written < MIN_INTERVAL_SECONDS:
        return None
    old_position = status.get("position")
    old_start = _time(status["estimatedStartTime"]) if status.get("estimatedStartTime") else None
    known = old_position if isinstance(old_position, int) else None
    if not _moved(known, position) and not _estimate_moved(old_start, start, now):
        return None
    new = dict(status)
    new["position"] = position
    if start is None or not math.isfinite(start):
        new.pop("estimatedStartTime", None)
    else:
        new["estimatedStartTime"] = rfc3339(start)
    return new


def without_position(status: dict[str, Any]) -> dict[str, Any]:
    """A status that is not Queued carries no position (it is cleared with the phase change)."""
    if status.get("phase") != JobState.QUEUED.value:
        for name in POSITION_FIELDS:
            status.pop(name, None)
    return status
