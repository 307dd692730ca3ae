"""Shared fixtures: a real Redis, the real local control plane, a namespace per test.

Markers: ``unit`` (no services), ``integration`` (Redis), ``e2e`` (control plane + Redis),
``chaos`` (fault scenarios: Redis and worker processes, tests/chaos/).
A missing service binary is a test *failure* with the fix in the message, never a skip.

Everything a run starts ends with it (docs/testing.md): processes are started through
hack/processes.py, so they die with this pytest process however it ends; the session
first reaps what a killed earlier run left behind; SIGTERM (a timeout) ends the run like
Ctrl-C, through the fixtures' teardown.
"""

from __future__ import annotations

import os
import signal
import types
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from hack import processes
from hack.local_cluster import tests_dir
from tests.support.redis_server import RedisServer

REPO = Path(__file__).resolve().parent.parent

# Property tests are judged by the examples they try, not by how fast this machine draws them:
# on 2 shared cores (CI, or a demo beside the suite) generation and each example can be slow,
# and hypothesis' speed checks would fail a correct test. Every example still runs.
settings.register_profile("kubeworkers", suppress_health_check=[HealthCheck.too_slow], deadline=None)
settings.load_profile("kubeworkers")


def _terminate_like_ctrl_c(signum: int, frame: types.FrameType | None) -> None:
    # The first SIGTERM tears the session down like Ctrl-C; a second one ends it at once
    # (and the parent-death signal still takes every child with it).
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    raise KeyboardInterrupt(f"signal {signum}")


def pytest_sessionstart(session: pytest.Session) -> None:
    processes.claim_run(tests_dir())
    signal.signal(signal.SIGTERM, _terminate_like_ctrl_c)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Tests take their marker from their folder, so nobody forgets it.
    for item in items:
        parts = Path(str(item.fspath)).parts
        for marker in ("unit", "integration", "e2e", "chaos"):
            if marker in parts:
                item.add_marker(getattr(pytest.mark, marker))


# --------------------------------------------------------------------------- Redis


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One redis-server for the session (AOF off); tests get a flushed database each."""
    try:
        server = RedisServer(aof=False).start()
    except RuntimeError as exc:
        pytest.fail(str(exc), pytrace=False)
    if server.version() < (7, 0):
        pytest.fail(f"redis-server {server.version()} is too old: kubeworkers needs >= 7.0", pytrace=False)
    yield server
    server.cleanup()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> Iterator[str]:
    import redis

    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    client.close()
    yield redis_server.url


@pytest.fixture
def redis_factory() -> Iterator[Callable[..., RedisServer]]:
    """Start private Redis servers (e.g. ``redis_factory(aof=True)``); all stopped at teardown."""
    servers: list[RedisServer] = []

    def start(aof: bool = False) -> RedisServer:
        try:
            server = RedisServer(aof=aof).start()
        except RuntimeError as exc:
            pytest.fail(str(exc), pytrace=False)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.cleanup()


# --------------------------------------------------------------------------- control plane


@pytest.fixture(scope="session")
def cluster() -> Iterator[object]:
    """The real control plane: ``KUBEWORKERS_KUBECONFIG`` if reachable, else ``hack/local-cluster.sh up``."""
    from tests.support.cluster import Cluster, ClusterError

    try:
        c = Cluster.from_environment()
    except ClusterError as exc:
        pytest.fail(str(exc), pytrace=False)
    yield c
    c.close()


@pytest.fixture
def namespace(cluster: object) -> Iterator[str]:
    """A fresh namespace per test, deleted afterwards (without waiting for finalization)."""
    from tests.support.cluster import Cluster

    assert isinstance(cluster, Cluster)
    name = f"t-{uuid.uuid4().hex[:10]}"
    cluster.kubectl("create", "namespace", name)
    yield name
    if os.environ.get("KUBEWORKERS_KEEP_NAMESPACES") != "1":
        cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)
