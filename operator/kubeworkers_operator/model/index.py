"""In-memory view of every Job and WorkerPool the operator serves, fed by kopf's watches.

The status sync folds worker events into the status it finds here instead of
GETting each Job, and writes with the ``resourceVersion`` it finds here as a
precondition, so a concurrent writer turns into a 409 and a re-read, never into
a lost update. Our own patch responses are recorded too; a watch event that
arrives later with an older ``resourceVersion`` does not roll the view back.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from kubeworkers.protocol import job_id_of
from kubeworkers.resources import WorkerPoolSpec


def _rv(value: str | None) -> int:
    try:
        return int(value or 0)
    except ValueError:
        # resourceVersions are opaque by contract; etcd's are integers. Unknown: treat as newest.
        return 1 << 62


@dataclass
class TrackedJob:
    """What the operator knows about one Job CR."""

    namespace: str
    name: str
    uid: str
    resource_version: str
    spec: dict[str, Any]
    status: dict[str, Any]
    generation: int = 0
    """``metadata.generation``: moves with every spec change (the status carries the one acted on)."""

    @property
    def job_id(self) -> str:
        return job_id_of(self.namespace, self.name)

    @property
    def pool(self) -> str:
        return str(self.spec.get("pool", ""))

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> TrackedJob:
        meta = body.get("metadata", {})
        return cls(
            namespace=meta.get("namespace", ""),
            name=meta.get("name", ""),
            uid=meta.get("uid", ""),
            resource_version=str(meta.get("resourceVersion", "")),
            spec=dict(body.get("spec") or {}),
            status=dict(body.get("status") or {}),
            generation=int(meta.get("generation") or 0),
        )


@dataclass
class TrackedPool:
    namespace: str
    name: str
    uid: str
    spec: WorkerPoolSpec | None
    """None when the spec does not parse (the CRD schema should prevent that)."""
    generation: int = 0


@dataclass
class ClusterIndex:
    """Jobs by job id and pools by (namespace, name)."""

    jobs: dict[str, TrackedJob] = field(default_factory=dict)
    pools: dict[tuple[str, str], TrackedPool] = field(default_factory=dict)

    def observe_job(self, body: Mapping[str, Any]) -> TrackedJob:
        """Record a Job body (watch event or patch response) unless we already hold a newer one."""
        seen = TrackedJob.from_body(body)
        known = self.jobs.get(seen.job_id)
        if known is not None and known.uid == seen.uid and _rv(known.resource_version) > _rv(seen.resource_version):
            return known
        self.jobs[seen.job_id] = seen
        return seen

    def forget_job(self, namespace: str, name: str, uid: str) -> None:
        job_id = job_id_of(namespace, name)
        known = self.jobs.get(job_id)
        if known is not None and known.uid == uid:
            del self.jobs[job_id]

    def observe_pool(self, body: Mapping[str, Any]) -> TrackedPool:
        meta = body.get("metadata", {})
        try:
            spec: WorkerPoolSpec | None = WorkerPoolSpec.model_validate(body.get("spec") or {})
        except ValueError:
            spec = None
        pool = TrackedPool(
            meta.get("namespace", ""), meta.get("name", ""), meta.get("uid", ""), spec, int(meta.get("generation") or 0)
        )
        self.pools[(pool.namespace, pool.name)] = pool
        return pool

    def forget_pool(self, namespace: str, name: str) -> None:
        self.pools.pop((namespace, name), None)

    def jobs_of_pool(self, namespace: str, pool: str) -> Iterator[TrackedJob]:
        for job in list(self.jobs.values()):
            if job.namespace == namespace and job.pool == pool:
                yield job
