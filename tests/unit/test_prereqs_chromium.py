"""hack/ensure-prereqs.sh --for test asks for chromium and chromium-driver (the web console's browser
tests, tests/integration/test_console_browser.py); the demo does not need them."""

from __future__ import annotations

from pathlib import Path

from tests.unit.test_prereqs import path_without, run


def test_a_test_machine_without_chromedriver_is_told_to_install_chromium_driver(tmp_path: Path) -> None:
    result = run("--for", "test", "--check", path=path_without(tmp_path, "chromedriver"))
    assert result.returncode == 1
    assert "missing: chromium-driver" in result.stderr
    assert "apt-get install -y --no-install-recommends chromium-driver" in result.stderr


def test_a_test_machine_without_chromium_is_told_to_install_it(tmp_path: Path) -> None:
    result = run("--for", "test", "--check", path=path_without(tmp_path, "chromium", "chromium-browser"))
    assert result.returncode == 1
    assert "missing: chromium" in result.stderr


def test_the_demo_does_not_ask_for_a_browser(tmp_path: Path) -> None:
    result = run("--for", "demo", "--check", path=path_without(tmp_path, "chromium", "chromium-browser",
                                                               "chromedriver"))
    assert "chromium" not in result.stderr, result.stderr
