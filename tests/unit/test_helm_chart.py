"""The chart as a package: metadata, shipped CRDs, documented values, lint, and its schema."""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml

from tests.support.tools import CHART, MODES, REPO, helm_template, kubernetes_version, run_helm, values_args


def test_chart_version_and_app_version_equal_the_python_package_version() -> None:
    package_version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["appVersion"] == package_version
    assert chart["version"] == package_version


def test_chart_ships_crds_byte_identical_to_the_crds_folder() -> None:
    source = {p.name: p.read_bytes() for p in sorted((REPO / "crds").glob("*.yaml"))}
    shipped = {p.name: p.read_bytes() for p in sorted((CHART / "crds").glob("*.yaml"))}
    assert source, "crds/ holds no CRDs"
    assert sorted(shipped) == sorted(source), "run hack/sync-crds.sh"
    for name, content in source.items():
        assert shipped[name] == content, f"helm/kubeworkers/crds/{name} differs from crds/{name}: run hack/sync-crds.sh"


def _undocumented_values(text: str) -> list[str]:
    """Dotted paths of leaf values with no comment above them or above an ancestor."""
    undocumented: list[str] = []
    stack: list[tuple[int, str, bool]] = []  # (indent, key, documented)
    previous = ""
    for line in text.splitlines():
        match = re.match(r"^(\s*)([A-Za-z_][\w-]*):(.*)$", line)
        if match is None:
            if line.strip():
                previous = line
            continue
        indent, key, rest = len(match.group(1)), match.group(2), match.group(3).strip()
        while stack and stack[-1][0] >= indent:
            stack.pop()
        documented = previous.strip().startswith("#") or any(doc for _, _, doc in stack)
        is_leaf = rest != "" and not rest.startswith("#")
        if is_leaf and not documented:
            undocumented.append(".".join([k for _, k, _ in stack] + [key]))
        stack.append((indent, key, previous.strip().startswith("#")))
        previous = line
    return undocumented


def test_every_value_in_values_yaml_has_a_comment() -> None:
    assert _undocumented_values((CHART / "values.yaml").read_text()) == []


def test_the_comment_checker_notices_an_undocumented_value() -> None:
    # The test above is only worth something if its checker can say no.
    text = "a:\n  # -- fine\n  b: 1\n  c: 2\n# -- all of d\nd:\n  e: 3\n"
    assert _undocumented_values(text) == ["a.c"]


@pytest.mark.parametrize("mode", sorted(MODES))
def test_helm_lint_strict_passes(mode: str, tmp_path: Path) -> None:
    result = run_helm(
        "lint", "--strict", str(CHART), "--namespace", "kw-system", "--kube-version", kubernetes_version(),
        *values_args(MODES[mode], tmp_path), check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[WARNING]" not in result.stdout and "[ERROR]" not in result.stdout, result.stdout


# (values, words the error must contain so the user knows what to fix)
BAD_VALUES: dict[str, tuple[dict[str, object], list[str]]] = {
    "misspelt-key": ({"operator": {"watchNamespaces": "a"}}, ["watchNamespaces"]),
    "port-not-a-number": ({"operator": {"port": "http"}}, ["operator", "port"]),
    "zero-operator-replicas": ({"operator": {"replicas": 0}}, ["replicas"]),
    "fsync-no-would-lose-jobs": ({"redis": {"appendfsync": "no"}}, ["appendfsync"]),
    "namespace-not-dns": ({"operator": {"watchNamespace": "Team_A"}}, ["watchNamespace"]),
    "url-not-redis": ({"redis": {"enabled": False, "url": "http://x"}}, ["url"]),
    "bad-log-level": ({"operator": {"logLevel": "verbose"}}, ["logLevel"]),
    "external-redis-without-address": ({"redis": {"enabled": False}}, ["redis.url", "redis.existingSecret"]),
    "secret-copies-of-a-foreign-secret": (
        {"redis": {"existingSecret": "mine", "secretNamespaces": ["a"]}}, ["secretNamespaces"]),
    "servicemonitor-without-service": (
        {"metrics": {"service": {"enabled": False}, "serviceMonitor": {"enabled": True}}}, ["metrics.service.enabled"]),
}


@pytest.mark.parametrize("case", sorted(BAD_VALUES))
def test_a_wrong_value_fails_helm_template_naming_the_value(case: str, tmp_path: Path) -> None:
    values, words = BAD_VALUES[case]
    result = helm_template(values, tmp_path, check=False)
    assert result.returncode != 0, f"{case} was accepted:\n{result.stdout[:2000]}"
    for word in words:
        assert word in result.stderr, result.stderr


@pytest.mark.parametrize("mode", ["default", "namespaced"])
def test_notes_tell_the_user_what_to_run_next(mode: str, tmp_path: Path) -> None:
    # `helm template` skips NOTES.txt and `helm install --dry-run` needs a cluster, so render the
    # real NOTES.txt through tpl from a copy of the chart (the e2e install shows it for real).
    chart = tmp_path / "chart"
    shutil.copytree(CHART, chart)
    shutil.copy(chart / "templates" / "NOTES.txt", chart / "notes.txt")
    (chart / "templates" / "zz-notes.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: notes}\n"
        'data:\n  notes: {{ tpl (.Files.Get "notes.txt") . | quote }}\n'
    )
    out = run_helm("template", "kw", str(chart), "--namespace", "kw-system", "--kube-version",
                   kubernetes_version(), "--show-only", "templates/zz-notes.yaml",
                   *values_args(MODES[mode], tmp_path)).stdout
    notes = yaml.safe_load(out)["data"]["notes"]
    assert "kubectl apply" in notes and "-f examples/job.yaml" in notes
    assert "kubectl get jobs.workers.io" in notes
    assert "rollout status deployment/kw-kubeworkers" in notes
    assert "kubectl apply --server-side" in notes  # the CRD upgrade step
    if mode == "namespaced":
        assert "kubectl get jobs.workers.io -n team-a" in notes
    else:
        assert "kw-system" in notes and "redis.secretNamespaces" in notes


def test_sync_crds_check_notices_a_drifted_chart_copy(tmp_path: Path) -> None:
    script = REPO / "hack" / "sync-crds.sh"
    assert subprocess.run(["bash", str(script), "--check"], capture_output=True, check=False).returncode == 0
    # The same script in a scratch copy of the layout, with one chart CRD edited.
    (tmp_path / "hack").mkdir()
    shutil.copy(script, tmp_path / "hack" / "sync-crds.sh")
    shutil.copytree(REPO / "crds", tmp_path / "crds")
    shutil.copytree(CHART / "crds", tmp_path / "helm" / "kubeworkers" / "crds")
    drifted = next((tmp_path / "helm" / "kubeworkers" / "crds").glob("*.yaml"))
    drifted.write_text(drifted.read_text() + "# edited by hand\n")
    copy = tmp_path / "hack" / "sync-crds.sh"
    check = subprocess.run(["bash", str(copy), "--check"], capture_output=True, text=True, check=False)
    assert check.returncode == 1 and "hack/sync-crds.sh" in check.stderr
    assert subprocess.run(["bash", str(copy)], capture_output=True, check=False).returncode == 0
    assert subprocess.run(["bash", str(copy), "--check"], capture_output=True, check=False).returncode == 0
