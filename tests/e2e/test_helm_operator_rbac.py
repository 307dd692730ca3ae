"""The operator runs a Job end to end with nothing but the rights the chart gives its ServiceAccount.

The chart is installed for real; then the operator process authenticates with a token of the
chart's ServiceAccount (``kubectl create token``), not as cluster admin. If the chart's RBAC
missed a verb the operator uses, the Job would never succeed and the log would show a 403.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.operator_fixtures import LOG_ROOT, REPO, OperatorProcess, get_job, wait_for
from tests.support.cluster import Cluster
from tests.support.pod_runner import PodRunner
from tests.support.tools import CHART, run_helm, values_args


def service_account_kubeconfig(cluster: Cluster, namespace: str, service_account: str, path: Path) -> Path:
    """A kubeconfig for the admin kubeconfig's server that authenticates as the ServiceAccount."""
    token = cluster.kubectl("create", "token", service_account, "-n", namespace, "--duration=1h").stdout.strip()
    admin = yaml.safe_load(Path(cluster.kubeconfig).read_text())
    context = next(c for c in admin["contexts"] if c["name"] == admin["current-context"])["context"]
    server = next(c for c in admin["clusters"] if c["name"] == context["cluster"])
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "sa",
        "clusters": [{"name": "kw", "cluster": server["cluster"]}],
        "users": [{"name": "sa", "user": {"token": token}}],
        "contexts": [{"name": "sa", "context": {"cluster": "kw", "user": "sa", "namespace": namespace}}],
    }))
    return path


@pytest.fixture(params=["cluster-wide", "namespaced"])
def chart_operator(request: pytest.FixtureRequest, cluster: Cluster, crds: None, namespace: str,  # noqa: PLR0917 (fixtures arrive as arguments)
                   redis_url: str, tmp_path: Path) -> Iterator[OperatorProcess]:
    """The chart installed with an external Redis, and the operator running as its ServiceAccount."""
    release = f"kw{uuid.uuid4().hex[:6]}"
    fullname = f"{release}-kubeworkers"
    values: dict[str, object] = {"redis": {"enabled": False, "url": redis_url}}
    if request.param == "namespaced":
        values["operator"] = {"watchNamespace": namespace}
    run_helm("install", release, str(CHART), "-n", namespace, *values_args(values, tmp_path), env=cluster.env)
    as_operator = Cluster(service_account_kubeconfig(cluster, namespace, fullname, tmp_path / "sa.kubeconfig"),
                          started_here=False)
    assert as_operator.kubectl("auth", "whoami", "-o", "jsonpath={.status.userInfo.username}").stdout == (
        f"system:serviceaccount:{namespace}:{fullname}")
    # The same flags the chart's Deployment passes (--default-redis-secret names the chart's
    # Secret, --lease-name the Lease its Role grants); --namespace keeps a cluster-wide operator
    # off other tests' namespaces, and puts the Lease in the release namespace, as POD_NAMESPACE would.
    op = OperatorProcess(as_operator, redis_url, [namespace], LOG_ROOT / request.node.name,
                         extra_args=["--default-redis-secret", f"{fullname}-redis", "--lease-name", fullname])
    op.start()
    yield op
    op.stop()
    run_helm("uninstall", release, "-n", namespace, env=cluster.env, check=False)


def test_operator_with_only_the_charts_rights_runs_the_example_job_to_success(
        cluster: Cluster, namespace: str, chart_operator: OperatorProcess, request: pytest.FixtureRequest) -> None:
    runner = PodRunner(cluster, namespace, "workers.io/pool", extra_env={"KUBEWORKERS_METRICS_PORT": "0"},
                       log_dir=LOG_ROOT / request.node.name / "pods")
    with runner:
        cluster.kubectl("apply", "-n", namespace, "-f", str(REPO / "examples" / "workerpool.yaml"),
                        "-f", str(REPO / "examples" / "job.yaml"))

        def finished() -> dict[str, Any] | None:
            job = get_job(cluster, namespace, "word-count")
            phase = (job or {}).get("status", {}).get("phase")
            return job if phase in ("Succeeded", "Failed") else None

        job = wait_for(finished, timeout=120, what="word-count to finish")
    assert job["status"]["phase"] == "Succeeded", job["status"]
    # The worker Deployment the operator created reads the chart's Secret.
    deployment = cluster.kubectl("get", "deployment", "demo-workers", "-n", namespace, "-o", "yaml").stdout
    assert f"name: {chart_operator.extra_args[1]}" in deployment
    logs = "".join(p.read_text(errors="replace") for p in chart_operator.log_dir.glob("operator-*.log"))
    assert "Forbidden" not in logs and " 403" not in logs, logs[-4000:]
