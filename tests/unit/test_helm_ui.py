"""The chart's web console (``ui.*``, docs/console.md): off by default; on, the operator serves it on
its own port behind a ClusterIP Service, with exactly the RBAC its authorisation needs and a
NetworkPolicy allowance only for the peers ``ui.from`` names; NOTES say how to port-forward."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.tools import CHART, MODES, kubernetes_version, render_chart, run_helm, values_args
from tests.unit.test_helm_rbac import CLUSTER_GRANTS, NAMESPACED_GRANTS, grants, roles

Obj = dict[str, Any]
UI = {"ui": {"enabled": True, "actions": True}}
UI_CLUSTER_GRANTS = {
    ("authentication.k8s.io", "tokenreviews"): {"create"},
    ("authorization.k8s.io", "subjectaccessreviews"): {"create"},
}
UI_NAMESPACED_GRANTS = {("", "events"): {"create", "list"}}


def _operator(objs: list[Obj]) -> Obj:
    (deployment,) = [o for o in objs if o["kind"] == "Deployment" and o["metadata"]["name"] == "kw-kubeworkers"]
    container: Obj = deployment["spec"]["template"]["spec"]["containers"][0]
    return container


def _merge(*values: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for v in values:
        for key, part in v.items():
            out[key] = {**out.get(key, {}), **part} if isinstance(part, dict) else part
    return out


def test_the_console_is_off_by_default(tmp_path: Path) -> None:
    objs = render_chart(None, tmp_path)
    container = _operator(objs)
    assert not [a for a in container["args"] if a.startswith("--console")]
    assert [p["name"] for p in container["ports"]] == ["http"]
    assert not [o for o in objs if o["kind"] == "Service" and o["metadata"]["name"].endswith("-ui")]
    (cluster_role,) = roles(objs, "ClusterRole")
    assert not set(grants(cluster_role)) & set(UI_CLUSTER_GRANTS)


def test_enabled_the_operator_serves_it_on_its_own_port_behind_a_cluster_ip_service(tmp_path: Path) -> None:
    objs = render_chart(_merge(UI, {"ui": {"port": 9100}}), tmp_path)
    container = _operator(objs)
    assert {"name": "ui", "containerPort": 9100, "protocol": "TCP"} in container["ports"]
    args = container["args"]
    assert "--console-port=9100" in args and "--console-enable-actions" in args
    assert "--console-namespace=default" in args
    assert "--console-host-name=kw-kubeworkers-ui.kw-system.svc" in args
    (service,) = [o for o in objs if o["kind"] == "Service" and o["metadata"]["name"] == "kw-kubeworkers-ui"]
    assert service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["ports"] == [{"name": "ui", "port": 9100, "targetPort": "ui", "protocol": "TCP"}]
    assert service["spec"]["selector"] == {"app.kubernetes.io/name": "kubeworkers",
                                           "app.kubernetes.io/instance": "kw",
                                           "app.kubernetes.io/component": "operator"}


def test_read_only_and_namespaced_the_console_shows_the_watched_namespace(tmp_path: Path) -> None:
    objs = render_chart(_merge(MODES["namespaced"], {"ui": {"enabled": True}}), tmp_path)
    args = _operator(objs)["args"]
    assert "--console-namespace=team-a" in args and "--console-enable-actions" not in args
    # Read-only (ui.actions off, the default): no review rights, only the Events list.
    (cluster_role,) = roles(objs, "ClusterRole")
    assert grants(cluster_role) == CLUSTER_GRANTS
    (role,) = roles(objs, "Role")
    assert grants(role) == {**NAMESPACED_GRANTS, **UI_NAMESPACED_GRANTS}


def test_cluster_wide_it_adds_exactly_the_reviews_and_the_events_list(tmp_path: Path) -> None:
    objs = render_chart(UI, tmp_path)
    (cluster_role,) = roles(objs, "ClusterRole")
    want = {**CLUSTER_GRANTS, **NAMESPACED_GRANTS, **UI_CLUSTER_GRANTS, **UI_NAMESPACED_GRANTS}
    assert grants(cluster_role) == want


def test_namespaced_the_reviews_are_cluster_scoped_and_the_events_list_stays_in_the_namespace(tmp_path: Path) -> None:
    objs = render_chart(_merge(MODES["namespaced"], UI), tmp_path)
    (cluster_role,) = roles(objs, "ClusterRole")
    assert grants(cluster_role) == {**CLUSTER_GRANTS, **UI_CLUSTER_GRANTS}
    (role,) = roles(objs, "Role")
    assert role["metadata"]["namespace"] == "team-a"
    assert grants(role) == {**NAMESPACED_GRANTS, **UI_NAMESPACED_GRANTS}


def test_require_sign_in_passes_its_flag_and_needs_the_reviews_even_read_only(tmp_path: Path) -> None:
    objs = render_chart({"ui": {"enabled": True, "requireSignIn": True}}, tmp_path)
    args = _operator(objs)["args"]
    assert "--console-require-sign-in" in args and "--console-enable-actions" not in args
    (cluster_role,) = roles(objs, "ClusterRole")
    assert set(UI_CLUSTER_GRANTS) <= set(grants(cluster_role))


def _policy(objs: list[Obj]) -> Obj:
    (policy,) = [o for o in objs if o["kind"] == "NetworkPolicy" and o["metadata"]["name"] == "kw-kubeworkers"]
    return policy


def test_the_network_policy_admits_the_console_port_only_from_ui_from(tmp_path: Path) -> None:
    (tmp_path / "closed").mkdir()
    (tmp_path / "open").mkdir()
    closed = _policy(render_chart(UI, tmp_path / "closed"))
    assert [r["ports"][0]["port"] for r in closed["spec"]["ingress"]] == ["http"]
    peer = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress"}}}
    opened = _policy(render_chart(_merge(UI, {"ui": {"enabled": True, "from": [peer]}}), tmp_path / "open"))
    ui_rule = [r for r in opened["spec"]["ingress"] if r["ports"][0]["port"] == "ui"]
    assert ui_rule == [{"ports": [{"port": "ui", "protocol": "TCP"}], "from": [peer]}]


@pytest.mark.parametrize("bad", [{"ui": {"enabled": "yes"}}, {"ui": {"port": 0}}, {"ui": {"namespace": "Bad_NS"}},
                                 {"ui": {"token": "x"}}])
def test_the_schema_refuses_bad_ui_values(bad: dict[str, Any], tmp_path: Path) -> None:
    from tests.support.tools import helm_template

    result = helm_template(bad, tmp_path, check=False)
    assert result.returncode != 0 and "ui" in result.stderr, result.stderr


def test_the_notes_tell_the_port_forward_command(tmp_path: Path) -> None:
    chart = tmp_path / "chart"
    shutil.copytree(CHART, chart)
    shutil.copy(chart / "templates" / "NOTES.txt", chart / "notes.txt")
    (chart / "templates" / "zz-notes.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: notes}\n"
        'data:\n  notes: {{ tpl (.Files.Get "notes.txt") . | quote }}\n'
    )

    def notes(values: dict[str, Any] | None) -> str:
        out = run_helm("template", "kw", str(chart), "--namespace", "kw-system", "--kube-version",
                       kubernetes_version(), "--show-only", "templates/zz-notes.yaml",
                       *values_args(values, tmp_path)).stdout
        text: str = yaml.safe_load(out)["data"]["notes"]
        return text

    assert "port-forward" not in notes(None)
    on = notes(UI)
    assert "kubectl -n kw-system port-forward svc/kw-kubeworkers-ui 8089" in on
    assert "http://localhost:8089/" in on and "create token" in on
