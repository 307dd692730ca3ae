"""WorkerPool spec -> worker Deployment manifest: a pure function, no I/O.

The manifest is server-side applied by :mod:`kubeworkers_operator.flows.pools` with
the operator's own field manager. ``spec.replicas`` is deliberately left out
when the pool autoscales: the autoscaler owns that field, and a field the
operator never applies is a field it can never fight over.
"""

from __future__ import annotations

from typing import Any

from kubeworkers.resources import API_VERSION, POOL_ENV_SETTINGS, WORKERPOOL_KIND, WorkerPoolSpec

from kubeworkers_operator.model.defaults import DEFAULT_REDIS_SECRET, DEFAULT_REDIS_SECRET_KEY
from kubeworkers_operator.model.names import FIELD_MANAGER, POOL_LABEL, deployment_name

#: Container port of the worker's /healthz, /readyz and /metrics.
WORKER_METRICS_PORT = 9100
#: Non-root uid/gid the worker image runs as.
WORKER_UID = 10001
#: Seconds a worker keeps back from the pod's grace period, so it hands back
#: unfinished jobs itself before the kubelet's SIGKILL.
SHUTDOWN_MARGIN_SECONDS = 5


def selector_labels(pool: str) -> dict[str, str]:
    """Labels the Deployment selects its pods by (immutable once created: keep them minimal)."""
    return {POOL_LABEL: pool, "app.kubernetes.io/name": "kubeworkers-worker"}


def selector_string(pool: str) -> str:
    """The Deployment's selector as a label-selector string: ``WorkerPool.status.selector``, which the
    scale subresource exposes to ``kubectl scale`` and the HorizontalPodAutoscaler."""
    return ",".join(f"{key}={value}" for key, value in sorted(selector_labels(pool).items()))


def shutdown_grace_seconds(spec: WorkerPoolSpec) -> int:
    """How long a worker drains in-flight jobs after SIGTERM."""
    return max(1, spec.termination_grace_period_seconds - SHUTDOWN_MARGIN_SECONDS)


def initial_replicas(spec: WorkerPoolSpec) -> int:
    """Replicas a freshly created Deployment starts with (the autoscaler takes over from there)."""
    return spec.fixed_replicas if not spec.autoscaling.enabled else spec.min_replicas


def build_deployment(
    *,
    name: str,
    namespace: str,
    uid: str,
    spec: WorkerPoolSpec,
    default_redis_secret: str = DEFAULT_REDIS_SECRET,
) -> dict[str, Any]:
    """The worker Deployment for the WorkerPool ``namespace/name`` (uid ``uid``).

    The owner reference makes the garbage collector delete the Deployment, its
    ReplicaSets and pods when the pool is deleted.
    """
    redis_secret = spec.redis.secret_name if spec.redis else default_redis_secret
    redis_key = spec.redis.key if spec.redis else DEFAULT_REDIS_SECRET_KEY
    labels = {
        **selector_labels(name),
        "app.kubernetes.io/instance": name,
        "app.kubernetes.io/component": "worker",
        "app.kubernetes.io/managed-by": FIELD_MANAGER,
    }
    pod_labels = {**(spec.pod_labels or {}), **labels}
    pod_annotations = {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": str(WORKER_METRICS_PORT),
        **(spec.pod_annotations or {}),
    }

    # Worker settings from spec.env pass (POOL_ENV_SETTINGS; admission refuses other KUBEWORKERS_*
    # names). Operator-set variables come last, so no entry could redirect the pool anyway.
    env: list[dict[str, Any]] = [
        e.to_k8s() for e in spec.env or [] if not e.name.startswith("KUBEWORKERS_") or e.name in POOL_ENV_SETTINGS
    ]
    env += [
        {"name": "KUBEWORKERS_REDIS_URL", "valueFrom": {"secretKeyRef": {"name": redis_secret, "key": redis_key}}},
        {"name": "KUBEWORKERS_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {"name": "KUBEWORKERS_POOL", "value": name},
        {"name": "KUBEWORKERS_IMPORT", "value": ",".join(spec.imports)},
        {"name": "KUBEWORKERS_CONCURRENCY", "value": str(spec.concurrency)},
        {"name": "KUBEWORKERS_LEASE_SECONDS", "value": str(spec.lease_seconds)},
        {"name": "KUBEWORKERS_SHUTDOWN_GRACE", "value": str(shutdown_grace_seconds(spec))},
        {"name": "KUBEWORKERS_METRICS_PORT", "value": str(WORKER_METRICS_PORT)},
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        # A read-only root filesystem leaves /tmp (an emptyDir) as the only writable place.
        {"name": "HOME", "value": "/tmp"},
        {"name": "PYTHONUNBUFFERED", "value": "1"},
    ]

    container: dict[str, Any] = {
        "name": "worker",
        "image": spec.image,
        "command": ["kubeworkers", "worker"],
        "args": [
            "--pool", name,
            "--import", ",".join(spec.imports),
            "--concurrency", str(spec.concurrency),
        ],
        "env": env,
        "ports": [{"name": "metrics", "containerPort": WORKER_METRICS_PORT, "protocol": "TCP"}],
        "livenessProbe": {
            "httpGet": {"path": "/healthz", "port": "metrics"},
            "periodSeconds": 10,
            "timeoutSeconds": 3,
            "failureThreshold": 3,
        },
        "readinessProbe": {
            "httpGet": {"path": "/readyz", "port": "metrics"},
            "periodSeconds": 5,
            "timeoutSeconds": 3,
            "failureThreshold": 2,
        },
        "securityContext": {
            "runAsNonRoot": True,
            "readOnlyRootFilesystem": True,
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }
    if spec.image_pull_policy is not None:
        container["imagePullPolicy"] = spec.image_pull_policy.value
    if spec.env_from:
        container["envFrom"] = spec.env_from
    if spec.resources:
        container["resources"] = spec.resources

    pod_spec: dict[str, Any] = {
        "containers": [container],
        "terminationGracePeriodSeconds": spec.termination_grace_period_seconds,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": WORKER_UID,
            "runAsGroup": WORKER_UID,
            "fsGroup": WORKER_UID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumes": [{"name": "tmp", "emptyDir": {}}],
        # Workers talk to Redis only; the Kubernetes API token is not theirs to have.
        "automountServiceAccountToken": False,
    }
    if spec.service_account_name:
        pod_spec["serviceAccountName"] = spec.service_account_name
    if spec.node_selector:
        pod_spec["nodeSelector"] = spec.node_selector
    if spec.tolerations:
        pod_spec["tolerations"] = spec.tolerations
    if spec.affinity:
        pod_spec["affinity"] = spec.affinity

    deployment_spec: dict[str, Any] = {
        "selector": {"matchLabels": selector_labels(name)},
        # Surge, never unavailable: a rollout must not take running jobs' workers away early.
        "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 0}},
        "template": {"metadata": {"labels": pod_labels, "annotations": pod_annotations}, "spec": pod_spec},
    }
    if not spec.autoscaling.enabled:
        deployment_spec["replicas"] = spec.fixed_replicas

    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": deployment_name(name),
            "namespace": namespace,
            "labels": labels,
            "ownerReferences": [owner_reference(name, uid)],
        },
        "spec": deployment_spec,
    }


def owner_reference(pool: str, uid: str) -> dict[str, Any]:
    """The WorkerPool as controller of what the operator makes for it: deleting the pool deletes it."""
    return {
        "apiVersion": API_VERSION,
        "kind": WORKERPOOL_KIND,
        "name": pool,
        "uid": uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def build_disruption_budget(*, name: str, namespace: str, uid: str) -> dict[str, Any]:
    """The pool's worker PodDisruptionBudget: voluntary disruptions (a node drain) take one pod at a time.

    An evicted worker drains like any other on SIGTERM (finishes what it can within the grace
    period, hands the rest back uncounted), so one at a time bounds how much of the pool's
    capacity a drain takes at once. ``AlwaysAllow`` lets a drain evict pods that are not Ready
    (crash looping, still starting): they run nothing, and must never block a node's drain.
    Named like the Deployment, owned by the pool.
    """
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {
            "name": deployment_name(name),
            "namespace": namespace,
            "labels": {POOL_LABEL: name, "app.kubernetes.io/managed-by": FIELD_MANAGER},
            "ownerReferences": [owner_reference(name, uid)],
        },
        "spec": {
            "maxUnavailable": 1,
            "selector": {"matchLabels": selector_labels(name)},
            "unhealthyPodEvictionPolicy": "AlwaysAllow",
        },
    }
