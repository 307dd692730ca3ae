"""The control plane a test talks to: the developer's cluster or a local one from hack/."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

from hack.local_cluster import ClusterError, LocalCluster, kubectl_binary

__all__ = ["Cluster", "ClusterError", "keep_clusters"]


def keep_clusters() -> bool:
    """``KUBEWORKERS_KEEP_CLUSTER=1``: local clusters a test run starts outlive it (the next run reuses them)."""
    return os.environ.get("KUBEWORKERS_KEEP_CLUSTER") == "1"


class Cluster:
    """A reachable Kubernetes API with an admin kubeconfig."""

    def __init__(self, kubeconfig: Path, started_here: bool, local: LocalCluster | None = None) -> None:
        self.kubeconfig = str(kubeconfig)
        self.started_here = started_here
        self.local = local
        self.env = {**os.environ, "KUBECONFIG": self.kubeconfig}
        self._kubectl = kubectl_binary()

    @classmethod
    def from_environment(cls) -> Cluster:
        """``KUBEWORKERS_KUBECONFIG`` if set (it must be reachable), else the tests' local control plane."""
        explicit = os.environ.get("KUBEWORKERS_KUBECONFIG")
        if explicit:
            c = cls(Path(explicit), started_here=False)
            proc = c.kubectl("version", check=False, timeout=20)
            if proc.returncode != 0:
                raise ClusterError(f"KUBEWORKERS_KUBECONFIG={explicit} is not reachable: {proc.stderr.strip()}")
            return c
        return cls.start_local(LocalCluster.for_tests())

    @classmethod
    def start_local(cls, local: LocalCluster) -> Cluster:
        """Start ``local`` if needed; it is stopped at :meth:`close` only if this process started it.

        Unless ``KUBEWORKERS_KEEP_CLUSTER=1``, what is started here dies with this process even
        when it is killed (see hack/processes.py), so an interrupted run leaves no control plane.
        """
        already = local.is_up()
        path = local.up(owned=not keep_clusters())
        return cls(path, started_here=not already, local=local)

    def kubectl(self, *args: str, check: bool = True, input: str | None = None,
                timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run kubectl against this cluster; on failure (when ``check``) raise with its stderr."""
        proc = subprocess.run([self._kubectl, *args], input=input, text=True, capture_output=True,
                              env=self.env, timeout=timeout, check=False)
        if check and proc.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()}")
        return proc

    def apply(self, manifest: str | os.PathLike[str], namespace: str | None = None,
              check: bool = True) -> subprocess.CompletedProcess[str]:
        """``kubectl apply`` a file/directory path or literal YAML text."""
        ns = ["-n", namespace] if namespace else []
        text = str(manifest)
        if "\n" in text or not Path(text).exists():
            return self.kubectl("apply", *ns, "-f", "-", input=text, check=check)
        return self.kubectl("apply", *ns, "-f", text, check=check)

    def api_client(self) -> Any:
        """A ``kubernetes.client.ApiClient`` for this cluster."""
        from kubernetes import config

        return config.new_client_from_config(config_file=self.kubeconfig)

    def close(self) -> None:
        if self.started_here and self.local is not None and not keep_clusters():
            self.local.down()
