"""hack/ensure-prereqs.sh: a fresh machine gets what `make demo`, `make test` and CI need, or one
line saying what to run. Run here with a PATH that lacks chosen tools (nothing is installed)."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "hack" / "ensure-prereqs.sh"


def path_without(tmp_path: Path, *missing: str, fake_uid: int | None = None) -> str:
    """A PATH directory holding every tool of this machine's PATH except ``missing``."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for directory in os.environ.get("PATH", "").split(os.pathsep):
        if not os.path.isdir(directory):
            continue
        for entry in os.scandir(directory):
            target = bin_dir / entry.name
            if entry.name in missing or target.exists() or not os.access(entry.path, os.X_OK):
                continue
            target.symlink_to(entry.path)
    if fake_uid is not None:
        # Not root and no sudo: the script must not try to install, only say what to run.
        (bin_dir / "id").unlink(missing_ok=True)
        (bin_dir / "id").write_text(f"#!/bin/sh\necho {fake_uid}\n")
        (bin_dir / "id").chmod(0o755)
        (bin_dir / "sudo").unlink(missing_ok=True)
    return str(bin_dir)


def run(*args: str, path: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=120, check=False,
                          env={**os.environ, "PATH": path, **env})


def test_a_machine_without_redis_server_is_told_the_one_apt_get_line_to_run(tmp_path: Path) -> None:
    path = path_without(tmp_path, "redis-server", "redis-cli", fake_uid=1000)
    result = run("--for", "demo", path=path)
    assert result.returncode == 1
    (line,) = result.stderr.strip().splitlines()
    assert "missing: redis-server" in line
    assert line.endswith("Run: sudo apt-get install -y --no-install-recommends redis-server")


def test_a_machine_without_redis_sentinel_is_told_to_install_it_for_the_failover_tests(tmp_path: Path) -> None:
    result = run("--check", path=path_without(tmp_path, "redis-sentinel"))
    assert result.returncode == 1
    assert "missing: redis-sentinel" in result.stderr
    assert "apt-get install -y --no-install-recommends redis-sentinel" in result.stderr


def test_check_reports_a_missing_openssl_without_installing_anything(tmp_path: Path) -> None:
    result = run("--check", path=path_without(tmp_path, "openssl"))
    assert result.returncode == 1
    assert "missing: openssl" in result.stderr
    assert "apt-get install -y --no-install-recommends openssl" in result.stderr


def test_go_is_demanded_only_while_the_control_plane_binaries_are_missing(tmp_path: Path) -> None:
    path = path_without(tmp_path, "go")
    empty_cache = tmp_path / "cache"
    missing = run("--for", "demo", "--check", path=path, KUBEWORKERS_CACHE=str(empty_cache))
    assert missing.returncode == 1
    assert "Go >= 1.26 is needed once, to build the control-plane binaries" in missing.stderr
    assert "https://go.dev/dl/" in missing.stderr

    # With the binaries built (this machine's cache), Go is not needed at all. (Other checks,
    # such as a virtualenv older than pyproject.toml, are the developer's state, not this test's.)
    built = run("--for", "demo", "--check", path=path)
    assert "Go >= " not in built.stderr and "go.dev" not in built.stderr, built.stderr


def make_dry_run(target: str) -> list[str]:
    # Outside any make that runs these tests (make test does), so no "Entering directory" lines.
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    return subprocess.run(["make", "--no-print-directory", "-n", target], cwd=REPO, env=env, capture_output=True,
                          text=True, check=True).stdout.splitlines()


def test_make_demo_make_test_and_ci_take_the_same_prerequisite_step() -> None:
    assert make_dry_run("test")[0] == "bash hack/ensure-prereqs.sh --for test"
    assert make_dry_run("demo") == ["bash hack/demo.sh up"]
    demo_up = re.search(r"^up\(\) \{\n(.*?)^\}", (REPO / "hack" / "demo.sh").read_text(), re.S | re.M)
    assert demo_up and demo_up.group(1).splitlines()[0].strip() == "bash hack/ensure-prereqs.sh --for demo"
    ci = (REPO / ".ci" / "run").read_text()
    assert "bash hack/ensure-prereqs.sh --for test" in ci
    # No second list of packages anywhere else.
    for path in (REPO / "Makefile", REPO / ".ci" / "run", REPO / "hack" / "demo.sh"):
        assert "apt-get" not in path.read_text(), path
