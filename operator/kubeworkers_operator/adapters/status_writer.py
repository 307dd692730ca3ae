"""The one place that writes ``jobs/status``: optimistic, idempotent, counted, narrated.

Every write is a JSON merge patch carrying the ``resourceVersion`` the status
was computed from. When someone else wrote in between (409), the Job is read
again and the same computation is re-run on the fresh status, so folding rules
(a finished phase never moves backwards) hold whatever the interleaving of the
Job path, the status sync and the resync. Phase changes become Kubernetes
Events here (the pure :func:`~kubeworkers_operator.model.job_status.narration`
chooses which), so every writer narrates the same way.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Callable, Mapping
from typing import Any

from kubeworkers.resources import JOB_PLURAL

from kubeworkers_operator.adapters.events import EventRecorder, ObjectRef
from kubeworkers_operator.adapters.kube import ApiError, Conflict, KubeApi, NotFound, custom_path
from kubeworkers_operator.adapters.metrics import OperatorMetrics
from kubeworkers_operator.model import job_status
from kubeworkers_operator.model.index import ClusterIndex, TrackedJob

logger = logging.getLogger(__name__)

#: Computes the wanted status from the current one; None means "leave it".
StatusFn = Callable[[TrackedJob], Mapping[str, Any] | None]

MAX_CONFLICT_RETRIES = 5


class WriteResult(enum.Enum):
    WRITTEN = "written"
    UNCHANGED = "unchanged"
    GONE = "gone"
    """The Job does not exist (any more), or is a newer namesake (different uid)."""


def job_ref(job: TrackedJob) -> ObjectRef:
    return ObjectRef.job(job.namespace, job.name, job.uid)


class JobStatusWriter:
    """Writes Job statuses through :class:`KubeApi`, keeping :class:`ClusterIndex` current."""

    def __init__(
        self, api: KubeApi, index: ClusterIndex, recorder: EventRecorder, metrics: OperatorMetrics
    ) -> None:
        self._api = api
        self._index = index
        self._recorder = recorder
        self._metrics = metrics
        # Writers of one Job (the enqueue path, the status sync, the resync) take turns, so the
        # second computes from the first one's result instead of colliding into a 409.
        self._locks: dict[str, asyncio.Lock] = {}
        self._lock_users: dict[str, int] = {}

    async def fetch(self, namespace: str, name: str) -> TrackedJob | None:
        """GET the Job and record it in the index; None when it does not exist."""
        body = await self._api.get_or_none(custom_path(JOB_PLURAL, namespace, name))
        return None if body is None else self._index.observe_job(body)

    async def write(
        self, namespace: str, name: str, uid: str | None, compute: StatusFn, *, source: str
    ) -> WriteResult:
        """Patch the Job's status to ``compute(job)``; ``uid`` (if given) must match the Job's."""
        key = f"{namespace}/{name}"
        lock = self._locks.setdefault(key, asyncio.Lock())
        self._lock_users[key] = self._lock_users.get(key, 0) + 1
        try:
            async with lock:
                return await self._write(namespace, name, uid, compute, source=source)
        finally:
            self._lock_users[key] -= 1
            if not self._lock_users[key]:
                del self._lock_users[key]
                del self._locks[key]

    async def _write(
        self, namespace: str, name: str, uid: str | None, compute: StatusFn, *, source: str
    ) -> WriteResult:
        job = self._index.jobs.get(f"{namespace}/{name}")
        if job is None:
            job = await self.fetch(namespace, name)
        for _ in range(MAX_CONFLICT_RETRIES):
            if job is None or (uid is not None and job.uid != uid):
                return WriteResult.GONE
            wanted = compute(job)
            if wanted is None:
                return WriteResult.UNCHANGED
            if job.generation:
                # Every write says which spec it was computed from (a spec edit alone: see observe_generation).
                wanted = {**wanted, "observedGeneration": job.generation}
            patch = job_status.merge_patch(job.status, wanted)
            if not patch:
                return WriteResult.UNCHANGED
            body = {"metadata": {"resourceVersion": job.resource_version}, "status": patch}
            try:
                response = await self._api.merge_patch(custom_path(JOB_PLURAL, namespace, name, "status"), body)
            except Conflict:
                self._metrics.status_patch_errors.labels(reason="conflict").inc()
                job = await self.fetch(namespace, name)
                continue
            except NotFound:
                self._metrics.status_patch_errors.labels(reason="not_found").inc()
                return WriteResult.GONE
            except ApiError as exc:
                self._metrics.status_patch_errors.labels(reason=str(exc.status)).inc()
                raise
            self._metrics.status_patches.labels(source=source).inc()
            before = job
            after = self._index.observe_job(response)
            self._narrate(before, after)
            return WriteResult.WRITTEN
        raise RuntimeError(f"status of {namespace}/{name} kept conflicting ({MAX_CONFLICT_RETRIES} retries)")

    async def observe_generation(self, job: TrackedJob) -> WriteResult:
        """Write ``observedGeneration`` alone when the operator acted on a spec edit no other write carries
        (a ``ttlSecondsAfterFinished`` change on a finished Job, say)."""
        if not job.generation or job.status.get("observedGeneration") == job.generation:
            return WriteResult.UNCHANGED
        return await self.write(job.namespace, job.name, job.uid, lambda current: current.status, source="generation")

    def _narrate(self, before: TrackedJob, after: TrackedJob) -> None:
        """Post the Event the change deserves (chosen by :func:`~.job_status.narration`)."""
        note = job_status.narration(before.status, after.status, after.pool)
        if note is not None:
            post = self._recorder.warning if note.warning else self._recorder.normal
            post(job_ref(after), note.reason, note.message)
