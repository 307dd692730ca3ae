"""Operator settings are declared once: each field's flag, variable and help, and they agree with
what the Helm chart passes and what docs/operations.md lists."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pytest
from kubeworkers_operator import settings
from kubeworkers_operator.cli import parse_args
from kubeworkers_operator.settings import OperatorSettings

from tests.support.tools import MODES, REPO, render_chart


def other_value(default: Any) -> tuple[list[str], Any]:
    """Command-line words giving a value unlike ``default``, and that value."""
    if isinstance(default, bool):
        return [], not default
    if isinstance(default, list):
        return ["team-a"], ["team-a"]
    if isinstance(default, int):
        return [str(default + 7)], default + 7
    if isinstance(default, float):
        return [str(default + 0.5)], default + 0.5
    return [f"{default}-x"], f"{default}-x"


@pytest.mark.parametrize(("name", "decl"), [(f.name, d) for f, d in settings.declared()])
def test_every_setting_has_a_flag_that_sets_it(name: str, decl: settings.Declaration) -> None:
    default = getattr(OperatorSettings(), name)
    words, wanted = other_value(default)
    parser = argparse.ArgumentParser()
    settings.add_arguments(parser)
    assert getattr(settings.from_arguments(parser.parse_args([decl.flag, *words]), env={}), name) == wanted
    assert getattr(settings.from_arguments(parser.parse_args([]), env={}), name) == default
    assert decl.help


def test_a_flag_beats_its_variable_and_the_variable_beats_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBEWORKERS_REDIS_URL", "redis://from-env:6379/0")
    monkeypatch.setenv("KUBEWORKERS_METRICS_PORT", "9999")
    monkeypatch.setenv("POD_NAME", "operator-abc")
    got = parse_args(["--redis-url", "redis://from-flag:6379/0"])
    assert got.redis_url == "redis://from-flag:6379/0"
    assert (got.metrics_port, got.consumer_name) == (9999, "operator-abc")
    assert got.resync_interval_seconds == OperatorSettings().resync_interval_seconds


def operator_container(mode: str, tmp_path: Path) -> dict[str, Any]:
    for obj in render_chart(MODES[mode], tmp_path):
        if obj["kind"] == "Deployment" and obj["spec"]["template"]["spec"]["containers"][0]["name"] == "operator":
            container: dict[str, Any] = obj["spec"]["template"]["spec"]["containers"][0]
            return container
    raise AssertionError(f"no operator Deployment in mode {mode}")


@pytest.mark.parametrize("mode", sorted(MODES))
def test_the_chart_passes_the_operator_only_flags_and_variables_it_declares(mode: str, tmp_path: Path) -> None:
    flags = {d.flag for _, d in settings.declared()}
    variables = {d.env for _, d in settings.declared() if d.env}
    container = operator_container(mode, tmp_path)
    for arg in container.get("args", []):
        assert arg.split("=", 1)[0] in flags, f"the chart passes {arg!r}, which the operator does not declare"
    for env in container.get("env", []):
        assert env["name"] in variables, f"the chart sets {env['name']}, which the operator does not read"


def test_the_operations_doc_lists_every_flag() -> None:
    doc = (REPO / "docs" / "operations.md").read_text()
    missing = [d.flag for _, d in settings.declared() if f"`{d.flag}" not in doc]
    assert not missing, f"docs/operations.md does not mention {missing}"
