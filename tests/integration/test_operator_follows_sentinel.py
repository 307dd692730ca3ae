"""The operator's Redis client follows the master the Sentinels name, not the node its connections reach.

In a planned failover (``SENTINEL FAILOVER``) the replica is promoted at once and the old master is
demoted only when the Sentinels next look at it, about 10 s later; until then it takes writes and
the failover loses them. redis-py's asyncio pool keeps reusing its connections to it, so an
operator that only reacted to errors enqueued Job CRs there for those seconds. The leader's
``redis-master`` chore asks the Sentinels every second and drops connections to a moved master.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from kubeworkers import connection
from kubeworkers_operator import lifecycle
from kubeworkers_operator.settings import OperatorSettings

from tests.support.sentinel import SentinelSet


@pytest.fixture
def sentinels() -> Iterator[SentinelSet]:
    with SentinelSet() as s:
        yield s


async def test_the_leaders_writes_reach_the_new_master_within_a_chore_turn_of_a_planned_failover(
    sentinels: SentinelSet,
) -> None:
    client = connection.connect_async(sentinels.url)
    try:
        rt: Any = SimpleNamespace(settings=OperatorSettings(), redis=client)
        chore = {c.name: c for c in lifecycle.chores(rt, controllers=object())}["redis-master"]  # type: ignore[arg-type]
        await client.set("before", "1")
        old = sentinels.master()
        await asyncio.to_thread(sentinels.begin_failover)
        new = sentinels.master()
        assert new.port != old.port
        with sentinels.node_client(old) as c:
            assert c.info("replication")["role"] == "master", "the old master was demoted at once"
        # The hazard is real: without the chore, the pooled connection still writes to the old master.
        await client.set("unfollowed", "1")
        with sentinels.node_client(old) as c:
            assert c.get("unfollowed") == "1"
        await chore.run()
        await client.set("followed", "1")
        with sentinels.node_client(new) as c:
            assert c.get("followed") == "1", "the write after the chore's turn did not reach the new master"
        with sentinels.node_client(old) as c:
            assert c.get("followed") is None
    finally:
        await connection.aclose(client)
