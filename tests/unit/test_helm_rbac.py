"""The operator's RBAC: exactly the verbs it uses, no wildcards, Secrets get-only, in every mode."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.support.tools import MODES, RELEASE_NAMESPACE, render_chart

Obj = dict[str, Any]
Grants = dict[tuple[str, str], set[str]]

# (apiGroup, resource) -> verbs. This table is the contract docs/security.md explains line by
# line; a change to the operator's API calls must change it deliberately.
NAMESPACED_GRANTS: Grants = {
    ("workers.io", "jobs"): {"get", "list", "watch", "create", "delete"},
    ("workers.io", "workerpools"): {"get", "list", "watch"},
    ("workers.io", "schedules"): {"list", "watch"},
    ("workers.io", "jobs/status"): {"patch"},
    ("workers.io", "workerpools/status"): {"patch"},
    ("workers.io", "schedules/status"): {"patch"},
    ("apps", "deployments"): {"list", "watch", "create", "patch"},
    ("apps", "deployments/scale"): {"get", "patch"},
    ("policy", "poddisruptionbudgets"): {"create", "patch"},
    ("", "pods"): {"list", "patch"},
    ("", "events"): {"create"},
    # The Redis URL a WorkerPool's spec.redis names (docs/security.md, Reading a pool's Redis Secret).
    ("", "secrets"): {"get"},
}
CLUSTER_GRANTS: Grants = {
    ("apiextensions.k8s.io", "customresourcedefinitions"): {"list", "watch"},
    ("", "namespaces"): {"list", "watch"},
}


# The leader election's own Role, in the release namespace in every mode: the one Lease by name,
# and create (which Kubernetes cannot limit by name).
LEADER_ELECTION_RULES = [
    {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "resourceNames": ["kw-kubeworkers"],
     "verbs": ["get", "update"]},
    {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
]
LEADER_ELECTION = "kw-kubeworkers-leader-election"


def grants(role: Obj) -> Grants:
    out: Grants = {}
    for rule in role["rules"]:
        assert "resourceNames" not in rule and "nonResourceURLs" not in rule, rule
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                out.setdefault((group, resource), set()).update(rule["verbs"])
    return out


def roles(objs: list[Obj], kind: str) -> list[Obj]:
    """The operator's roles (or bindings) of ``kind``, but for the leader election's (tested on its own)."""
    return [o for o in objs if o["kind"] == kind and o["metadata"]["name"] != LEADER_ELECTION]


@pytest.mark.parametrize("mode", sorted(MODES))
def test_leader_election_may_read_and_renew_only_its_own_lease_in_the_release_namespace(
        mode: str, tmp_path: Path) -> None:
    objs = render_chart(MODES[mode], tmp_path)
    (role,) = [o for o in objs if o["kind"] == "Role" and o["metadata"]["name"] == LEADER_ELECTION]
    assert role["metadata"]["namespace"] == RELEASE_NAMESPACE
    assert role["rules"] == LEADER_ELECTION_RULES
    (binding,) = [o for o in objs if o["kind"] == "RoleBinding" and o["metadata"]["name"] == LEADER_ELECTION]
    assert binding["metadata"]["namespace"] == RELEASE_NAMESPACE
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": LEADER_ELECTION}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "kw-kubeworkers", "namespace": RELEASE_NAMESPACE}]
    # The operator elects on exactly the Lease the Role names, in the namespace it runs in.
    (deployment,) = [o for o in objs if o["kind"] == "Deployment" and o["metadata"]["name"] == "kw-kubeworkers"]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert "--lease-name=kw-kubeworkers" in container["args"]
    assert {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}} in container["env"]


@pytest.mark.parametrize("mode", sorted(MODES))
def test_no_rule_uses_a_wildcard_or_does_more_than_get_secrets(mode: str, tmp_path: Path) -> None:
    objs = render_chart(MODES[mode], tmp_path)
    all_roles = [o for o in objs if o["kind"] in ("ClusterRole", "Role")]
    assert all_roles
    for role in all_roles:
        for rule in role["rules"]:
            for field in ("apiGroups", "resources", "verbs"):
                assert "*" not in rule[field], f"{role['metadata']['name']}: wildcard in {field}: {rule}"
            if "secrets" in rule["resources"]:
                assert rule["resources"] == ["secrets"] and rule["verbs"] == ["get"], rule
            # Escalation paths: none of these may ever be granted to the operator.
            assert not {"escalate", "bind", "impersonate"} & set(rule["verbs"]), rule


def test_cluster_wide_mode_grants_exactly_what_the_operator_uses(tmp_path: Path) -> None:
    objs = render_chart(None, tmp_path)
    assert not roles(objs, "Role") and not roles(objs, "RoleBinding")
    (cluster_role,) = roles(objs, "ClusterRole")
    assert grants(cluster_role) == {**CLUSTER_GRANTS, **NAMESPACED_GRANTS}
    (binding,) = roles(objs, "ClusterRoleBinding")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                                  "name": cluster_role["metadata"]["name"]}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "kw-kubeworkers", "namespace": RELEASE_NAMESPACE}]


def test_namespaced_mode_confines_every_namespaced_right_to_the_watched_namespace(tmp_path: Path) -> None:
    objs = render_chart(MODES["namespaced"], tmp_path)
    (cluster_role,) = roles(objs, "ClusterRole")
    # Cluster-wide, only the reads of CRDs and namespace names that kopf's discovery needs remain.
    assert grants(cluster_role) == CLUSTER_GRANTS
    (role,) = roles(objs, "Role")
    assert role["metadata"]["namespace"] == "team-a"
    assert grants(role) == NAMESPACED_GRANTS
    (binding,) = roles(objs, "RoleBinding")
    assert binding["metadata"]["namespace"] == "team-a"
    assert binding["roleRef"]["kind"] == "Role" and binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"][0]["namespace"] == RELEASE_NAMESPACE


def test_cluster_scoped_names_include_the_release_namespace(tmp_path: Path) -> None:
    # Two releases named "kw" in two namespaces must not overwrite each other's ClusterRole.
    objs = render_chart(None, tmp_path)
    for kind in ("ClusterRole", "ClusterRoleBinding"):
        (obj,) = roles(objs, kind)
        assert obj["metadata"]["name"] == f"{RELEASE_NAMESPACE}-kw-kubeworkers"


def test_rbac_create_false_renders_no_rbac(tmp_path: Path) -> None:
    objs = render_chart({"rbac": {"create": False}}, tmp_path)
    kinds = {o["kind"] for o in objs}
    assert not kinds & {"ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"}
