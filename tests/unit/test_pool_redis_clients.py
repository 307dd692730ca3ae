"""One Redis client per distinct URL, shared by the pools that name it; Secrets followed; problems named.

Clients connect lazily, so no Redis is needed here (tests/integration/test_pools_on_their_own_redis.py
runs the same registry against real servers).
"""

from __future__ import annotations

import base64
from typing import Any

import pytest
from kubeworkers import connection
from kubeworkers.resources import WorkerPoolSpec
from kubeworkers_operator.adapters.kube import Forbidden
from kubeworkers_operator.adapters.pool_redis import PoolRedisUnavailable, RedisByPool

OWN = "redis://127.0.0.1:6379/0"
OTHER = "redis://:pw@127.0.0.1:6380/0"


class Secrets:
    def __init__(self) -> None:
        self.values: dict[str, str] = {}
        self.forbidden: set[str] = set()
        self.gets = 0

    async def get_or_none(self, path: str) -> dict[str, Any] | None:
        self.gets += 1
        name = path.rsplit("/", 1)[1]
        if name in self.forbidden:
            raise Forbidden(403, "GET", path, "secrets is forbidden")
        value = self.values.get(name)
        return None if value is None else {"data": {"url": base64.b64encode(value.encode()).decode()}}


def spec(secret: str | None) -> WorkerPoolSpec:
    extra = {} if secret is None else {"redis": {"secretName": secret}}
    return WorkerPoolSpec.model_validate({"image": "w:1", "imports": ["app"], **extra})


@pytest.fixture
def secrets() -> Secrets:
    return Secrets()


async def test_pools_naming_the_same_url_share_one_client_and_the_operators_own_url_is_its_own_client(
    secrets: Secrets,
) -> None:
    own = connection.connect_async(OWN)
    routes = RedisByPool(secrets, own, OWN)  # type: ignore[arg-type]
    secrets.values.update({"a": OTHER, "b": OTHER, "c": OWN})
    for pool, secret in (("p0", None), ("pa", "a"), ("pb", "b"), ("pc", "c")):
        routes.note_pool("ns", pool, spec(secret))
    assert await routes.client_for("ns", "p0") is own
    assert await routes.client_for("ns", "pc") is own
    shared = await routes.client_for("ns", "pa")
    assert shared is not own and await routes.client_for("ns", "pb") is shared
    assert [client for _, client in routes.in_use()] == [own, shared]
    labels = [label for label, _ in routes.in_use()]
    assert labels[0] == "the operator's own Redis (--redis-url)" and "Secret ns/a" in labels[1]
    assert not any("pw" in label or "6380" in label for label in labels)
    await routes.close()
    await own.aclose()


async def test_an_edited_secret_moves_its_pools_to_a_new_client_and_the_unused_one_is_closed(secrets: Secrets) -> None:
    own = connection.connect_async(OWN)
    routes = RedisByPool(secrets, own, OWN)  # type: ignore[arg-type]
    secrets.values["a"] = OTHER
    routes.note_pool("ns", "pa", spec("a"))
    before = await routes.client_for("ns", "pa")
    assert await routes.refresh() == set()  # unchanged: nothing to follow
    secrets.values["a"] = "redis://:pw2@127.0.0.1:6381/0"  # a rotated password
    (changed,) = await routes.refresh()
    assert changed.secret == "a"
    after = await routes.client_for("ns", "pa")
    assert after is not before
    assert await routes.retire_unused() == [before]
    assert [client for _, client in routes.in_use()] == [own, after]
    await routes.close()
    await own.aclose()


async def test_a_missing_or_forbidden_secret_makes_the_pool_unavailable_with_a_reason_naming_it(
    secrets: Secrets,
) -> None:
    own = connection.connect_async(OWN)
    routes = RedisByPool(secrets, own, OWN)  # type: ignore[arg-type]
    routes.note_pool("ns", "missing", spec("nope"))
    routes.note_pool("ns", "secret", spec("locked"))
    secrets.forbidden.add("locked")
    with pytest.raises(PoolRedisUnavailable, match=r"Secret ns/nope .* does not exist"):
        await routes.client_for("ns", "missing")
    with pytest.raises(PoolRedisUnavailable, match=r"may not read Secret ns/locked .*get on secrets"):
        await routes.client_for("ns", "secret")
    reads = secrets.gets
    with pytest.raises(PoolRedisUnavailable):
        await routes.client_for("ns", "missing")
    assert secrets.gets == reads  # remembered until the next refresh, not read again per Job
    assert [client for _, client in routes.in_use()] == [own]
    secrets.values["nope"] = OTHER
    await routes.refresh()
    assert await routes.client_for("ns", "missing") is not own
    await routes.close()
    await own.aclose()
