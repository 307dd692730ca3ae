"""The control plane a test talks to: the developer's cluster or the local one from hack/."""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from hack import local_cluster
from hack.local_cluster import ClusterError, kubectl_binary

__all__ = ["Cluster", "ClusterError"]


class Cluster:
    """A reachable Kubernetes API with an admin kubeconfig."""

    def __init__(self, kubeconfig: Path, started_here: bool) -> None:
        self.kubeconfig = str(kubeconfig)
        self.started_here = started_here
        self.env = {**os.environ, "KUBECONFIG": self.kubeconfig}
        self._kubectl = kubectl_binary()

    @classmethod
    def from_environment(cls) -> Cluster:
        """``KUBEWORKERS_KUBECONFIG`` if set (it must be reachable), else the local control plane.

        The local one is started if needed and stopped again at :meth:`close` only if
        this process started it (``KUBEWORKERS_KEEP_CLUSTER=1`` keeps it running).
        """
        explicit = os.environ.get("KUBEWORKERS_KUBECONFIG")
        if explicit:
            c = cls(Path(explicit), started_here=False)
            proc = c.kubectl("version", check=False, timeout=20)
            if proc.returncode != 0:
                raise ClusterError(f"KUBEWORKERS_KUBECONFIG={explicit} is not reachable: {proc.stderr.strip()}")
            return c
        already = local_cluster.is_up()
        path = local_cluster.up()
        return cls(path, started_here=not already)

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
        if self.started_here and os.environ.get("KUBEWORKERS_KEEP_CLUSTER") != "1":
            local_cluster.down()


def scratch_dir(prefix: str = "kw-") -> Path:
    return Path(tempfile.mkdtemp(prefix=prefix))
