"""The worker image: hadolint clean, the entrypoint the operator's pods expect, the user-image pattern."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.tools import REPO, hadolint_binary

BASE = REPO / "worker_image" / "Dockerfile"
USER_EXAMPLE = REPO / "worker_image" / "example" / "Dockerfile"


def final_stage(text: str) -> list[str]:
    joined = re.sub(r"\\\n", " ", text)
    lines = [line.strip() for line in joined.splitlines() if line.strip() and not line.strip().startswith("#")]
    start = max(i for i, line in enumerate(lines) if line.upper().startswith("FROM "))
    return lines[start:]


@pytest.mark.parametrize("dockerfile", [BASE, USER_EXAMPLE], ids=["base", "user-example"])
def test_worker_dockerfiles_are_hadolint_clean(dockerfile: Path) -> None:
    result = subprocess.run([str(hadolint_binary()), "--no-color", str(dockerfile)],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_worker_image_runs_kubeworkers_worker_as_the_uid_the_operator_sets() -> None:
    from kubeworkers_operator.model.deployment import WORKER_METRICS_PORT, WORKER_UID

    final = final_stage(BASE.read_text())
    assert next(line for line in final if line.startswith("ENTRYPOINT")) == 'ENTRYPOINT ["kubeworkers", "worker"]'
    user = [line.split()[1] for line in final if line.startswith("USER ")][-1]
    assert user == f"{WORKER_UID}:{WORKER_UID}"
    assert f"EXPOSE {WORKER_METRICS_PORT}" in final
    assert 'kubeworkers = "kubeworkers.cli:main"' in (REPO / "pyproject.toml").read_text()


def test_worker_image_suits_a_read_only_root_filesystem() -> None:
    text = BASE.read_text()
    assert "compileall" in text, "bytecode must be compiled at build time"
    env = " ".join(line for line in final_stage(text) if line.startswith("ENV "))
    assert "PYTHONDONTWRITEBYTECODE=1" in env and "HOME=/tmp" in env


def test_user_image_pattern_builds_on_the_base_and_adds_handlers_to_the_python_path() -> None:
    user = USER_EXAMPLE.read_text()
    assert re.search(r"^ARG BASE_IMAGE=kubeworkers-worker:\d+\.\d+\.\d+$", user, re.MULTILINE)
    assert "COPY my_handlers/ /app/my_handlers/" in user
    assert "PYTHONPATH=/app" in BASE.read_text()
    # The documented module is importable from /app and registers its namespaced handler.
    out = subprocess.run(
        [sys.executable, "-m", "kubeworkers", "handlers", "--import", "my_handlers"],
        capture_output=True, text=True, check=True, cwd=REPO,
        env={"PYTHONPATH": str(REPO / "worker_image" / "example"), "PATH": ""},
    )
    assert "my_app.greet" in out.stdout


def test_build_context_sends_what_the_base_image_copies() -> None:
    ignore = (REPO / "worker_image" / "Dockerfile.dockerignore").read_text().splitlines()
    assert "*" in ignore
    copied = re.findall(r"^COPY\s+(?!--from)(.+)\s+\S+$", BASE.read_text(), flags=re.MULTILINE)
    for sources in copied:
        for source in sources.split():
            assert any(line.startswith(f"!{source.rstrip('/')}") for line in ignore), f"{source} is ignored"
