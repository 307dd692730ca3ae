"""A private ``redis-server`` or Redis Cluster for a pytest fixture to yield (one helper each, not
a copy per file)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.redis_cluster import RedisClusterNodes
from tests.support.redis_server import RedisServer


def private_redis(password: str | None = None, **options: object) -> Iterator[RedisServer]:
    """Start a :class:`RedisServer` (``options`` are its arguments; ``password``: ``requirepass``),
    yield it, and remove it afterwards. One that cannot start fails the test in one line, not
    with a traceback: usually a missing redis-server, and the message says how to install it."""
    if password is not None:
        extra = tuple(options.pop("extra_args", ()))  # type: ignore[arg-type]
        options["extra_args"] = ("--requirepass", password, *extra)
    server = RedisServer(**options)  # type: ignore[arg-type]
    try:
        server.start()
    except RuntimeError as exc:
        server.cleanup()
        pytest.fail(str(exc), pytrace=False)
    try:
        yield server
    finally:
        server.cleanup()


def private_cluster(masters: int = 3, replicas: int = 0) -> Iterator[RedisClusterNodes]:
    """Start a real Redis Cluster (:class:`RedisClusterNodes`), yield it, and remove it afterwards;
    one that cannot start fails the test in one line."""
    nodes = RedisClusterNodes(masters=masters, replicas=replicas)
    try:
        nodes.start()
    except (RuntimeError, OSError) as exc:
        nodes.cleanup()
        pytest.fail(f"the Redis Cluster did not start: {exc}", pytrace=False)
    try:
        yield nodes
    finally:
        nodes.cleanup()
