"""``ttlSecondsAfterFinished``: delete finished Jobs (and their Redis records) when due.

One heap of deadlines, drained by the operator's ``ttl-deletion`` chore
(:func:`kubeworkers_operator.flows.jobs.delete_expired`): no timer, daemon or
finalizer per Job. Deadlines are derived from
``status.completionTime``, so after a restart the re-listed Jobs reschedule
themselves and overdue ones are deleted at once.

``ttlSecondsAfterFinished`` may change at any time: every watch event of a
finished Job is considered again, so an edited TTL replaces the scheduled
deadline (a removed one unschedules it), and the deletion itself re-reads the
Job and checks :func:`is_due` on its live spec before deleting.
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
    _scheduled: dict[str, tuple[str, float]] = field(default_factory=dict)
    """job id -> (uid, deadline) of the scheduled incarnation; heap entries that no longer match
    (an edited TTL, a re-created namesake) are skipped when they come up."""

    def consider(self, job: TrackedJob) -> None:
        """Schedule the finished Job by its TTL as it is now; unschedule it if it has none (idempotent)."""
        due = deadline(job)
        if due is None:
            scheduled = self._scheduled.get(job.job_id)
            if scheduled is not None and scheduled[0] == job.uid:
                del self._scheduled[job.job_id]
            return
        if self._scheduled.get(job.job_id) == (job.uid, due):
            return
        self._scheduled[job.job_id] = (job.uid, due)
        heapq.heappush(self._heap, _Entry(due, job.job_id, job.uid))

    def forget(self, job_id: str) -> None:
        self._scheduled.pop(job_id, None)

    def pop_due(self, now: float | None = None) -> list[tuple[str, str]]:
        """(job id, uid) of every Job whose deadline has passed."""
        now = time.time() if now is None else now
        due: list[tuple[str, str]] = []
        while self._heap and self._heap[0].due <= now:
            entry = heapq.heappop(self._heap)
            if self._scheduled.get(entry.job_id) == (entry.uid, entry.due):
                del self._scheduled[entry.job_id]
                due.append((entry.job_id, entry.uid))
        return due

    def __len__(self) -> int:
        return len(self._scheduled)


def is_due(job: TrackedJob, uid: str, *, now: float) -> bool:
    """Whether the Job as read now (its live spec and status) is the incarnation ``uid`` and due."""
    due = deadline(job)
    return job.uid == uid and due is not None and due <= now
