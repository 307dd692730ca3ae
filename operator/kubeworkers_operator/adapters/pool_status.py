"""The one writer of ``WorkerPool.status``.

Three parts of the operator report on a pool, each in fields of its own: the pool
path (``selector``, ``observedGeneration``), the worker Deployment's counts
(:data:`REPLICA_FIELDS` and the ``Available`` condition), and the pool's
autoscaler (its last decision: ``desiredReplicas``, ``backlog``, ``inFlight``,
``arrivalRate``, ``durationEstimateSeconds``, ``lastScaleTime``,
``lastScaleReason``, and the ``PodsFailing`` condition). Each goes through
:class:`PoolStatusWriter` as a JSON merge patch of only its own fields.

``conditions`` is one list, and a merge patch replaces a list whole, so the
writer keeps each pool's list (seeded from the pool as the watch last showed it)
and writes it entire whenever one condition changes: two reporters can never
erase each other's condition. :meth:`forget` drops what it keeps of a deleted pool.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kubeworkers.resources import WORKERPOOL_PLURAL

from kubeworkers_operator.adapters.kube import KubeApi, NotFound, custom_path
from kubeworkers_operator.model.conditions import Condition, find, set_condition
from kubeworkers_operator.model.pool_conditions import AVAILABLE, ConditionValue, available

#: ``WorkerPool.status`` fields copied from the worker Deployment's status.
REPLICA_FIELDS = ("replicas", "readyReplicas")

Key = tuple[str, str]


def replicas_of(deployment_status: Mapping[str, Any] | None) -> dict[str, int]:
    """The pool-status replica fields for a Deployment's ``status`` (absent counts are 0)."""
    status = deployment_status or {}
    return {name: int(status.get(name) or 0) for name in REPLICA_FIELDS}


def _same(cond: Mapping[str, Any] | None, value: ConditionValue) -> bool:
    return cond is not None and (cond.get("status"), cond.get("reason"), cond.get("message")) == (
        value.status, value.reason, value.message
    )


class PoolStatusWriter:
    """Merges fields into WorkerPool statuses through :class:`KubeApi`."""

    def __init__(self, api: KubeApi) -> None:
        self._api = api
        #: Replica counts last copied per pool (skips redundant writes on every Deployment event).
        self._replicas_written: dict[Key, dict[str, int]] = {}
        #: Each pool's conditions as last written or seen.
        self._conditions: dict[Key, list[Condition]] = {}

    async def merge(self, namespace: str, name: str, fields: Mapping[str, Any]) -> None:
        """Merge ``fields`` (camelCase) into the pool's status; raises :class:`NotFound` if it is gone."""
        await self._api.merge_patch(custom_path(WORKERPOOL_PLURAL, namespace, name, "status"), {"status": fields})

    def observe(self, namespace: str, name: str, status: Mapping[str, Any] | None) -> None:
        """Seed the pool's conditions from its body (after a restart the writer knows none)."""
        self._conditions.setdefault((namespace, name), [dict(c) for c in (status or {}).get("conditions") or []])

    def condition(self, namespace: str, name: str, type_: str) -> Mapping[str, Any] | None:
        """The pool's condition ``type_`` as last written or seen."""
        return find(self._conditions.get((namespace, name)), type_)

    def _with(self, key: Key, type_: str, value: ConditionValue) -> list[Condition] | None:
        """The pool's conditions with ``type_`` set to ``value``; None when it already is."""
        current = self._conditions.get(key, [])
        if _same(find(current, type_), value):
            return None
        return set_condition(current, type_, value.status, value.reason, value.message)

    async def set_condition(self, namespace: str, name: str, type_: str, value: ConditionValue) -> bool:
        """Write one condition (with the rest of the list); False when it already said so or the pool is gone."""
        key = (namespace, name)
        conditions = self._with(key, type_, value)
        if conditions is None:
            return False
        try:
            await self.merge(namespace, name, {"conditions": conditions})
        except NotFound:
            return False
        self._conditions[key] = conditions
        return True

    async def mirror_replicas(
        self, namespace: str, name: str, deployment_status: Mapping[str, Any] | None, *, desired: int | None = None
    ) -> None:
        """Copy the worker Deployment's replica counts (and ``Available``) into the pool's status, when changed."""
        key = (namespace, name)
        wanted: dict[str, Any] = replicas_of(deployment_status)
        counts = dict(wanted)
        conditions = self._with(key, AVAILABLE, available(deployment_status, desired=desired))
        if conditions is not None:
            wanted["conditions"] = conditions
        elif self._replicas_written.get(key) == counts:
            return
        try:
            await self.merge(namespace, name, wanted)
        except NotFound:
            return  # the pool is being deleted
        self._replicas_written[key] = counts
        if conditions is not None:
            self._conditions[key] = conditions

    def forget(self, namespace: str, name: str) -> None:
        """Drop what is kept of a deleted pool (a namesake created later starts afresh)."""
        self._replicas_written.pop((namespace, name), None)
        self._conditions.pop((namespace, name), None)

    def remembered(self) -> int:
        """Pools the writer keeps something of (bounded by the pools that exist)."""
        return len(self._replicas_written.keys() | self._conditions.keys())
