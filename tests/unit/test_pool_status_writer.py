"""The one writer of WorkerPool.status: what it remembers per pool, and when it forgets."""

from __future__ import annotations

from typing import Any

from kubeworkers_operator.adapters.pool_status import PoolStatusWriter


class RecordingApi:
    def __init__(self) -> None:
        self.patches: list[tuple[str, dict[str, Any]]] = []

    async def merge_patch(self, path: str, patch: dict[str, Any]) -> dict[str, Any]:
        self.patches.append((path, patch))
        return {}


async def test_a_pool_recreated_under_the_same_name_gets_its_replica_counts_written() -> None:
    api = RecordingApi()
    writer = PoolStatusWriter(api)  # type: ignore[arg-type]
    await writer.mirror_replicas("ns", "demo", {"replicas": 1, "readyReplicas": 1})
    await writer.mirror_replicas("ns", "demo", {"replicas": 1, "readyReplicas": 1})
    assert len(api.patches) == 1  # unchanged counts are not written again

    writer.forget("ns", "demo")  # the pool was deleted
    await writer.mirror_replicas("ns", "demo", {"replicas": 1, "readyReplicas": 1})
    assert len(api.patches) == 2


async def test_what_the_writer_remembers_stays_bounded_by_the_pools_that_exist() -> None:
    writer = PoolStatusWriter(RecordingApi())  # type: ignore[arg-type]
    for i in range(100):
        await writer.mirror_replicas("ns", f"pool-{i}", {"replicas": 1})
        writer.forget("ns", f"pool-{i}")
    assert writer.remembered() == 0
