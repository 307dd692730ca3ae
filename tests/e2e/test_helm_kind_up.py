"""hack/kind-up.sh, run for real except for Docker and kind, which this machine does not have.

``docker`` and ``kind`` are replaced by stubs that record their arguments; kubectl and helm are
real and talk to the test control plane through a copy of its kubeconfig whose context is
named as kind names it. The operator and worker pods run as local processes (kwok runs no
containers), so the script's own wait for the example Job to succeed is the assertion.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.e2e.operator_fixtures import LOG_ROOT, REPO, OperatorProcess
from tests.support.cluster import Cluster
from tests.support.pod_runner import PodRunner
from tests.support.tools import helm_binary

STUB = """#!/bin/sh
echo "{name} $*" >> "{log}"
{body}
exit 0
"""


def kind_named_kubeconfig(cluster: Cluster, path: Path, kind_cluster: str) -> Path:
    config = yaml.safe_load(Path(cluster.kubeconfig).read_text())
    current = next(c for c in config["contexts"] if c["name"] == config["current-context"])
    current["name"] = f"kind-{kind_cluster}"
    config["current-context"] = current["name"]
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture
def examples_namespace(cluster: Cluster) -> Iterator[str]:
    name = f"t-{uuid.uuid4().hex[:10]}"
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


def test_kind_up_builds_loads_installs_and_runs_the_example_job(  # noqa: PLR0917 (fixtures)
        cluster: Cluster, crds: None, namespace: str, examples_namespace: str, redis_url: str,
        tmp_path: Path, request: pytest.FixtureRequest) -> None:
    calls = tmp_path / "calls.log"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    stubs = {
        "docker": "",
        # `kind get clusters` lists the cluster, so the script reuses it instead of creating one.
        "kind": 'if [ "$1 $2" = "get clusters" ]; then echo kubeworkers; fi',
    }
    for name, body in stubs.items():
        (bin_dir / name).write_text(STUB.format(name=name, log=calls, body=body))
        (bin_dir / name).chmod(0o755)
    kubeconfig = kind_named_kubeconfig(cluster, tmp_path / "kubeconfig", "kubeworkers")
    env = {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "KUBECONFIG": str(kubeconfig),
        "KUBECTL": str(REPO / ".venv" / "bin" / "kubectl"),
        "HELM": str(helm_binary()),
        "KUBEWORKERS_NAMESPACE": namespace,
        "KUBEWORKERS_EXAMPLES_NAMESPACE": examples_namespace,
        # The test cluster has no volume provisioner and kwok runs no Redis: use the test's Redis.
        "KUBEWORKERS_HELM_ARGS": f"--set redis.enabled=false --set redis.url={redis_url}",
        "KUBEWORKERS_EXAMPLE_TIMEOUT": "120",
    }
    # The chart's operator pod does not run under kwok, so run the operator here, as its pod would
    # (release "kubeworkers": its Redis Secret is the operator's default, kubeworkers-redis).
    cluster.kubectl("create", "namespace", examples_namespace)
    operator = OperatorProcess(cluster, redis_url, [examples_namespace], LOG_ROOT / request.node.name)
    runner = PodRunner(cluster, examples_namespace, "workers.io/pool", extra_env={"KUBEWORKERS_METRICS_PORT": "0"},
                       log_dir=LOG_ROOT / request.node.name / "pods")
    operator.start()
    try:
        with runner:
            result = subprocess.run(["bash", str(REPO / "hack" / "kind-up.sh")], env=env, capture_output=True,
                                    text=True, timeout=600, check=False)
        # The chart runs the image that was built and loaded, and never pulls it.
        deployment = cluster.kubectl("get", "deployment", "kubeworkers", "-n", namespace, "-o",
                                     "jsonpath={.spec.template.spec.containers[0].image} "
                                     "{.spec.template.spec.containers[0].imagePullPolicy}", check=False).stdout
    finally:
        operator.stop()
        subprocess.run([str(helm_binary()), "uninstall", "kubeworkers", "-n", namespace], env=env,
                       capture_output=True, check=False)
    assert result.returncode == 0, result.stderr[-4000:]
    assert "has not succeeded yet" not in result.stderr, result.stderr[-4000:]
    assert deployment == "kubeworkers-operator:dev Never"
    recorded = [shlex.split(line) for line in calls.read_text().splitlines()]
    builds = [c for c in recorded if c[:2] == ["docker", "build"]]
    assert {c[c.index("-t") + 1] for c in builds} == {"kubeworkers-operator:dev", "kubeworkers-worker:dev"}
    assert ["kind", "load", "docker-image", "--name", "kubeworkers",
            "kubeworkers-operator:dev", "kubeworkers-worker:dev"] in recorded
    table = cluster.kubectl("get", "jobs.workers.io", "-n", examples_namespace).stdout
    assert "word-count" in table and "Succeeded" in table
