"""Fixtures of the e2e tests (the control plane itself, ``cluster`` and ``namespace``, come from
tests/conftest.py; the helpers these build on are in tests/e2e/operator_fixtures.py).

Two kinds of operator run here:

- ``operator``: one per test, started with ``--namespace <the test's namespace>``, on the
  shared test cluster. Most tests use it.
- ``cluster_wide_operator``: the operator's default mode, without ``--namespace``, as the
  chart and ``make demo`` run it. It acts on every namespace it sees, so on the shared
  cluster it would enqueue and patch the Jobs of every other test. It therefore runs on a
  control plane of its own (``cluster_wide_cluster``: ``.local/clusterwide/``), with a Redis
  of its own, and nothing else runs there; one operator serves all tests of a module.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from hack.local_cluster import LocalCluster
from tests.e2e.operator_fixtures import LOG_ROOT, OperatorProcess, install_crds
from tests.support.cluster import Cluster, ClusterError
from tests.support.pod_runner import PodRunner
from tests.support.redis_fixtures import private_redis
from tests.support.redis_server import RedisServer

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def crds_installed(cluster: Cluster) -> Cluster:
    """The CRDs from crds/ applied to the cluster and Established; returns the cluster."""
    install_crds(cluster)
    return cluster


@pytest.fixture(scope="session")
def crds(crds_installed: Cluster) -> None:
    """The project's CRDs, installed and established."""


@pytest.fixture
def redis_secret(cluster: Cluster, namespace: str, redis_url: str) -> str:
    """The Secret the worker pods read the Redis URL from (``kubeworkers-redis``, key ``url``)."""
    create_redis_secret(cluster, namespace, redis_url)
    return "kubeworkers-redis"


def create_redis_secret(cluster: Cluster, namespace: str, redis_url: str) -> None:
    cluster.kubectl("create", "secret", "generic", "kubeworkers-redis", "-n", namespace,
                    f"--from-literal=url={redis_url}")


@pytest.fixture
def operator(cluster: Cluster, crds: None, namespace: str, redis_url: str, redis_secret: str,  # noqa: PLR0917
             request: pytest.FixtureRequest) -> Iterator[OperatorProcess]:
    """A running operator serving the test's namespace."""
    op = OperatorProcess(cluster, redis_url, [namespace], LOG_ROOT / request.node.name)
    op.start()
    yield op
    op.stop()


@pytest.fixture
def demo_pool(cluster: Cluster, namespace: str, operator: OperatorProcess,
              request: pytest.FixtureRequest) -> Iterator[PodRunner]:
    """Runs every worker pod of the namespace as a local ``kubeworkers worker`` process.

    The pool itself is applied by the test (it is part of what the test shows).
    """
    runner = PodRunner(cluster, namespace, "workers.io/pool",
                       extra_env={"KUBEWORKERS_METRICS_PORT": "0"},
                       log_dir=LOG_ROOT / request.node.name / "pods")
    with runner:
        yield runner


# --------------------------------------------------------------------------- cluster-wide mode


@pytest.fixture(scope="session")
def cluster_wide_cluster() -> Iterator[Cluster]:
    """The control plane of the cluster-wide operator: ``KUBEWORKERS_CLUSTERWIDE_KUBECONFIG``,
    else a second local one (``.local/clusterwide/``), started like the first."""
    explicit = os.environ.get("KUBEWORKERS_CLUSTERWIDE_KUBECONFIG")
    try:
        c = Cluster(Path(explicit), started_here=False) if explicit else Cluster.start_local(
            LocalCluster.for_cluster_wide_tests())
    except ClusterError as exc:
        pytest.fail(str(exc), pytrace=False)
    install_crds(c)
    yield c
    c.close()


@pytest.fixture(scope="module")
def cluster_wide_redis() -> Iterator[RedisServer]:
    """The cluster-wide operator's own Redis (the session one is flushed by every integration test)."""
    yield from private_redis()


@pytest.fixture(scope="module")
def cluster_wide_operator(cluster_wide_cluster: Cluster, cluster_wide_redis: RedisServer,
                          request: pytest.FixtureRequest) -> Iterator[OperatorProcess]:
    """One operator without ``--namespace`` for the module's tests: it serves every namespace."""
    log_dir = LOG_ROOT / f"cluster-wide-{request.node.name}"
    op = OperatorProcess(cluster_wide_cluster, cluster_wide_redis.url, [], log_dir)
    op.start()
    yield op
    op.stop()


@pytest.fixture
def cluster_wide_namespaces(cluster_wide_cluster: Cluster, cluster_wide_operator: OperatorProcess,
                            request: pytest.FixtureRequest) -> Iterator[list[str]]:
    """Two fresh namespaces on the cluster-wide operator's cluster, each with the Redis Secret and
    a kubelet stand-in for its worker pods."""
    cluster = cluster_wide_cluster
    names = [f"cw-{uuid.uuid4().hex[:8]}" for _ in range(2)]
    runners = []
    try:
        for name in names:
            cluster.kubectl("create", "namespace", name)
            create_redis_secret(cluster, name, cluster_wide_operator.redis_url)
            runner = PodRunner(cluster, name, "workers.io/pool", extra_env={"KUBEWORKERS_METRICS_PORT": "0"},
                               log_dir=LOG_ROOT / request.node.name / name)
            runners.append(runner.start())
        yield names
    finally:
        for runner in runners:
            runner.stop()
        for name in names:
            cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)
