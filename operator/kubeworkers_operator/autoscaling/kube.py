"""The Kubernetes side of the autoscaler: a small Protocol and its implementation.

The controller talks to Kubernetes only through :class:`KubeScaler` (one per
pool), so tests and benchmarks can put a recording fake in its place.
:class:`KubernetesScaler` implements it on the operator's own edges: the async
:class:`~kubeworkers_operator.adapters.kube.KubeApi` (typed errors), the bounded
:class:`~kubeworkers_operator.adapters.events.EventRecorder`, and the one writer
of ``WorkerPool.status``.
"""

from __future__ import annotations

from typing import Any, Protocol

from kubeworkers.resources import WORKERPOOL_PLURAL

from kubeworkers_operator.adapters.events import EventRecorder, ObjectRef
from kubeworkers_operator.adapters.kube import KubeApi, NotFound, core_path, custom_path, deployment_path
from kubeworkers_operator.adapters.pool_status import PoolStatusWriter
from kubeworkers_operator.autoscaling.deletion_cost import DELETION_COST_ANNOTATION
from kubeworkers_operator.autoscaling.pods import FAILING_WAITING_REASONS, UNSCHEDULABLE, WorkerPod
from kubeworkers_operator.model.names import deployment_name, pod_selector
from kubeworkers_operator.model.pool_conditions import ConditionValue

#: ``source.component`` of the Events the autoscaler posts.
EVENT_COMPONENT = "kubeworkers-autoscaler"


class KubeScaler(Protocol):
    """What the autoscaler of one pool does to Kubernetes."""

    async def get_replicas(self) -> int | None:
        """The worker Deployment's ``spec.replicas``; None if the Deployment does not exist."""
        ...

    async def set_replicas(self, replicas: int) -> None:
        """Set the worker Deployment's ``spec.replicas`` (through its scale subresource)."""
        ...

    async def list_worker_pods(self) -> list[WorkerPod]:
        """The pool's worker pods with their current deletion-cost annotation."""
        ...

    async def set_deletion_cost(self, pod: str, cost: int) -> None:
        """Write ``controller.kubernetes.io/pod-deletion-cost`` on one pod (gone pods are ignored)."""
        ...

    async def patch_status(self, status: dict[str, Any]) -> None:
        """Merge ``status`` (camelCase keys) into the WorkerPool's status subresource."""
        ...

    async def post_event(self, reason: str, message: str, *, warning: bool = False) -> None:
        """Post a Kubernetes Event about the WorkerPool."""
        ...

    async def set_condition(self, type_: str, value: ConditionValue) -> bool:
        """Set one of the WorkerPool's conditions; False when it already said so."""
        ...


def _parse_cost(annotations: dict[str, str] | None) -> int | None:
    raw = (annotations or {}).get(DELETION_COST_ANNOTATION)
    try:
        return None if raw is None else int(raw)
    except ValueError:
        return None


def _failure(status: dict[str, Any]) -> tuple[str | None, str]:
    """Why the pod cannot start, from what the kubelet and the scheduler wrote (None: it can)."""
    for container in [*(status.get("initContainerStatuses") or []), *(status.get("containerStatuses") or [])]:
        waiting = (container.get("state") or {}).get("waiting") or {}
        if waiting.get("reason") in FAILING_WAITING_REASONS:
            return str(waiting["reason"]), str(waiting.get("message") or "")
    for cond in status.get("conditions") or []:
        if cond.get("type") == "PodScheduled" and cond.get("status") == "False" and cond.get("reason") == UNSCHEDULABLE:
            return UNSCHEDULABLE, str(cond.get("message") or "")
    return None, ""


def worker_pod(body: dict[str, Any]) -> WorkerPod:
    """A pod object as the autoscaler sees it."""
    meta = body.get("metadata") or {}
    status = body.get("status") or {}
    failure, message = _failure(status)
    ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])
    return WorkerPod(
        name=str(meta.get("name", "")),
        deletion_cost=_parse_cost(meta.get("annotations")),
        terminating=meta.get("deletionTimestamp") is not None,
        ready=ready,
        failure=failure,
        failure_message=message[:512],
    )


class KubernetesScaler:
    """:class:`KubeScaler` over :class:`KubeApi` and the :class:`EventRecorder`.

    ``pool_uid`` is the WorkerPool's uid (its Events hang on it); when not given it
    is read from the apiserver before the first Event.
    """

    def __init__(
        self,
        namespace: str,
        pool: str,
        api: KubeApi,
        recorder: EventRecorder,
        *,
        pool_uid: str | None = None,
        pool_status: PoolStatusWriter | None = None,
    ) -> None:
        self.namespace = namespace
        self.pool = pool
        self.deployment = deployment_name(pool)
        self._api = api
        self._recorder = recorder
        self._pool_status = pool_status if pool_status is not None else PoolStatusWriter(api)
        self._pool_uid = pool_uid

    def _scale_path(self) -> str:
        return deployment_path(self.namespace, self.deployment, "scale")

    async def get_replicas(self) -> int | None:
        scale = await self._api.get_or_none(self._scale_path())
        if scale is None:
            return None
        return int((scale.get("spec") or {}).get("replicas") or 0)

    async def set_replicas(self, replicas: int) -> None:
        await self._api.merge_patch(self._scale_path(), {"spec": {"replicas": replicas}})

    async def list_worker_pods(self) -> list[WorkerPod]:
        pods = await self._api.list_all(core_path("pods", self.namespace), label_selector=pod_selector(self.pool))
        return [worker_pod(p) for p in pods]

    async def set_deletion_cost(self, pod: str, cost: int) -> None:
        body = {"metadata": {"annotations": {DELETION_COST_ANNOTATION: str(cost)}}}
        try:
            await self._api.merge_patch(core_path("pods", self.namespace, pod), body)
        except NotFound:
            pass  # the pod is gone already: nothing to protect

    async def patch_status(self, status: dict[str, Any]) -> None:
        await self._pool_status.merge(self.namespace, self.pool, status)

    async def _uid(self) -> str:
        if self._pool_uid is None:
            body = await self._api.get(custom_path(WORKERPOOL_PLURAL, self.namespace, self.pool))
            self._pool_uid = str(body.get("metadata", {}).get("uid", ""))
        return self._pool_uid

    async def set_condition(self, type_: str, value: ConditionValue) -> bool:
        return await self._pool_status.set_condition(self.namespace, self.pool, type_, value)

    async def post_event(self, reason: str, message: str, *, warning: bool = False) -> None:
        ref = ObjectRef.workerpool(self.namespace, self.pool, await self._uid())
        post = self._recorder.warning if warning else self._recorder.normal
        post(ref, reason, message, component=EVENT_COMPONENT)
