"""``ttlSecondsAfterFinished``: delete finished Jobs (and their Redis records) when due.

One heap of deadlines, drained by the operator's ``ttl-deletion`` chore
(:func:`kubeworkers_operator.flows.jobs.delete_expired`): no timer, daemon or
finalizer per Job. Deadlines are derived from
``status.completionTime``, so after a restart the re-listed Jobs reschedule
themselves and overdue ones are deleted at once.
"""

from __future__ import annotations

import datetime
import heapq
import logging
import time
from dataclasses import dataclass, field

from kubeworkers_operator.model.index import TrackedJob
from kubeworkers_operator.model.job_status import is_finished

logger = logging.getLogger(__name__)


def parse_time(value: str) -> float:
    """Unix seconds of an RFC 3339 timestamp as Kubernetes writes them."""
    return datetime.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def deadline(job: TrackedJob) -> float | None:
    """When the finished Job is due for deletion, or None when it is not (yet) subject to a TTL."""
    ttl = job.spec.get("ttlSecondsAfterFinished")
    finished_at = job.status.get("completionTime")
    if ttl is None or not is_finished(job.status) or not finished_at:
        return None
    try:
        return parse_time(str(finished_at)) + float(ttl)
    except ValueError:
        return None


@dataclass(order=True)
class _Entry:
    due: float
    job_id: str = field(compare=False)
    uid: str = field(compare=False)


@dataclass
class TtlQueue:
    """Deadlines of finished Jobs with a TTL, earliest first."""

    _heap: list[_Entry] = field(default_factory=list)
    _scheduled: dict[str, str] = field(default_factory=dict)
    """job id -> uid of the scheduled incarnation (a re-created namesake gets its own entry)."""

    def consider(self, job: TrackedJob) -> None:
        """Schedule the Job if it is finished and has a TTL (idempotent)."""
        due = deadline(job)
        if due is None or self._scheduled.get(job.job_id) == job.uid:
            return
        self._scheduled[job.job_id] = job.uid
        heapq.heappush(self._heap, _Entry(due, job.job_id, job.uid))

    def forget(self, job_id: str) -> None:
        self._scheduled.pop(job_id, None)

    def pop_due(self, now: float | None = None) -> list[tuple[str, str]]:
        """(job id, uid) of every Job whose deadline has passed."""
        now = time.time() if now is None else now
        due: list[tuple[str, str]] = []
        while self._heap and self._heap[0].due <= now:
            entry = heapq.heappop(self._heap)
            if self._scheduled.get(entry.job_id) == entry.uid:
                del self._scheduled[entry.job_id]
                due.append((entry.job_id, entry.uid))
        return due

    def __len__(self) -> int:
        return len(self._scheduled)
