"""The container images' Dockerfiles: hadolint clean, pinned bases, non-root, as the chart expects."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tests.support.tools import REPO, hadolint_binary, render_chart

OPERATOR_DOCKERFILE = REPO / "operator" / "Dockerfile"
# The worker Dockerfile belongs to the worker runtime; lint it too once it exists, so both
# images meet one bar. The operator's must exist: the chart deploys it.
DOCKERFILES = [OPERATOR_DOCKERFILE] + [p for p in [REPO / "worker_image" / "Dockerfile"] if p.exists()]


def _ids(paths: list[Path]) -> list[str]:
    return [str(p.relative_to(REPO)) for p in paths]


def stages(text: str) -> list[list[str]]:
    """Instructions per build stage, continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n", " ", text)
    out: list[list[str]] = []
    for raw in joined.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.upper().startswith("FROM "):
            out.append([])
        if out:
            out[-1].append(line)
    return out


def build_args(text: str) -> dict[str, str]:
    return dict(re.findall(r"^ARG\s+(\w+)=(\S+)", text, flags=re.MULTILINE))


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=_ids(DOCKERFILES))
def test_dockerfile_is_hadolint_clean(dockerfile: Path) -> None:
    result = subprocess.run(
        [str(hadolint_binary()), "--no-color", str(dockerfile)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=_ids(DOCKERFILES))
def test_dockerfile_bases_are_pinned_to_a_patch_release(dockerfile: Path) -> None:
    text = dockerfile.read_text()
    args = build_args(text)
    for stage in stages(text):
        image = stage[0].split()[1]
        image = re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), image)
        if "@sha256:" in image or image == "scratch":
            continue
        if ":" not in image:
            # A reference to an earlier stage by name.
            assert any(s[0].split()[-1] == image for s in stages(text)), f"unpinned base {image}"
            continue
        tag = image.rsplit(":", 1)[1]
        assert re.match(r"^\d+\.\d+\.\d+", tag), f"{dockerfile}: base {image} is not pinned to x.y.z"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=_ids(DOCKERFILES))
def test_final_stage_runs_as_a_numeric_non_root_user(dockerfile: Path) -> None:
    final = stages(dockerfile.read_text())[-1]
    users = [line.split()[1] for line in final if line.upper().startswith("USER ")]
    assert users, f"{dockerfile}: the final stage never sets USER"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0, f"{dockerfile}: USER {users[-1]} must be a numeric non-root uid"


def test_operator_image_user_is_the_uid_the_chart_runs_the_pod_as(tmp_path: Path) -> None:
    final = stages(OPERATOR_DOCKERFILE.read_text())[-1]
    uid, gid = next(line.split()[1] for line in final if line.upper().startswith("USER ")).split(":")
    deployment = next(o for o in render_chart(None, tmp_path)
                      if o["kind"] == "Deployment" and o["metadata"]["name"] == "kw-kubeworkers")
    pod = deployment["spec"]["template"]["spec"]["securityContext"]
    assert (pod["runAsUser"], pod["runAsGroup"]) == (int(uid), int(gid))


def test_operator_image_starts_the_operator_console_script() -> None:
    final = stages(OPERATOR_DOCKERFILE.read_text())[-1]
    entrypoint = next(line for line in final if line.upper().startswith("ENTRYPOINT"))
    assert '"kubeworkers-operator"' in entrypoint
    assert "kubeworkers-operator" in (REPO / "pyproject.toml").read_text()


def test_operator_build_context_sends_only_what_the_image_copies() -> None:
    ignore = (REPO / "operator" / "Dockerfile.dockerignore").read_text().splitlines()
    assert ignore[ignore.index("*")] == "*", "the ignore file must start from excluding everything"
    copied = re.findall(r"^COPY\s+(?!--from)(.+)\s+\S+$", OPERATOR_DOCKERFILE.read_text(), flags=re.MULTILINE)
    for sources in copied:
        for source in sources.split():
            assert any(line.startswith(f"!{source.rstrip('/')}") for line in ignore), f"{source} is ignored"
