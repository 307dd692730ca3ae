"""The orphan sweep: cancel the jobs whose Job was deleted while the operator was not watching.

Deletion uses no finalizer (see :mod:`.jobs`), so a Job deleted while the operator
was down left its job queued or running in Redis; this periodic chore scans the
served namespaces' job records and cancels those. Every candidate is confirmed
absent with a GET first: a lagging watch must never get a live Job cancelled.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from kubeworkers import queue
from kubeworkers.protocol import FINISHED_STATES, is_sdk_job, job_object_of, record_key_pattern

from kubeworkers_operator.model.index import ClusterIndex
from kubeworkers_operator.runtime import Runtime

logger = logging.getLogger(__name__)

#: The record fields the sweep reads (``HMGET``), in this order.
HEAD_FIELDS = ("job_id", "uid", "namespace", "pool", "state")


@dataclass(frozen=True)
class RecordHead:
    """The few fields of a job record the sweep decides on."""

    job_id: str
    uid: str
    namespace: str
    pool: str
    state: str


def _text(value: bytes | str | None) -> str | None:
    return value.decode() if isinstance(value, bytes) else value


def suspect(values: Sequence[bytes | str | None], index: ClusterIndex) -> RecordHead | None:
    """The record (``HEAD_FIELDS`` values) if it may be an orphan: an unfinished job of a Job CR the
    index does not hold under that uid. None for SDK jobs, finished or incomplete records, known Jobs."""
    job_id, uid, namespace, pool, state = (_text(v) for v in values)
    if not (job_id and uid and namespace and pool and state) or is_sdk_job(job_id, uid):
        return None
    if state in FINISHED_STATES:
        return None
    known = index.jobs.get(job_id)
    if known is not None and known.uid == uid:
        return None
    return RecordHead(job_id, uid, namespace, pool, state)


async def sweep_orphans(rt: Runtime) -> int:
    """Cancel unfinished jobs whose Job no longer exists; returns how many."""
    patterns = [record_key_pattern(ns) for ns in rt.settings.namespaces] or [record_key_pattern()]
    cancelled = 0
    for pattern in patterns:
        async for key in rt.redis.scan_iter(match=pattern, count=1000):
            head = suspect(await rt.redis.hmget(key, list(HEAD_FIELDS)), rt.index)
            if head is None:
                continue
            live = await rt.writer.fetch(head.namespace, job_object_of(head.job_id)[1])
            if live is not None and live.uid == head.uid:
                continue
            if await queue.cancel(rt.redis, head.namespace, head.pool, head.job_id):
                cancelled += 1
                rt.metrics.cancels.labels(via="orphan").inc()
                logger.info("cancelled %s: its Job was deleted while the operator was not watching", head.job_id)
    return cancelled
