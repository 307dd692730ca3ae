"""The kubelet stand-in runs Running pods' containers locally and stops them like a kubelet."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from hack.polling import wait_for
from tests.support.cluster import Cluster
from tests.support.pod_runner import PodRunner

# A process that records its environment, then traps SIGTERM and records that too.
SCRIPT = r"""
import os, pathlib, signal, sys, time
out = pathlib.Path(sys.argv[1]) / os.environ["POD_NAME"]
out.mkdir(parents=True, exist_ok=True)
(out / "env").write_text(f"{os.environ['GREETING']}|{os.environ['PASSWORD']}|{os.environ['COLOR']}|{os.environ['NS']}")
(out / "starts").open("a").write("x")
def on_term(*_):
    (out / "sigterm").write_text(str(time.time()))
    if os.environ.get("IGNORE_TERM") != "1":
        sys.exit(0)
signal.signal(signal.SIGTERM, on_term)
if os.environ.get("CRASH_ONCE") == "1" and len((out / "starts").read_text()) == 1:
    sys.exit(3)
while True:
    time.sleep(0.1)
"""


def manifest(name: str, workdir: Path, grace: int, extra_env: str = "") -> str:
    return f"""
apiVersion: v1
kind: Secret
metadata: {{name: creds}}
stringData: {{password: s3cret}}
---
apiVersion: v1
kind: ConfigMap
metadata: {{name: settings}}
data: {{COLOR: blue}}
---
apiVersion: v1
kind: Pod
metadata:
  name: {name}
  labels: {{app: runner-test}}
spec:
  terminationGracePeriodSeconds: {grace}
  restartPolicy: Always
  containers:
  - name: main
    image: example.invalid/runner:1
    command: {json.dumps([sys.executable, "-c", SCRIPT])}
    args: {json.dumps([str(workdir)])}
    envFrom:
    - configMapRef: {{name: settings}}
    env:
    - {{name: POD_NAME, valueFrom: {{fieldRef: {{fieldPath: metadata.name}}}}}}
    - {{name: NS, valueFrom: {{fieldRef: {{fieldPath: metadata.namespace}}}}}}
    - {{name: PASSWORD, valueFrom: {{secretKeyRef: {{name: creds, key: password}}}}}}
    - {{name: WHO, value: world}}
    - {{name: GREETING, value: "hello $(WHO)"}}
{extra_env}
"""


def test_running_pod_gets_a_local_process_with_resolved_env_and_sigterm_on_delete(
    cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    cluster.apply(manifest("p1", tmp_path, grace=30), namespace=namespace)
    with PodRunner(cluster, namespace, "app=runner-test", log_dir=tmp_path / "logs") as runner:
        wait_for(lambda: (tmp_path / "p1" / "env").exists(), timeout=60, what="process started")
        assert (tmp_path / "p1" / "env").read_text() == f"hello world|s3cret|blue|{namespace}"
        assert "p1" in runner.processes()
        cluster.kubectl("delete", "pod", "p1", "-n", namespace, "--wait=false")
        wait_for(lambda: (tmp_path / "p1" / "sigterm").exists(), timeout=60, what="SIGTERM delivered")
        wait_for(lambda: "p1" not in runner.processes(), timeout=60, what="process exited")


def test_process_ignoring_sigterm_is_killed_after_the_grace_period(
    cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    env = "    - {name: IGNORE_TERM, value: '1'}"
    cluster.apply(manifest("p2", tmp_path, grace=2, extra_env=env), namespace=namespace)
    with PodRunner(cluster, namespace, "app=runner-test", log_dir=tmp_path / "logs") as runner:
        wait_for(lambda: "p2" in runner.processes(), timeout=60, what="process started")
        pid = runner.processes()["p2"]
        deleted_at = time.time()
        cluster.kubectl("delete", "pod", "p2", "-n", namespace, "--wait=false")
        wait_for(lambda: (tmp_path / "p2" / "sigterm").exists(), timeout=60, what="SIGTERM delivered")
        wait_for(lambda: "p2" not in runner.processes(), timeout=30, what="SIGKILL after grace")
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]
        # It outlived SIGTERM (it ignores it) until the grace period ran out.
        assert float((tmp_path / "p2" / "sigterm").read_text()) >= deleted_at - 1


def test_crashed_process_is_restarted_per_restart_policy_always(
    cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    env = "    - {name: CRASH_ONCE, value: '1'}"
    cluster.apply(manifest("p3", tmp_path, grace=5, extra_env=env), namespace=namespace)
    with PodRunner(cluster, namespace, "app=runner-test", log_dir=tmp_path / "logs") as runner:
        starts = tmp_path / "p3" / "starts"
        wait_for(lambda: starts.exists() and starts.read_text() == "xx", timeout=60,
                 what="the second start after the crash")
        wait_for(lambda: "p3" in runner.processes(), timeout=60, what="the restarted process to keep running")
        assert runner.starts("p3") == 2
        assert starts.read_text() == "xx"
