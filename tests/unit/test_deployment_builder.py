"""The worker Deployment is a pure function of the WorkerPool spec."""

from __future__ import annotations

from typing import Any

from kubeworkers.resources import EnvVar, WorkerPoolSpec
from kubeworkers_operator.model.deployment import build_deployment, build_disruption_budget, initial_replicas
from kubeworkers_operator.model.names import POOL_LABEL, deployment_name


def build(**spec: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"image": "ghcr.io/acme/workers:1", "imports": ["acme.handlers", "acme.more"]}
    return build_deployment(
        name="resize", namespace="media", uid="uid-123", spec=WorkerPoolSpec.model_validate({**base, **spec})
    )


def container(d: dict[str, Any]) -> dict[str, Any]:
    containers = d["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return dict(containers[0])


def env_of(d: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container(d)["env"]}


def test_deployment_is_named_for_the_pool_and_owned_by_it_so_deleting_the_pool_deletes_the_pods() -> None:
    d = build()
    assert d["metadata"]["name"] == deployment_name("resize") == "resize-workers"
    assert d["metadata"]["namespace"] == "media"
    (owner,) = d["metadata"]["ownerReferences"]
    assert owner == {
        "apiVersion": "workers.io/v1alpha1", "kind": "WorkerPool", "name": "resize", "uid": "uid-123",
        "controller": True, "blockOwnerDeletion": True,
    }


def test_pods_carry_the_pool_label_the_selector_and_the_autoscaler_use() -> None:
    d = build(podLabels={"team": "media", POOL_LABEL: "spoofed"})
    selector = d["spec"]["selector"]["matchLabels"]
    pod_labels = d["spec"]["template"]["metadata"]["labels"]
    assert selector[POOL_LABEL] == "resize"
    assert pod_labels[POOL_LABEL] == "resize"
    assert pod_labels["team"] == "media"
    assert selector.items() <= pod_labels.items()


def test_worker_runs_kubeworkers_worker_with_the_pools_imports_and_concurrency() -> None:
    c = container(build(concurrency=7))
    assert c["command"] == ["kubeworkers", "worker"]
    assert c["args"] == ["--pool", "resize", "--import", "acme.handlers,acme.more", "--concurrency", "7"]
    assert c["image"] == "ghcr.io/acme/workers:1"
    env = env_of(build(concurrency=7))
    assert env["KUBEWORKERS_IMPORT"]["value"] == "acme.handlers,acme.more"
    assert env["KUBEWORKERS_CONCURRENCY"]["value"] == "7"
    assert env["KUBEWORKERS_POOL"]["value"] == "resize"


def test_redis_url_comes_from_a_secret_never_from_a_literal() -> None:
    env = env_of(build())
    assert env["KUBEWORKERS_REDIS_URL"] == {
        "name": "KUBEWORKERS_REDIS_URL", "valueFrom": {"secretKeyRef": {"name": "kubeworkers-redis", "key": "url"}}
    }
    env = env_of(build(redis={"secretName": "my-redis", "key": "dsn"}))
    assert env["KUBEWORKERS_REDIS_URL"]["valueFrom"]["secretKeyRef"] == {"name": "my-redis", "key": "dsn"}


def test_pod_name_and_namespace_come_from_the_downward_api() -> None:
    env = env_of(build())
    assert env["POD_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert env["KUBEWORKERS_NAMESPACE"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}


def test_user_env_cannot_override_the_operators_kubeworkers_variables() -> None:
    # Admission refuses such an entry (tests/unit/test_pool_env_settings.py); one stored before that
    # rule existed still cannot redirect the pool.
    spec = WorkerPoolSpec.model_validate({"image": "i", "imports": ["m"]})
    spec.env = [EnvVar.model_construct(name="KUBEWORKERS_REDIS_URL", value="redis://evil", value_from=None),
                EnvVar(name="LOG_LEVEL", value="debug")]
    env = container(build_deployment(name="resize", namespace="media", uid="u", spec=spec))["env"]
    names = [e["name"] for e in env]
    assert names.count("KUBEWORKERS_REDIS_URL") == 1
    assert {"name": "LOG_LEVEL", "value": "debug"} in env
    assert all(e.get("value") != "redis://evil" for e in env)


def test_probes_hit_the_workers_healthz_and_readyz() -> None:
    c = container(build())
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert {"name": "metrics", "containerPort": 9100, "protocol": "TCP"} in c["ports"]
    assert env_of(build())["KUBEWORKERS_METRICS_PORT"]["value"] == "9100"


def test_worker_runs_locked_down_with_only_tmp_writable() -> None:
    d = build()
    c = container(d)
    assert c["securityContext"] == {
        "runAsNonRoot": True, "readOnlyRootFilesystem": True, "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"},
    }
    pod = d["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["volumes"] == [{"name": "tmp", "emptyDir": {}}]
    assert c["volumeMounts"] == [{"name": "tmp", "mountPath": "/tmp"}]


def test_shutdown_grace_leaves_the_worker_time_to_hand_back_jobs_before_sigkill() -> None:
    d = build(terminationGracePeriodSeconds=90)
    assert d["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == 90
    assert int(env_of(d)["KUBEWORKERS_SHUTDOWN_GRACE"]["value"]) < 90
    assert int(env_of(build(terminationGracePeriodSeconds=0))["KUBEWORKERS_SHUTDOWN_GRACE"]["value"]) >= 1


def test_autoscaled_pool_leaves_replicas_to_the_autoscaler() -> None:
    d = build(minReplicas=2)
    assert "replicas" not in d["spec"]
    assert initial_replicas(WorkerPoolSpec.model_validate(
        {"image": "i", "imports": ["m"], "minReplicas": 2})) == 2


def test_pool_without_autoscaling_gets_its_fixed_replicas() -> None:
    assert build(autoscaling={"enabled": False}, replicas=3)["spec"]["replicas"] == 3
    assert build(autoscaling={"enabled": False}, minReplicas=2)["spec"]["replicas"] == 2


def test_rollouts_never_take_workers_away_before_replacements_exist() -> None:
    assert build()["spec"]["strategy"] == {"type": "RollingUpdate",
                                           "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 0}}


def test_a_node_drain_evicts_one_worker_of_the_pool_at_a_time_and_never_waits_on_a_pod_that_runs_nothing() -> None:
    pdb = build_disruption_budget(name="resize", namespace="media", uid="uid-123")
    d = build()
    assert pdb["metadata"]["name"] == d["metadata"]["name"] == deployment_name("resize")
    assert pdb["metadata"]["ownerReferences"] == d["metadata"]["ownerReferences"]  # deleted with the pool
    assert pdb["spec"] == {"maxUnavailable": 1, "selector": d["spec"]["selector"],
                           "unhealthyPodEvictionPolicy": "AlwaysAllow"}


def test_optional_scheduling_fields_pass_through_and_absent_ones_stay_absent() -> None:
    d = build(nodeSelector={"pool": "gpu"}, tolerations=[{"key": "gpu", "operator": "Exists"}],
              resources={"limits": {"cpu": "1"}}, serviceAccountName="workers", imagePullPolicy="Always")
    pod = d["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"pool": "gpu"}
    assert pod["tolerations"] == [{"key": "gpu", "operator": "Exists"}]
    assert pod["serviceAccountName"] == "workers"
    assert container(d)["resources"] == {"limits": {"cpu": "1"}}
    assert container(d)["imagePullPolicy"] == "Always"
    plain = build()["spec"]["template"]["spec"]
    assert "nodeSelector" not in plain and "affinity" not in plain and "serviceAccountName" not in plain
