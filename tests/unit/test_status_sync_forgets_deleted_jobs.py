"""The status sync's per-Job memory (progress rate limit, deferred progress) does not outlive the Jobs:
a thousand Jobs deleted mid-run leave nothing behind."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from kubeworkers.protocol import JobEvent, JobState
from kubeworkers_operator.adapters.metrics import OperatorMetrics
from kubeworkers_operator.adapters.status_writer import StatusFn, WriteResult
from kubeworkers_operator.flows.status_sync import StatusSync
from kubeworkers_operator.model.index import ClusterIndex, TrackedJob
from kubeworkers_operator.model.ttl import TtlQueue
from kubeworkers_operator.settings import OperatorSettings

JOBS = 1_000


class IndexWriter:
    """Writes statuses into the index, like the real writer after a successful patch; GONE once deleted."""

    def __init__(self, index: ClusterIndex) -> None:
        self.index = index

    async def write(self, namespace: str, name: str, uid: str | None, compute: StatusFn, *, source: str) -> WriteResult:
        job = self.index.jobs.get(f"{namespace}/{name}")
        if job is None or job.uid != uid:
            return WriteResult.GONE
        wanted = compute(job)
        job.status = dict(wanted or job.status)
        return WriteResult.WRITTEN


class Acks:
    async def xack(self, *args: Any) -> int:
        return 0


def event(i: int, at: float, progress: float | None = None) -> JobEvent:
    return JobEvent(job_id=f"ns/j-{i}", uid=f"u-{i}", namespace="ns", pool="p", state=JobState.RUNNING, attempt=1,
                    worker="pod-a", at=at, progress=progress)


async def test_jobs_deleted_mid_run_leave_no_rate_limit_or_deferred_entries_behind() -> None:
    index = ClusterIndex()
    clock = [100.0]
    rt: Any = SimpleNamespace(settings=OperatorSettings(), writer=IndexWriter(index), index=index,
                              metrics=OperatorMetrics(), ttl=TtlQueue(), redis=Acks())
    sync = StatusSync(rt, clock=lambda: clock[0])
    for i in range(JOBS):
        index.jobs[f"ns/j-{i}"] = TrackedJob("ns", f"j-{i}", f"u-{i}", "1", {"pool": "p"}, {"phase": "Queued"})
        await sync._sync_job(f"ns/j-{i}", [("1-0", event(i, 1.0))])  # Running: written
        await sync._sync_job(f"ns/j-{i}", [("2-0", event(i, 2.0, progress=0.5))])  # progress: held back
    assert len(sync._deferred) == JOBS
    for i in range(JOBS):  # every Job deleted mid-run
        index.forget_job("ns", f"j-{i}", f"u-{i}")
    clock[0] += 2 * OperatorSettings().progress_interval_seconds
    await sync._flush_due_deferred()
    index.jobs["ns/other"] = TrackedJob("ns", "other", "u-x", "1", {"pool": "p"}, {"phase": "Queued"})
    await sync._sync_job("ns/other", [("3-0", JobEvent(job_id="ns/other", uid="u-x", namespace="ns", pool="p",
                                                       state=JobState.RUNNING, attempt=1, worker="w", at=3.0))])
    assert len(sync._deferred) == 0
    assert len(sync._last_progress_write) <= 1  # only the Job written within the last interval
