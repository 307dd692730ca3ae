"""The operator as a real subprocess, plus a WorkerPool whose pods PodRunner runs as local workers.

Use from a test module with ``from tests.e2e.operator_fixtures import *`` (the fixtures
``crds``, ``operator``, ``redis_secret`` and ``demo_pool``) and the helpers below.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.cluster import Cluster
from tests.support.pod_runner import PodRunner

REPO = Path(__file__).resolve().parents[2]
OPERATOR_BIN = Path(sys.executable).parent / "kubeworkers-operator"
LOG_ROOT = REPO / ".local" / "e2e-logs"

__all__ = [
    "OperatorProcess",
    "crds",
    "demo_pool",
    "get_job",
    "install_crds",
    "job_list_yaml",
    "list_jobs",
    "operator",
    "pool_manifest",
    "redis_secret",
    "wait_for",
]


def wait_for(condition: Callable[[], Any], timeout: float = 90, what: str = "condition", every: float = 0.3) -> Any:
    """Poll ``condition`` until it returns something truthy (and return it) or fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(every)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class OperatorProcess:
    """``kubeworkers-operator`` run as a subprocess against the test cluster and Redis."""

    def __init__(self, cluster: Cluster, redis_url: str, namespaces: list[str], log_dir: Path,
                 extra_args: list[str] | None = None) -> None:
        self.cluster = cluster
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
        env = {**self.cluster.env, "KUBEWORKERS_REDIS_URL": self.redis_url, "POD_NAME": "operator-test"}
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = (self.log_dir / f"operator-{self.starts}.log").open("wb")
        self.proc = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT)
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
    for name in ("jobs.workers.io", "workerpools.workers.io"):
        cluster.kubectl("wait", "--for=condition=Established", f"crd/{name}", "--timeout=60s")


@pytest.fixture(scope="session")
def crds(crds_installed: Cluster) -> None:
    """The project's CRDs, installed and established (``crds_installed`` from the e2e conftest)."""


@pytest.fixture
def redis_secret(cluster: Cluster, namespace: str, redis_url: str) -> str:
    """The Secret the worker pods read the Redis URL from (``kubeworkers-redis``, key ``url``)."""
    cluster.kubectl("create", "secret", "generic", "kubeworkers-redis", "-n", namespace,
                    f"--from-literal=url={redis_url}")
    return "kubeworkers-redis"


@pytest.fixture
def operator(cluster: Cluster, crds: None, namespace: str, redis_url: str, redis_secret: str,  # noqa: PLR0917
             request: pytest.FixtureRequest) -> Iterator[OperatorProcess]:
    """A running operator serving the test's namespace."""
    op = OperatorProcess(cluster, redis_url, [namespace], LOG_ROOT / request.node.name)
    op.start()
    yield op
    op.stop()


def pool_manifest(name: str = "demo", **overrides: Any) -> str:
    """examples/workerpool.yaml with ``name`` and spec overrides."""
    doc = yaml.safe_load((REPO / "examples" / "workerpool.yaml").read_text())
    doc["metadata"]["name"] = name
    doc["spec"].update(overrides)
    return yaml.safe_dump(doc)


@pytest.fixture
def demo_pool(cluster: Cluster, namespace: str, operator: OperatorProcess,
              request: pytest.FixtureRequest) -> Iterator[PodRunner]:
    """Runs every worker pod of the namespace as a local ``kubeworkers worker`` process.

    The pool itself is applied by the test (it is part of what the test shows).
    """
    runner = PodRunner(cluster, namespace, "workers.io/pool",
                       extra_env={"KUBEWORKERS_METRICS_PORT": "0"},
                       log_dir=LOG_ROOT / request.node.name / "pods")
    with runner:
        yield runner


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


def env_flag(name: str) -> bool:
    return os.environ.get(name) == "1"
