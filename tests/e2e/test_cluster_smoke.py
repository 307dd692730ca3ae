"""The local control plane is a real Kubernetes: controllers, scheduler, GC, admission."""

from __future__ import annotations

import json
import re

from hack.polling import wait_for
from tests.support.cluster import Cluster


def pods(cluster: Cluster, namespace: str, selector: str) -> list[dict]:
    out = cluster.kubectl("get", "pods", "-n", namespace, "-l", selector, "-o", "json").stdout
    return list(json.loads(out)["items"])


DEPLOYMENT = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: smoke}
spec:
  replicas: 3
  selector: {matchLabels: {app: smoke}}
  template:
    metadata: {labels: {app: smoke}}
    spec:
      containers:
      - name: main
        image: example.invalid/smoke:1
        command: ["sleep", "3600"]
"""


def is_ready(pod: dict) -> bool:
    conditions = pod.get("status", {}).get("conditions") or []
    return pod.get("status", {}).get("phase") == "Running" and any(
        c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def test_deployment_of_three_replicas_yields_three_running_ready_pods(cluster: Cluster, namespace: str) -> None:
    cluster.apply(DEPLOYMENT, namespace=namespace)
    wait_for(lambda: sum(is_ready(p) for p in pods(cluster, namespace, "app=smoke")) == 3,
             what="3 Running+Ready pods")
    scheduled = {p["spec"]["nodeName"] for p in pods(cluster, namespace, "app=smoke")}
    assert scheduled <= {"kw-node-1", "kw-node-2", "kw-node-3"}, scheduled


def test_deleting_a_deployment_garbage_collects_its_pods(cluster: Cluster, namespace: str) -> None:
    cluster.apply(DEPLOYMENT, namespace=namespace)
    wait_for(lambda: len(pods(cluster, namespace, "app=smoke")) == 3, what="3 pods")
    cluster.kubectl("delete", "deployment", "smoke", "-n", namespace, "--cascade=background")
    wait_for(lambda: not pods(cluster, namespace, "app=smoke"), what="pods garbage-collected")
    rs = json.loads(cluster.kubectl("get", "replicasets", "-n", namespace, "-o", "json").stdout)["items"]
    assert rs == []


def test_kubectl_and_server_versions_are_within_the_supported_skew(cluster: Cluster) -> None:
    out = json.loads(cluster.kubectl("version", "-o", "json").stdout)
    client_minor = int(re.sub(r"\D", "", out["clientVersion"]["minor"]))
    server_minor = int(re.sub(r"\D", "", out["serverVersion"]["minor"]))
    assert out["serverVersion"]["major"] == "1"
    assert out["serverVersion"]["gitVersion"].startswith("v1."), out["serverVersion"]
    assert abs(client_minor - server_minor) <= 1, (client_minor, server_minor)


CRD = """
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: widgets.smoke.kubeworkers.io}
spec:
  group: smoke.kubeworkers.io
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            required: [size]
            properties:
              size: {type: integer, minimum: 1}
"""


def test_structural_crd_is_accepted_and_a_violating_object_is_rejected(cluster: Cluster, namespace: str) -> None:
    cluster.apply(CRD)
    wait_for(lambda: "Established" in cluster.kubectl(
        "get", "crd", "widgets.smoke.kubeworkers.io", "-o",
        "jsonpath={.status.conditions[?(@.status=='True')].type}").stdout, what="CRD established")
    good = "apiVersion: smoke.kubeworkers.io/v1\nkind: Widget\nmetadata: {name: ok}\nspec: {size: 3}\n"
    wait_for(lambda: cluster.apply(good, namespace=namespace, check=False).returncode == 0,
             what="CRD served")
    bad = "apiVersion: smoke.kubeworkers.io/v1\nkind: Widget\nmetadata: {name: bad}\nspec: {size: 0}\n"
    proc = cluster.apply(bad, namespace=namespace, check=False)
    assert proc.returncode != 0
    assert "spec.size" in proc.stderr and "should be greater than or equal to 1" in proc.stderr, proc.stderr
