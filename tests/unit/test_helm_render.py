"""What ``helm template`` renders, parsed and checked object by object, in every install mode."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests.support.tools import CHART, MODES, RELEASE_NAMESPACE, render_chart

Obj = dict[str, Any]
STANDARD_LABELS = (
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/version",
    "app.kubernetes.io/managed-by",
    "app.kubernetes.io/part-of",
    "helm.sh/chart",
)


def find(objs: list[Obj], kind: str, name: str | None = None, namespace: str | None = None) -> list[Obj]:
    return [
        o for o in objs
        if o["kind"] == kind
        and (name is None or o["metadata"]["name"] == name)
        and (namespace is None or o["metadata"].get("namespace") == namespace)
    ]


def one(objs: list[Obj], kind: str, name: str | None = None) -> Obj:
    found = find(objs, kind, name)
    assert len(found) == 1, f"expected one {kind} {name or ''}, got {[o['metadata']['name'] for o in found]}"
    return found[0]


def pod_specs(objs: list[Obj]) -> list[tuple[str, Obj]]:
    return [(f"{o['kind']}/{o['metadata']['name']}", o["spec"]["template"]["spec"])
            for o in objs if o["kind"] in ("Deployment", "StatefulSet")]


@pytest.fixture(params=sorted(MODES))
def rendered(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, list[Obj]]:
    mode: str = request.param
    return mode, render_chart(MODES[mode], tmp_path)


def test_every_object_carries_the_standard_labels_and_an_explicit_namespace(rendered: tuple[str, list[Obj]]) -> None:
    _, objs = rendered
    assert objs
    for obj in objs:
        labels = obj["metadata"].get("labels", {})
        missing = [label for label in STANDARD_LABELS if label not in labels]
        assert not missing, f"{obj['kind']}/{obj['metadata']['name']} lacks {missing}"
        assert labels["app.kubernetes.io/version"] == "0.1.0"
        if obj["kind"] not in ("ClusterRole", "ClusterRoleBinding"):
            assert obj["metadata"].get("namespace"), f"{obj['kind']}/{obj['metadata']['name']} has no namespace"


def test_every_container_is_locked_down(rendered: tuple[str, list[Obj]]) -> None:
    _, objs = rendered
    specs = pod_specs(objs)
    assert specs
    for where, spec in specs:
        assert spec["securityContext"]["runAsNonRoot"] is True, where
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, where
        for container in spec["containers"]:
            sc = container["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False, where
            assert sc["readOnlyRootFilesystem"] is True, where
            assert sc["runAsNonRoot"] is True, where
            assert sc["capabilities"] == {"drop": ["ALL"]}, where
            assert sc["seccompProfile"] == {"type": "RuntimeDefault"}, where
            assert container["resources"]["requests"] and container["resources"]["limits"], where
            for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
                assert probe in container, f"{where} has no {probe}"
            assert ":" in container["image"] or "@" in container["image"], where
            # A read-only root filesystem still needs somewhere to write temporary files.
            mounts = {m["mountPath"] for m in container.get("volumeMounts", [])}
            assert "/tmp" in mounts, where


def test_operator_runs_two_replicas_on_different_nodes_rolled_one_surge_pod_at_a_time(tmp_path: Path) -> None:
    objs = render_chart(None, tmp_path)
    deployment = one(objs, "Deployment", "kw-kubeworkers")
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["strategy"] == {"type": "RollingUpdate",
                                              "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
    selector = deployment["spec"]["selector"]["matchLabels"]
    (term,) = deployment["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"][
        "preferredDuringSchedulingIgnoredDuringExecution"]
    assert term["podAffinityTerm"] == {"topologyKey": "kubernetes.io/hostname",
                                       "labelSelector": {"matchLabels": selector}}
    pdb = one(objs, "PodDisruptionBudget", "kw-kubeworkers")
    assert pdb["spec"] == {"minAvailable": 1, "selector": {"matchLabels": selector}}
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    for probe in ("livenessProbe", "startupProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "http"}
    # Ready on the leader and on a standby (the role is in the body): see docs/operations.md, Endpoints.
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]
    tmp = next(v for v in deployment["spec"]["template"]["spec"]["volumes"] if v["name"] == "tmp")
    assert "emptyDir" in tmp
    assert container["image"] == "kubeworkers-operator:0.1.0"
    assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == "kw-kubeworkers"


def test_a_single_operator_replica_gets_no_disruption_budget_and_a_given_affinity_replaces_the_default(
        tmp_path: Path) -> None:
    affinity = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchExpressions": [{"key": "pool", "operator": "In", "values": ["system"]}]}]}}}
    objs = render_chart({"operator": {"replicas": 1, "affinity": affinity}}, tmp_path)
    assert not [o for o in objs if o["kind"] == "PodDisruptionBudget"]
    assert one(objs, "Deployment", "kw-kubeworkers")["spec"]["template"]["spec"]["affinity"] == affinity


def _env(container: Obj) -> dict[str, Obj]:
    return {e["name"]: e for e in container["env"]}


@pytest.mark.parametrize(("mode", "secret"), [
    ("default", "kw-kubeworkers-redis"),
    ("external-redis-url", "kw-kubeworkers-redis"),
    ("external-redis-secret", "my-redis"),
    ("external-redis-sentinel", "kw-kubeworkers-redis"),
])
def test_operator_reads_the_redis_url_from_a_secret_and_names_it_to_worker_pools(
        mode: str, secret: str, tmp_path: Path) -> None:
    objs = render_chart(MODES[mode], tmp_path)
    container = one(objs, "Deployment", "kw-kubeworkers")["spec"]["template"]["spec"]["containers"][0]
    assert _env(container)["KUBEWORKERS_REDIS_URL"] == {
        "name": "KUBEWORKERS_REDIS_URL", "valueFrom": {"secretKeyRef": {"name": secret, "key": "url"}}}
    assert f"--default-redis-secret={secret}" in container["args"]
    # No Redis address or password in plain text anywhere in a pod spec.
    for _, spec in pod_specs(objs):
        assert not any(scheme in json.dumps(spec) for scheme in ("redis://", "rediss://", "sentinel://"))


def test_external_redis_url_is_stored_in_the_chart_secret_and_no_redis_is_deployed(tmp_path: Path) -> None:
    objs = render_chart(MODES["external-redis-url"], tmp_path)
    assert not find(objs, "StatefulSet")
    secret = one(objs, "Secret", "kw-kubeworkers-redis")
    assert base64.b64decode(secret["data"]["url"]).decode() == "rediss://:pw@redis.example:6380/0"
    assert "password" not in secret["data"]


def test_a_sentinel_url_reaches_the_chart_secret_unchanged_for_the_operator_and_workers(tmp_path: Path) -> None:
    objs = render_chart(MODES["external-redis-sentinel"], tmp_path)
    assert not find(objs, "StatefulSet")
    secret = one(objs, "Secret", "kw-kubeworkers-redis")
    assert base64.b64decode(secret["data"]["url"]).decode() == MODES["external-redis-sentinel"]["redis"]["url"]  # type: ignore[index]


def test_existing_secret_mode_renders_no_secret_at_all(tmp_path: Path) -> None:
    assert not find(render_chart(MODES["external-redis-secret"], tmp_path), "Secret")


def test_builtin_redis_keeps_an_aof_on_a_claim_that_uninstall_deletes(tmp_path: Path) -> None:
    objs = render_chart(None, tmp_path)
    sts = one(objs, "StatefulSet", "kw-kubeworkers-redis")
    assert sts["spec"]["replicas"] == 1
    script = sts["spec"]["template"]["spec"]["containers"][0]["args"][0]
    assert "--appendonly yes" in script and "--appendfsync everysec" in script
    assert "--maxmemory-policy noeviction" in script
    assert sts["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "data"
    assert sts["spec"]["persistentVolumeClaimRetentionPolicy"]["whenDeleted"] == "Delete"
    assert sts["spec"]["template"]["spec"]["automountServiceAccountToken"] is False
    # The password is read from a mounted file, never from env or an argument.
    redis = sts["spec"]["template"]["spec"]["containers"][0]
    assert "env" not in redis
    assert "cat /run/secrets/redis/password" in script
    assert "cat /run/secrets/redis/password" in redis["livenessProbe"]["exec"]["command"][2]
    service = one(objs, "Service", "kw-kubeworkers-redis")
    assert service["spec"]["selector"] == sts["spec"]["selector"]["matchLabels"]


def test_ephemeral_redis_uses_an_emptydir_and_sets_maxmemory(tmp_path: Path) -> None:
    sts = one(render_chart(MODES["redis-ephemeral"], tmp_path), "StatefulSet")
    assert "volumeClaimTemplates" not in sts["spec"]
    volumes = {v["name"]: v for v in sts["spec"]["template"]["spec"]["volumes"]}
    assert "emptyDir" in volumes["data"]
    assert "--maxmemory 256mb" in sts["spec"]["template"]["spec"]["containers"][0]["args"][0]


def test_generated_redis_secret_is_strong_and_identical_in_every_namespace(tmp_path: Path) -> None:
    objs = render_chart(MODES["metrics-all-on"], tmp_path)
    secrets = find(objs, "Secret", "kw-kubeworkers-redis")
    assert {s["metadata"]["namespace"] for s in secrets} == {RELEASE_NAMESPACE, "team-a", "team-b"}
    assert len({json.dumps(s["data"], sort_keys=True) for s in secrets}) == 1
    password = base64.b64decode(secrets[0]["data"]["password"]).decode()
    assert len(password) >= 32 and password.isalnum()
    url = base64.b64decode(secrets[0]["data"]["url"]).decode()
    assert url == f"redis://:{password}@kw-kubeworkers-redis.{RELEASE_NAMESPACE}.svc:6379/0"


def test_namespaced_mode_tells_the_operator_its_namespace(tmp_path: Path) -> None:
    objs = render_chart(MODES["namespaced"], tmp_path)
    args = one(objs, "Deployment", "kw-kubeworkers")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[0] == "--namespace=team-a"
    # Workers in the watched namespace need the Redis Secret and the worker metrics Service there.
    assert find(objs, "Secret", "kw-kubeworkers-redis", "team-a")
    assert find(objs, "Service", "kw-kubeworkers-workers", "team-a")


def test_cluster_wide_mode_watches_all_namespaces(tmp_path: Path) -> None:
    objs = render_chart(None, tmp_path)
    args = one(objs, "Deployment", "kw-kubeworkers")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert not any(a.startswith("--namespace") for a in args)
    assert "--metrics-port=8080" in args


def test_metrics_services_select_the_operator_and_the_workers(tmp_path: Path) -> None:
    objs = render_chart(None, tmp_path)
    operator = one(objs, "Deployment", "kw-kubeworkers")
    metrics = one(objs, "Service", "kw-kubeworkers-metrics")
    pod_labels = operator["spec"]["template"]["metadata"]["labels"]
    assert metrics["spec"]["selector"].items() <= pod_labels.items()
    assert metrics["spec"]["ports"][0]["targetPort"] == "http"
    workers = one(objs, "Service", "kw-kubeworkers-workers")
    assert workers["spec"]["clusterIP"] == "None"
    # The labels the operator's Deployment builder puts on every worker pod.
    assert workers["spec"]["selector"] == {
        "app.kubernetes.io/name": "kubeworkers-worker", "app.kubernetes.io/component": "worker"}
    assert workers["spec"]["ports"][0]["targetPort"] == "metrics"


def test_prometheus_operator_objects_are_off_by_default(tmp_path: Path) -> None:
    objs = render_chart(None, tmp_path)
    assert not find(objs, "ServiceMonitor") and not find(objs, "PodMonitor")
    assert not find(objs, "ConfigMap")
    assert not find(objs, "PrometheusRule")


def test_the_prometheus_rule_records_each_handlers_failure_ratio_and_duration_quantiles(tmp_path: Path) -> None:
    rule = one(render_chart(MODES["metrics-all-on"], tmp_path), "PrometheusRule")
    assert rule["metadata"]["labels"]["release"] == "prom"
    (group,) = rule["spec"]["groups"]
    rules = {r["record"]: r["expr"] for r in group["rules"]}
    assert set(rules) == {"handler:kubeworkers_job_failures:ratio_rate5m",
                          "handler:kubeworkers_job_duration_seconds:p50_rate5m",
                          "handler:kubeworkers_job_duration_seconds:p95_rate5m"}
    ratio = rules["handler:kubeworkers_job_failures:ratio_rate5m"]
    # Failed jobs are the dead-lettered ones (as `kubeworkers stats` counts them), over all that ended.
    assert "rate(kubeworkers_dead_lettered_total[5m])" in ratio
    assert 'rate(kubeworkers_jobs_total{outcome="succeeded"}[5m])' in ratio
    assert ratio.count("(") == ratio.count(")")
    assert "histogram_quantile(0.95," in rules["handler:kubeworkers_job_duration_seconds:p95_rate5m"]


def test_monitoring_mode_renders_servicemonitor_podmonitor_and_dashboard(tmp_path: Path) -> None:
    objs = render_chart(MODES["metrics-all-on"], tmp_path)
    monitor = one(objs, "ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "prom"
    assert monitor["spec"]["endpoints"][0]["port"] == "http"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= (
        one(objs, "Service", "kw-kubeworkers-metrics")["metadata"]["labels"].items())
    assert one(objs, "PodMonitor")["spec"]["namespaceSelector"] == {"any": True}
    dashboard = json.loads(one(objs, "ConfigMap")["data"]["kubeworkers.json"])
    assert dashboard == json.loads((CHART / "dashboards" / "kubeworkers.json").read_text())
    assert {s["metadata"]["namespace"] for s in find(objs, "Service", "kw-kubeworkers-workers")} == {"team-a", "team-b"}


def test_grafana_dashboard_covers_backlog_replicas_throughput_durations_and_failures() -> None:
    dashboard = json.loads((CHART / "dashboards" / "kubeworkers.json").read_text())
    titles = " ".join(panel["title"].lower() for panel in dashboard["panels"])
    for topic in ("backlog", "replicas", "throughput", "duration", "fail"):
        assert topic in titles, f"no panel about {topic}"
    for panel in dashboard["panels"]:
        if panel.get("type") != "row":
            assert panel["targets"] and all(t["expr"] for t in panel["targets"]), panel["title"]


@pytest.mark.parametrize("mode", ["default", "namespaced", "external-redis-secret"])
def test_the_operator_accepts_the_arguments_the_chart_gives_it(
        mode: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The chart and the operator's CLI are written apart; parse the rendered args with the real parser.
    from kubeworkers_operator.cli import parse_args

    container = one(render_chart(MODES[mode], tmp_path), "Deployment", "kw-kubeworkers")["spec"]["template"][
        "spec"]["containers"][0]
    for env in container["env"]:
        if "value" in env:
            monkeypatch.setenv(env["name"], env["value"])
    settings = parse_args(container["args"])
    assert settings.metrics_port == container["ports"][0]["containerPort"]
    assert settings.namespaces == (["team-a"] if mode == "namespaced" else [])
    assert settings.default_redis_secret == _env(container)["KUBEWORKERS_REDIS_URL"]["valueFrom"][
        "secretKeyRef"]["name"]


def test_network_policies_admit_only_the_operator_port_and_kubeworkers_pods_to_redis(tmp_path: Path) -> None:
    objs = render_chart(None, tmp_path)
    operator_pod = one(objs, "Deployment", "kw-kubeworkers")["spec"]["template"]["metadata"]["labels"]
    redis_pod = one(objs, "StatefulSet")["spec"]["template"]["metadata"]["labels"]
    operator_policy = one(objs, "NetworkPolicy", "kw-kubeworkers")
    assert operator_policy["spec"]["podSelector"]["matchLabels"].items() <= operator_pod.items()
    assert operator_policy["spec"]["ingress"] == [{"ports": [{"port": "http", "protocol": "TCP"}]}]
    redis_policy = one(objs, "NetworkPolicy", "kw-kubeworkers-redis")
    assert redis_policy["spec"]["podSelector"]["matchLabels"].items() <= redis_pod.items()
    sources = redis_policy["spec"]["ingress"][0]["from"]
    assert sources[0]["podSelector"]["matchLabels"].items() <= operator_pod.items()
    assert "namespaceSelector" not in sources[0]  # the operator of this release, in this namespace
    # Worker pods of any namespace, by the labels the operator's Deployment builder sets.
    assert sources[1] == {"namespaceSelector": {}, "podSelector": {"matchLabels": {
        "app.kubernetes.io/name": "kubeworkers-worker", "app.kubernetes.io/component": "worker"}}}
    assert redis_policy["spec"]["ingress"][0]["ports"] == [{"port": "redis", "protocol": "TCP"}]


def test_network_policies_can_be_turned_off(tmp_path: Path) -> None:
    assert not find(render_chart(MODES["no-network-policies"], tmp_path), "NetworkPolicy")


def test_worker_pods_the_operator_builds_match_the_charts_worker_selectors(tmp_path: Path) -> None:
    # The Service, PodMonitor and Redis NetworkPolicy select worker pods by labels that the
    # operator's Deployment builder sets; build a real one and compare.
    from kubeworkers.resources import WorkerPoolSpec
    from kubeworkers_operator.model.deployment import WORKER_METRICS_PORT, build_deployment

    spec = WorkerPoolSpec.model_validate({"image": "w:1", "imports": ["kubeworkers.examples"]})
    pod = build_deployment(name="demo", namespace="team-a", uid="u", spec=spec)["spec"]["template"]
    objs = render_chart(MODES["metrics-all-on"], tmp_path)
    selectors = [
        one(objs, "PodMonitor")["spec"]["selector"]["matchLabels"],
        find(objs, "Service", "kw-kubeworkers-workers")[0]["spec"]["selector"],
        one(objs, "NetworkPolicy", "kw-kubeworkers-redis")["spec"]["ingress"][0]["from"][1]["podSelector"][
            "matchLabels"],
    ]
    for selector in selectors:
        assert selector.items() <= pod["metadata"]["labels"].items(), selector
    ports = {p["name"]: p["containerPort"] for c in pod["spec"]["containers"] for p in c.get("ports", [])}
    assert ports["metrics"] == WORKER_METRICS_PORT == find(objs, "Service", "kw-kubeworkers-workers")[0][
        "spec"]["ports"][0]["port"]


def _exported_metric_names() -> set[str]:
    """Every sample name the operator, the autoscaler and a worker export (from their real classes)."""
    from kubeworkers.metrics import WorkerMetrics
    from kubeworkers_operator.adapters.metrics import OperatorMetrics
    from kubeworkers_operator.autoscaling.metrics import AutoscalerMetrics
    from prometheus_client import CollectorRegistry

    names: set[str] = set()
    registries: list[CollectorRegistry] = [
        OperatorMetrics().registry, AutoscalerMetrics().registry, WorkerMetrics("p", "ns").registry]
    for registry in registries:
        for family in registry.collect():
            names.add(family.name)
            # Counters are exported with _total, histograms with _bucket/_sum/_count.
            names.update({f"{family.name}{suffix}" for suffix in ("_total", "_bucket", "_sum", "_count")})
    return names


def test_grafana_dashboard_queries_only_metrics_the_code_exports() -> None:
    dashboard = json.loads((CHART / "dashboards" / "kubeworkers.json").read_text())
    exported = _exported_metric_names()
    queried = set()
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            queried.update(re.findall(r"\b(kubeworkers_[a-z_]+)", target["expr"]))
    for variable in dashboard["templating"]["list"]:
        queried.update(re.findall(r"\b(kubeworkers_[a-z_]+)", str(variable.get("query", ""))))
    assert queried, "the dashboard queries nothing"
    assert not queried - exported, f"the dashboard queries metrics nobody exports: {sorted(queried - exported)}"
