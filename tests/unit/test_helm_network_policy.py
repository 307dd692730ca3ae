"""Who the chart's NetworkPolicies let reach Redis, decided by NetworkPolicy's own rules.

The rendered policies are evaluated here for concrete pods, because the test control plane
has no CNI: the apiserver accepts the policies (tests/e2e/test_helm_install.py, every mode),
but nothing there enforces them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.support.tools import MODES, RELEASE_NAMESPACE, render_chart

Obj = dict[str, Any]


@dataclass
class Pod:
    namespace: str
    labels: dict[str, str] = field(default_factory=dict)
    namespace_labels: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Every namespace carries its name as a label (Kubernetes >= 1.22).
        self.namespace_labels = {"kubernetes.io/metadata.name": self.namespace, **self.namespace_labels}


def selects(selector: Obj, labels: dict[str, str]) -> bool:
    """A metav1.LabelSelector; ``{}`` selects everything."""
    if not all(labels.get(k) == v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        ok = {"In": key in labels and labels[key] in values, "NotIn": labels.get(key) not in values,
              "Exists": key in labels, "DoesNotExist": key not in labels}[op]
        if not ok:
            return False
    return True


def peer_admits(peer: Obj, policy_namespace: str, pod: Pod) -> bool:
    if "ipBlock" in peer:
        return False  # pod addresses are not what these rules are about
    if "namespaceSelector" in peer:
        in_namespace = selects(peer["namespaceSelector"], pod.namespace_labels)
    else:
        in_namespace = pod.namespace == policy_namespace  # a podSelector alone: the policy's namespace
    return in_namespace and selects(peer.get("podSelector", {}), pod.labels)


def admits(policy: Obj, pod: Pod, port: str) -> bool:
    """Whether an Ingress policy lets ``pod`` connect to ``port`` of the pods it selects."""
    spec, namespace = policy["spec"], policy["metadata"]["namespace"]
    assert spec["policyTypes"] == ["Ingress"]
    for rule in spec.get("ingress") or []:
        peers, ports = rule.get("from"), rule.get("ports")
        if peers and not any(peer_admits(p, namespace, pod) for p in peers):
            continue
        if ports and not any(p.get("port") == port for p in ports):
            continue
        return True
    return False


def redis_policy(values: Obj | None, tmp_path: Path) -> Obj:
    (found,) = [o for o in render_chart(values, tmp_path)
                if o["kind"] == "NetworkPolicy" and o["metadata"]["name"] == "kw-kubeworkers-redis"]
    return found


def operator_pod(tmp_path: Path) -> Pod:
    (deployment,) = [o for o in render_chart(None, tmp_path)
                     if o["kind"] == "Deployment" and o["metadata"]["name"] == "kw-kubeworkers"]
    return Pod(RELEASE_NAMESPACE, deployment["spec"]["template"]["metadata"]["labels"])


def worker_pod(namespace: str) -> Pod:
    """A worker pod exactly as the operator's Deployment builder labels it."""
    from kubeworkers.resources import WorkerPoolSpec
    from kubeworkers_operator.model.deployment import build_deployment

    spec = WorkerPoolSpec.model_validate({"image": "w:1", "imports": ["kubeworkers.examples"]})
    template = build_deployment(name="demo", namespace=namespace, uid="u", spec=spec)["spec"]["template"]
    return Pod(namespace, template["metadata"]["labels"])


def test_network_policies_are_on_by_default_under_the_top_level_key(tmp_path: Path) -> None:
    names = {o["metadata"]["name"] for o in render_chart(None, tmp_path) if o["kind"] == "NetworkPolicy"}
    assert names == {"kw-kubeworkers", "kw-kubeworkers-redis"}


def test_redis_admits_the_operator_workers_anywhere_and_sdk_pods_with_the_client_label(tmp_path: Path) -> None:
    policy = redis_policy(None, tmp_path)
    assert admits(policy, operator_pod(tmp_path), "redis")
    assert admits(policy, worker_pod("team-a"), "redis")
    sdk = Pod("team-b", {"app": "ingest", "kubeworkers.io/redis-client": "true"})
    assert admits(policy, sdk, "redis")
    assert not admits(policy, sdk, "http"), "the policy opens only the Redis port"


@pytest.mark.parametrize("pod", [
    Pod("team-b", {"app": "ingest"}),
    Pod("team-b", {"kubeworkers.io/redis-client": "yes"}),
    Pod(RELEASE_NAMESPACE, {"app": "something-else"}),
    Pod("team-b", {"app.kubernetes.io/name": "kubeworkers"}),  # looks like the operator, other namespace
], ids=["unlabelled", "label-not-true", "other-pod-in-release-ns", "operator-lookalike-elsewhere"])
def test_redis_refuses_every_other_pod(tmp_path: Path, pod: Pod) -> None:
    assert not admits(redis_policy(None, tmp_path), pod, "redis")


def test_the_client_label_can_be_renamed_or_turned_off_and_extra_peers_added(tmp_path: Path) -> None:
    custom = redis_policy(MODES["redis-clients"], tmp_path)
    assert admits(custom, Pod("team-c", {"example.com/talks-to-redis": "true"}), "redis")
    assert not admits(custom, Pod("team-c", {"kubeworkers.io/redis-client": "true"}), "redis")
    assert admits(custom, Pod("team-b", {"app": "anything"}), "redis"), "extraFrom admits all of team-b"
    assert admits(custom, worker_pod("team-a"), "redis")

    off = redis_policy({"networkPolicy": {"redis": {"clientLabel": ""}}}, tmp_path)
    assert not admits(off, Pod("team-b", {"kubeworkers.io/redis-client": "true"}), "redis")
    assert admits(off, operator_pod(tmp_path), "redis")


def test_the_operator_admits_only_its_http_port(tmp_path: Path) -> None:
    (policy,) = [o for o in render_chart(None, tmp_path)
                 if o["kind"] == "NetworkPolicy" and o["metadata"]["name"] == "kw-kubeworkers"]
    assert admits(policy, Pod("monitoring", {"app": "prometheus"}), "http")
    assert not admits(policy, Pod("monitoring", {"app": "prometheus"}), "redis")
