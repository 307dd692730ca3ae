"""Kubernetes Events on Jobs and WorkerPools, so ``kubectl describe`` tells the story.

Events are posted in the background through a bounded queue and a few poster
tasks: a status-sync batch of a thousand finished jobs must never wait for a
thousand Event POSTs, and losing an Event under extreme pressure is better
than blocking status convergence (Events are best-effort in Kubernetes too).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import os
import uuid
from dataclasses import dataclass

from kubeworkers.resources import API_VERSION, JOB_KIND, WORKERPOOL_KIND

from kubeworkers_operator.adapters.kube import ApiError, KubeApi, core_path
from kubeworkers_operator.adapters.metrics import OperatorMetrics

logger = logging.getLogger(__name__)

#: ``source.component`` of the operator's Events.
COMPONENT = "kubeworkers-operator"
#: The Event API caps messages at 1 KiB.
MESSAGE_LIMIT = 1000


@dataclass(frozen=True)
class ObjectRef:
    """Enough of an object to hang an Event on it."""

    api_version: str
    kind: str
    namespace: str
    name: str
    uid: str

    @classmethod
    def job(cls, namespace: str, name: str, uid: str) -> ObjectRef:
        return cls(API_VERSION, JOB_KIND, namespace, name, uid)

    @classmethod
    def workerpool(cls, namespace: str, name: str, uid: str) -> ObjectRef:
        return cls(API_VERSION, WORKERPOOL_KIND, namespace, name, uid)


@dataclass(frozen=True)
class PendingEvent:
    ref: ObjectRef
    type: str  # "Normal" or "Warning"
    reason: str
    message: str
    component: str = COMPONENT
    """Who reports it (``source.component``): the operator, or a pool's autoscaler."""


class EventRecorder:
    """Queue Events and post them with bounded concurrency; drop (and count) when overloaded."""

    def __init__(self, api: KubeApi, metrics: OperatorMetrics, *, posters: int = 4, capacity: int = 10_000) -> None:
        self._api = api
        self._metrics = metrics
        self._queue: asyncio.Queue[PendingEvent] = asyncio.Queue(maxsize=capacity)
        self._posters = posters
        self._tasks: list[asyncio.Task[None]] = []
        self._host = os.environ.get("POD_NAME") or os.uname().nodename

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._post_forever(), name=f"event-poster-{i}") for i in range(self._posters)
        ]

    async def stop(self, drain_timeout: float = 5.0) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._queue.join(), drain_timeout)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def normal(self, ref: ObjectRef, reason: str, message: str, *, component: str = COMPONENT) -> None:
        self._put(PendingEvent(ref, "Normal", reason, message, component))

    def warning(self, ref: ObjectRef, reason: str, message: str, *, component: str = COMPONENT) -> None:
        self._put(PendingEvent(ref, "Warning", reason, message, component))

    def _put(self, event: PendingEvent) -> None:
        try:
            self._queue.put_nowait(event)
        except asyncio.QueueFull:
            self._metrics.k8s_events.labels(type="dropped").inc()

    async def _post_forever(self) -> None:
        while True:
            event = await self._queue.get()
            try:
                await self._post(event)
            except ApiError as exc:
                # The object may be gone already, or its namespace terminating: nothing to tell.
                logger.debug("could not post event %s: %s", event.reason, exc)
            except Exception:
                logger.exception("could not post event %s", event.reason)
            finally:
                self._queue.task_done()

    async def _post(self, event: PendingEvent) -> None:
        now = datetime.datetime.now(datetime.UTC)
        ts = now.strftime("%Y-%m-%dT%H:%M:%SZ")
        micro = now.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        ref = event.ref
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": f"{ref.name[:200]}.{uuid.uuid4().hex[:12]}", "namespace": ref.namespace},
            "involvedObject": {
                "apiVersion": ref.api_version,
                "kind": ref.kind,
                "namespace": ref.namespace,
                "name": ref.name,
                "uid": ref.uid,
            },
            "type": event.type,
            "reason": event.reason,
            "message": event.message[:MESSAGE_LIMIT],
            "source": {"component": event.component},
            "reportingComponent": event.component,
            "reportingInstance": self._host[:128],
            "firstTimestamp": ts,
            "lastTimestamp": ts,
            "eventTime": micro,
            "action": event.reason,
            "count": 1,
        }
        await self._api.create(core_path("events", ref.namespace), body)
        self._metrics.k8s_events.labels(type=event.type).inc()
