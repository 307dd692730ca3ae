"""The chart on the real control plane: install, the operator's actual rights, upgrade, uninstall.

kwok plays the kubelet, so the operator and Redis pods are scheduled and reported Running but
run no containers; these tests check what the apiserver holds and enforces. The operator's
behaviour under these rights is checked by running it with the ServiceAccount's own token.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from hack.polling import wait_for
from tests.support.cluster import Cluster
from tests.support.tools import CHART, MODES, kubernetes_version, run_helm, values_args

Obj = dict[str, Any]
# Owned by our chart only: what uninstall must leave behind is none of these.
CHART_KINDS = "deployments,statefulsets,services,secrets,serviceaccounts,roles,rolebindings,configmaps"
# Installs wait for these objects, never for pods to run: kwok pods run nothing.
NO_PVC = {"redis": {"persistence": {"enabled": False}}}


class Release:
    """One helm release of the chart in a test namespace, uninstalled at teardown."""

    def __init__(self, cluster: Cluster, namespace: str, workdir: Path) -> None:
        self.cluster = cluster
        self.namespace = namespace
        self.workdir = workdir
        self.name = f"kw{uuid.uuid4().hex[:6]}"
        self.fullname = f"{self.name}-kubeworkers"
        self.service_account = f"system:serviceaccount:{namespace}:{self.fullname}"
        self.installed = False

    def helm(self, *args: str, check: bool = True) -> Any:
        return run_helm(*args, "--namespace", self.namespace, check=check, env=self.cluster.env, timeout=300)

    def install(self, values: Mapping[str, object] | None = None) -> str:
        """Install; returns helm's output (with the rendered NOTES.txt)."""
        out: str = self.helm("install", self.name, str(CHART), *values_args(values, self.workdir)).stdout
        self.installed = True
        return out

    def upgrade(self, *args: str) -> None:
        self.helm("upgrade", self.name, str(CHART), *args)

    def uninstall(self) -> None:
        self.helm("uninstall", self.name, "--wait", "--timeout", "120s")
        self.installed = False

    def get(self, kind: str, name: str, namespace: str | None = None) -> Obj:
        ns = namespace or self.namespace
        return dict(json.loads(self.cluster.kubectl("get", kind, name, "-n", ns, "-o", "json").stdout))

    def owned(self, kinds: str, namespace: str) -> list[str]:
        out = self.cluster.kubectl(
            "get", kinds, "-n", namespace, "-l", f"app.kubernetes.io/instance={self.name}", "-o", "name"
        ).stdout
        return out.split()

    def can(self, verb: str, resource: str, *scope: str, name: str | None = None) -> bool:
        """What the apiserver's authorizer answers for the operator's ServiceAccount (on object ``name``)."""
        # kubectl reads "pods/exec" as the pod named exec: subresources go in --subresource.
        resource, _, subresource = resource.partition("/")
        sub = [f"--subresource={subresource}"] if subresource else []
        if name is not None:
            resource = f"{resource}/{name}"
        result = self.cluster.kubectl("auth", "can-i", verb, resource, *sub, f"--as={self.service_account}",
                                      *scope, check=False)
        answer = result.stdout.strip()
        assert answer in ("yes", "no"), f"kubectl auth can-i said {answer!r}: {result.stderr}"
        return answer == "yes"


@pytest.fixture
def release(cluster: Cluster, namespace: str, tmp_path: Path) -> Iterator[Release]:
    r = Release(cluster, namespace, tmp_path)
    yield r
    if r.installed:
        r.helm("uninstall", r.name, check=False)


def test_helm_install_creates_crds_operator_rbac_services_and_redis(cluster: Cluster, release: Release) -> None:
    out = release.install(NO_PVC)
    notes = out.split("NOTES:", 1)[1]
    assert f"rollout status deployment/{release.fullname}" in notes
    assert "kubectl get jobs.workers.io" in notes
    for crd in ("jobs.workers.io", "workerpools.workers.io"):
        cluster.kubectl("wait", "--for=condition=Established", f"crd/{crd}", "--timeout=60s")
    operator = release.get("deployment", release.fullname)
    assert operator["spec"]["replicas"] == 2 and operator["spec"]["strategy"]["type"] == "RollingUpdate"
    release.get("poddisruptionbudget", release.fullname)
    release.get("role", f"{release.fullname}-leader-election")
    release.get("serviceaccount", release.fullname)
    release.get("service", f"{release.fullname}-metrics")
    release.get("service", f"{release.fullname}-workers")
    release.get("service", f"{release.fullname}-redis")
    release.get("statefulset", f"{release.fullname}-redis")
    cluster.kubectl("get", "clusterrole", f"{release.namespace}-{release.fullname}")
    binding = json.loads(cluster.kubectl(
        "get", "clusterrolebinding", f"{release.namespace}-{release.fullname}", "-o", "json").stdout)
    assert binding["subjects"][0]["name"] == release.fullname
    # The apiserver accepted the pod template as written: the security context survived admission.
    pod = operator["spec"]["template"]["spec"]
    assert pod["containers"][0]["securityContext"]["readOnlyRootFilesystem"] is True
    # The scheduler placed an operator pod (kwok runs it as far as the API can tell).
    wait_for(lambda: bool(cluster.kubectl(
        "get", "pods", "-n", release.namespace, "-l", "app.kubernetes.io/component=operator",
        "--field-selector=status.phase=Running", "-o", "name").stdout.strip()),
        what="a Running operator pod", every=0.5)


# (verb, resource) the operator uses, in any namespace
OPERATOR_NEEDS = [
    ("watch", "jobs.workers.io"), ("get", "jobs.workers.io"), ("delete", "jobs.workers.io"),
    ("patch", "jobs.workers.io/status"), ("patch", "workerpools.workers.io/status"),
    ("list", "workerpools.workers.io"), ("create", "deployments.apps"), ("patch", "deployments.apps"),
    ("watch", "deployments.apps"), ("patch", "deployments.apps/scale"), ("list", "pods"), ("patch", "pods"),
    ("create", "events"), ("create", "poddisruptionbudgets.policy"), ("patch", "poddisruptionbudgets.policy"),
    ("get", "secrets"),  # a WorkerPool's spec.redis Secret, by name (docs/security.md)
]
# Things a compromised operator must still not be able to do.
OPERATOR_MUST_NOT = [
    ("list", "secrets"), ("watch", "secrets"), ("create", "secrets"), ("update", "secrets"),
    ("delete", "secrets"), ("delete", "pods"), ("delete", "namespaces"), ("delete", "workerpools.workers.io"),
    ("patch", "workerpools.workers.io"), ("update", "jobs.workers.io"), ("delete", "deployments.apps"),
    ("create", "pods"), ("create", "pods/exec"), ("update", "customresourcedefinitions"),
    ("delete", "customresourcedefinitions"), ("create", "clusterrolebindings"), ("escalate", "clusterroles"),
    ("impersonate", "serviceaccounts"), ("create", "serviceaccounts/token"), ("delete", "nodes"),
    ("update", "configmaps"), ("create", "jobs.batch"), ("delete", "poddisruptionbudgets.policy"),
    ("get", "leases.coordination.k8s.io"), ("update", "leases.coordination.k8s.io"),
]


def test_operator_service_account_can_do_exactly_what_the_operator_needs_cluster_wide(release: Release) -> None:
    release.install(NO_PVC)
    missing = [f"{v} {r}" for v, r in OPERATOR_NEEDS if not release.can(v, r, "--all-namespaces")]
    assert not missing, f"the operator lacks: {missing}"
    assert release.can("watch", "customresourcedefinitions.apiextensions.k8s.io")
    granted = [f"{v} {r}" for v, r in OPERATOR_MUST_NOT if release.can(v, r, "--all-namespaces")]
    assert not granted, f"the operator may: {granted}"
    assert not release.can("list", "secrets", "-n", release.namespace), "not even its own namespace's Secrets"
    # The console's rights come only with ui.enabled (next test).
    assert not release.can("create", "tokenreviews.authentication.k8s.io")
    assert not release.can("create", "subjectaccessreviews.authorization.k8s.io")
    assert not release.can("list", "events", "--all-namespaces")


def test_ui_enabled_adds_the_console_service_and_exactly_the_rights_its_authorisation_needs(release: Release) -> None:
    notes = release.install({**NO_PVC, "ui": {"enabled": True, "actions": True}})
    assert f"port-forward svc/{release.fullname}-ui 8089" in notes
    service = release.get("service", f"{release.fullname}-ui")
    assert service["spec"]["type"] == "ClusterIP" and service["spec"]["ports"][0]["port"] == 8089
    assert release.can("create", "tokenreviews.authentication.k8s.io")
    assert release.can("create", "subjectaccessreviews.authorization.k8s.io")
    assert release.can("list", "events", "--all-namespaces")
    # Asking questions, never more: no reading reviews back, no local reviews, no impersonation.
    assert not release.can("get", "tokenreviews.authentication.k8s.io")
    assert not release.can("create", "localsubjectaccessreviews.authorization.k8s.io", "-n", release.namespace)
    assert not release.can("impersonate", "users")
    assert not release.can("watch", "events", "--all-namespaces")


def test_operator_may_read_and_renew_only_its_own_lease_and_create_leases_only_in_its_namespace(
        release: Release) -> None:
    release.install(NO_PVC)
    lease, own = "leases.coordination.k8s.io", ["-n", release.namespace]
    assert release.can("get", lease, *own, name=release.fullname)
    assert release.can("update", lease, *own, name=release.fullname)
    assert release.can("create", lease, *own)
    assert not release.can("delete", lease, *own, name=release.fullname)
    assert not release.can("update", lease, *own, name="someone-elses")
    assert not release.can("get", lease, "-n", "kube-system", name="kube-controller-manager")
    assert not release.can("create", lease, "-n", "default")


def test_namespaced_install_confines_the_operator_to_the_watched_namespace(
        cluster: Cluster, release: Release) -> None:
    watched = f"t-{uuid.uuid4().hex[:10]}"
    cluster.kubectl("create", "namespace", watched)
    try:
        release.install({"redis": {"persistence": {"enabled": False}}, "operator": {"watchNamespace": watched}})
        for verb, resource in OPERATOR_NEEDS:
            assert release.can(verb, resource, "-n", watched), f"{verb} {resource} in {watched}"
            assert not release.can(verb, resource, "-n", "default"), f"{verb} {resource} outside {watched}"
            assert not release.can(verb, resource, "--all-namespaces"), f"{verb} {resource} cluster-wide"
        assert release.can("list", "customresourcedefinitions.apiextensions.k8s.io")
        assert not release.can("delete", "namespaces") and not release.can("list", "secrets", "-n", watched)
        args = release.get("deployment", release.fullname)["spec"]["template"]["spec"]["containers"][0]["args"]
        assert f"--namespace={watched}" in args
        # Workers in the watched namespace can read the Redis URL from their own namespace.
        release.get("secret", f"{release.fullname}-redis", namespace=watched)
    finally:
        cluster.kubectl("delete", "namespace", watched, "--wait=false", check=False)


def _redis_secret(release: Release) -> dict[str, str]:
    data = release.get("secret", f"{release.fullname}-redis")["data"]
    return {k: base64.b64decode(v).decode() for k, v in data.items()}


def test_helm_upgrade_applies_new_values_and_keeps_the_generated_redis_password(release: Release) -> None:
    release.install(NO_PVC)
    before = _redis_secret(release)
    assert len(before["password"]) == 32
    # The documented upgrade (docs/install.md): CRDs first, server-side, then the release.
    release.cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CHART / "crds"))
    release.cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s",
                            "crd/jobs.workers.io", "crd/workerpools.workers.io")
    release.upgrade("--reuse-values", "--set", "operator.logLevel=DEBUG")
    env = {e["name"]: e.get("value") for e in
           release.get("deployment", release.fullname)["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["KUBEWORKERS_LOG_LEVEL"] == "DEBUG"
    assert _redis_secret(release) == before, "an upgrade must not lock clients out of the running Redis"
    history = release.helm("history", release.name, "-o", "json").stdout
    assert [h["status"] for h in json.loads(history)] == ["superseded", "deployed"]


def test_helm_upgrade_can_switch_to_an_external_redis(release: Release, redis_url: str) -> None:
    release.install(NO_PVC)
    release.upgrade("--reuse-values", "--set", "redis.enabled=false", "--set", f"redis.url={redis_url}")
    assert _redis_secret(release) == {"url": redis_url}
    assert not release.owned("statefulsets", release.namespace)


def test_helm_uninstall_leaves_nothing_of_the_release_behind_but_the_crds(
        cluster: Cluster, release: Release) -> None:
    extra = f"t-{uuid.uuid4().hex[:10]}"
    cluster.kubectl("create", "namespace", extra)
    try:
        release.install({"redis": {"secretNamespaces": [extra], "persistence": {"enabled": False}},
                         "metrics": {"grafanaDashboard": {"enabled": True}}})
        assert release.owned(CHART_KINDS, release.namespace)
        assert release.owned("secrets", extra)
        release.uninstall()
        wait_for(lambda: not release.owned(CHART_KINDS + ",pods", release.namespace), what="namespaced objects gone",
                 every=0.5)
        assert not release.owned("secrets,services", extra)
        cluster_scoped = cluster.kubectl(
            "get", "clusterroles,clusterrolebindings", "-l", f"app.kubernetes.io/instance={release.name}",
            "-o", "name").stdout
        assert cluster_scoped.strip() == ""
        # Kept on purpose (docs/install.md): deleting them would delete every Job and WorkerPool.
        cluster.kubectl("get", "crd", "jobs.workers.io", "workerpools.workers.io")
    finally:
        cluster.kubectl("delete", "namespace", extra, "--wait=false", check=False)


def test_a_wrong_value_is_refused_by_helm_install_and_nothing_is_created(
        cluster: Cluster, release: Release) -> None:
    result = release.helm("install", release.name, str(CHART), "--set", "operator.port=http", check=False)
    assert result.returncode != 0 and "port" in result.stderr
    assert release.helm("status", release.name, check=False).returncode != 0
    assert not release.owned(CHART_KINDS, release.namespace)



# prometheus-operator's CRDs are not installed on the test control plane; those kinds are
# checked by the unit tests' parsing only.
NEEDS_PROMETHEUS_OPERATOR = {"ServiceMonitor", "PodMonitor", "PrometheusRule"}


@pytest.mark.parametrize("mode", sorted(MODES))
def test_every_install_mode_is_accepted_by_the_apiserver(
        mode: str, cluster: Cluster, namespace: str, tmp_path: Path) -> None:
    # The modes name namespaces team-a/team-b; point them at real ones for the server dry run.
    other = f"t-{uuid.uuid4().hex[:10]}"
    cluster.kubectl("create", "namespace", other)
    try:
        text = json.dumps(MODES[mode]).replace("team-a", namespace).replace("team-b", other)
        rendered = run_helm("template", "kw", str(CHART), "--namespace", namespace, "--kube-version",
                            kubernetes_version(), *values_args(json.loads(text), tmp_path)).stdout
        docs = [d for d in yaml.safe_load_all(rendered) if d and d["kind"] not in NEEDS_PROMETHEUS_OPERATOR]
        assert docs
        result = cluster.kubectl("apply", "--dry-run=server", "-f", "-", input=yaml.safe_dump_all(docs),
                                 check=False)
        assert result.returncode == 0, result.stderr
        assert len(result.stdout.strip().splitlines()) == len(docs), result.stdout
    finally:
        cluster.kubectl("delete", "namespace", other, "--wait=false", check=False)
