"""Helpers of the e2e tests (and the e2e benchmarks): the operator as a real subprocess,
manifests, and readers of Jobs. The fixtures built on them (``crds``, ``operator``,
``redis_secret``, ``demo_pool`` and the cluster-wide ones) are in tests/e2e/conftest.py.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from hack import processes
from hack.local_cluster import tests_dir
from hack.net import free_port
from hack.polling import wait_for
from tests.support.cluster import Cluster

REPO = Path(__file__).resolve().parents[2]
OPERATOR_BIN = Path(sys.executable).parent / "kubeworkers-operator"
LOG_ROOT = tests_dir() / "e2e-logs"

__all__ = [
    "LOG_ROOT",
    "REPO",
    "OperatorProcess",
    "get_job",
    "install_crds",
    "job_list_yaml",
    "list_jobs",
    "pool_manifest",
    "wait_for",
]


class OperatorProcess:
    """``kubeworkers-operator`` run as a subprocess against a test cluster and Redis.

    ``namespaces`` empty: the operator's default, cluster-wide mode (it serves every namespace).
    """

    def __init__(self, cluster: Cluster, redis_url: str, namespaces: list[str], log_dir: Path,
                 extra_args: list[str] | None = None, *, name: str = "operator-test") -> None:
        self.cluster = cluster
        self.name = name
        """The replica's pod name (``POD_NAME``): its consumer name and its identity in the Lease."""
        self.redis_url = redis_url
        self.namespaces = namespaces
        self.log_dir = log_dir
        self.extra_args = extra_args or []
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.starts = 0

    def start(self) -> OperatorProcess:
        self.port = free_port()
        self.starts += 1
        args = [str(OPERATOR_BIN), "--metrics-port", str(self.port), "--resync-interval", "5",
                "--pending-retry", "2", "--progress-interval", "1", "--orphan-sweep-interval", "5", *self.extra_args]
        for ns in self.namespaces:
            args += ["--namespace", ns]
        # The Lease in the (first) served namespace: operators of different tests never share one,
        # and it goes with the test's namespace. Cluster-wide: the default, `default`.
        if self.namespaces and "--lease-namespace" not in self.extra_args:
            args += ["--lease-namespace", self.namespaces[0]]
        env = {**self.cluster.env, "KUBEWORKERS_REDIS_URL": self.redis_url, "POD_NAME": self.name}
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = (self.log_dir / f"operator-{self.starts}.log").open("wb")
        self.proc = processes.spawn(args, env=env, stdout=log, stderr=subprocess.STDOUT)
        wait_for(self.healthy, timeout=60, what="operator /healthz")
        return self

    def healthy(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"operator exited with {self.proc.returncode}; see {self.log_dir}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=2) as resp:
                return bool(resp.status == 200)
        except OSError:
            return False

    def role(self) -> str:
        """``leader`` or ``standby``, as ``/readyz`` says."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz", timeout=2) as resp:
            return str(resp.headers["X-Kubeworkers-Role"])

    def metrics(self) -> dict[str, float]:
        """Samples of ``/metrics`` as ``name{labels}`` -> value."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5) as resp:
            text = resp.read().decode()
        out: dict[str, float] = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                key, _, value = line.rpartition(" ")
                out[key] = float(value)
        return out

    def metric_sum(self, prefix: str) -> float:
        return sum(v for k, v in self.metrics().items() if k.startswith(prefix))

    def kill(self, sig: int = signal.SIGKILL) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)
        self.proc.wait(30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def install_crds(cluster: Cluster) -> None:
    """Apply the project's CRDs as they are and wait until they are established (for scripts)."""
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(REPO / "crds"))
    for name in ("jobs.workers.io", "workerpools.workers.io", "schedules.workers.io"):
        cluster.kubectl("wait", "--for=condition=Established", f"crd/{name}", "--timeout=60s")


def pool_manifest(name: str = "demo", **overrides: Any) -> str:
    """examples/workerpool.yaml with ``name`` and spec overrides."""
    doc = yaml.safe_load((REPO / "examples" / "workerpool.yaml").read_text())
    doc["metadata"]["name"] = name
    doc["spec"].update(overrides)
    return yaml.safe_dump(doc)


def job_list_yaml(names: list[str], pool: str, handler: str, input: dict[str, Any]) -> str:
    """One ``kind: List`` of Jobs (``input`` gets each Job's index as ``n``)."""
    items = [
        {"apiVersion": "workers.io/v1alpha1", "kind": "Job", "metadata": {"name": name},
         "spec": {"pool": pool, "handler": handler, "input": {**input, "n": i}}}
        for i, name in enumerate(names)
    ]
    return json.dumps({"apiVersion": "v1", "kind": "List", "items": items})


def list_jobs(cluster: Cluster, namespace: str) -> dict[str, dict[str, Any]]:
    out = cluster.kubectl("get", "jobs.workers.io", "-n", namespace, "-o", "json", timeout=120).stdout
    return {item["metadata"]["name"]: item for item in json.loads(out)["items"]}


def get_job(cluster: Cluster, namespace: str, name: str) -> dict[str, Any] | None:
    proc = cluster.kubectl("get", "jobs.workers.io", name, "-n", namespace, "-o", "json", check=False)
    if proc.returncode != 0:
        if "NotFound" in proc.stderr:
            return None
        raise AssertionError(proc.stderr)
    result: dict[str, Any] = json.loads(proc.stdout)
    return result
